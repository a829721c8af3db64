"""Records faust withholds from the agent are fetched again, never committed past.

faust's drain loop drops a record whose offset is below the last one it read; when that
read offset is left ahead of the consumer's position (it happens around a rebalance), the
records between never reach the agent. This test puts faust in that state on purpose, on
a ticketer running in this process against the real broker and database, and checks that
every mail is still handled and the committed offset covers only handled records.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from faust.types import TP
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from mailintake.contracts import get_topic, record_key
from mailintake.contracts.records import encode_record
from mailintake.runtime.http_endpoint import Health
from services.ticketer.faust_delivery import InlineDeliveryConsumer
from services.ticketer.service import TicketerWorker
from services.ticketer.settings import TicketerSettings
from tests.ticketer.mails import classified
from tests.ticketer.running_ticketer import committed_offsets, delete_group_and_topics, handled_count

pytestmark = pytest.mark.stack

WITHHELD = 5


class TicketerInThisProcess:
    """A ticketer worker on an event loop in a thread, so the test can reach into faust."""

    def __init__(self, settings: TicketerSettings, topic: str) -> None:
        self.stop = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.worker: TicketerWorker | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, topic), daemon=True)
        self.thread.start()

    def _run(self, settings: TicketerSettings, topic: str) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.worker = TicketerWorker(settings, Health(), source_topic=topic)
            await self.worker.run_until(self.stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def call(self, function):
        """Run ``function(worker)`` on the worker's loop and return its result."""

        async def on_loop():
            return function(self.worker)

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(10)

    def wait_consuming(self, tp: TP, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.error is None, repr(self.error)
            if self.worker is not None and self.loop is not None:
                consumer = self.worker.app.consumer
                if self.call(lambda w: tp in consumer.assignment() and consumer.flow_active and not w.app.rebalancing):
                    return
            time.sleep(0.2)
        raise AssertionError("the ticketer never got its partitions")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def held_back() -> float:
    return REGISTRY.get_sample_value("mailintake_ticketer_held_back_total") or 0.0


@contextmanager
def topic_of_this_test(kafka_bootstrap: str, topic: str, group: str) -> Iterator[None]:
    """A topic with ``mail.classified``'s partitions for one test; afterwards it, the
    group's offsets and the topics faust made for the group are deleted."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, get_topic("mail.classified").partitions, 1)])
    admin.close()
    try:
        yield
    finally:
        delete_group_and_topics(kafka_bootstrap, group)
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        admin.delete_topics([topic])
        admin.close()


def produce_mails(producer: KafkaProducer, topic: str, account: str, numbers: range, partition: int | None = 0) -> None:
    """Mails ``m<number>`` of ``account``, to ``partition`` (None: by their key)."""
    for i in numbers:
        mail = classified(account, f"m{i}")
        producer.send(topic, key=record_key(mail), value=encode_record("mail.classified", mail), partition=partition)
    producer.flush()


def test_records_faust_withholds_are_fetched_again_and_handled(stack, unique):
    topic = f"test.holes.{unique}"
    group = f"holes-ticketer-{unique}"
    account = f"holes-{unique}"
    tp = TP(topic, 0)

    def withhold_next(count: int, from_offset: int) -> None:
        # What faust's drain loop does with a read offset left ahead of the position.
        ticketer.call(lambda w: w.app.consumer._read_offset.__setitem__(tp, from_offset + count))

    with topic_of_this_test(stack.kafka_bootstrap, topic, group):
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        ticketer = TicketerInThisProcess(TicketerSettings(group_id=group, session_timeout_seconds=6), topic)
        before = held_back()
        try:
            ticketer.wait_consuming(tp)
            # The drain loop whose dropping is put to the test here is the ticketer's own.
            assert ticketer.call(lambda w: isinstance(w.app.consumer, InlineDeliveryConsumer))
            # A group that never committed: the first records of the log are withheld.
            withhold_next(WITHHELD, from_offset=0)
            produce_mails(producer, topic, account, range(0, 20))
            deadline = time.monotonic() + 60
            while handled_count(stack.database_url, account) < 20 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert handled_count(stack.database_url, account) == 20, "withheld records were committed past"
            after_first = held_back()
            assert after_first > before, "the hole was not noticed"
            # A group with a commit: the records right after it are withheld.
            withhold_next(WITHHELD, from_offset=20)
            produce_mails(producer, topic, account, range(20, 40))
            while handled_count(stack.database_url, account) < 40 and time.monotonic() < deadline + 60:
                time.sleep(0.2)
            assert handled_count(stack.database_url, account) == 40, "withheld records were committed past"
            assert held_back() > after_first, "the hole was not noticed"
            while committed_offsets(stack.kafka_bootstrap, group, topic).get(0) != 40 and time.monotonic() < deadline + 90:
                time.sleep(0.2)
            assert committed_offsets(stack.kafka_bootstrap, group, topic).get(0) == 40
        finally:
            ticketer.close()
            producer.close()
    assert ticketer.error is None, repr(ticketer.error)


def test_a_hole_whose_refetch_is_undone_is_sought_again_when_nothing_else_arrives(stack, unique):
    """faust's drain loop can undo a seek: records of a fetch from before it, delivered
    after it, move its read offset past the hole again and the refetched records are
    dropped once more. When no record arrives afterwards the worker itself must notice
    that the hole is still there."""
    topic = f"test.holes.undone.{unique}"
    group = f"holes-undone-ticketer-{unique}"
    account = f"holes-undone-{unique}"
    tp = TP(topic, 0)
    count = 20
    undone: list[int] = []

    def undo_the_first_seek(worker: TicketerWorker) -> None:
        consumer = worker.app.consumer
        seek = consumer.seek

        async def seek_then_undo(partition, offset):
            await seek(partition, offset)
            if not undone:
                undone.append(offset)
                consumer._read_offset[partition] = count  # a late record of the old fetch

        consumer.seek = seek_then_undo

    with topic_of_this_test(stack.kafka_bootstrap, topic, group):
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        ticketer = TicketerInThisProcess(TicketerSettings(group_id=group, session_timeout_seconds=6), topic)
        try:
            ticketer.wait_consuming(tp)
            ticketer.call(undo_the_first_seek)
            ticketer.call(lambda w: w.app.consumer._read_offset.__setitem__(tp, WITHHELD))
            produce_mails(producer, topic, account, range(count))
            deadline = time.monotonic() + 60
            while handled_count(stack.database_url, account) < count and time.monotonic() < deadline:
                time.sleep(0.2)
            assert undone == [0], "the seek to the hole was never undone: the test did not set up its case"
            assert handled_count(stack.database_url, account) == count, "the partition stalled at the hole"
            while committed_offsets(stack.kafka_bootstrap, group, topic).get(0) != count and time.monotonic() < deadline:
                time.sleep(0.2)
            assert committed_offsets(stack.kafka_bootstrap, group, topic).get(0) == count
        finally:
            ticketer.close()
            producer.close()
    assert ticketer.error is None, repr(ticketer.error)


def test_offsets_are_read_while_fausts_consumer_thread_is_busy(stack, unique):
    """During a rebalance faust's consumer thread sits in the revoke callback, which waits
    for the batch in flight; a batch that asked that thread for its committed offset
    waited for the callback in turn. Here the thread is held busy the same way, until the
    look-up has returned (or failed after 20 s)."""
    topic = f"test.offsets.busy.{unique}"
    group = f"offsets-busy-ticketer-{unique}"
    tp = TP(topic, 0)

    async def look_up_while_the_thread_is_held():
        worker = ticketer.worker
        released = threading.Event()

        async def hold() -> None:
            while not released.is_set():
                await asyncio.sleep(0.05)

        # Every worker of the thread's method queue, as the revoke callback and a long
        # poll for records hold them during a rebalance.
        thread = worker.app.consumer._thread
        held = [asyncio.ensure_future(thread.call_thread(hold)) for _ in range(thread.method_queue.num_workers)]
        await asyncio.sleep(0.3)
        try:
            return await asyncio.wait_for(worker._broker_committed_offset(tp), 20)
        finally:
            released.set()
            await asyncio.gather(*held)

    with topic_of_this_test(stack.kafka_bootstrap, topic, group):
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        produce_mails(producer, topic, f"offsets-busy-{unique}", range(3))
        producer.close()
        ticketer = TicketerInThisProcess(TicketerSettings(group_id=group, session_timeout_seconds=6), topic)
        try:
            ticketer.wait_consuming(tp)
            deadline = time.monotonic() + 60
            while committed_offsets(stack.kafka_bootstrap, group, topic).get(0) != 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ticketer.loop is not None
            offset = asyncio.run_coroutine_threadsafe(look_up_while_the_thread_is_held(), ticketer.loop).result(60)
            assert offset == 3
        finally:
            ticketer.close()
    assert ticketer.error is None, repr(ticketer.error)
