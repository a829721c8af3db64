"""EWS through the fetcher's poll function into Kafka, with the item ids kept in PostgreSQL.

The stack provides Kafka, PostgreSQL and the CA; the mail server is the EWS stub.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailintake.database import engine_for
from services.fetcher.account import AccountProtocol
from services.fetcher.core import message_id_of
from services.fetcher.ews_item_store import EwsItemStore
from services.fetcher.ews_mailbox import EwsMailbox
from services.fetcher.tables import EwsProducedItem
from tests.peers.ews_stub import EwsStub, StubExchange, received_sequence

pytestmark = pytest.mark.stack


def stored_marks(stack, account_id: str) -> set[str]:
    with engine_for(stack.database_url).connect() as connection:
        return set(connection.scalars(select(EwsProducedItem.item_id).where(EwsProducedItem.account_id == account_id)))


def mime(unique: str, number: int) -> bytes:
    return (
        f"From: erika@example.org\r\nTo: desk@example.test\r\nSubject: VPN {unique} #{number}\r\n"
        f"Message-ID: <ews-{unique}-{number}@example.org>\r\n\r\nDrops {number}.\r\n"
    ).encode()


@pytest.fixture
def ews_stub(stack):
    from mailintake.stack.layout import StackLayout

    layout = StackLayout(stack.state_dir)
    org = StubExchange()
    org.add_user("max", "Max-Pw-1", "max@example.test")
    with EwsStub(org, layout.server_cert, layout.server_key, ("Basic",)) as stub:
        yield stub


@pytest.fixture
def ews_fetcher(stack, fetcher_for, monkeypatch):
    """A Fetcher on the stack whose EWS accounts open an EwsMailbox with marks in PostgreSQL.

    The fetcher's own ``_open`` does not know EWS yet (service.py belongs to the poll-loop
    work); this adds exactly the branch it needs, and the rest of the poll is the real one.
    """

    def make(account):
        fetcher = fetcher_for(account)
        original = fetcher._open
        marks = EwsItemStore(engine_for(stack.database_url))

        def open_source(target):
            if target.protocol is AccountProtocol.EWS:
                return EwsMailbox(target, marks, 10.0).open()
            return original(target)

        monkeypatch.setattr(fetcher, "_open", open_source)
        return fetcher

    return make


def test_ews_mails_are_produced_once_and_marked_read(stack, unique, ews_stub, ews_fetcher, mail_raw):
    from services.fetcher.account import Account

    mailbox = ews_stub.exchange.mailbox("max@example.test")
    sent = [mime(unique, n) for n in range(3)]
    ids = [mailbox.deliver(raw, received=when) for raw, when in zip(sent, received_sequence(3))]
    account = Account(
        id=f"ews-{unique}",
        name="Desk (EWS)",
        protocol="ews",
        host="localhost",
        port=ews_stub.port,
        ca_file=stack.ca_file,
        username="EXAMPLE\\max",
        password="Max-Pw-1",
        prevent_ntlm=False,
        poll_interval_seconds=5,
    )
    fetcher = ews_fetcher(account)

    assert fetcher.poll(account) == 3
    assert fetcher.poll(account) == 0, "produced item ids are not produced again"
    records = mail_raw.records(account.id)
    assert [r.message_id for r in records] == [message_id_of(raw) for raw in sent]
    assert [r.raw for r in records] == sent
    assert {r.protocol.value for r in records} == {"EWS"}
    assert [r.source_id for r in records] == [f"ews:{i}" for i in ids]
    assert stored_marks(stack, account.id) == set(ids)
    assert all(item.is_read for item in mailbox.inbox.items.values())
    # A mail that leaves the folder takes its mark with it.
    mailbox.inbox.items.pop(ids[0])
    assert fetcher.poll(account) == 0
    assert stored_marks(stack, account.id) == set(ids[1:])
