"""The account form's and API's OAuth2 fields: the method decides which fields count,
secrets are write-only and kept only for the provider and application they were given
for, and "Connect" refuses clearly what it cannot do."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.admin.account_editing import (
    InvalidAccount,
    StoredAccountOut,
    kept_secrets,
    parse_draft,
)
from services.admin.account_form import form_document, submitted_values
from services.admin.app import create_app
from services.admin.settings import AdminSettings
from services.fetcher.account import Account

BASE = {"id": "oauth-x", "name": "OAuth X", "host": "imap.example.com", "port": 993, "username": "help@example.com"}
OAUTH2 = {"provider": "microsoft", "tenant": "contoso.onmicrosoft.com", "client_id": "app-1"}


def stored_account(**oauth2) -> Account:
    return Account.model_validate(
        BASE | {"authentication": "oauth2_refresh_token", "oauth2": OAUTH2 | {"client_secret": "stored-secret", "refresh_token": "stored-rt"} | oauth2}
    )


def draft(method: str = "oauth2_refresh_token", **oauth2):
    return parse_draft(BASE | {"authentication": method, "oauth2": OAUTH2 | oauth2})


def problems_of(error: InvalidAccount) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in error.problems]


def test_empty_secrets_keep_the_stored_ones_for_the_same_provider_and_application():
    account = kept_secrets(draft(client_secret=""), stored_account())
    assert account.oauth2.client_secret.get_secret_value() == "stored-secret"
    assert account.oauth2.refresh_token.get_secret_value() == "stored-rt"
    typed = kept_secrets(draft(client_secret="new-secret"), stored_account())
    assert typed.oauth2.client_secret.get_secret_value() == "new-secret"


@pytest.mark.parametrize(
    ("moved", "named"),
    [
        ({"authority": "https://login.attacker.example/tenant"}, "authority"),
        ({"tenant": "other.onmicrosoft.com"}, "tenant"),
        ({"client_id": "app-2"}, "client_id"),
        ({"ca_file": "/tmp/attacker-ca.pem"}, "ca_file"),
        ({"provider": "oidc", "authority": "https://idp.example"}, "provider, authority"),
    ],
)
def test_a_stored_secret_is_never_sent_to_another_provider_or_application(moved, named):
    with pytest.raises(InvalidAccount) as refused:
        kept_secrets(draft(**moved), stored_account())
    assert problems_of(refused.value) == [(
        "oauth2.refresh_token",
        f"connect again: {named} changed, and the stored refresh token is only ever sent to the identity provider "
        "and application it was issued for",
    )]
    with pytest.raises(InvalidAccount) as refused:
        kept_secrets(draft("oauth2_client_credentials", **moved), stored_account())
    assert problems_of(refused.value)[0][0] == "oauth2.client_secret"
    assert "enter the client secret again" in problems_of(refused.value)[0][1]


def test_a_new_refresh_token_account_must_be_connected_and_an_app_needs_a_secret_or_certificate():
    with pytest.raises(InvalidAccount) as refused:
        kept_secrets(draft(), None)
    assert problems_of(refused.value) == [(
        "oauth2.refresh_token",
        'not connected yet: use "Connect with Microsoft" (the consent flow gives the refresh token, and saves the account)',
    )]
    with pytest.raises(InvalidAccount) as refused:
        kept_secrets(draft("oauth2_client_credentials"), None)
    assert problems_of(refused.value) == [
        ("oauth2.client_secret", "oauth2_client_credentials needs a client secret or a certificate file")
    ]
    with_certificate = kept_secrets(draft("oauth2_client_credentials", certificate_file="/etc/app.pem"), stored_account())
    assert with_certificate.oauth2.client_secret is None, "a certificate replaces the stored secret"


def test_the_consent_needs_no_refresh_token_yet():
    account = kept_secrets(draft(client_secret="s"), None, connecting=True)
    assert account.oauth2.refresh_token is None and account.oauth2.client_secret.get_secret_value() == "s"


def test_switching_an_oauth2_account_to_a_password_needs_the_password():
    with pytest.raises(InvalidAccount) as refused:
        kept_secrets(parse_draft(BASE | {"authentication": "password"}), stored_account())
    assert problems_of(refused.value) == [
        ("password", "enter a password: the stored account has none (it used oauth2_refresh_token)")
    ]


def test_the_view_of_an_account_holds_no_secret():
    shown = StoredAccountOut.model_validate(stored_account().model_dump()).model_dump_json()
    assert "stored-secret" not in shown and "stored-rt" not in shown and "client_secret" not in shown
    assert '"client_id":"app-1"' in shown


def test_the_form_counts_the_oauth2_fields_only_for_an_oauth2_method():
    fields = {
        "id": "x", "authentication": "password", "password": "p", "oauth2.provider": "microsoft", "oauth2.client_id": "",
        "oauth2.scopes": "", "csrf_token": "t", "editing": "x",
    }
    document = form_document(fields)
    assert "oauth2" not in document and "editing" not in document and "csrf_token" not in document
    document = form_document(fields | {"authentication": "oauth2_client_credentials", "oauth2.scopes": " a  b ",
                                        "oauth2.client_secret": "s3cret"})
    assert document["oauth2"] == {"provider": "microsoft", "client_id": None, "scopes": ["a", "b"], "client_secret": "s3cret"}
    shown_again = submitted_values(fields | {"oauth2.client_secret": "s3cret"})
    assert "oauth2.client_secret" not in shown_again and "password" not in shown_again


# --- "Connect" over HTTP ---------------------------------------------------------


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def logged_in(app, token: str) -> TestClient:
    client = TestClient(app)
    page = client.get("/login")
    client.post("/login", data={"csrf_token": csrf_of(page.text), "token": token})
    return client


def connect_form(stack, csrf: str, **fields) -> dict:
    return {
        "csrf_token": csrf, "id": "connect-http", "name": "Connect", "protocol": "imap", "host": stack.host,
        "port": str(stack.imaps_port), "security": "tls", "username": "alice@mailintake.test",
        "authentication": "oauth2_refresh_token", "oauth2.provider": "microsoft", "oauth2.authority": stack.oidc_issuer,
        "oauth2.client_id": "mailintake-delegated", "oauth2.client_secret": "mailintake-delegated-secret",
        "oauth2.ca_file": str(stack.ca_file), "oauth2.scopes": "mail email",
    } | fields


@pytest.mark.stack
def test_connect_without_a_public_url_says_which_variable_to_set(stack, admin_app, admin_token):
    with logged_in(admin_app, admin_token) as client:
        csrf = csrf_of(client.get("/accounts/new").text)
        response = client.post("/accounts/oauth/start", data=connect_form(stack, csrf))
    assert response.status_code == 409
    assert "set MAILINTAKE_ADMIN_PUBLIC_URL" in response.text and "/accounts/oauth/callback" in response.text


@pytest.mark.stack
def test_connect_refuses_what_it_cannot_do(stack, admin_token):
    app = create_app(AdminSettings(database_url=stack.database_url, public_url="http://127.0.0.1:8080"))
    with logged_in(app, admin_token) as client:
        csrf = csrf_of(client.get("/accounts/new").text)
        no_csrf = client.post("/accounts/oauth/start", data=connect_form(stack, "0" * 64))
        assert no_csrf.status_code == 403
        password = client.post("/accounts/oauth/start", data=connect_form(stack, csrf, authentication="password", password="x"))
        assert password.status_code == 422
        assert "Connect gets a refresh token: choose oauth2_refresh_token (not password)" in password.text
        unreachable = client.post(
            "/accounts/oauth/start", data=connect_form(stack, csrf, **{"oauth2.authority": "https://127.0.0.1:9/tenant"})
        )
        assert unreachable.status_code == 502
        assert "the identity provider at https://127.0.0.1:9/tenant cannot be asked" in unreachable.text
        started = client.post("/accounts/oauth/start", data=connect_form(stack, csrf))
        assert started.status_code == 200, started.text
        assert "mailintake-delegated-secret" not in started.text, "the client secret never goes to the browser"
        authorize = re.search(r'id="continue-to-provider" href="([^"]+)"', started.text).group(1).replace("&amp;", "&")
        assert authorize.startswith(f"{stack.oidc_issuer}/")
        for needed in ("code_challenge_method=S256", "code_challenge=", "state=", "nonce=", "prompt=consent",
                       "redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Faccounts%2Foauth%2Fcallback"):
            assert needed in authorize, needed
        assert "code_verifier" not in authorize
        cookie = started.headers["set-cookie"]
        assert "mailintake_admin_consent=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Path=/accounts/oauth/callback" in cookie
        # The answer without the flow's cookie (another browser) is refused, and the flow is spent.
        state = re.search(r"state=([^&]+)", authorize).group(1)
        stranger = TestClient(app).get(f"/accounts/oauth/callback?state={state}&code=x")
        assert stranger.status_code == 400
        assert "started in another browser" in stranger.text
        again = client.get(f"/accounts/oauth/callback?state={state}&code=x")
        assert again.status_code == 400 and "it was used already" in again.text


@pytest.mark.stack
@pytest.mark.parametrize("ended_by", ["expiry", "revoked token"])
def test_a_flow_ends_when_it_expires_or_its_session_is_revoked(stack, admin_token, unique, ended_by):
    from sqlalchemy import text

    from mailintake.database import engine_for
    from services.admin.access import TokenStore

    app = create_app(AdminSettings(database_url=stack.database_url, public_url="http://127.0.0.1:8080"))
    with logged_in(app, admin_token) as client:
        csrf = csrf_of(client.get("/accounts/new").text)
        started = client.post("/accounts/oauth/start", data=connect_form(stack, csrf, id=f"ended-{unique}"))
        state = re.search(r"state=([^&]+)", started.text).group(1)
        if ended_by == "expiry":
            with engine_for(stack.database_url).begin() as connection:
                connection.execute(
                    text("UPDATE admin_pending_consents SET expires_at = now() - interval '1 second' WHERE state = :state"),
                    {"state": state},
                )
            why = "the consent took longer than 10 minutes: start it again"
        else:
            assert TokenStore(engine_for(stack.database_url)).revoke(f"tester-{unique}")
            why = "the admin token that started this consent flow was revoked meanwhile"
        answer = client.get(f"/accounts/oauth/callback?state={state}&code=x")
    assert answer.status_code == 400
    assert f"Refused: {why}." in answer.text


@pytest.mark.stack
def test_the_api_takes_an_app_account_keeps_its_secret_and_never_shows_it(stack, api, unique):
    from mailintake.database import engine_for
    from services.fetcher.account_store import AccountStore
    from services.fetcher.password_cipher import cipher_from_settings
    from services.fetcher.settings import AccountEncryptionSettings

    store = AccountStore(engine_for(stack.database_url), cipher_from_settings(AccountEncryptionSettings()))
    document = {
        "id": f"app-{unique}", "name": "App-only", "protocol": "imap", "host": stack.host, "port": stack.imaps_port,
        "ca_file": str(stack.ca_file), "username": "support@mailintake.test", "authentication": "oauth2_client_credentials",
        "oauth2": {"provider": "oidc", "authority": stack.oidc_issuer, "client_id": "mailintake-app",
                   "client_secret": f"app-secret-{unique}", "scopes": ["mailbox:support@mailintake.test"],
                   "ca_file": str(stack.ca_file)},
    }
    try:
        created = api.post("/api/accounts", json=document)
        assert created.status_code == 201, created.text
        assert f"app-secret-{unique}" not in created.text and "client_secret" not in created.text
        assert created.json()["account"]["oauth2"]["client_id"] == "mailintake-app"
        kept = api.put(f"/api/accounts/{document['id']}", json=document | {
            "name": "Renamed", "oauth2": document["oauth2"] | {"client_secret": ""}})
        assert kept.status_code == 200, kept.text
        assert store.get(document["id"]).oauth2.client_secret.get_secret_value() == f"app-secret-{unique}"
        moved = api.put(f"/api/accounts/{document['id']}", json=document | {
            "oauth2": document["oauth2"] | {"client_secret": "", "authority": "https://idp.attacker.example/t"}})
        assert moved.status_code == 422
        [problem] = moved.json()["detail"]
        assert problem["field"] == "oauth2.client_secret" and problem["msg"].startswith(
            "enter the client secret again: authority changed")
        assert store.get(document["id"]).oauth2.authority == stack.oidc_issuer
    finally:
        store.delete(document["id"])


def test_the_consent_covers_what_the_fetcher_and_the_sender_ask_for():
    from services.admin.consent_flow import consent_scopes

    microsoft = kept_secrets(draft(client_secret="s"), None, connecting=True)
    assert consent_scopes(microsoft) == [
        "https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"
    ], "msal adds openid, profile and offline_access itself, and refuses to be given them"
    own = kept_secrets(draft(client_secret="s", scopes=["a", "offline_access"]), None, connecting=True)
    assert consent_scopes(own) == ["a"]
    oidc = kept_secrets(draft(provider="oidc", authority="https://idp.example", scopes=["mail"]), None, connecting=True)
    assert consent_scopes(oidc) == ["openid", "offline_access", "mail"]


def test_the_access_log_never_shows_the_callbacks_code():
    import logging

    from services.admin.app import CallbackQueryHidden

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/accounts/oauth/callback?code=the-code&state=s", "1.1", 200), None,
    )
    assert CallbackQueryHidden().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /accounts/oauth/callback?(hidden) HTTP/1.1" 200'
