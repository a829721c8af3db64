"""Kafka restarts while the ticketer commits its offsets: the commit waits for the broker
and the ticketer goes on; every mail is handled once and its offset committed.

A ticketer worker runs in this process against the real broker and database. Its commit
step is wrapped so that, once, Kafka is stopped right before the real commit and started
again a few seconds later (the stack's own commands, as the fault drills do). Restarting
the shared broker disturbs other tests, so the ``stack_restart`` mark runs it last.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from mailintake.contracts import get_topic
from mailintake.stack import Stack
from services.ticketer.settings import TicketerSettings
from tests.stack_faults import stop
from tests.ticketer.running_ticketer import committed_offsets, handled_count
from tests.ticketer.test_offset_holes import TicketerInThisProcess, produce_mails, topic_of_this_test

pytestmark = [pytest.mark.stack, pytest.mark.stack_restart]

MAILS = 40
KAFKA_AWAY_SECONDS = 5.0


def all_committed(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    try:
        committed = committed_offsets(bootstrap, group, topic=topic)
    except Exception:  # noqa: BLE001 - Kafka is away for a while on purpose
        return False
    return all(committed.get(p, 0) == end for p, end in ends.items())


def test_a_commit_during_a_kafka_restart_waits_for_the_broker(stack, unique):
    topic = f"test.commit-restart.{unique}"
    group = f"commit-restart-ticketer-{unique}"
    account = f"commit-restart-{unique}"
    restarted = threading.Event()
    commit_seconds: list[float] = []

    def stop_kafka_before_the_commit(worker):
        real_commit = worker._commit_offsets

        async def commit_while_kafka_restarts(offsets):
            if not restarted.is_set():
                restarted.set()
                await asyncio.to_thread(stop, "kafka")
                threading.Timer(KAFKA_AWAY_SECONDS, Stack().up).start()
            started = time.monotonic()
            committed = await real_commit(offsets)
            commit_seconds.append(time.monotonic() - started)
            return committed

        worker._commit_offsets = commit_while_kafka_restarts

    with topic_of_this_test(stack.kafka_bootstrap, topic, group):
        ticketer = TicketerInThisProcess(TicketerSettings(group_id=group, session_timeout_seconds=6), topic)
        try:
            deadline = time.monotonic() + 60
            while ticketer.worker is None or ticketer.loop is None:
                assert time.monotonic() < deadline and ticketer.error is None, repr(ticketer.error)
                time.sleep(0.1)
            ticketer.call(stop_kafka_before_the_commit)
            producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
            produce_mails(producer, topic, account, range(MAILS), partition=None)
            producer.close()
            consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
            partitions = [TopicPartition(topic, p) for p in range(get_topic("mail.classified").partitions)]
            ends = {tp.partition: end for tp, end in consumer.end_offsets(partitions).items()}
            consumer.close()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and ticketer.error is None and ticketer.thread.is_alive():
                if restarted.is_set() and all_committed(stack.kafka_bootstrap, group, topic, ends):
                    break
                time.sleep(0.5)
            assert restarted.is_set(), "no commit came"
            print(f"first commit after the stop took {commit_seconds[0]:.1f} s")
            assert ticketer.error is None and ticketer.thread.is_alive(), f"the ticketer stopped: {ticketer.error!r}"
            assert all_committed(stack.kafka_bootstrap, group, topic, ends)
            assert handled_count(stack.database_url, account) == MAILS
        finally:
            ticketer.close()
