"""OAuth2 accounts against real peers: the stack's OpenID Connect provider (oidc-provider)
issues the tokens, msal or the standard client gets them, and Dovecot's oauth2 passdb
introspects them for IMAP and POP3 XOAUTH2 / OAUTHBEARER logins.

Dovecot delays further failed logins from one address, so every refusal test logs in
from a fresh loopback address (``loopback_address``).
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from services.fetcher.account import Account
from services.fetcher.connection_check import check_account
from services.fetcher.imap_mailbox import ImapSession
from services.fetcher.mail_source import StepFailed
from services.fetcher.oauth_tokens import TokenBroker, TokenRefused
from services.fetcher.pop3_mailbox import Pop3Session
from tests.peers.oidc_consent import sign_in_and_consent

IMAP_REFUSAL = "[AUTHENTICATIONFAILED] Authentication failed."
POP3_REFUSAL = "-ERR [AUTH] Authentication failed."
#: What Dovecot's oauth2 passdb sends as SASL error challenge (RFC 7628 status JSON).
XOAUTH2_CHALLENGE = '{"status":"401","schemes":"bearer","scope":"mail","openid-configuration":"%s/.well-known/openid-configuration"}'
OAUTHBEARER_CHALLENGE = '{"status":"invalid_token","openid-configuration":"%s/.well-known/openid-configuration"}'


@pytest.fixture
def oauth_account(stack):
    """Call with a mailbox name and fields for an OAuth2 account on the stack (client credentials by default)."""

    def build(mailbox: str, *, protocol: str = "imap", provider: str = "oidc", client_id: str = "mailintake-app", **fields) -> Account:
        client = stack.oidc_client(client_id)
        address = f"{mailbox}@{stack.mail_domain}"
        oauth2 = {
            "provider": provider,
            "authority": stack.oidc_issuer,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "ca_file": str(stack.ca_file),
            "scopes": [f"mailbox:{address}"],
        } | fields.pop("oauth2", {})
        values = {
            "id": f"oauth-{protocol}-{mailbox}",
            "name": f"OAuth {address}",
            "protocol": protocol,
            "host": stack.host,
            "port": stack.imaps_port if protocol == "imap" else stack.pop3s_port,
            "ca_file": stack.ca_file,
            "username": address,
            "authentication": "oauth2_client_credentials",
            "oauth2": oauth2,
            "poll_interval_seconds": 5,
        }
        return Account.model_validate(values | fields)

    return build


def _provider_post(stack, path: str, client_id: str, **form) -> requests.Response:
    client = stack.oidc_client(client_id)
    return requests.post(
        f"{stack.oidc_issuer}{path}", data=form, auth=(client.client_id, client.client_secret), verify=str(stack.ca_file), timeout=10
    )


def _app_token(stack, mailbox: str, client_id: str = "mailintake-app") -> str:
    answer = _provider_post(stack, "/token", client_id, grant_type="client_credentials", scope=f"mailbox:{mailbox}@{stack.mail_domain}")
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def _login(account: Account, token: str, mechanism: str, source_address: str | None = None) -> str:
    session_class = ImapSession if account.protocol.value == "imap" else Pop3Session
    session = session_class(account, 15, source_address=source_address, access_token=lambda: token, bearer_mechanisms=(mechanism,))
    try:
        session.connect()
        session.start_tls()
        session.capabilities()
        return session.authenticate()
    finally:
        session.close()


# --- the provider ---------------------------------------------------------------------


def test_provider_tokens_name_their_mailbox_for_dovecot(stack):
    token = _app_token(stack, "alice")
    seen = _provider_post(stack, "/token/introspection", "dovecot", token=token).json()
    assert seen["active"] is True
    assert seen["username"] == f"alice@{stack.mail_domain}"
    assert seen["client_id"] == "mailintake-app"

    consent = sign_in_and_consent(stack, "bob")
    seen = _provider_post(stack, "/token/introspection", "dovecot", token=consent.access_token).json()
    assert seen["active"] is True and seen["username"] == f"bob@{stack.mail_domain}"


def test_provider_refuses_an_app_token_for_a_mailbox_the_app_may_not_read(stack):
    answer = _provider_post(stack, "/token", "mailintake-app", grant_type="client_credentials", scope=f"mailbox:bob@{stack.mail_domain}")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"


# --- the token layer ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["oidc", "microsoft"])
def test_client_credentials_token_from_msal_and_the_standard_client(stack, oauth_account, provider):
    account = oauth_account("alice", provider=provider)
    broker = TokenBroker()
    token = broker.access_token(account)
    seen = _provider_post(stack, "/token/introspection", "dovecot", token=token).json()
    assert seen["active"] is True and seen["username"] == account.username
    assert broker.access_token(account) == token
    assert broker.requests == 1


@pytest.mark.parametrize("provider", ["oidc", "microsoft"])
def test_refresh_token_is_redeemed_and_its_rotation_handed_over(stack, oauth_account, provider):
    consent = sign_in_and_consent(stack, "alice")
    account = oauth_account(
        "alice",
        provider=provider,
        authentication="oauth2_refresh_token",
        client_id="mailintake-delegated",
        # The local provider's scope; without it msal would ask for Exchange Online's.
        oauth2={"refresh_token": consent.refresh_token, "scopes": ["mail"]},
    )
    rotated: list[tuple[str, str, str]] = []
    broker = TokenBroker(on_rotated_refresh_token=lambda *change: rotated.append(change))
    token = broker.access_token(account)
    assert _provider_post(stack, "/token/introspection", "dovecot", token=token).json()["username"] == account.username
    assert len(rotated) == 1
    account_id, previous, new = rotated[0]
    assert (account_id, previous) == (account.id, consent.refresh_token) and new != consent.refresh_token
    # The provider retired the old refresh token: only the rotated one works now.
    reused = _provider_post(
        stack, "/token", "mailintake-delegated", grant_type="refresh_token", refresh_token=consent.refresh_token
    )
    assert reused.json()["error"] == "invalid_grant"


def test_cached_token_is_reused_and_replaced_before_it_expires(stack, oauth_account):
    # mailintake-short-lived tokens live 4 s: with a 300 s margin the broker replaces them
    # once less than half their life is left (2 s), not on every call.
    now = [time.time()]
    account = oauth_account("alice", client_id="mailintake-short-lived")
    broker = TokenBroker(refresh_margin_seconds=300, clock=lambda: now[0])
    first = broker.access_token(account)
    now[0] += 1.5
    assert broker.access_token(account) == first
    assert broker.requests == 1
    now[0] += 1.0
    second = broker.access_token(account)
    assert second != first
    assert broker.requests == 2


def test_one_request_for_many_threads_of_one_account(oauth_account):
    account = oauth_account("alice")
    broker = TokenBroker()
    tokens: list[str] = []
    start = threading.Barrier(8)

    def poll() -> None:
        start.wait()
        tokens.append(broker.access_token(account))

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert broker.requests == 1


@pytest.mark.parametrize("provider", ["oidc", "microsoft"])
def test_wrong_client_secret_raises_the_providers_exact_words(oauth_account, provider):
    account = oauth_account("alice", provider=provider, oauth2={"client_secret": "not-the-secret"})
    with pytest.raises(TokenRefused) as refused:
        TokenBroker().access_token(account)
    assert refused.value.step == "token"
    assert refused.value.server_reply == "invalid_client: client authentication failed"
    assert refused.value.error_code == "invalid_client"


# --- SASL logins ----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_bearer_login_succeeds(stack, oauth_account, protocol, mechanism):
    account = oauth_account("alice", protocol=protocol)
    done = _login(account, _app_token(stack, "alice"), mechanism)
    assert done.endswith(f"{mechanism} as alice@{stack.mail_domain}")


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_expired_token_is_refused_with_dovecots_reply(stack, oauth_account, loopback_address, protocol, mechanism):
    token = _app_token(stack, "alice", client_id="mailintake-short-lived")
    time.sleep(5)  # the client's tokens live 4 s
    with pytest.raises(StepFailed) as refused:
        _login(oauth_account("alice", protocol=protocol), token, mechanism, loopback_address())
    assert refused.value.step == "authentication"
    assert refused.value.server_reply == (IMAP_REFUSAL if protocol == "imap" else POP3_REFUSAL)
    challenge = (XOAUTH2_CHALLENGE if mechanism == "XOAUTH2" else OAUTHBEARER_CHALLENGE) % stack.oidc_issuer
    assert challenge in refused.value.explanation


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_revoked_token_is_refused_at_once(stack, oauth_account, loopback_address, protocol):
    token = _app_token(stack, "alice")
    account = oauth_account("alice", protocol=protocol)
    assert "XOAUTH2" in _login(account, token, "XOAUTH2", loopback_address())
    assert _provider_post(stack, "/token/revocation", "mailintake-app", token=token).status_code == 200
    with pytest.raises(StepFailed) as refused:
        _login(account, token, "XOAUTH2", loopback_address())
    assert refused.value.server_reply == (IMAP_REFUSAL if protocol == "imap" else POP3_REFUSAL)


def test_token_of_one_mailbox_does_not_open_another(stack, oauth_account, loopback_address):
    with pytest.raises(StepFailed) as refused:
        _login(oauth_account("support"), _app_token(stack, "alice"), "XOAUTH2", loopback_address())
    assert refused.value.server_reply == IMAP_REFUSAL


def test_no_bearer_mechanism_on_offer_sends_no_token(stack, oauth_account):
    # From 127.0.0.2 without TLS Dovecot offers no plaintext mechanism, XOAUTH2 and OAUTHBEARER included.
    account = oauth_account("alice", port=stack.imap_port, security="none")
    sent: list[str] = []
    session = ImapSession(account, 10, source_address="127.0.0.2", access_token=lambda: sent.append("asked") or "unused")
    try:
        session.connect()
        session.capabilities()
        with pytest.raises(StepFailed) as refused:
            session.authenticate()
    finally:
        session.close()
    assert refused.value.step == "authentication"
    assert refused.value.server_reply == session.capability_line and "AUTH=XOAUTH2" not in session.capability_line
    assert "none of the SASL mechanisms that carry an OAuth2 token" in refused.value.explanation
    assert sent == []


# --- the connection check -------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_check_of_an_oauth_account_runs_token_first(oauth_account, protocol):
    account = oauth_account("alice", protocol=protocol)
    report = check_account(account, timeout=15)
    assert report.ok, report
    assert [step.name for step in report.steps] == ["token", "connect", "tls", "capabilities", "authentication", "select"]
    assert "XOAUTH2" in report.steps[4].detail


def test_check_shows_the_providers_refusal_of_a_revoked_refresh_token(stack, oauth_account):
    consent = sign_in_and_consent(stack, "alice")
    revoked = _provider_post(stack, "/token/revocation", "mailintake-delegated", token=consent.refresh_token)
    assert revoked.status_code == 200
    account = oauth_account(
        "alice", authentication="oauth2_refresh_token", client_id="mailintake-delegated",
        oauth2={"refresh_token": consent.refresh_token, "scopes": []},
    )
    report = check_account(account, timeout=15)
    assert not report.ok
    assert [(s.name, s.outcome.value) for s in report.steps] == [("token", "failed")]
    assert report.steps[0].server_reply == "invalid_grant: grant request is invalid"
    assert consent.refresh_token not in report.model_dump_json()


# --- the fetcher ----------------------------------------------------------------------


def _mail(subject: str) -> bytes:
    return f"From: someone@example.com\r\nTo: alice@mailintake.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\nBody of {subject}\r\n".encode()


def _refusals(account_id: str, error: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("mailintake_fetcher_token_refusals_total", {"account_id": account_id, "error": error}) or 0.0


def test_fetcher_polls_an_oauth_imap_account_end_to_end(stack, oauth_account, fetcher_for, imap_client, mail_raw, unique):
    alice, folder = stack.user("alice"), f"OAuth{unique}"
    with imap_client(alice) as client:
        client.create_folder(folder)
        for number in range(3):
            client.append(folder, _mail(f"oauth-{unique}-{number}"))
    account = oauth_account("alice", id=f"oauth-e2e-{unique}", folder=folder)
    assert fetcher_for(account).poll(account) == 3
    records = mail_raw.records(account.id)
    assert sorted(r.message_id for r in records) == [f"<oauth-{unique}-{n}@example.com>" for n in range(3)]
    with imap_client(alice) as client:
        client.select_folder(folder, readonly=True)
        assert all(b"\\Seen" in flags for flags in client.get_flags(client.search("ALL")).values())


def test_refresh_failure_fails_the_poll_loudly(stack, oauth_account, fetcher_for, unique):
    from sqlalchemy import create_engine, select

    from services.fetcher.tables import AccountStatus

    consent = sign_in_and_consent(stack, "alice")
    assert _provider_post(stack, "/token/revocation", "mailintake-delegated", token=consent.refresh_token).status_code == 200
    account = oauth_account(
        "alice", id=f"oauth-refused-{unique}", authentication="oauth2_refresh_token", client_id="mailintake-delegated",
        oauth2={"refresh_token": consent.refresh_token, "scopes": ["mail"]},
    )
    before = _refusals(account.id, "invalid_grant")
    with pytest.raises(StepFailed) as failed:
        fetcher_for(account).poll(account)
    assert failed.value.step == "token"
    assert failed.value.message == "invalid_grant: grant request is invalid"
    engine = create_engine(stack.database_url)
    with engine.connect() as connection:
        status = connection.execute(select(AccountStatus).where(AccountStatus.account_id == account.id)).one()
    engine.dispose()
    assert (status.last_error_step, status.last_error, status.consecutive_failures) == (
        "token", "invalid_grant: grant request is invalid", 1,
    )
    assert _refusals(account.id, "invalid_grant") == before + 1


def test_rotated_refresh_token_survives_a_fetcher_restart(stack, oauth_account, fetcher_for, unique):
    from sqlalchemy import create_engine

    from services.fetcher.account_store import AccountStore
    from services.fetcher.password_cipher import PasswordCipher, generate_key
    from tests.database_schemas import migrated_schema

    consent = sign_in_and_consent(stack, "alice")
    account = oauth_account(
        "alice", id=f"oauth-rotated-{unique}", authentication="oauth2_refresh_token", client_id="mailintake-delegated",
        folder="Drafts", oauth2={"refresh_token": consent.refresh_token, "scopes": ["mail"]},
    )
    with migrated_schema(stack.database_url, "oauth_rotation") as url:
        store = AccountStore(create_engine(url), PasswordCipher([generate_key()], "test keys"))
        store.upsert(account)
        first = fetcher_for(account, on_rotated_refresh_token=store.store_rotated_refresh_token)
        first.poll(store.get(account.id))
        stored = store.get(account.id)
        assert stored.oauth2.refresh_token.get_secret_value() != consent.refresh_token
        # A restarted fetcher starts from the stored (rotated) token; the consent's is retired.
        fetcher_for(stored, on_rotated_refresh_token=store.store_rotated_refresh_token).poll(stored)
        with pytest.raises(StepFailed, match="invalid_grant"):
            fetcher_for(account).poll(account)
        store.engine.dispose()


def test_msal_authenticates_the_app_with_its_certificate(stack, oauth_account, tmp_path):
    account = oauth_account(
        "alice", provider="microsoft", client_id="mailintake-app-certificate",
        oauth2={"client_secret": None, "certificate_file": str(stack.oidc_app_certificate)},
    )
    token = TokenBroker().access_token(account)
    assert _provider_post(stack, "/token/introspection", "dovecot", token=token).json()["username"] == account.username

    # Another key pair under the same client id: the provider refuses the signed assertion.
    from mailintake.stack.oidc_provider import ensure_app_certificate

    impostor = tmp_path / "impostor.pem"
    ensure_app_certificate(impostor)
    with pytest.raises(TokenRefused) as refused:
        TokenBroker().access_token(account.model_copy(update={"oauth2": account.oauth2.model_copy(update={"certificate_file": impostor})}))
    assert refused.value.server_reply == "invalid_client: client authentication failed"


def test_accounts_check_prints_the_providers_refusal(stack, oauth_account, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from mailintake.cli import app

    account = oauth_account("alice", id="wrong-secret", oauth2={"client_secret": "not-the-secret"})
    entry = account.model_dump(mode="json", exclude={"sender", "ticket_options"})
    entry["oauth2"]["client_secret"] = "not-the-secret"
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [entry]}))
    result = CliRunner().invoke(app, ["accounts", "check", "--file", str(path)], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "server: invalid_client: client authentication failed" in result.output
    assert result.output.rstrip().endswith("FAILED at token: invalid_client: client authentication failed")
    assert "not-the-secret" not in result.output


def test_a_rotation_that_cannot_be_stored_fails_loudly_and_is_stored_next_time(stack, oauth_account):
    consent = sign_in_and_consent(stack, "alice")
    account = oauth_account(
        "alice", authentication="oauth2_refresh_token", client_id="mailintake-delegated",
        oauth2={"refresh_token": consent.refresh_token, "scopes": ["mail"]},
    )
    calls: list[tuple[str, str]] = []

    def store(account_id: str, previous: str, new: str) -> None:
        calls.append((previous, new))
        if len(calls) == 1:
            raise ConnectionError("database is down")

    broker = TokenBroker(on_rotated_refresh_token=store)
    with pytest.raises(TokenRefused) as refused:
        broker.access_token(account)
    assert refused.value.error_code == "not_stored" and "database is down" in refused.value.explanation
    # The poll after works with the rotated token kept in memory, and stores its rotation
    # as a replacement of the token still in the store (the consent's).
    broker.access_token(account)
    assert calls[1][0] == consent.refresh_token and calls[1][1] not in (consent.refresh_token, calls[0][1])
