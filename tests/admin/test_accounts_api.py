"""The accounts API against the stack: PostgreSQL for the store, Dovecot for the checks."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from mailintake.cli import app as cli
from mailintake.contracts import get_topic
from mailintake.contracts.records import decode_record
from mailintake.database import engine_for
from services.admin.access import AuditLog
from services.fetcher.mailbox_ownership import account_partition
from services.ticketer.tables import Category, Priority, Resource, User
from tests.topic_reading import read_topic

pytestmark = pytest.mark.stack

WRONG_PASSWORD_REPLY = "[AUTHENTICATIONFAILED] Authentication failed."


@pytest.fixture
def reference_data(stack, unique):
    """A resource, category, priority and user that exist, under names of this test alone."""
    names = {"resource": f"desk-{unique}", "category": f"Hardware-{unique}", "priority": f"urgent-{unique}"}
    with engine_for(stack.database_url).begin() as connection:
        connection.execute(insert(Resource).values(name=names["resource"]))
        connection.execute(insert(Category).values(name=names["category"]))
        connection.execute(insert(Priority).values(name=names["priority"]))
        connection.execute(insert(User).values(login=f"hotline-{unique}", email=f"hotline-{unique}@example.com"))
    return names | {"fallback_user": f"hotline-{unique}"}


def test_create_show_list_update_delete(stack, api, account_document, reference_data, admin_token, unique):
    demo = stack.user("demo")
    started_ms = int(time.time() * 1000)
    document = account_document(
        demo,
        sender={"name": "Help desk", "address": "helpdesk@example.com"},
        ticket_options=reference_data | {"create_user_from_local_part": True, "auto_bundle": False},
    )
    created = api.post("/api/accounts", json=document)
    assert created.status_code == 201, created.text
    account = created.json()["account"]
    assert account["id"] == document["id"] and account["port"] == stack.imaps_port
    assert account["ticket_options"]["resource"] == reference_data["resource"]
    assert account["sender"] == {"name": "Help desk", "address": "helpdesk@example.com"}
    assert "password" not in account and created.json()["status"] is None

    assert api.get(f"/api/accounts/{document['id']}").json()["account"] == account
    assert [v["account"]["id"] for v in api.get("/api/accounts").json()].count(document["id"]) == 1
    assert api.post("/api/accounts", json=document).status_code == 409, "an id is created once"

    # An empty password keeps the stored one: the check still logs in.
    renamed = api.put(f"/api/accounts/{document['id']}", json=document | {"name": "Renamed", "password": ""})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["account"]["name"] == "Renamed"
    assert api.post(f"/api/accounts/{document['id']}/check").json()["ok"] is True

    # A new password replaces it: now the check fails at authentication.
    changed = api.put(f"/api/accounts/{document['id']}", json=document | {"name": "Renamed", "password": "not-it"})
    assert changed.status_code == 200
    failed = api.post(f"/api/accounts/{document['id']}/check").json()
    assert failed["ok"] is False and failed["steps"][-1]["name"] == "authentication"

    disabled = api.post(f"/api/accounts/{document['id']}/disable")
    assert disabled.json()["account"]["enabled"] is False
    assert api.post(f"/api/accounts/{document['id']}/enable").json()["account"]["enabled"] is True

    assert api.delete(f"/api/accounts/{document['id']}").status_code == 204
    assert api.get(f"/api/accounts/{document['id']}").status_code == 404
    assert api.delete(f"/api/accounts/{document['id']}").status_code == 404

    entries = AuditLog(engine_for(stack.database_url)).entries(document["id"])
    assert [(e.action, e.fields) for e in reversed(entries)] == [
        ("account.create", ()),
        ("account.update", ("name",)),
        ("account.update", ("password",)),
        ("account.disable", ("enabled",)),
        ("account.enable", ("enabled",)),
        ("account.delete", ()),
    ]
    assert {e.actor for e in entries} == {f"token:tester-{unique}"}

    # Each change was announced on the accounts topic, in the partition of the account's owner.
    notices = read_topic(
        stack.kafka_bootstrap, "accounts", started_ms,
        lambda m: (m.partition, decode_record("accounts", m.value)) if m.key == document["id"].encode() else None,
        until=lambda found: len(found) >= 6,
    )
    assert [n.deleted for _, n in notices] == [False] * 5 + [True]
    assert {p for p, _ in notices} == {account_partition(document["id"], get_topic("accounts").partitions)}


def test_check_of_a_stored_account_reports_every_step_against_dovecot(stack, api, account_document):
    document = account_document(stack.user("demo"))
    assert api.post("/api/accounts", json=document).status_code == 201
    report = api.post(f"/api/accounts/{document['id']}/check").json()
    assert report["ok"] is True
    assert [(s["name"], s["outcome"]) for s in report["steps"]] == [
        ("connect", "ok"), ("tls", "ok"), ("capabilities", "ok"), ("authentication", "ok"), ("select", "ok"),
    ]
    assert all(s["milliseconds"] >= 0 for s in report["steps"])
    assert report["steps"][2]["server_reply"].startswith("* CAPABILITY IMAP4rev1 ")
    assert isinstance(report["messages"], int)
    assert api.post("/api/accounts/nobody-has-this-id/check").status_code == 404


def test_check_of_an_unsaved_account_with_a_wrong_password_gives_dovecots_exact_reply(stack, api, account_document):
    document = account_document(stack.user("demo"), password="wrong-password-for-check")
    response = api.post("/api/accounts/check", json=document)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is False
    failure = report["steps"][-1]
    assert (failure["name"], failure["outcome"]) == ("authentication", "failed")
    assert failure["server_reply"] == WRONG_PASSWORD_REPLY
    assert "wrong-password-for-check" not in response.text
    assert api.get(f"/api/accounts/{document['id']}").status_code == 404, "a check saves nothing"


def test_an_unsaved_account_needs_a_password_to_be_checked_or_created(stack, api, account_document):
    document = account_document(stack.user("demo"), password="")
    for path in ("/api/accounts/check", "/api/accounts"):
        response = api.post(path, json=document)
        assert response.status_code == 422
        assert [p["field"] for p in response.json()["detail"]] == ["password"]


def test_the_stored_password_is_never_sent_to_another_server(stack, api, account_document, hostile_imap_server):
    document = account_document(stack.user("demo"))
    assert api.post("/api/accounts", json=document).status_code == 201
    elsewhere = [
        {"host": "127.0.0.1", "port": hostile_imap_server, "security": "none", "prevent_plaintext_login": False},
        {"port": stack.imap_port, "security": "starttls"},
        {"ca_file": None},
    ]
    for moved in elsewhere:
        draft = document | moved | {"password": ""}
        for refused in (api.put(f"/api/accounts/{document['id']}", json=draft), api.post("/api/accounts/check", json=draft)):
            assert refused.status_code == 422, refused.text
            [problem] = refused.json()["detail"]
            assert problem["field"] == "password" and "enter the password again" in problem["msg"]
    assert api.get(f"/api/accounts/{document['id']}").json()["account"]["port"] == stack.imaps_port
    # With the password typed again, the move is fine.
    moved = document | elsewhere[1]
    assert api.put(f"/api/accounts/{document['id']}", json=moved).status_code == 200
    assert api.post(f"/api/accounts/{document['id']}/check").json()["ok"] is True


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"port": 65536}, "port", "less than or equal to 65535"),
        ({"sender": {"address": "helpdesk at example"}}, "sender.address", "is not a mail address"),
        ({"sender": {"address": "<b>@example.com"}}, "sender.address", "is not a mail address"),
        ({"protocol": "smtp"}, "protocol", "'imap', 'pop3', 'ews' or 'graph'"),
        ({"ticket_options": {"resource": "no-such-resource"}}, "ticket_options.resource", "resource 'no-such-resource' does not exist"),
        ({"ticket_options": {"category": "no-such-category"}}, "ticket_options.category", "category 'no-such-category' does not exist"),
        ({"ticket_options": {"priority": "no-such-priority"}}, "ticket_options.priority", "priority 'no-such-priority' does not exist"),
        ({"ticket_options": {"fallback_user": "no-such-user"}}, "ticket_options.fallback_user", "no user has the login 'no-such-user'"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
    ],
)
def test_a_refused_field_is_named_with_the_reason(stack, api, account_document, fields, field, why):
    document = account_document(stack.user("demo"), password="Secret-never-echoed") | fields
    response = api.post("/api/accounts", json=document)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == field and why in problem["msg"]
    assert problem["loc"] == ["body", *field.split(".")]
    assert "Secret-never-echoed" not in response.text
    assert api.get(f"/api/accounts/{document['id']}").status_code == 404


def test_a_refused_password_is_not_echoed(stack, api, account_document):
    response = api.post("/api/accounts", json=account_document(stack.user("demo"), password=["Secret-in-a-list"]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "password"
    assert "Secret-in-a-list" not in response.text


def test_the_password_is_in_no_response_log_line_audit_entry_or_export(
    stack, api, account_document, caplog, capfd, monkeypatch
):
    password = "Pa55-unique-needle-" + account_document(stack.user("demo"))["id"]
    from mailintake.stack import add_mail_user

    user = add_mail_user(f"needle{password[-10:]}", password)
    document = account_document(user)
    responses = []
    with caplog.at_level(logging.DEBUG):
        responses.append(api.post("/api/accounts", json=document))
        responses.append(api.post("/api/accounts/check", json=document))
        responses.append(api.post(f"/api/accounts/{document['id']}/check"))
        responses.append(api.put(f"/api/accounts/{document['id']}", json=document | {"name": "Changed"}))
        responses.append(api.get(f"/api/accounts/{document['id']}"))
        responses.append(api.get("/api/accounts"))
        responses.append(api.get("/api/audit"))
        monkeypatch.setenv("MAILINTAKE_FETCHER_DATABASE_URL", stack.database_url)
        export = CliRunner().invoke(cli, ["accounts", "export"])
    assert [r.status_code for r in responses] == [201, 200, 200, 200, 200, 200, 200]
    assert responses[2].json()["ok"] is True, "the stored password is the one that logs in"
    assert export.exit_code == 0 and f"id: {document['id']}" in export.output
    seen = "".join(r.text for r in responses) + caplog.text + export.output + "".join(capfd.readouterr())
    assert caplog.records, "something was logged, so the search means something"
    assert password not in seen
    audit = AuditLog(engine_for(stack.database_url)).entries(document["id"])
    assert password not in repr(audit)


def test_without_a_live_token_everything_but_the_probes_is_refused(stack, anonymous, admin_token, unique):
    routes = [
        ("GET", "/api/accounts"), ("POST", "/api/accounts"), ("GET", "/api/accounts/x"), ("PUT", "/api/accounts/x"),
        ("DELETE", "/api/accounts/x"), ("POST", "/api/accounts/x/enable"), ("POST", "/api/accounts/x/disable"),
        ("POST", "/api/accounts/x/check"), ("POST", "/api/accounts/check"), ("GET", "/api/audit"),
        ("GET", "/api/tickets"), ("GET", "/api/users"),
    ]
    for method, path in routes:
        response = anonymous.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = anonymous.get("/api/accounts", headers={"Authorization": "Bearer mi_not-a-token"})
    assert wrong.status_code == 401
    assert anonymous.get("/api/accounts", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200
    assert anonymous.get("/livez").status_code == 200 and anonymous.get("/readyz").status_code == 200

    revoked = CliRunner().invoke(cli, ["admin", "token", "revoke", f"tester-{unique}"], env={"MAILINTAKE_ADMIN_DATABASE_URL": stack.database_url})
    assert revoked.exit_code == 0, revoked.output
    assert anonymous.get("/api/accounts", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 401


def test_the_cli_creates_a_token_shown_once_that_lets_its_holder_in(stack, anonymous, unique):
    env = {"MAILINTAKE_ADMIN_DATABASE_URL": stack.database_url}
    created = CliRunner().invoke(cli, ["admin", "token", "create", f"first-{unique}"], env=env)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("mi_") and len(token) > 40
    assert anonymous.get("/api/accounts", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    again = CliRunner().invoke(cli, ["admin", "token", "create", f"first-{unique}"], env=env)
    assert again.exit_code == 2 and "exists already" in again.output
    listed = CliRunner().invoke(cli, ["admin", "token", "list"], env=env)
    assert f"first-{unique}" in listed.output and token not in listed.output
    with engine_for(stack.database_url).connect() as connection:
        stored = connection.exec_driver_sql("SELECT token_sha256 FROM admin_tokens WHERE name = %s", (f"first-{unique}",)).scalar_one()
    assert token not in stored and len(stored) == 64


def test_the_openapi_document_describes_the_accounts_api(anonymous):
    document = anonymous.get("/openapi.json").json()
    assert {"/api/accounts", "/api/accounts/{account_id}", "/api/accounts/check", "/api/accounts/{account_id}/check",
            "/api/accounts/{account_id}/enable", "/api/accounts/{account_id}/disable", "/api/audit"} <= set(document["paths"])
    draft = document["components"]["schemas"]["AccountDraft"]["properties"]["password"]
    assert draft["anyOf"][0]["writeOnly"] is True
    shown = document["components"]["schemas"]["StoredAccountOut"]["properties"]
    assert "password" not in shown and "ticket_options" in shown
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_without_the_encryption_key_the_accounts_api_says_which_variable_to_set(api, monkeypatch):
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE", raising=False)
    response = api.get("/api/accounts")
    assert response.status_code == 503
    assert "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS" in response.json()["detail"]
    assert api.get("/api/tickets").status_code == 200, "the ticket API needs no key"


def test_a_change_and_its_audit_entry_stand_or_fall_together(stack, account_document):
    from services.admin.account_editing import AccountDraft
    from services.fetcher.account_store import AccountStore
    from services.fetcher.password_cipher import cipher_from_settings
    from services.fetcher.settings import AccountEncryptionSettings

    store = AccountStore(engine_for(stack.database_url), cipher_from_settings(AccountEncryptionSettings()))
    draft = AccountDraft.model_validate(account_document(stack.user("demo")))
    account = draft.with_password(draft.password)

    def failing_audit(connection, change):
        raise RuntimeError("the audit log is unavailable")

    with pytest.raises(RuntimeError):
        store.upsert(account, on_change=failing_audit)
    assert store.get(account.id) is None, "no change without its audit entry"
    store.upsert(account)
    with pytest.raises(RuntimeError):
        store.set_enabled(account.id, False, on_change=failing_audit)
    with pytest.raises(RuntimeError):
        store.delete(account.id, on_change=failing_audit)
    assert store.get(account.id).enabled is True


def test_the_served_app_logs_no_password_even_at_debug(stack, admin_token, account_document):
    """`mailintake run admin` with its JSON logs and uvicorn's access log, at DEBUG."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    password = "Pa55-served-needle-" + account_document(stack.user("demo"))["id"]
    from mailintake.stack import add_mail_user

    document = account_document(add_mail_user(f"served{password[-10:]}", password))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "admin"],
        env={
            **os.environ, "MAILINTAKE_ADMIN_PORT": str(port), "MAILINTAKE_ADMIN_LOG_LEVEL": "DEBUG",
            # The wrong password below must not slow other tests' logins from 127.0.0.1 (Dovecot's penalty).
            "MAILINTAKE_ADMIN_CHECK_SOURCE_ADDRESS": f"127.0.{port % 250 + 2}.{port // 250 % 250 + 2}",
        },
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    statuses = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    client.get("/livez")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            statuses.append(client.post("/api/accounts", json=document).status_code)
            statuses.append(client.post(f"/api/accounts/{document['id']}/check").status_code)
            statuses.append(client.post("/api/accounts/check", json=document | {"password": password + "-wrong"}).status_code)
            statuses.append(client.put(f"/api/accounts/{document['id']}", json=document | {"port": "not a port"}).status_code)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert statuses == [201, 200, 200, 422], output[-3000:]
    assert f"/api/accounts/{document['id']}/check" in output, "the access log was captured"
    assert password not in output


