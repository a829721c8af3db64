"""The accounts page in headless Chromium (Debian's, driven by Playwright), against the
admin app served by uvicorn and the stack's PostgreSQL and Dovecot.

Screenshots go to ``test-artifacts/`` (the README shows copies from ``docs/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.admin.conftest import HOSTILE_REPLY
from tests.admin.served_admin import free_loopback_port, serving

pytestmark = pytest.mark.stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WRONG_PASSWORD_REPLY = "[AUTHENTICATIONFAILED] Authentication failed."


@pytest.fixture(scope="module")
def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/install-system-packages installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def served_admin(admin_app):
    """The admin app on a free loopback port, served by uvicorn in this process."""
    with serving(admin_app, free_loopback_port()) as base_url:
        yield base_url


@pytest.fixture
def page(browser, served_admin, admin_token):
    """A browser page logged in through the login form; the test fails if the console shows an error."""
    context = browser.new_context(base_url=served_admin, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    # A blocked script or style (the pages' Content-Security-Policy) shows up as a console error.
    console_errors = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.goto("/accounts")
    assert page.url.endswith("/login")
    page.get_by_label("Admin token").fill(admin_token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/accounts")
    yield page
    context.close()
    assert console_errors == []


def screenshot(page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def fill_account(page, document: dict) -> None:
    page.get_by_label("Account id").fill(document["id"])
    page.get_by_label("Display name").fill(document["name"])
    page.get_by_label("Protocol").select_option(document["protocol"])
    page.get_by_label("Server").fill(document["host"])
    page.get_by_label("Port").fill(str(document["port"]))
    page.get_by_label("Security").select_option(document["security"])
    page.get_by_label("CA file").fill(document["ca_file"])
    page.get_by_label("User name").fill(document["username"])
    page.get_by_label("Password").fill(document["password"])
    page.get_by_label("Sender name").fill("Help desk")
    page.get_by_label("Sender address").fill("helpdesk@example.com")


def check_connection(page) -> str:
    page.get_by_role("button", name="Check connection").click()
    message = page.locator("#check-message")
    message.filter(has_not_text="Checking").wait_for(timeout=30_000)
    return message.text_content()


def test_add_an_account_check_it_and_see_it_in_the_list(stack, page, account_document):
    # Relative to the server's working directory, so no path of this machine shows in the screenshots.
    ca_file = os.path.relpath(stack.ca_file)
    document = account_document(stack.user("demo"), password="wrong-in-the-browser", ca_file=ca_file)
    page.get_by_role("link", name="Add account").click()
    fill_account(page, document)

    failed = check_connection(page)
    assert failed == "Connection failed at authentication: the server refused"
    assert page.locator("#check-reply").text_content() == WRONG_PASSWORD_REPLY
    assert page.get_by_role("button", name="Copy the server's reply").is_visible()
    page.locator("#check-steps").scroll_into_view_if_needed()
    screenshot(page, "account-check-failed.png", full_page=False)

    page.get_by_label("Password").fill(stack.user("demo").password)
    passed = check_connection(page)
    assert passed.startswith("Connection OK: every step passed.")
    assert page.locator("#check-reply").is_hidden()
    assert page.locator("#check-steps li").count() == 5
    screenshot(page, "account-form.png")

    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/accounts?saved=*")
    row = page.locator(f'tr[data-account-id="{document["id"]}"]')
    assert row.locator("a").text_content() == document["name"]
    assert row.locator(".status").text_content() == "never polled"
    screenshot(page, "account-list.png")


def test_every_control_of_the_form_has_a_label(page):
    page.goto("/accounts/new")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select')]
              .filter((element) => element.labels.length === 0).map((element) => element.name)"""
    )
    assert unlabelled == []
    # Keyboard: the first Tab from the id field reaches the next field of the dialog.
    page.get_by_label("Account id").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "name"


def test_a_hostile_servers_reply_is_shown_as_text(page, hostile_imap_server):
    page.goto("/accounts/new")
    document = {
        "id": "hostile", "name": "Hostile", "protocol": "imap", "host": "127.0.0.1", "port": hostile_imap_server,
        "security": "none", "ca_file": "", "username": "someone", "password": "not-a-secret",
    }
    fill_account(page, document)
    page.get_by_label("Prevent text-only login").uncheck()
    check_connection(page)
    assert page.locator("#check-reply").text_content() == HOSTILE_REPLY
    assert page.locator("#check-result img, #check-result b").count() == 0, "no HTML of the server became elements"
    assert page.title() != "pwned"
    capabilities = page.locator("#check-steps li").nth(2).text_content()
    assert "<i>X-HTML</i>" in capabilities


def test_disable_enable_and_delete_from_the_list(stack, page, api, account_document):
    document = account_document(stack.user("demo"))
    assert api.post("/api/accounts", json=document).status_code == 201
    page.goto("/accounts")
    row = page.locator(f'tr[data-account-id="{document["id"]}"]')
    from playwright.sync_api import expect

    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".status")).to_have_text("disabled")
    row.get_by_role("button", name="Enable").click()
    expect(row.locator(".status")).to_have_text("never polled")

    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert questions == [f"Delete the account {document['id']}?"]
    assert api.get(f"/api/accounts/{document['id']}").status_code == 404


def test_a_revoked_token_ends_the_session_at_the_next_request(stack, page, unique):
    from typer.testing import CliRunner

    from mailintake.cli import app as cli

    page.goto("/accounts/new")
    revoked = CliRunner().invoke(
        cli, ["admin", "token", "revoke", f"tester-{unique}"], env={"MAILINTAKE_ADMIN_DATABASE_URL": stack.database_url}
    )
    assert revoked.exit_code == 0, revoked.output
    assert check_connection(page) == "Cannot check: your session has ended; log in again."
    page.goto("/accounts")
    assert page.url.endswith("/login")


def test_a_slow_check_from_the_page_does_not_hold_up_other_requests(served_admin, admin_token):
    """The page's handlers are async; the check must run in the threadpool, not on the event loop."""
    import re

    import httpx

    listener = socket.create_server(("127.0.0.1", 0))

    def silent_server() -> None:
        # Accept, say nothing for three seconds, hang up: the check waits for a greeting meanwhile.
        connection, _ = listener.accept()
        time.sleep(3)
        connection.close()

    threading.Thread(target=silent_server, daemon=True).start()
    with httpx.Client(base_url=served_admin, timeout=30) as client:
        login = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
        client.post("/login", data={"csrf_token": csrf, "token": admin_token})
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/accounts/new").text).group(1)
        form = {
            "csrf_token": csrf, "id": "silent", "name": "Silent", "protocol": "imap", "host": "127.0.0.1",
            "port": str(listener.getsockname()[1]), "security": "none", "username": "someone", "password": "x",
        }
        reports = []
        checking = threading.Thread(target=lambda: reports.append(client.post("/accounts/check", data=form)))
        started = time.monotonic()
        checking.start()
        time.sleep(0.5)
        answered = httpx.get(f"{served_admin}/livez", timeout=5)
        answered_after = time.monotonic() - started
        checking.join(timeout=30)
    listener.close()
    assert answered.status_code == 200 and answered_after < 2.5, f"/livez waited {answered_after:.1f} s for the check"
    [report] = reports
    assert report.status_code == 200 and report.json()["ok"] is False
    assert time.monotonic() - started >= 3, "the check really waited for the silent server"
