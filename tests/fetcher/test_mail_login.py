"""Logging in to the stack's Dovecot over IMAP and POP3: SASL PLAIN versus LOGIN and
USER/PASS, non-ASCII passwords, plaintext refused, wrong passwords, user names in the
Exchange shared-mailbox form, and certificates nobody trusts.

Each failing login comes from a fresh loopback address (see conftest), and any address
but 127.0.0.1 is a remote, non-secure client to Dovecot.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from mailintake.database import engine_for
from mailintake.stack import Stack
from services.fetcher.connection_check import check_account
from services.fetcher.mail_source import StepFailed
from services.fetcher.tables import AccountStatus

pytestmark = pytest.mark.stack

PLAINTEXT_DISALLOWED = "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."


@pytest.mark.parametrize(("protocol", "security"), [("imap", "tls"), ("imap", "starttls"), ("pop3", "tls"), ("pop3", "starttls")])
def test_a_non_ascii_password_works_with_sasl_plain(stack, unique, account_for, protocol, security):
    user = stack.user("umlaut")
    assert not user.password.isascii()
    report = check_account(account_for(user, protocol=protocol, security=security), timeout=10)
    assert report.ok, report.failure
    method = "AUTHENTICATE PLAIN" if protocol == "imap" else "AUTH PLAIN"
    assert [s.detail for s in report.steps if s.name == "authentication"] == [f"{method} as {user.name}"]


def test_a_non_ascii_password_is_not_sent_with_imap_login(stack, unique, account_for, fetcher_for):
    """imaplib sends LOGIN as ASCII and raises UnicodeEncodeError before anything is sent,
    so there is no server reply to show: the failure says exactly that, without echoing
    the character (and so part of the password) that UnicodeEncodeError would quote."""
    user = stack.user("umlaut")
    account = account_for(user, id=f"utf-login-{unique}", prevent_plaintext_login=False)
    report = check_account(account, timeout=10)
    failure = report.failure
    assert failure is not None and failure.name == "authentication"
    assert failure.server_reply is None
    assert "The password was not sent: IMAP LOGIN carries only ASCII" in failure.detail
    assert "UnicodeEncodeError" in failure.detail and "prevent_plaintext_login on" in failure.detail
    assert "ä" not in report.model_dump_json()
    with pytest.raises(StepFailed, match="IMAP LOGIN carries only ASCII"):
        fetcher_for(account).poll(account)


def test_pop3_pass_carries_a_non_ascii_password_as_utf8_which_dovecot_accepts(stack, unique, account_for):
    """Unlike IMAP LOGIN, poplib sends PASS as UTF-8; Dovecot compares bytes and accepts.
    A server that stored the password in another charset would refuse; SASL PLAIN is
    defined as UTF-8, which is why prevent_plaintext_login is the default."""
    user = stack.user("umlaut")
    report = check_account(account_for(user, protocol="pop3", prevent_plaintext_login=False), timeout=10)
    assert report.ok, report.failure
    assert [s.detail for s in report.steps if s.name == "authentication"] == [f"USER/PASS as {user.name}"]


@pytest.mark.parametrize(
    ("protocol", "prevent", "reply_contains", "explanation"),
    [
        ("imap", False, " STARTTLS LOGINDISABLED", "RFC 3501 forbids sending LOGIN"),
        ("imap", True, " STARTTLS LOGINDISABLED", "no SASL mechanism we may use"),
        ("pop3", False, f"-ERR [AUTH] {PLAINTEXT_DISALLOWED}", None),
        ("pop3", True, "CAPA, TOP, UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, STLS, SASL", "no SASL mechanism we may use"),
    ],
)
def test_plaintext_login_from_a_remote_address_is_refused_with_the_servers_words(
    stack, unique, account_for, loopback_address, protocol, prevent, reply_contains, explanation
):
    account = account_for(stack.user("demo"), protocol=protocol, security="none", prevent_plaintext_login=prevent)
    report = check_account(account, timeout=10, source_address=loopback_address())
    failure = report.failure
    assert failure is not None and failure.name == "authentication"
    if explanation is None:
        assert failure.server_reply == reply_contains, "exactly as Dovecot sent it"
    else:
        assert reply_contains in failure.server_reply and explanation in failure.detail
        assert "The password was not sent" in failure.detail
        capabilities = next(s for s in report.steps if s.name == "capabilities")
        assert capabilities.server_reply == failure.server_reply


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_security_none_never_sends_the_password_while_prevent_plaintext_login_is_on(stack, unique, account_for, protocol):
    # From 127.0.0.1 Dovecot calls the connection secure and offers PLAIN; we still refuse.
    report = check_account(account_for(stack.user("demo"), protocol=protocol, security="none"), timeout=10)
    failure = report.failure
    assert failure is not None and failure.name == "authentication" and failure.server_reply is None
    assert failure.detail.startswith("The password was not sent: with security none")


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_security_none_with_plaintext_login_allowed_logs_in_where_the_server_permits(stack, unique, account_for, protocol):
    report = check_account(account_for(stack.user("demo"), protocol=protocol, security="none", prevent_plaintext_login=False), timeout=10)
    assert report.ok, report.failure
    assert next(s for s in report.steps if s.name == "tls").outcome.value == "skipped"


@pytest.mark.parametrize(
    ("protocol", "exact_reply"),
    [("imap", "[AUTHENTICATIONFAILED] Authentication failed."), ("pop3", "-ERR [AUTH] Authentication failed.")],
)
def test_a_wrong_password_fails_the_poll_with_the_servers_exact_reply(
    stack, unique, account_for, fetcher_for, loopback_address, protocol, exact_reply
):
    account = account_for(stack.user("demo"), id=f"wrong-{unique}", protocol=protocol, password="not-the-password")
    with pytest.raises(StepFailed) as failure:
        fetcher_for(account, source_address=loopback_address()).poll(account)
    assert (failure.value.step, failure.value.server_reply, failure.value.message) == (
        "authentication",
        exact_reply,
        exact_reply,
    )
    with engine_for(stack.database_url).connect() as connection:
        status = connection.execute(select(AccountStatus).where(AccountStatus.account_id == account.id)).one()
    assert (status.last_error_step, status.last_error, status.consecutive_failures) == ("authentication", exact_reply, 1)
    assert status.last_success_at is None and status.last_error_at == status.last_poll_at


@pytest.mark.parametrize(
    "username",
    [
        "Domain\\Max.Mustermann\\Shared.MailboxAlias",
        # A space and a double quote: sent unquoted in LOGIN, the server would see other arguments.
        'Domain\\Max "Maxi" Mustermann\\Shared.MailboxAlias',
    ],
)
def test_a_shared_mailbox_user_name_reaches_the_server_intact(stack, account_for, loopback_address, username):
    """No such mailbox exists, so every login fails; Dovecot's log shows the user name it received."""
    demo = stack.user("demo")
    cases = {
        loopback_address(): account_for(demo, username=username),
        loopback_address(): account_for(demo, username=username, prevent_plaintext_login=False),
        loopback_address(): account_for(demo, protocol="pop3", username=username),
        loopback_address(): account_for(demo, protocol="pop3", username=username, prevent_plaintext_login=False),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        reports = dict(zip(cases, pool.map(lambda item: check_account(item[1], timeout=15, source_address=item[0]), cases.items())))
    replies = {r.failure.server_reply for r in reports.values()}
    # A mangled command would get "BAD ..." or another -ERR: the server parsed every attempt as a login.
    assert replies == {"[AUTHENTICATIONFAILED] Authentication failed.", "-ERR [AUTH] Authentication failed."}
    # Dovecot logs a failed login when the client has gone, a moment after our side returned.
    deadline = time.monotonic() + 10
    while True:
        log = Stack().logs("dovecot", lines=2000)["dovecot"].splitlines()
        logged = {a: [line for line in log if f"rip={a}," in line and "auth failed" in line] for a in cases}
        if all(logged.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for address, lines in logged.items():
        assert lines and all(f"user=<{username}>" in line for line in lines), (address, lines)


@pytest.mark.parametrize(("protocol", "security"), [("imap", "tls"), ("imap", "starttls"), ("pop3", "tls"), ("pop3", "starttls")])
def test_a_certificate_from_an_untrusted_ca_is_rejected(
    stack, unique, account_for, fetcher_for, untrusted_ca_file, protocol, security
):
    account = account_for(stack.user("demo"), id=f"ca-{unique}", protocol=protocol, security=security, ca_file=untrusted_ca_file)
    with pytest.raises(StepFailed) as failure:
        fetcher_for(account).poll(account)
    assert failure.value.step == "tls"
    assert failure.value.message == "certificate verify failed: unable to get local issuer certificate"
