"""The accounts web page over HTTP (TestClient): login, CSRF, the form, escaping."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from mailintake.database import engine_for
from services.admin.account_form import GROUPS, form_document
from services.fetcher.status_store import AccountStatusStore

pytestmark = pytest.mark.stack

MALICIOUS = '<script>window.pwned=1</script><img src=x onerror="alert(1)">'


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client: TestClient, token: str):
    page = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf_of(page.text), "token": token}, follow_redirects=False)


@pytest.fixture
def browser_like(admin_app, admin_token):
    """A client logged in through the login form, as a browser would be."""
    with TestClient(admin_app) as client:
        response = log_in(client, admin_token)
        assert response.status_code == 303 and response.headers["location"] == "/accounts"
        yield client


def form_fields(document: dict, csrf: str) -> dict:
    """The form fields a browser sends for an account document (checkboxes left unticked are left out)."""
    fields = {"csrf_token": csrf}
    for key, value in document.items():
        if isinstance(value, dict):
            fields |= {f"{key}.{k}": v for k, v in value.items() if v is not None}
        elif value is True:
            fields[key] = "on"
        elif value is not False:
            fields[key] = str(value)
    return fields


def test_the_page_needs_a_login_and_the_session_cookie_is_httponly_and_strict(anonymous, admin_token):
    assert anonymous.get("/accounts", follow_redirects=False).headers["location"] == "/login"
    assert anonymous.get("/accounts/new", follow_redirects=False).headers["location"] == "/login"
    wrong = log_in(anonymous, "mi_wrong")
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    response = log_in(anonymous, admin_token)
    cookie = response.headers["set-cookie"]
    assert response.status_code == 303
    assert "mailintake_admin_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert anonymous.get("/accounts").status_code == 200


def test_the_login_form_refuses_a_post_without_its_csrf_token(anonymous, admin_token):
    anonymous.get("/login")
    response = anonymous.post("/login", data={"token": admin_token}, follow_redirects=False)
    assert response.status_code == 403 and "CSRF" in response.text
    assert "mailintake_admin_session" not in response.headers.get("set-cookie", "")


def test_a_change_without_the_csrf_token_is_refused(stack, browser_like, account_document):
    document = account_document(stack.user("demo"))
    page = browser_like.get("/accounts/new")
    fields = form_fields(document, csrf_of(page.text))
    for csrf in (None, "0" * 64):
        attempt = {k: v for k, v in fields.items() if k != "csrf_token"} | ({"csrf_token": csrf} if csrf else {})
        refused = browser_like.post("/accounts/new", data=attempt, follow_redirects=False)
        assert refused.status_code == 403 and "CSRF token missing or wrong" in refused.text
    # The API refuses the cookie without the header, and takes it with it.
    assert browser_like.post("/api/accounts", json=document).status_code == 403
    assert browser_like.post("/api/accounts/check", json=document).status_code == 403
    assert browser_like.get(f"/api/accounts/{document['id']}").status_code == 404, "nothing was stored"
    created = browser_like.post("/api/accounts", json=document, headers={"X-CSRF-Token": fields["csrf_token"]})
    assert created.status_code == 201


def test_the_form_adds_an_account_that_the_list_then_shows(stack, browser_like, account_document):
    # "Enabled" is ticked on a new form, as a browser would send it.
    document = account_document(stack.user("demo"), sender={"name": "Desk", "address": "desk@example.com"}, enabled=True)
    page = browser_like.get("/accounts/new")
    saved = browser_like.post("/accounts/new", data=form_fields(document, csrf_of(page.text)), follow_redirects=False)
    assert saved.status_code == 303, saved.text
    listing = browser_like.get(saved.headers["location"]).text
    assert f'data-account-id="{document["id"]}"' in listing and "never polled" in listing
    stored = browser_like.get(f"/api/accounts/{document['id']}").json()["account"]
    assert stored["sender"] == {"name": "Desk", "address": "desk@example.com"}
    assert stored["ticket_options"]["auto_bundle"] is False, "an unticked checkbox is false"
    assert stored["prevent_plaintext_login"] is False and stored["ca_file"] == document["ca_file"]

    edit = browser_like.get(f"/accounts/{document['id']}/edit").text
    assert document["password"] not in edit and 'placeholder="unchanged"' in edit
    fields = form_fields(document | {"name": "Edited", "password": ""}, csrf_of(edit))
    assert browser_like.post(f"/accounts/{document['id']}/edit", data=fields, follow_redirects=False).status_code == 303
    assert browser_like.post(f"/api/accounts/{document['id']}/check", headers={"X-CSRF-Token": fields["csrf_token"]}).json()["ok"]


def test_a_refused_form_names_each_field_next_to_its_input(stack, browser_like, account_document):
    document = account_document(stack.user("demo"), port=99999, sender={"address": "not an address"})
    page = browser_like.get("/accounts/new")
    response = browser_like.post("/accounts/new", data=form_fields(document, csrf_of(page.text)))
    assert response.status_code == 422
    assert re.search(r'id="field-port-error">Input should be less than or equal to 65535<', response.text)
    assert re.search(r'id="field-sender-address-error">Value error, is not a mail address', response.text)
    assert document["password"] not in response.text, "the password is not sent back into the form"
    assert 'value="not an address"' in response.text, "what was typed is kept"


def test_every_input_has_a_label_and_help_tied_to_it(browser_like):
    html = browser_like.get("/accounts/new").text
    for group in GROUPS:
        assert f"<legend>{group.title}</legend>" in html
        for field in group.fields:
            assert f'<label for="{field.element_id}">' in html, field.name
            assert re.search(rf'id="{field.element_id}"[^>]*aria-describedby="{field.element_id}-help', html, re.S), field.name
    assert "Domain\\User\\SharedMailboxAlias" in html


def test_a_malicious_name_and_server_reply_are_shown_as_text(stack, browser_like, account_document):
    document = account_document(stack.user("demo"), name=MALICIOUS)
    csrf = csrf_of(browser_like.get("/accounts/new").text)
    assert browser_like.post("/api/accounts", json=document, headers={"X-CSRF-Token": csrf}).status_code == 201
    AccountStatusStore(engine_for(stack.database_url)).record_failure(
        document["id"], at=datetime.now(UTC), lag_seconds=1.5, step="authentication", error=f"NO {MALICIOUS}"
    )
    listing = browser_like.get("/accounts").text
    assert MALICIOUS not in listing
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in listing
    assert "failing ×1 at authentication" in listing and "1.5 s" in listing
    edit = browser_like.get(f"/accounts/{document['id']}/edit").text
    assert MALICIOUS not in edit and 'value="&lt;script&gt;window.pwned=1' in edit
    reflected = browser_like.get("/accounts", params={"saved": MALICIOUS}).text
    assert MALICIOUS not in reflected and "Saved account <strong>&lt;script&gt;" in reflected
    status = browser_like.get(f"/api/accounts/{document['id']}").json()["status"]
    assert status["last_error"] == f"NO {MALICIOUS}" and status["consecutive_failures"] == 1
    assert status["last_error_at"].endswith("Z") and status["last_error_at"] == status["last_poll_at"]


def test_the_form_fields_become_the_api_document():
    fields = {"id": "a", "port": "993", "sender.address": "", "ticket_options.resource": "desk", "prevent_ntlm": "on",
              "csrf_token": "x"}
    document = form_document(fields)
    assert document["sender"] == {"address": None}
    assert document["ticket_options"]["resource"] == "desk" and document["ticket_options"]["auto_bundle"] is False
    assert document["prevent_ntlm"] is True and document["prevent_plaintext_login"] is False
    assert "csrf_token" not in document and document["port"] == "993"


def test_over_https_the_session_cookie_is_secure(admin_app, admin_token):
    with TestClient(admin_app, base_url="https://admin.example.test") as client:
        cookie = log_in(client, admin_token).headers["set-cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie


def test_the_plain_http_session_cookie_is_not_marked_secure(anonymous, admin_token):
    assert "Secure" not in log_in(anonymous, admin_token).headers["set-cookie"]


def test_an_actor_never_shows_its_session_token():
    from services.admin.authentication import Actor

    actor = Actor("token:alice", session_token="mi_secret-session-token")
    assert "mi_secret-session-token" not in repr(actor) and "token:alice" in repr(actor)
    assert actor.csrf_token and actor.csrf_token != "mi_secret-session-token"


def test_pages_allow_only_their_own_script_and_no_framing(anonymous, browser_like):
    for response in (anonymous.get("/login"), browser_like.get("/accounts"), browser_like.get("/accounts/new")):
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
        assert "<script>" not in response.text, "no inline script, which the policy would block"
