"""Kafka restarts while the classifier commits its offsets: the commit waits for the broker
and the classifier goes on, instead of exiting and leaning on a restart by the orchestrator.

The classifier's own stream processor runs in this process against the real broker. Its
commit step is wrapped so that, once, Kafka is stopped right before the real commit and
started again a few seconds later (the stack's own commands, as the fault drills do).
Restarting the shared broker disturbs other tests, so the ``stack_restart`` mark runs it last.
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaProducer

from mailintake.contracts import InvalidMessage, record_key
from mailintake.contracts.records import MailClassified, decode_record, encode_record
from mailintake.runtime.http_endpoint import Health
from mailintake.stack import Stack
from services.classifier.service import build_processor
from services.classifier.settings import ClassifierSettings
from tests.classifier.conftest import raw_record
from tests.running_processor import ProcessorThread
from tests.stack_faults import stop
from tests.ticketer.running_ticketer import committed_offsets, end_offsets, place_group_at_end
from tests.topic_reading import read_topic

pytestmark = [pytest.mark.stack, pytest.mark.stack_restart]

MAILS = 40
KAFKA_AWAY_SECONDS = 5.0


def mails(account: str) -> list:
    raw = b"From: max@example.com\r\nTo: support@example.org\r\nSubject: Drucker\r\n\r\nGeht nicht.\r\n"
    return [raw_record(raw).model_copy(update={"account_id": account, "source_id": f"imap:1:{i}"}) for i in range(MAILS)]


def classified_source_ids(bootstrap: str, account: str, since_ms: int) -> set[str]:
    def of_this_test(message) -> str | None:
        # mail.classified is shared: other tests put records of their own there, some not Avro on purpose.
        try:
            record = decode_record("mail.classified", message.value)
        except InvalidMessage:
            return None
        return record.source_id if isinstance(record, MailClassified) and record.account_id == account else None

    found = read_topic(bootstrap, "mail.classified", since_ms, of_this_test, until=lambda ids: len(set(ids)) >= MAILS,
                       timeout=120)
    return set(found)


def all_committed(bootstrap: str, group: str, ends: dict[int, int]) -> bool:
    try:
        return committed_offsets(bootstrap, group, topic="mail.raw") == ends
    except Exception:  # noqa: BLE001 - Kafka is away for a while on purpose
        return False


def test_a_commit_during_a_kafka_restart_waits_for_the_broker(stack, unique):
    account = f"commit-restart-{unique}"
    since_ms = int(time.time() * 1000)
    group = f"commit-restart-classifier-{unique}"
    place_group_at_end(stack.kafka_bootstrap, group, topic="mail.raw")
    settings = ClassifierSettings(group_id=group)
    processor = build_processor(settings, Health())
    real_commit = processor._commit
    restarted = threading.Event()

    async def commit_while_kafka_restarts(offsets):
        if not restarted.is_set():
            restarted.set()
            stop("kafka")
            threading.Timer(KAFKA_AWAY_SECONDS, Stack().up).start()
        await real_commit(offsets)

    processor._commit = commit_while_kafka_restarts
    worker = ProcessorThread(processor)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    for mail in mails(account):
        producer.send("mail.raw", key=record_key(mail), value=encode_record("mail.raw", mail))
    producer.flush()
    producer.close()
    ends = end_offsets(stack.kafka_bootstrap, topic="mail.raw")

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not worker.failures:
        if restarted.is_set() and all_committed(stack.kafka_bootstrap, group, ends):
            break
        time.sleep(0.5)
    worker.stop()

    assert restarted.is_set(), "no commit came"
    assert not worker.failures, f"the classifier stopped: {worker.failures[0]!r}"
    assert committed_offsets(stack.kafka_bootstrap, group, topic="mail.raw") == ends
    assert classified_source_ids(stack.kafka_bootstrap, account, since_ms) == {f"imap:1:{i}" for i in range(MAILS)}
