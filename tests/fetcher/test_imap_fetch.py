"""IMAP through the poll function into Kafka, on the stack's Dovecot: implicit TLS and
STARTTLS, the after-fetch actions, the ack-before-action order, and a UIDVALIDITY reset."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import select

from mailintake.database import engine_for
from mailintake.demo import demo_mail
from services.fetcher.cursor_store import CursorStore
from services.fetcher.mail_source import StepFailed
from services.fetcher.tables import AccountStatus

pytestmark = pytest.mark.stack


def mails(user, unique: str, count: int) -> list[bytes]:
    return [demo_mail("max@example.com", f"Printer {unique} #{i}", f"Jam {i}.", user.address) for i in range(count)]


def message_ids(raws: list[bytes]) -> list[str]:
    from services.fetcher.core import message_id_of

    return [message_id_of(raw) for raw in raws]


def status_of(stack, account_id: str):
    with engine_for(stack.database_url).connect() as connection:
        return connection.execute(select(AccountStatus).where(AccountStatus.account_id == account_id)).one()


def test_fetch_reads_bodies_when_dovecot_mixes_in_unsolicited_flag_updates(
    unique, account_for, imap_client, imap_user, imap_folder
):
    from services.fetcher.imap_mailbox import ImapSession

    user, folder, sent = imap_user, imap_folder, mails(imap_user, unique, 3)
    with imap_client(user) as client:
        for raw in sent:
            client.append(folder, raw)
    session = ImapSession(account_for(user, folder=folder), timeout=10)
    session.open()
    try:
        session.select(folder)
        with imap_client(user) as other:
            other.select_folder(folder)
            other.add_flags([1, 3], [b"\\Flagged"])
        # Dovecot reports the other session's flag change with the next command's
        # responses: the FETCH data then holds more than UID and BODY[].
        fetched = session.fetch([2, 3])
    finally:
        session.close()
    # Dovecot stores the mails with CRLF line ends.
    assert fetched == {2: sent[1].replace(b"\n", b"\r\n"), 3: sent[2].replace(b"\n", b"\r\n")}


def test_imaplibs_protocol_trace_is_logged_when_its_logger_is_at_debug(caplog, account_for, imap_user, imap_folder):
    import logging

    from services.fetcher.imap_mailbox import ImapSession

    for level, traced in ((logging.INFO, False), (logging.DEBUG, True)):
        caplog.clear()
        with caplog.at_level(level, logger="imapclient.imaplib"):
            session = ImapSession(account_for(imap_user, folder=imap_folder), timeout=10)
            session.open()
            try:
                session.select(imap_folder)
                session.fetch([1])
            finally:
                session.close()
        trace = [r for r in caplog.records if r.name == "imapclient.imaplib"]
        assert bool(trace) is traced, f"imaplib trace at {logging.getLevelName(level)}: {len(trace)} lines"


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_each_new_mail_is_produced_once_then_marked_seen(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for, mail_raw, security
):
    user, folder = imap_user, imap_folder
    first = mails(user, unique, 3)
    with imap_client(user) as client:
        for raw in first:
            client.append(folder, raw)
        uidvalidity = client.select_folder(folder)[b"UIDVALIDITY"]
    account = account_for(user, id=f"imap-{unique}", security=security, folder=folder)
    fetcher = fetcher_for(account)

    assert fetcher.poll(account) == 3
    assert fetcher.poll(account) == 0, "the mark keeps a mail from being produced twice"
    with imap_client(user) as client:
        client.append(folder, later := mails(user, unique + "b", 1)[0])
        client.select_folder(folder, readonly=True)
        assert sorted(client.search(["SEEN"])) == [1, 2, 3] and client.search(["UNSEEN"]) == [4]
    assert fetcher.poll(account) == 1

    records = mail_raw.records(account.id)
    assert [r.source_id for r in records] == [f"imap:{uidvalidity}:{uid}" for uid in (1, 2, 3, 4)]
    assert [r.message_id for r in records] == message_ids([*first, later])
    assert {r.protocol.value for r in records} == {"IMAP"}
    assert all(r.raw and r.claim_check is None for r in records)
    cycles = [r.poll_cycle for r in records]
    assert cycles[0] == cycles[1] == cycles[2] and cycles[3] == cycles[0] + 2, "one count per poll of the account"
    status = status_of(stack, account.id)
    assert (status.mails_fetched, status.consecutive_failures, status.last_error) == (4, 0, None)
    assert status.last_success_at is not None and status.last_poll_at == status.last_success_at


def test_delete_expunges_the_acknowledged_mails(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for, mail_raw
):
    with imap_client(imap_user) as client:
        for raw in mails(imap_user, unique, 2):
            client.append(imap_folder, raw)
    account = account_for(imap_user, id=f"imap-{unique}", folder=imap_folder, after_fetch="delete")
    assert fetcher_for(account).poll(account) == 2
    with imap_client(imap_user) as client:
        client.select_folder(imap_folder, readonly=True)
        assert client.search(["ALL"]) == []
    assert len(mail_raw.records(account.id)) == 2


def test_move_puts_the_acknowledged_mails_into_the_target_folder(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for
):
    sent = mails(imap_user, unique, 2)
    with imap_client(imap_user) as client:
        client.create_folder(f"Done{unique}")
        for raw in sent:
            client.append(imap_folder, raw)
    account = account_for(imap_user, id=f"imap-{unique}", folder=imap_folder, after_fetch=f"move:Done{unique}")
    assert fetcher_for(account).poll(account) == 2
    with imap_client(imap_user) as client:
        client.select_folder(imap_folder, readonly=True)
        assert client.search(["ALL"]) == []
        client.select_folder(f"Done{unique}", readonly=True)
        moved = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    found = [m[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].split(b":", 1)[1].strip().decode() for m in moved.values()]
    assert sorted(found) == sorted(message_ids(sent))


def test_a_missing_move_target_fails_the_poll_before_anything_is_produced(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for, mail_raw
):
    with imap_client(imap_user) as client:
        client.append(imap_folder, mails(imap_user, unique, 1)[0])
    target = f"Processed{unique}"
    account = account_for(imap_user, id=f"imap-{unique}", folder=imap_folder, after_fetch=f"move:{target}")
    with pytest.raises(StepFailed) as failure:
        fetcher_for(account).poll(account)
    assert failure.value.step == "select"
    assert failure.value.server_reply.startswith(f"Mailbox doesn't exist: {target}")
    assert "creates no folders" in failure.value.explanation
    assert mail_raw.records(account.id) == []
    with imap_client(imap_user) as client:
        client.select_folder(imap_folder, readonly=True)
        assert client.search(["UNSEEN"]) == [1] and client.list_folders(pattern=target) == []
    status = status_of(stack, account.id)
    assert (status.last_error_step, status.consecutive_failures) == ("select", 1)
    assert status.last_error.startswith(f"The after-fetch target folder '{target}' cannot be used")


class AcksOnlyFor:
    """Kafka as the fetcher sees it, but only the first ``n`` chunks are ever acknowledged."""

    def __init__(self, producer, n: int) -> None:
        self._producer, self._left = producer, n

    def send(self, topic, key, values):
        self._left -= 1
        if self._left >= 0:
            return self._producer.send(topic, key, values)
        never = Future()
        never.set_exception(KafkaTimeoutError("no acknowledgement (test)"))
        return never


@pytest.mark.parametrize("action", ["mark_seen", "delete", "move"])
def test_only_acknowledged_chunks_are_acted_on_and_marked(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for, kafka_producer, mail_raw, action
):
    with imap_client(imap_user) as client:
        client.create_folder(f"Done{unique}")
        for raw in mails(imap_user, unique, 4):
            client.append(imap_folder, raw)
        client.select_folder(imap_folder, readonly=True)
        first_two = sum(data[b"RFC822.SIZE"] for data in client.fetch([1, 2], ["RFC822.SIZE"]).values())
    after_fetch = f"move:Done{unique}" if action == "move" else action
    account = account_for(imap_user, id=f"imap-{unique}", folder=imap_folder, after_fetch=after_fetch)
    # IMAP chunks by the sizes the server lists: two mails per chunk.
    flaky = fetcher_for(account, producer=AcksOnlyFor(kafka_producer, 1), fetch_chunk_bytes=first_two)
    with pytest.raises(StepFailed) as failure:
        flaky.poll(account)
    assert failure.value.step == "produce" and "KafkaTimeoutError" in failure.value.explanation

    # The first chunk was acknowledged, so it was acted on and the mark passed it; the second was not.
    with imap_client(imap_user) as client:
        client.select_folder(imap_folder, readonly=True)
        untouched = client.search(["UNSEEN"])
        everything = client.search(["ALL"])
    assert untouched == [3, 4]
    assert everything == ([1, 2, 3, 4] if action == "mark_seen" else [3, 4])
    assert CursorStore(engine_for(stack.database_url)).load(account.id, imap_folder).last_uid == 2
    status = status_of(stack, account.id)
    assert (status.last_error_step, status.mails_fetched) == ("produce", 2)

    assert fetcher_for(account).poll(account) == 2
    assert [r.source_id.rsplit(":", 1)[1] for r in mail_raw.records(account.id)] == ["1", "2", "3", "4"]


class SilentKafka:
    """A producer whose chunks are never acknowledged nor refused."""

    def __init__(self) -> None:
        self.sent: list[Future] = []

    def send(self, topic, key, values):
        self.sent.append(Future())
        return self.sent[-1]


def test_a_chunk_never_acknowledged_fails_the_poll_at_the_timeout_and_is_not_acted_on(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for
):
    with imap_client(imap_user) as client:
        for raw in mails(imap_user, unique, 2):
            client.append(imap_folder, raw)
    account = account_for(imap_user, id=f"imap-{unique}", folder=imap_folder)
    kafka = SilentKafka()

    with pytest.raises(StepFailed) as failure:
        fetcher_for(account, producer=kafka, timeout_seconds=1.0).poll(account)

    assert failure.value.step == "produce"
    assert failure.value.explanation == "TimeoutError: Kafka did not acknowledge 2 mails within 1 s"
    assert [future.cancelled() for future in kafka.sent] == [True]
    with imap_client(imap_user) as client:
        client.select_folder(imap_folder, readonly=True)
        assert client.search(["UNSEEN"]) == [1, 2]
    assert CursorStore(engine_for(stack.database_url)).load(account.id, imap_folder).last_uid == 0


def test_uidvalidity_reset_loses_nothing_and_repeats_only_mails_the_ticketer_knows(
    stack, unique, account_for, imap_client, imap_user, fetcher_for, mail_raw
):
    """Deleting and re-creating a folder (what a restore or a server move does) gives it a
    new UIDVALIDITY. Every mail is then fetched again under new source ids; the ticketer's
    second key, account + Message-ID, recognises the ones it already handled. A mail
    without a Message-ID has no second key: it is produced again and would be handled twice."""
    user, folder = imap_user, f"Intake{unique}"
    a, b = mails(user, unique, 2)
    no_id = f"From: cron@example.com\r\nTo: {user.address}\r\nSubject: nightly {unique}\r\n\r\nok\r\n".encode()
    with imap_client(user) as client:
        client.create_folder(folder)
        for raw in (a, b, no_id):
            client.append(folder, raw)
        old_validity = client.select_folder(folder)[b"UIDVALIDITY"]
    account = account_for(user, id=f"imap-{unique}", folder=folder)
    fetcher = fetcher_for(account)
    assert fetcher.poll(account) == 3

    c = mails(user, unique + "new", 1)[0]
    with imap_client(user) as client:
        client.select_folder(folder)
        kept = [m[b"BODY[]"] for _, m in sorted(client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"]).items())]
        client.close_folder()
        client.delete_folder(folder)
        client.create_folder(folder)
        for raw in [*kept, c]:
            client.append(folder, raw)
        new_validity = client.select_folder(folder, readonly=True)[b"UIDVALIDITY"]
    assert new_validity != old_validity

    assert fetcher.poll(account) == 4
    assert fetcher.poll(account) == 0, "the new generation's mark holds"

    records = mail_raw.records(account.id)
    assert [r.source_id for r in records] == [f"imap:{old_validity}:{u}" for u in (1, 2, 3)] + [
        f"imap:{new_validity}:{u}" for u in (1, 2, 3, 4)
    ]
    # Nothing lost: every mail in the folder after the reset was produced under the new UIDVALIDITY.
    after_reset = records[3:]
    assert [r.message_id for r in after_reset] == message_ids([a, b, no_id, c])
    # The downstream keys: (account, source_id) never repeats; (account, Message-ID) repeats exactly
    # for the mails produced before the reset, so the ledger takes each of them once.
    assert len({r.source_id for r in records}) == 7
    with_id = [r.message_id for r in records if r.message_id]
    assert sorted(set(with_id)) == sorted(message_ids([a, b, c]))
    assert sorted(with_id) == sorted(message_ids([a, b, a, b, c]))
    # The documented gap: the mail without a Message-ID appears twice with nothing to tie the two.
    assert [r.source_id for r in records if r.message_id is None] == [
        f"imap:{old_validity}:3",
        f"imap:{new_validity}:3",
    ]


def test_an_empty_folder_is_a_good_poll_of_nothing(stack, unique, account_for, imap_user, imap_folder, fetcher_for):
    # UID FETCH 1:* (RFC822.SIZE) on an empty folder: OK and no responses, not an error.
    account = account_for(imap_user, id=f"imap-{unique}", folder=imap_folder)
    assert fetcher_for(account).poll(account) == 0
    status = status_of(stack, account.id)
    assert status.last_success_at is not None and status.consecutive_failures == 0
