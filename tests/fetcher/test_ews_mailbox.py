"""The EWS mailbox (exchangelib) against the EWS stub over HTTPS with the stack's CA.

The stub (tests/peers/ews_stub) is a test peer written from Microsoft's EWS schema, not
an Exchange server. The Kerberos tests at the end run a real MIT KDC on loopback
(tests/peers/kerberos_kdc.py); the stub checks SPNEGO tokens with the service keytab
and the fetcher's ticket comes from kinit.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import pytest

from services.fetcher.account import Account
from services.fetcher.ews_mailbox import KERBEROS_MECHANISM, EwsAuthUnavailable, EwsMailbox, InMemoryItemMarks
from services.fetcher.mail_source import MailServerError
from tests.peers.ews_stub import EwsStub, StubExchange, received_sequence
from tests.peers.kerberos_kdc import LocalKdc


@pytest.fixture
def exchange():
    org = StubExchange()
    org.add_user("max", "Max-Pw-1", "max@example.test", principal="max@MAILINTAKE.TEST")
    org.add_mailbox("helpdesk@example.test", "Help Desk")
    org.add_mailbox("payroll@example.test", "Payroll")
    org.grant_delegate("max", "helpdesk@example.test")
    return org


@pytest.fixture
def start_stub(exchange, stack_tls):
    stubs = []

    def start(schemes=("Basic",), keytab=None):
        stub = EwsStub(exchange, stack_tls.server_cert, stack_tls.server_key, schemes, keytab=keytab).start()
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.stop()


def ews_account(stub, stack_tls, **changes):
    values = dict(
        id="desk-ews",
        name="Desk (EWS)",
        protocol="ews",
        host="localhost",
        port=stub.port,
        username="EXAMPLE\\max",
        password="Max-Pw-1",
        ca_file=stack_tls.ca_cert,
        prevent_ntlm=False,
    )
    return Account(**{**values, **changes})


def mime(number: int) -> bytes:
    return f"From: a@example.test\r\nSubject: mail {number}\r\nMessage-ID: <{number}@example.test>\r\n\r\nbody {number}\r\n".encode()


def deliver_shuffled(mailbox, count, folder=None):
    """Deliver ``count`` mails in random order; their receive times say which is oldest."""
    order = list(enumerate(received_sequence(count)))
    random.Random(7).shuffle(order)
    return {number: mailbox.deliver(mime(number), folder, received=when) for number, when in order}


def test_listing_pages_through_more_than_one_page_oldest_first(exchange, start_stub, stack_tls):
    stub = start_stub()
    ids = deliver_shuffled(exchange.mailbox("max@example.test"), 7)
    box = EwsMailbox(ews_account(stub, stack_tls), InMemoryItemMarks(), 10, page_size=3).open()
    try:
        pending = box.pending()
        assert pending == [f"ews:{ids[n]}" for n in range(7)]
        assert [c.paging for c in stub.calls_of("FindItem")] == [(0, 3), (3, 3), (6, 3)]
        mails = box.fetch(pending)
        assert [mails[s] for s in pending] == [mime(n) for n in range(7)]
        assert all(c.auth_scheme == "Basic" for c in stub.calls)
    finally:
        box.close()


def test_mark_read_after_the_ack_and_marks_keep_read_mails_from_coming_back(exchange, start_stub, stack_tls):
    stub = start_stub()
    mailbox = exchange.mailbox("max@example.test")
    first = mailbox.deliver(mime(1))
    opened_by_a_person = mailbox.deliver(mime(2), is_read=True)
    marks = InMemoryItemMarks()
    box = EwsMailbox(ews_account(stub, stack_tls), marks, 10).open()
    try:
        pending = box.pending()
        # A mail someone already read in Outlook is still new to the help desk.
        assert pending == [f"ews:{first}", f"ews:{opened_by_a_person}"]
        box.fetch(pending)
        assert not mailbox.inbox.items[first].is_read, "fetching must not change the mail"
        box.after_fetch(pending)
        box.advance(pending)
        assert all(item.is_read for item in mailbox.inbox.items.values())
        assert stub.calls_of("UpdateItem")
        third = mailbox.deliver(mime(3))
        assert box.pending() == [f"ews:{third}"]
    finally:
        box.close()


def test_move_after_fetch_into_a_subfolder_and_forget_the_marks(exchange, start_stub, stack_tls):
    stub = start_stub()
    mailbox = exchange.mailbox("max@example.test")
    done = mailbox.add_folder("Inbox/Done")
    deliver_shuffled(mailbox, 3)
    marks = InMemoryItemMarks()
    box = EwsMailbox(ews_account(stub, stack_tls, after_fetch="move:Inbox/Done"), marks, 10).open()
    try:
        pending = box.pending()
        box.after_fetch(box.fetch(pending))
        box.advance(pending)
        assert not mailbox.inbox.items and len(done.items) == 3
        assert box.pending() == []
        assert marks.produced("desk-ews", "INBOX") == set(), "marks of items that left the folder are forgotten"
        # Applying the action again (a crash before advance) is harmless.
        box.after_fetch(pending)
    finally:
        box.close()


def test_delete_after_fetch_is_a_soft_delete(exchange, start_stub, stack_tls):
    stub = start_stub()
    mailbox = exchange.mailbox("max@example.test")
    deliver_shuffled(mailbox, 2)
    box = EwsMailbox(ews_account(stub, stack_tls, after_fetch="delete"), InMemoryItemMarks(), 10).open()
    try:
        pending = box.pending()
        box.after_fetch(pending)
        assert not mailbox.inbox.items and len(mailbox.soft_deleted) == 2
        assert not mailbox.distinguished("deleteditems").items
    finally:
        box.close()


def test_a_folder_path_below_the_top_of_the_store(exchange, start_stub, stack_tls):
    stub = start_stub()
    mailbox = exchange.mailbox("max@example.test")
    queue = mailbox.add_folder("Support/Queue")
    item = mailbox.deliver(mime(1), queue)
    mailbox.deliver(mime(2))  # in the Inbox: not this account's folder
    box = EwsMailbox(ews_account(stub, stack_tls, folder="Support/Queue"), InMemoryItemMarks(), 10).open()
    try:
        assert box.pending() == [f"ews:{item}"]
    finally:
        box.close()
    missing = ews_account(stub, stack_tls, folder="Support/Nowhere")
    with pytest.raises(MailServerError) as error:
        EwsMailbox(missing, InMemoryItemMarks(), 10).open()
    assert error.value.step == "select folder 'Support/Nowhere'"


def test_delegate_access_to_a_shared_mailbox(exchange, start_stub, stack_tls):
    stub = start_stub()
    shared = exchange.mailbox("helpdesk@example.test")
    item = shared.deliver(mime(1))
    exchange.mailbox("max@example.test").deliver(mime(2))
    account = ews_account(stub, stack_tls, username="EXAMPLE\\max\\helpdesk")
    box = EwsMailbox(account, InMemoryItemMarks(), 10).open()
    try:
        pending = box.pending()
        assert pending == [f"ews:{item}"]
        box.after_fetch(box.fetch(pending))
    finally:
        box.close()
    assert stub.logins and all(login == ("Basic", "EXAMPLE\\max") for login in stub.logins)
    mailbox_calls = [c for c in stub.calls if c.operation != "ResolveNames"]
    # Delegate access: no impersonation header, the shared mailbox named in every request.
    assert all(c.impersonated is None for c in stub.calls)
    assert all(c.mailboxes == {"helpdesk@example.test"} for c in mailbox_calls)
    assert all(c.anchor_mailbox == "helpdesk@example.test" for c in mailbox_calls)
    assert shared.inbox.items[item].is_read


def test_a_shared_mailbox_without_delegate_rights_is_a_clear_error(exchange, start_stub, stack_tls):
    stub = start_stub()
    account = ews_account(stub, stack_tls, username="EXAMPLE\\max\\payroll@example.test")
    with pytest.raises(MailServerError) as error:
        EwsMailbox(account, InMemoryItemMarks(), 10).open()
    assert error.value.step == "select folder 'INBOX'"
    assert "ErrorAccessDenied" in error.value.server_reply


def test_prevent_ntlm_refuses_a_server_that_offers_only_ntlm(exchange, start_stub, stack_tls):
    stub = start_stub(schemes=("NTLM",))
    with pytest.raises(EwsAuthUnavailable) as error:
        EwsMailbox(ews_account(stub, stack_tls, prevent_ntlm=True), InMemoryItemMarks(), 10).open()
    assert error.value.step == "authentication"
    assert "offers ntlm" in str(error.value) and "only Kerberos (Negotiate)" in str(error.value)
    assert stub.logins == [], "not even an NTLM negotiate message may be sent"
    assert stub.calls == []


def test_prevent_ntlm_refuses_basic_too(exchange, start_stub, stack_tls):
    stub = start_stub(schemes=("Basic",))
    with pytest.raises(EwsAuthUnavailable, match="offers basic"):
        EwsMailbox(ews_account(stub, stack_tls, prevent_ntlm=True), InMemoryItemMarks(), 10).open()
    assert stub.logins == []


def test_wrong_password_names_the_step(exchange, start_stub, stack_tls):
    stub = start_stub()
    with pytest.raises(MailServerError) as error:
        EwsMailbox(ews_account(stub, stack_tls, password="wrong"), InMemoryItemMarks(), 10).open()
    assert error.value.step == "authentication"
    assert "Max-Pw-1" not in str(error.value) and "wrong" not in str(error.value)


def test_the_certificate_is_verified(exchange, start_stub, stack_tls):
    stub = start_stub()
    # Without the stack's CA the stub's certificate is unknown to the system trust store.
    with pytest.raises(MailServerError) as error:
        EwsMailbox(ews_account(stub, stack_tls, ca_file=None, port=stub.port), InMemoryItemMarks(), 10).open()
    assert error.value.step in ("tls", "connect") and "CERTIFICATE_VERIFY_FAILED" in str(error.value)
    assert stub.calls == []


# --- Kerberos --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kdc():
    directory = Path(tempfile.mkdtemp(prefix="mi-kdc-"))
    kdc = LocalKdc(directory).start()
    kdc.add_user("max", "Max-Kerberos-Pw")
    kdc.add_user("eve", "Eve-Kerberos-Pw")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in kdc.environment().items():
            patch.setenv(name, value)
        patch.delenv("KRB5_CLIENT_KTNAME", raising=False)
        try:
            yield kdc
        finally:
            kdc.stop()
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def kerberos_stub(kdc, stack_tls):
    org = StubExchange()
    org.add_user("max", "unused-with-kerberos", "max@example.test", principal="max@MAILINTAKE.TEST")
    org.add_user("svc-desk", "unused-with-kerberos", "svc-desk@example.test", principal="svc-desk@MAILINTAKE.TEST")
    org.add_user("eve", "unused-with-kerberos", "eve@mailintake.test", principal="eve@MAILINTAKE.TEST")
    org.add_mailbox("helpdesk@example.test", "Help Desk")
    org.grant_delegate("max", "helpdesk@example.test")
    org.grant_delegate("svc-desk", "helpdesk@example.test")
    # NTLM is offered too, as Exchange does: the client must still pick Kerberos.
    stub = EwsStub(org, stack_tls.server_cert, stack_tls.server_key, ("Negotiate", "NTLM"), keytab=kdc.service_keytab)
    with stub:
        yield stub
    kdc.kdestroy()


def test_kerberos_login_with_delegate_access(kdc, kerberos_stub, stack_tls):
    kdc.kinit("max", "Max-Kerberos-Pw")
    shared = kerberos_stub.exchange.mailbox("helpdesk@example.test")
    item = shared.deliver(mime(1))
    account = ews_account(kerberos_stub, stack_tls, username="MAILINTAKE\\max\\helpdesk@example.test", password="not-sent", prevent_ntlm=True)
    box = EwsMailbox(account, InMemoryItemMarks(), 10).open()
    try:
        assert box.auth_type == "gssapi"
        pending = box.pending()
        assert pending == [f"ews:{item}"]
        assert box.fetch(pending)[pending[0]] == mime(1)
        box.after_fetch(pending)
    finally:
        box.close()
    assert shared.inbox.items[item].is_read
    assert kerberos_stub.logins and set(kerberos_stub.logins) == {("Negotiate", "max@MAILINTAKE.TEST")}
    assert set(kerberos_stub.negotiated_mechanisms) == {KERBEROS_MECHANISM}
    assert all(c.auth_scheme == "Negotiate" and c.user == "max" for c in kerberos_stub.calls)


def test_without_a_ticket_and_with_a_password_the_kdc_refuses_prevent_ntlm_fails_and_says_why(kdc, kerberos_stub, stack_tls):
    kdc.kdestroy()
    account = ews_account(kerberos_stub, stack_tls, username="MAILINTAKE\\max", password="not-the-kerberos-one", prevent_ntlm=True)
    with pytest.raises(EwsAuthUnavailable) as error:
        EwsMailbox(account, InMemoryItemMarks(), 10).open()
    message = str(error.value)
    assert "no Kerberos ticket for the account's user" in message and "KRB5CCNAME" in message
    # MIT krb5's words when the KDC's reply does not decrypt with the key of the password
    # given (the test realm asks no pre-authentication, or it would be "Preauthentication failed").
    assert "the KDC gave none for max with the account's password: Decrypt integrity check failed" in message
    assert kerberos_stub.logins == []


def test_a_ticket_of_another_user_is_never_used_the_accounts_own_password_is(kdc, kerberos_stub, stack_tls):
    kdc.kinit("eve", "Eve-Kerberos-Pw")
    item = kerberos_stub.exchange.mailbox("max@example.test").deliver(mime(1))
    account = ews_account(kerberos_stub, stack_tls, username="MAILINTAKE\\max", password="Max-Kerberos-Pw", prevent_ntlm=True)
    box = EwsMailbox(account, InMemoryItemMarks(), 10).open()
    try:
        assert box.pending() == [f"ews:{item}"]
    finally:
        box.close()
    assert set(kerberos_stub.logins) == {("Negotiate", "max@MAILINTAKE.TEST")}, "eve's ticket never reached the server"


def test_accounts_of_different_principals_log_in_with_their_own_passwords_side_by_side(kdc, kerberos_stub, stack_tls):
    """No ticket in the process: each account gets its own from the KDC with its stored password."""
    kdc.kdestroy()
    exchange = kerberos_stub.exchange
    max_item = exchange.mailbox("max@example.test").deliver(mime(1))
    eve_item = exchange.mailbox("eve@mailintake.test").deliver(mime(2))
    max_account = ews_account(
        kerberos_stub, stack_tls, id="max-ews", username="MAILINTAKE\\max", password="Max-Kerberos-Pw", prevent_ntlm=True
    )
    eve_account = ews_account(
        kerberos_stub, stack_tls, id="eve-ews", username="eve@mailintake.test", password="Eve-Kerberos-Pw", prevent_ntlm=True
    )
    max_box = EwsMailbox(max_account, InMemoryItemMarks(), 10).open()
    eve_box = EwsMailbox(eve_account, InMemoryItemMarks(), 10).open()
    try:
        # Interleaved, so that a session of one picking up the other's credentials would show.
        max_pending, eve_pending = max_box.pending(), eve_box.pending()
        assert (max_pending, eve_pending) == ([f"ews:{max_item}"], [f"ews:{eve_item}"])
        assert eve_box.fetch(eve_pending)[eve_pending[0]] == mime(2)
        assert max_box.fetch(max_pending)[max_pending[0]] == mime(1)
    finally:
        max_box.close()
        eve_box.close()
    assert {box.auth_type for box in (max_box, eve_box)} == {"gssapi"}
    assert set(kerberos_stub.logins) == {("Negotiate", "max@MAILINTAKE.TEST"), ("Negotiate", "eve@MAILINTAKE.TEST")}
    assert set(kerberos_stub.negotiated_mechanisms) == {KERBEROS_MECHANISM}
    assert {c.user for c in kerberos_stub.calls} == {"max", "eve"}
    assert not kdc.client_cache.exists(), "the tickets stayed in memory, no credential cache was written"


def test_the_kdc_is_asked_once_per_password_not_once_per_poll(kdc):
    import gssapi

    from services.fetcher.ews_mailbox import PasswordKerberos

    def kdc_requests() -> int:
        return kdc.log_file.read_text().count("AS_REQ") if kdc.log_file.exists() else 0

    kerberos, seen = PasswordKerberos(), []
    for password in ("wrong", "wrong", "Max-Kerberos-Pw", "Max-Kerberos-Pw"):
        before = kdc_requests()
        try:
            outcome = str(kerberos.credentials("max", password).name)
        except gssapi.exceptions.GSSError:
            outcome = "refused"
        seen.append((outcome, kdc_requests() > before))
    assert seen == [
        ("refused", True),
        ("refused", False),
        ("max@MAILINTAKE.TEST", True),
        ("max@MAILINTAKE.TEST", False),
    ], "a repeated password, refused or not, is answered from memory"


def test_no_secret_reaches_the_logs_even_at_debug(exchange, start_stub, stack_tls, caplog):
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    stub = start_stub()
    exchange.mailbox("max@example.test").deliver(mime(1))
    box = EwsMailbox(ews_account(stub, stack_tls), InMemoryItemMarks(), 10).open()
    try:
        box.fetch(box.pending())
    finally:
        box.close()
    basic = base64.b64encode(b"EXAMPLE\\max:Max-Pw-1").decode()
    assert caplog.records, "the test must see the log records it checks"
    assert "Max-Pw-1" not in caplog.text and basic not in caplog.text


def test_kerberos_from_a_client_keytab_without_kinit(kdc, kerberos_stub, stack_tls, monkeypatch):
    # How a pod runs: a mounted keytab, no kinit; MIT krb5 gets and renews the ticket itself.
    keytab = kdc.directory / "svc-desk.keytab"
    if not keytab.exists():
        kdc.add_user_with_keytab("svc-desk", keytab)
    kdc.kdestroy()
    monkeypatch.setenv("KRB5_CLIENT_KTNAME", str(keytab))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{kdc.directory / 'svc-desk.ccache'}")
    item = kerberos_stub.exchange.mailbox("helpdesk@example.test").deliver(mime(1))
    account = ews_account(kerberos_stub, stack_tls, username="MAILINTAKE\\svc-desk\\helpdesk@example.test", prevent_ntlm=True)
    box = EwsMailbox(account, InMemoryItemMarks(), 10).open()
    try:
        assert box.pending() == [f"ews:{item}"]
    finally:
        box.close()
    assert set(kerberos_stub.logins) == {("Negotiate", "svc-desk@MAILINTAKE.TEST")}
