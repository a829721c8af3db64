"""kill -9 of the fetcher at random points while it fetches 2,000 mails over Microsoft Graph.

The Graph stub checks every action (mark read, delete) at the moment it arrives: the
mail's record must already be below Kafka's high watermark, that is acknowledged
(acks=all: the broker answers a produce once the high watermark passed the record).
Each action's time is also compared with its record's timestamp. After the last trial
a surviving fetcher finishes the job: every mail is in ``mail.raw`` and acted on.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from mailintake.contracts.records import decode_record
from tests.fetcher.crash_drill import kill_during_fetch, start_fetcher
from tests.fetcher.graph_peer import graph_account, mime, start_graph_stub
from tests.peers.graph_stub import Action, received_sequence

pytestmark = pytest.mark.stack

MAILS_PER_ACCOUNT = 1000
TRIALS = 5
TOPIC = "mail.raw"


class AcknowledgedRecords:
    """``mail.raw`` as far as Kafka has acknowledged it at the moment of asking."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions = [TopicPartition(TOPIC, p) for p in sorted(self._consumer.partitions_for_topic(TOPIC))]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_end()
        for partition in self._partitions:
            self._consumer.position(partition)
        self._lock = threading.Lock()
        self.timestamps: dict[tuple[str, str], float] = {}
        """(account id, source id) -> the first record's timestamp (seconds)."""

    def has(self, account_id: str, source_id: str) -> bool:
        """Whether the record is acknowledged now: read up to the current high watermark and look."""
        with self._lock:
            if (account_id, source_id) in self.timestamps:
                return True
            end = self._consumer.end_offsets(self._partitions)
            self._read_until(end)
            return (account_id, source_id) in self.timestamps

    def _read_until(self, end: dict[TopicPartition, int]) -> None:
        while any(self._consumer.position(p) < end[p] for p in self._partitions):
            for batch in self._consumer.poll(timeout_ms=500).values():
                for message in batch:
                    record = decode_record(TOPIC, message.value)
                    self.timestamps.setdefault((record.account_id, record.source_id), message.timestamp / 1000)

    def everything(self) -> set[tuple[str, str]]:
        with self._lock:
            self._read_until(self._consumer.end_offsets(self._partitions))
            return set(self.timestamps)

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def acknowledged(stack):
    records = AcknowledgedRecords(stack.kafka_bootstrap)
    yield records
    records.close()


def test_kill_9_during_a_graph_fetch_loses_nothing_and_acts_only_after_the_ack(stack, unique, tmp_path, acknowledged):
    rng = random.Random(unique)
    stub = start_graph_stub(stack)
    accounts, mailboxes = {}, {}
    try:
        for after_fetch in ("mark_seen", "delete"):
            address = f"crash-{after_fetch}-{unique}@example.test"
            box = stub.tenant.add_mailbox(address)
            for n, received in enumerate(received_sequence(MAILS_PER_ACCOUNT)):
                box.deliver(mime(f"{after_fetch}-{unique}", n, "x" * 2000), received=received)
            account = graph_account(stack, stub, f"graph-crash-{after_fetch}-{unique}", address, after_fetch=after_fetch)
            accounts[address], mailboxes[address] = account, box
        everything = {(a.id, f"graph:{m}") for address, a in accounts.items() for m in mailboxes[address].messages}

        early: list[Action] = []

        def before_action(action: Action) -> None:
            if not acknowledged.has(accounts[action.mailbox].id, f"graph:{action.message_id}"):
                early.append(action)

        stub.before_action = before_action
        accounts_file, tokens_file = tmp_path / "accounts.json", tmp_path / "tokens.json"
        accounts_file.write_text(json.dumps([
            {**a.model_dump(mode="json"), "oauth2": {**a.oauth2.model_dump(mode="json"), "client_secret": "s"}}
            for a in accounts.values()
        ]))
        tokens_file.write_text(json.dumps({a.id: stub.tokens.issue("mailintake-app", app_only=True) for a in accounts.values()}))

        def start():
            # Ten mails per chunk: many chunks, so kills land between produce, ack, action and mark.
            return start_fetcher(accounts_file, stack, {"MAILINTAKE_FETCHER_FETCH_CHUNK": "10"}, str(tokens_file))

        def acted() -> set[str]:
            return {action.message_id for action in stub.actions}

        def nothing_acted_on_early(trial: int) -> None:
            assert not early, f"trial {trial}: {len(early)} mails acted on before Kafka acknowledged them, e.g. {early[:2]}"

        kills = kill_during_fetch(
            trials=TRIALS, rng=rng, start=start, progress=lambda: len(acted()),
            total=2 * MAILS_PER_ACCOUNT, after_kill=nothing_acted_on_early,
        )
        assert len(kills) >= TRIALS, f"only {len(kills)} kills landed mid-fetch"
        assert any(k > 0 for k in kills), "no kill landed after any progress"

        survivor = start()
        try:
            deadline = time.monotonic() + 180
            while len(acted()) < 2 * MAILS_PER_ACCOUNT and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            survivor.send_signal(signal.SIGTERM)
            survivor.wait(timeout=60)
    finally:
        stub.stop()

    assert not early, f"{len(early)} mails acted on before Kafka acknowledged them"
    produced = acknowledged.everything()
    lost = everything - produced
    assert not lost, f"{len(lost)} mails never reached mail.raw"
    assert len(acted()) == 2 * MAILS_PER_ACCOUNT, "the survivor acted on every mail"
    seen, deleted = (mailboxes[address] for address in accounts)
    assert all(m.is_read for m in seen.messages.values()) and not deleted.messages
    for action in stub.actions:
        stamped = acknowledged.timestamps[(accounts[action.mailbox].id, f"graph:{action.message_id}")]
        assert action.at >= stamped, f"{action} came before its record was even created ({stamped})"
