"""Reading ``mail.dlq`` and the replay ledger to their current end, and replaying. The Kafka edge."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import DeadLetter, DlqReplay, decode_record, encode_record
from mailintake.dead_letters.replay_plan import Replay
from mailintake.dead_letters.selection import StoredLetter
from mailintake.runtime.producer_sizes import MAX_REQUEST_BYTES

DLQ_TOPIC = "mail.dlq"
LEDGER_TOPIC = "mail.dlq.replays"
REPLAY_HEADER = "mailintake-replay-of"
"""Kafka header on every replayed record: the letter's place in mail.dlq."""
TRANSACTIONAL_ID = "mailintake-dlq-replay"
"""One id for every replay run: a second run started meanwhile fences the first, so two
runs can never both commit the same letters."""


def _records(bootstrap: str, topic: str, since: dt.datetime | None, timeout: float) -> Iterator[tuple[int, int, bytes | None]]:
    """(partition, offset, value) of every committed record of ``topic`` up to its end now."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(timeout * 1000) + 5000,
        client_id="mailintake-dlq",
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        if since is not None:
            found = consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
            for tp in partitions:
                starts[tp] = found[tp].offset if found.get(tp) is not None else ends[tp]
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        # Give up only when no progress was made for ``timeout`` seconds.
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"reading {topic} made no progress for {timeout:.0f}s")
            for tp, messages in consumer.poll(timeout_ms=500).items():
                deadline = time.monotonic() + timeout
                for message in messages:
                    if message.offset < ends[tp]:
                        yield tp.partition, message.offset, message.value
    finally:
        consumer.close()


def read_letters(bootstrap: str, since: dt.datetime | None = None, timeout: float = 10.0) -> list[StoredLetter]:
    """Every dead letter on ``mail.dlq`` (written since ``since``), oldest first per partition.

    A value that is no dead letter is skipped: the DLQ reader must not stop at a bad one.
    """
    letters = []
    for partition, offset, value in _records(bootstrap, DLQ_TOPIC, since, timeout):
        try:
            letter = decode_record(DLQ_TOPIC, value or b"")
        except InvalidMessage:
            continue
        assert isinstance(letter, DeadLetter)
        letters.append(StoredLetter(partition, offset, letter))
    return sorted(letters, key=lambda s: (s.letter.failed_at, s.partition, s.offset))


def read_replayed(bootstrap: str, timeout: float = 10.0) -> set[tuple[int, int]]:
    """The (partition, offset) in mail.dlq of every letter the ledger says was replayed."""
    replayed = set()
    for _, _, value in _records(bootstrap, LEDGER_TOPIC, None, timeout):
        try:
            entry = decode_record(LEDGER_TOPIC, value or b"")
        except InvalidMessage:
            continue
        assert isinstance(entry, DlqReplay)
        replayed.add((entry.dlq_partition, entry.dlq_offset))
    return replayed


def replay(bootstrap: str, replays: Sequence[Replay], timeout: float = 30.0) -> None:
    """Produce each letter's original key and value to its target topic and its ledger
    entry, all in one Kafka transaction: either all become visible or none."""
    if not replays:
        return
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        client_id="mailintake-dlq-replay",
        transactional_id=TRANSACTIONAL_ID,
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_REQUEST_BYTES,  # a letter's original value can be a whole inline mail
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        now = dt.datetime.now(dt.UTC)
        for item in replays:
            letter = item.stored.letter
            producer.send(
                item.to_topic,
                key=letter.original_key,
                value=letter.original_value,
                headers=[(REPLAY_HEADER, item.stored.key.encode())],
            )
            producer.send(LEDGER_TOPIC, key=item.stored.key.encode(), value=encode_record(LEDGER_TOPIC, item.ledger_entry(now)))
        producer.commit_transaction()
    except BaseException:
        try:
            producer.abort_transaction()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    finally:
        producer.close(timeout=timeout)