def test_the_deployments_token_is_registered_rotated_and_stays_revoked(stack):
    from fastapi.testclient import TestClient

    from services.admin.access import TokenStore
    from services.admin.app import create_app
    from services.admin.settings import AdminSettings
    from tests.database_schemas import migrated_schema

    first, second = "mi_" + "a" * 40, "mi_" + "b" * 40

    def client(database_url: str, token: str) -> TestClient:
        return TestClient(create_app(AdminSettings(database_url=database_url, api_token=token)))

    with migrated_schema(stack.database_url, "admin_deployment_token") as database_url:
        with client(database_url, first) as app:
            assert app.get("/api/audit", headers={"Authorization": f"Bearer {first}"}).status_code == 200
        # The secret was rotated: the new token works, the old one no longer does.
        with client(database_url, second) as app:
            assert app.get("/api/audit", headers={"Authorization": f"Bearer {second}"}).status_code == 200
            assert app.get("/api/audit", headers={"Authorization": f"Bearer {first}"}).status_code == 401
        # Revoked by an administrator: a restart with the same secret does not bring it back.
        assert TokenStore(engine_for(database_url)).revoke("deployment")
        with client(database_url, second) as app:
            assert app.get("/api/audit", headers={"Authorization": f"Bearer {second}"}).status_code == 401
        actions = [(e.actor, e.action) for e in AuditLog(engine_for(database_url)).entries("deployment")]
        assert sorted(actions) == [("deployment", "token.create"), ("deployment", "token.replace")]
    with pytest.raises(ValueError, match="starts with 'mi_'"):
        AdminSettings(api_token="too-short")
