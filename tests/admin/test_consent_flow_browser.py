""""Connect with Microsoft" in headless Chromium: the admin fills in an
oauth2_refresh_token account, signs in and consents at the stack's REAL OpenID Connect
provider (oidc-provider, its development login and consent pages), comes back to the
admin app, and the account is stored with a refresh token that then logs in to Dovecot
over XOAUTH2. Also: a tampered or replayed state is refused, and a denied consent shows
the provider's own error.
"""

from __future__ import annotations

import os
import ssl
from urllib.parse import urlencode

import pytest

from mailintake.database import engine_for
from services.admin.access import AuditLog
from services.admin.app import create_app
from services.admin.settings import AdminSettings
from tests.admin.served_admin import free_loopback_port, serving
from tests.admin.test_accounts_page_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, check_connection, screenshot

pytestmark = pytest.mark.stack

CLIENT = "mailintake-delegated"
SCOPES = "mail email"
MAILBOX = "alice"


def spki_sha256(pem_file) -> str:
    """Base64 of the SHA-256 of a certificate's public key, as Chromium's --ignore-certificate-errors-spki-list takes it."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = x509.load_pem_x509_certificate(pem_file.read_bytes())
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(stack):
    """Chromium trusting the stack's server certificate, and nothing more: Chromium does
    not read our CA file, so the stack server's key is pinned instead (the provider is
    HTTPS); any other certificate that does not verify is still refused."""
    from playwright.sync_api import sync_playwright

    from mailintake.stack.layout import StackLayout

    trust = f"--ignore-certificate-errors-spki-list={spki_sha256(StackLayout(stack.state_dir).server_cert)}"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, trust], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def served_admin_with_public_url(stack):
    """The admin app on a free loopback port whose public URL is that address (the redirect URI's base)."""
    port = free_loopback_port()
    app = create_app(AdminSettings(database_url=stack.database_url, public_url=f"http://127.0.0.1:{port}"))
    with serving(app, port) as public_url:
        yield public_url


@pytest.fixture
def admin_page(browser, served_admin_with_public_url, admin_token):
    context = browser.new_context(base_url=served_admin_with_public_url, viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Admin token").fill(admin_token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/accounts")
    yield page
    context.close()


@pytest.fixture
def account_id(stack, unique):
    from services.fetcher.account_store import AccountStore

    account_id = f"consent-{unique}"
    yield account_id
    AccountStore(engine_for(stack.database_url), None).delete(account_id)


def fill_oauth_account(page, stack, account_id: str, provider: str = "microsoft") -> None:
    ca_file = os.path.relpath(stack.ca_file)
    page.goto("/accounts/new")
    page.get_by_label("Account id").fill(account_id)
    page.get_by_label("Display name").fill(f"Alice over OAuth2 {account_id}")
    page.get_by_label("Server").fill(stack.host)
    page.get_by_label("Port").fill(str(stack.imaps_port))
    page.get_by_label("CA file", exact=True).fill(ca_file)
    page.get_by_label("User name").fill(f"{MAILBOX}@{stack.mail_domain}")
    assert page.get_by_label("Password").is_visible()
    assert page.get_by_role("button", name="Connect with Microsoft").is_hidden()
    page.get_by_label("Authentication").select_option("oauth2_refresh_token")
    # The page's script shows the method's fields only.
    assert page.get_by_label("Password").is_hidden()
    page.get_by_label("Identity provider", exact=True).select_option(provider)
    page.get_by_label("Authority").fill(stack.oidc_issuer)
    page.get_by_label("Client id").fill(CLIENT)
    page.get_by_label("Client secret").fill(stack.oidc_client(CLIENT).client_secret)
    page.get_by_label("Scopes").fill(SCOPES)
    page.get_by_label("Identity provider CA bundle").fill(ca_file)


def connect_and_sign_in(page, stack, provider: str = "microsoft") -> None:
    """Press "Connect with Microsoft" and sign in as the mailbox at the provider, up to its consent page."""
    button = "Connect with Microsoft" if provider == "microsoft" else "Connect with the identity provider"
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{stack.oidc_issuer}/interaction/**")
    # A second connect in the same browser finds the provider's session: consent only.
    if page.locator("input[name=login]").count():
        page.locator("input[name=login]").fill(MAILBOX)
        page.locator("input[name=password]").fill("not-checked-by-the-development-login")
        page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").wait_for()


@pytest.mark.parametrize("provider", ["microsoft", "oidc"])
def test_connect_signs_in_at_the_provider_and_stores_a_refresh_token_that_logs_in(
    stack, admin_page, account_id, admin_token, provider
):
    """microsoft goes through msal (oidc_authority), oidc through authlib: both against the same real provider."""
    from imapclient import IMAPClient

    from services.fetcher.account_store import AccountStore
    from services.fetcher.oauth_tokens import TokenBroker
    from services.fetcher.password_cipher import cipher_from_settings
    from services.fetcher.settings import AccountEncryptionSettings

    page = admin_page
    fill_oauth_account(page, stack, account_id, provider)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("fieldset", has=page.get_by_text("OAuth2", exact=True)).screenshot(
        path=str(ARTIFACTS / f"account-form-oauth2-{provider}.png")
    )
    connect_and_sign_in(page, stack, provider)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/accounts/oauth/callback?**")
    screenshot(page, f"account-consent-done-{provider}.png")
    outcome = page.locator("#consent-outcome")
    assert outcome.text_content().split() == (
        # The ID token names the user by its subject only (the provider keeps email for userinfo).
        f"The account {account_id} is saved with a refresh token from {stack.oidc_issuer}, signed in as {MAILBOX}."
    ).split()
    callback_url = page.url
    page.get_by_role("link", name="Back to the accounts").click()
    page.wait_for_url("**/accounts?saved=*")
    assert page.locator(f'tr[data-account-id="{account_id}"]').count() == 1

    # The stored refresh token is real: the token layer gets an access token with it, which Dovecot takes over XOAUTH2.
    store = AccountStore(engine_for(stack.database_url), cipher_from_settings(AccountEncryptionSettings()))
    stored = store.get(account_id)
    refresh_token = stored.oauth2.refresh_token.get_secret_value()
    # The provider rotates refresh tokens on use (as Microsoft's does): the new one is stored, as the fetcher does.
    access_token = TokenBroker(timeout=15, on_rotated_refresh_token=store.store_rotated_refresh_token).access_token(stored)
    assert store.get(account_id).oauth2.refresh_token.get_secret_value() != refresh_token, "rotated and stored"
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with IMAPClient(stack.host, port=stack.imaps_port, ssl=True, ssl_context=context, timeout=15) as imap:
        imap.oauth2_login(f"{MAILBOX}@{stack.mail_domain}", access_token)
        assert imap.select_folder("INBOX", readonly=True)

    # Audited as an event, by the admin who connected, without the token.
    [entry] = [e for e in AuditLog(engine_for(stack.database_url)).entries(account_id) if e.action == "account.oauth2_connect"]
    assert entry.actor.startswith("token:tester-") and "oauth2.refresh_token" in entry.fields
    assert refresh_token not in repr(entry)

    # The edit page says a token is stored, and never shows it; its connection check uses it (token step first).
    page.goto(f"/accounts/{account_id}/edit")
    assert page.locator("#refresh-token-stored").is_visible()
    assert refresh_token not in page.content()
    assert check_connection(page).startswith("Connection OK: every step passed.")
    assert page.locator("#check-steps li").first.text_content().startswith("token: ok")
    # The check rotated the refresh token too, and stored the new one: a second check still works.
    assert check_connection(page).startswith("Connection OK: every step passed.")

    # The answer is single use: the same callback again is refused.
    page.goto(callback_url)
    assert page.locator("#consent-problem").text_content() == (
        "Refused: no consent flow has this state: it was used already, or never started here."
    )

    # Connecting again from the edit page (client secret left empty: the stored one is
    # kept, as the provider and client are the same) replaces the stored refresh token.
    before = store.get(account_id).oauth2.refresh_token.get_secret_value()
    page.goto(f"/accounts/{account_id}/edit")
    connect_and_sign_in(page, stack, provider)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/accounts/oauth/callback?**")
    assert page.locator("#consent-outcome").text_content().split()[:3] == ["The", "account", account_id]
    again = store.get(account_id)
    assert again.oauth2.refresh_token.get_secret_value() != before
    assert again.oauth2.client_secret.get_secret_value() == stack.oidc_client(CLIENT).client_secret
    connects = [e for e in AuditLog(engine_for(stack.database_url)).entries(account_id) if e.action == "account.oauth2_connect"]
    assert len(connects) == 2


def test_a_tampered_state_is_refused(stack, admin_page, account_id):
    page = admin_page
    fill_oauth_account(page, stack, account_id, "oidc")
    connect_and_sign_in(page, stack, "oidc")
    # The provider's answer arrives, but with a state this browser's flow never had.
    query = urlencode({"code": "a-code-for-someone-else", "state": "tampered-" + account_id})
    response = page.goto(f"/accounts/oauth/callback?{query}")
    assert response.status == 400
    assert page.locator("#consent-problem").text_content() == (
        "Refused: no consent flow has this state: it was used already, or never started here."
    )
    assert page.request.get(f"/api/accounts/{account_id}").status == 404


def test_a_denied_consent_shows_the_providers_error(stack, admin_page, account_id):
    page = admin_page
    fill_oauth_account(page, stack, account_id)
    connect_and_sign_in(page, stack)
    page.get_by_role("link", name="[ Cancel ]").click()
    page.wait_for_url("**/accounts/oauth/callback?**")
    assert page.locator("#provider-error").text_content() == "access_denied"
    assert page.locator("#provider-error-description").text_content() == "End-User aborted interaction"
    screenshot(page, "account-consent-denied.png")
    assert page.request.get(f"/api/accounts/{account_id}").status == 404
    # Back to the form: filled in again with the account's settings, but not its secrets.
    page.get_by_role("link", name="Back to the account").click()
    page.wait_for_url("**/accounts/new?**")
    assert page.get_by_label("Account id").input_value() == account_id
    assert page.get_by_label("Authentication").input_value() == "oauth2_refresh_token"
    assert page.get_by_label("Client id").input_value() == CLIENT
    assert page.get_by_label("Scopes").input_value() == SCOPES
    assert page.get_by_label("Prevent text-only login").is_checked()
    assert page.get_by_label("Client secret").input_value() == ""
    assert stack.oidc_client(CLIENT).client_secret not in page.url


def test_a_refused_code_exchange_shows_the_providers_error(stack, admin_page, account_id):
    """The provider refuses the token request itself (a wrong client secret): its words, exactly."""
    page = admin_page
    fill_oauth_account(page, stack, account_id)
    page.get_by_label("Client secret").fill("not-the-client-secret")
    connect_and_sign_in(page, stack)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/accounts/oauth/callback?**")
    assert page.locator("#provider-error").text_content() == "invalid_client"
    assert page.locator("#provider-error-description").text_content() == "client authentication failed"
    assert page.request.get(f"/api/accounts/{account_id}").status == 404
