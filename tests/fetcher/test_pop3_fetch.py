"""POP3 through the poll function into Kafka, on the stack's Dovecot: POP3S and STLS,
UIDL tracking, delete, pruning of vanished UIDLs, and deletions a QUIT never committed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from mailintake.database import engine_for
from mailintake.demo import demo_mail
from mailintake.stack import add_mail_user
from services.fetcher.account import Account
from services.fetcher.core import message_id_of
from services.fetcher.tables import Pop3Uidl
from services.fetcher.uidl_store import UidlStore

pytestmark = pytest.mark.stack


def mails(user, unique: str, count: int) -> list[bytes]:
    return [demo_mail("erika@example.org", f"VPN {unique} #{i}", f"Drops {i}.", user.address) for i in range(count)]


def stored_uidls(stack, account_id: str) -> set[str]:
    with engine_for(stack.database_url).connect() as connection:
        return set(connection.scalars(select(Pop3Uidl.uidl).where(Pop3Uidl.account_id == account_id)))


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_each_mail_is_produced_once_and_left_on_the_server(
    stack, unique, account_for, imap_client, fetcher_for, mail_raw, security
):
    user = add_mail_user(f"pop{unique}", f"pw-{unique}")
    sent = mails(user, unique, 3)
    with imap_client(user) as client:
        for raw in sent:
            client.append("INBOX", raw)
    account = account_for(user, protocol="pop3", security=security)
    fetcher = fetcher_for(account)

    assert fetcher.poll(account) == 3
    assert fetcher.poll(account) == 0, "remembered UIDLs are not produced again"
    records = mail_raw.records(account.id)
    assert [r.message_id for r in records] == [message_id_of(raw) for raw in sent]
    assert {r.protocol.value for r in records} == {"POP3"}
    assert all(r.source_id.startswith("pop3:") for r in records)
    assert {r.source_id.removeprefix("pop3:") for r in records} == stored_uidls(stack, account.id)
    # RETR hands over the mail as stored; the body survives the dot-unstuffing round trip.
    assert all(raw.replace(b"\n", b"\r\n").rstrip(b"\r\n") in r.raw for raw, r in zip(sent, records))
    with imap_client(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["ALL"])) == 3, "mark_seen leaves POP3 mails on the server"


def test_delete_removes_the_mails_at_quit_and_their_uidls_are_pruned(
    stack, unique, account_for, imap_client, fetcher_for, mail_raw
):
    user = add_mail_user(f"popdel{unique}", f"pw-{unique}")
    with imap_client(user) as client:
        for raw in mails(user, unique, 2):
            client.append("INBOX", raw)
    account = account_for(user, protocol="pop3", after_fetch="delete")
    fetcher = fetcher_for(account)
    assert fetcher.poll(account) == 2
    with imap_client(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["ALL"]) == []
    assert len(stored_uidls(stack, account.id)) == 2
    assert fetcher.poll(account) == 0
    assert stored_uidls(stack, account.id) == set(), "UIDLs the server no longer lists are pruned"
    assert len(mail_raw.records(account.id)) == 2


def test_a_uidl_that_vanished_is_pruned_and_the_rest_are_kept(stack, unique, account_for, imap_client, fetcher_for):
    user = add_mail_user(f"popprune{unique}", f"pw-{unique}")
    with imap_client(user) as client:
        for raw in mails(user, unique, 3):
            client.append("INBOX", raw)
    account = account_for(user, protocol="pop3")
    fetcher = fetcher_for(account)
    assert fetcher.poll(account) == 3
    before = stored_uidls(stack, account.id)
    with imap_client(user) as client:
        client.select_folder("INBOX")
        client.delete_messages([2])
        client.expunge()
    assert fetcher.poll(account) == 0
    after = stored_uidls(stack, account.id)
    assert len(before) == 3 and len(after) == 2 and after < before


def test_mails_whose_deletion_was_never_committed_are_deleted_not_produced_again(
    stack, unique, account_for, imap_client, fetcher_for, mail_raw
):
    """A session that ended before QUIT leaves acknowledged mails on the server with their
    UIDLs recorded; the next session deletes them instead of producing them again."""
    user = add_mail_user(f"popleft{unique}", f"pw-{unique}")
    with imap_client(user) as client:
        for raw in mails(user, unique, 2):
            client.append("INBOX", raw)
    account = account_for(user, protocol="pop3", after_fetch="delete")
    looked = account_for(user, protocol="pop3", id=f"look-{unique}")
    fetcher = fetcher_for(account, looked)
    assert fetcher.poll(looked) == 2  # only to learn the UIDLs, as the interrupted session had
    UidlStore(engine_for(stack.database_url)).remember(account.id, stored_uidls(stack, looked.id))

    assert fetcher.poll(account) == 0
    assert mail_raw.records(account.id) == []
    with imap_client(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["ALL"]) == []


def test_move_is_refused_for_pop3_when_the_account_is_read():
    with pytest.raises(ValidationError, match="POP3 has no folders"):
        Account(id="p", name="p", protocol="pop3", host="h", port=995, username="u", password="p", after_fetch="move:X")
