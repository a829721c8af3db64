"""The consume loop every stream service runs: decode -> process -> produce -> commit.

The order is the exactly-once argument (in the manner of Arroyo/Snuba):

* each record of a batch is decoded and processed; a record that cannot be decoded or
  is :class:`InvalidMessage` becomes a :class:`DeadLetter` on ``mail.dlq`` with its
  source topic, partition, offset and the reason;
* its outputs go to Kafka while the batch goes on, with ``acks=all`` by the idempotent
  producer (so the next stage does not wait for the whole batch); after the batch every
  send is awaited: a refused one raises, so nothing is committed;
* only then are the consumed offsets committed; a commit rides out a broker restart
  (``offset_commits.py``).

A crash anywhere before the commit replays the batch; the handlers are idempotent, so
replays cause no duplicate effects. Any exception other than ``InvalidMessage`` ends the
process, so the orchestrator restarts it, rather than dead-lettering what a bug broke.
A :class:`DlqLimit` stops the service when too much is dead-lettered, so a bad deploy
cannot send a whole topic to the DLQ.

The clients are aiokafka's, in an event loop of the processor's own: its record parser
and batch builder are compiled, where kafka-python's are Python and run beside a sender
and a network thread. On the classifier's records, reading cost kafka-python 34 us a
record and writing 40 us, against 3-14 us and 13-16 us here, and the classifier's loop
a quarter less in all (BENCHMARKS.md, 2026-12-02 (afternoon)). The handler runs in the
loop, so the loop is handed back to the clients (heartbeats, fetches, sends) every
:data:`HAND_OVER_SECONDS`; the outputs made until then go to Kafka at that moment, as
record batches (``record_batches.py``).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable, Generic, Iterable, Iterator, Protocol, Sequence, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import TopicPartition
from prometheus_client import Counter, Histogram

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import DeadLetter, encode_record
from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.offset_commits import CommitRetry
from mailintake.runtime.record_batches import batch_producer, key_partitions, send_in_batches

RecordT = TypeVar("RecordT")

DLQ_TOPIC = "mail.dlq"

HAND_OVER_SECONDS = 0.1
"""How long the handler keeps the event loop before the outputs made so far are sent and
the clients run (looked at as each output is made; the classifier makes one a record,
a decision or a dead letter). It stands in for a producer's linger, and keeps heartbeats
far inside the session timeout (10 s) even for a batch of large mails."""

log = structlog.get_logger(__name__)

RECORDS_IN = Counter("mailintake_records_consumed_total", "Records consumed", ["service", "topic"])
RECORDS_OUT = Counter("mailintake_records_produced_total", "Records produced", ["service", "topic"])
RECORD_BATCHES_OUT = Counter(
    "mailintake_record_batches_produced_total", "Record batches handed to Kafka (each a request's share)", ["service"]
)
DEAD_LETTERED = Counter("mailintake_dead_lettered_total", "Records sent to the DLQ", ["service", "topic"])
BATCH_SECONDS = Histogram("mailintake_batch_seconds", "Time to process, produce and commit one batch", ["service"])


@dataclass(frozen=True)
class Output:
    """One record a handler wants produced."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    """None: the producer's partitioner chooses by key."""


class DlqRateExceeded(RuntimeError):
    """Too many records were dead-lettered; the service stops instead of losing more."""


@dataclass
class DlqLimit:
    """Stop when more than ``max_ratio`` of the last ``window`` records were dead-lettered
    (once at least ``min_records`` were seen), or after ``max_consecutive`` in a row."""

    max_ratio: float = 0.5
    window: int = 1000
    min_records: int = 50
    max_consecutive: int = 200

    def __post_init__(self) -> None:
        self._recent: collections.deque[bool] = collections.deque(maxlen=self.window)
        # Kept beside the window rather than summed from it: record() runs for every
        # record, and a sum over a 1,000-record window was a tenth of the ticketer's loop.
        self._dead_in_window = 0
        self._consecutive = 0

    def record(self, dead_lettered: bool) -> None:
        if len(self._recent) == self.window:
            self._dead_in_window -= self._recent[0]
        self._recent.append(dead_lettered)
        self._dead_in_window += dead_lettered
        self._consecutive = self._consecutive + 1 if dead_lettered else 0
        if self._consecutive > self.max_consecutive:
            raise DlqRateExceeded(f"{self._consecutive} records in a row were dead-lettered (limit {self.max_consecutive})")
        if len(self._recent) >= self.min_records:
            ratio = self._dead_in_window / len(self._recent)
            if ratio > self.max_ratio:
                raise DlqRateExceeded(
                    f"{ratio:.0%} of the last {len(self._recent)} records were dead-lettered (limit {self.max_ratio:.0%})"
                )


class SourceMessage(Protocol):
    """Where a consumed record came from and its bytes: aiokafka's ``ConsumerRecord`` and
    faust's ``Message`` both fit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dead_letter(service: str, message: SourceMessage, reason: str, exc: BaseException) -> Output:
    """The DLQ output for ``message``, keyed by where it came from so it can be found again."""
    letter = DeadLetter(
        service=service,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        reason=reason,
        exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        failed_at=datetime.now(UTC),
        original_key=message.key,
        original_value=message.value,
        claim_check_sha256=getattr(exc, "claim_check_sha256", None),
    )
    key = f"{message.topic}:{message.partition}:{message.offset}".encode()
    return Output(DLQ_TOPIC, key, encode_record(DLQ_TOPIC, letter))


def dead_letter_counted(service: str, message: SourceMessage, exc: InvalidMessage, limit: DlqLimit) -> Output:
    """:func:`dead_letter` for a record that is invalid, counted against ``limit`` (which
    raises past its ratio), in the dead-letter metric and in the log."""
    limit.record(True)
    DEAD_LETTERED.labels(service, message.topic).inc()
    log.warning(
        "record.dead_lettered",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        reason=str(exc),
    )
    return dead_letter(service, message, str(exc), exc)


ProcessMany = Callable[[Iterable[tuple[RecordT, ConsumerRecord]]], Iterable[Sequence[Output] | InvalidMessage]]
"""A handler of many records: for each (typed record, Kafka message) it takes, in order,
that record's outputs or the :class:`InvalidMessage` it cannot be processed for. It may
take a few records before it yields the first result (the classifier parses a small group
of mails back to back); it takes them from the iterable as it goes."""


def one_at_a_time(process: Callable[[RecordT, ConsumerRecord], Sequence[Output]]) -> ProcessMany[RecordT]:
    """A :data:`ProcessMany` that hands each record to ``process`` alone."""

    def process_many(records: Iterable[tuple[RecordT, ConsumerRecord]]) -> Iterator[Sequence[Output] | InvalidMessage]:
        for record, message in records:
            try:
                outputs: Sequence[Output] | InvalidMessage = process(record, message)
            except InvalidMessage as exc:
                outputs = exc
            yield outputs

    return process_many


class StreamProcessor(Generic[RecordT]):
    """Runs ``decode`` and ``process`` over ``source_topic`` with the ordering above.

    ``process`` receives the typed record and the raw Kafka message and returns outputs.
    It may have idempotent side effects (a database write); it must
    raise :class:`InvalidMessage` for input it can never process. ``process_many``, given
    instead, takes many records at once (see :data:`ProcessMany`); its results are
    produced, dead-lettered and committed just as ``process``'s.
    """

    def __init__(
        self,
        *,
        service: str,
        source_topic: str,
        group_id: str,
        bootstrap_servers: str,
        decode: Callable[[bytes], RecordT],
        process: Callable[[RecordT, ConsumerRecord], Sequence[Output]] | None = None,
        process_many: ProcessMany[RecordT] | None = None,
        health: Health,
        dlq_limit: DlqLimit | None = None,
        max_batch: int = 500,
        client_id: str | None = None,
    ) -> None:
        self.service = service
        self.source_topic = source_topic
        if (process is None) == (process_many is None):
            raise TypeError("StreamProcessor takes either process or process_many")
        self._decode = decode
        self._process_many: ProcessMany[RecordT] = process_many or one_at_a_time(process)  # type: ignore[arg-type]
        self._health = health
        self._dlq_limit = dlq_limit or DlqLimit()
        self._commit_retry = CommitRetry(service)
        self._servers = bootstrap_servers.split(",")
        self._group_id = group_id
        self._client_id = client_id or service
        self._max_batch = max_batch
        # Made in run(): aiokafka's clients belong to the event loop they start in.
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; then leave the group and return."""
        asyncio.run(self._run(stop))

    def _make_clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        consumer = AIOKafkaConsumer(
            self.source_topic,
            bootstrap_servers=self._servers,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Transactions may be used by producers upstream; never read aborted data.
            isolation_level="read_committed",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        producer = batch_producer(self._servers, self._client_id)
        return consumer, producer

    async def _run(self, stop: threading.Event) -> None:
        self._consumer, self._producer = consumer, producer = self._make_clients()
        await producer.start()
        try:
            await consumer.start()
            log.info("processor.started", topic=self.source_topic)
            try:
                while not stop.is_set():
                    self._health.beat()
                    batch = await consumer.getmany(timeout_ms=500, max_records=self._max_batch)
                    # getmany() returning at all means the clients reached the broker.
                    self._health.set_ready(True)
                    if batch:
                        await self._handle_batch(batch)
            finally:
                # stop() leaves the consumer group, so partitions move at once; it commits nothing.
                await consumer.stop()
        finally:
            await producer.stop()
            log.info("processor.stopped", topic=self.source_topic)

    async def _handle_batch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = handed_over = time.monotonic()
        made: list[Output] = []
        sends: list[asyncio.Future] = []
        produced: collections.Counter[str] = collections.Counter()  # a labelled inc() costs ~1.3 us
        offsets: dict[TopicPartition, int] = {}
        for tp, messages in batch.items():
            # The outputs made so far go to Kafka at each hand-over, so the next stage
            # sees the first mails of a long batch while the rest are processed; the
            # commit still waits for every acknowledgement below. A crash between the
            # two replays the batch, as it would after a produce without commit.
            for output in self._outputs(messages):
                made.append(output)
                if time.monotonic() - handed_over >= HAND_OVER_SECONDS:
                    sends += await self._send(made, produced)
                    made = []
                    handed_over = time.monotonic()
            offsets[tp] = messages[-1].offset + 1
            RECORDS_IN.labels(self.service, tp.topic).inc(len(messages))
        sends += await self._send(made, produced)
        await asyncio.gather(*sends)  # raises if Kafka refused a batch: nothing gets committed
        for topic, count in produced.items():
            RECORDS_OUT.labels(self.service, topic).inc(count)
        await self._commit(offsets)
        BATCH_SECONDS.labels(self.service).observe(time.monotonic() - started)

    async def _send(self, outputs: list[Output], produced: collections.Counter[str]) -> list[asyncio.Future]:
        """Hand ``outputs`` to the producer as record batches; their futures."""
        if not outputs:
            return []
        assert self._producer is not None
        partition_for_key = await key_partitions(self._producer, (output.topic for output in outputs))
        sends = await send_in_batches(self._producer, outputs, partition_for_key)
        produced.update(output.topic for output in outputs)
        RECORD_BATCHES_OUT.labels(self.service).inc(len(sends))
        # Handing over: the sender and the heartbeat run before the handler goes on.
        await asyncio.sleep(0)
        return sends

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        # A partition taken away by a rebalance while the batch ran loses nothing: the
        # batch's outputs are acknowledged, and its new owner reads the batch again from
        # the last committed offset (a replay). Only the partitions still held are committed.
        assert self._consumer is not None
        consumer = self._consumer
        held = consumer.assignment()
        kept = {tp: offset for tp, offset in offsets.items() if tp in held}
        if len(kept) < len(offsets):
            self._commit_retry.lost_to_rebalance(f"partitions {sorted(str(tp) for tp in offsets.keys() - kept.keys())} "
                                                 "were assigned elsewhere while the batch ran")
        if kept:
            await self._commit_retry.run(lambda: consumer.commit(kept))

    def _outputs(self, messages: list[ConsumerRecord]) -> Iterator[Output]:
        """Every output of ``messages``, each as soon as it exists, dead letters included."""
        handed: collections.deque[ConsumerRecord] = collections.deque()
        undecodable: list[Output] = []
        taken_all = False

        def decoded() -> Iterator[tuple[RecordT, ConsumerRecord]]:
            nonlocal taken_all
            for message in messages:
                try:
                    record = self._decode(message.value)
                except InvalidMessage as exc:
                    undecodable.append(self._dead_letter(message, exc))
                    continue
                handed.append(message)
                yield record, message
            taken_all = True

        for result in self._process_many(decoded()):
            yield from undecodable
            undecodable.clear()
            if not handed:
                raise RuntimeError(f"{self.service}: the handler gave more results than it took records")
            message = handed.popleft()
            if isinstance(result, InvalidMessage):
                yield self._dead_letter(message, result)
            else:
                self._dlq_limit.record(False)
                yield from result
        # Either would let the commit pass records that were never handled.
        if handed:
            raise RuntimeError(f"{self.service}: the handler gave no result for {len(handed)} records")
        if not taken_all:
            raise RuntimeError(f"{self.service}: the handler stopped before it took every record of the batch")
        yield from undecodable

    def _dead_letter(self, message: ConsumerRecord, exc: InvalidMessage) -> Output:
        return dead_letter_counted(self.service, message, exc, self._dlq_limit)
