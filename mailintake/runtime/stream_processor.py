"""The consume loop every stream service runs: decode -> process -> produce -> commit.

The order is the exactly-once argument (in the manner of Arroyo/Snuba):

* each record of a batch is decoded and processed; a record that cannot be decoded or
  is :class:`InvalidMessage` becomes a :class:`DeadLetter` on ``mail.dlq`` with its
  source topic, partition, offset and the reason;
* its outputs are produced at once, with ``acks=all`` by the idempotent producer (so
  the next stage does not wait for the whole batch); after the batch the producer is
  flushed and every send checked: a failed one raises, so nothing is committed;
* only then are the consumed offsets committed; a commit rides out a broker restart
  (``offset_commits.py``).

A crash anywhere before the commit replays the batch; the handlers are idempotent, so
replays cause no duplicate effects. Any exception other than ``InvalidMessage`` ends the
process, so the orchestrator restarts it, rather than dead-lettering what a bug broke.
A :class:`DlqLimit` stops the service when too much is dead-lettered, so a bad deploy
cannot send a whole topic to the DLQ.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable, Generic, Iterable, Iterator, Protocol, Sequence, TypeVar

import structlog
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter, Histogram

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import DeadLetter, encode_record
from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.key_partitioning import KeyPartitioner
from mailintake.runtime.offset_commits import CommitRetry
from mailintake.runtime.producer_sizes import MAX_REQUEST_BYTES, PRODUCER_BATCH_BYTES

RecordT = TypeVar("RecordT")

DLQ_TOPIC = "mail.dlq"

# One try of a commit; kafka-python's own default (the consumer's request timeout, five
# minutes) would leave CommitRetry nothing to bound.
COMMIT_ATTEMPT_TIMEOUT_MS = 10_000

log = structlog.get_logger(__name__)

RECORDS_IN = Counter("mailintake_records_consumed_total", "Records consumed", ["service", "topic"])
RECORDS_OUT = Counter("mailintake_records_produced_total", "Records produced", ["service", "topic"])
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
    """Where a consumed record came from and its bytes: kafka-python's ``ConsumerRecord``
    and faust's ``Message`` both fit."""

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
    It may have idempotent side effects (the ticketer's database transaction); it must
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
        servers = bootstrap_servers.split(",")
        self._consumer = KafkaConsumer(
            bootstrap_servers=servers,
            group_id=group_id,
            client_id=client_id or service,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Transactions may be used by producers upstream; never read aborted data.
            isolation_level="read_committed",
            max_poll_records=max_batch,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        self._producer = KafkaProducer(
            bootstrap_servers=servers,
            client_id=client_id or service,
            acks="all",
            enable_idempotence=True,
            # Every new batch wakes kafka-python's sender thread and becomes a request of
            # its own. With its defaults (16 KiB batches, 5 ms linger) a batch held two or
            # three decisions of a few KiB, or whatever was made in the last 5 ms. Measured
            # side by side, 5,000 records of 6 KB to 12 partitions with 400 us of work
            # before each send: 117-131 us of CPU per record with the defaults, 62-67 us
            # with 1 MiB batches, 44-52 us with 1 MiB batches and 100 ms (a classifier's
            # parse is ~210 us a mail). flush() at the end of each batch sends what is
            # waiting at once, so the linger adds no latency beyond the batch's own.
            batch_size=PRODUCER_BATCH_BYTES,
            linger_ms=100,
            max_in_flight_requests_per_connection=5,
            max_request_size=MAX_REQUEST_BYTES,
            partitioner=KeyPartitioner(),
        )

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; then commit, leave the group and return."""
        self._consumer.subscribe([self.source_topic])
        log.info("processor.started", topic=self.source_topic)
        try:
            while not stop.is_set():
                self._health.beat()
                batch = self._consumer.poll(timeout_ms=500)
                # poll() returning at all means the group coordinator answered.
                self._health.set_ready(True)
                if batch:
                    self._handle_batch(batch)
        finally:
            self._producer.close(timeout=10)
            # close() leaves the consumer group, so partitions move at once.
            self._consumer.close(autocommit=False)
            log.info("processor.stopped", topic=self.source_topic)

    def _handle_batch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = time.monotonic()
        outputs: list[Output] = []
        futures = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, messages in batch.items():
            # Each record's outputs go to the producer as soon as they exist, so the
            # next stage sees the first mails of a long batch (within the producer's
            # linger) while the rest are processed;
            # the commit still waits for every acknowledgement below. A crash between
            # the two replays the batch, as it would after a produce without commit.
            for output in self._outputs(messages):
                outputs.append(output)
                futures.append(self._producer.send(output.topic, key=output.key, value=output.value, partition=output.partition))
            offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            RECORDS_IN.labels(self.service, tp.topic).inc(len(messages))
        self._producer.flush()
        acknowledged: dict[str, int] = {}  # counted per topic: a labelled inc() costs ~1.3 us
        try:
            for future, output in zip(futures, outputs):
                future.get(timeout=30)  # raises if Kafka did not acknowledge: nothing gets committed
                acknowledged[output.topic] = acknowledged.get(output.topic, 0) + 1
        finally:
            for topic, count in acknowledged.items():
                RECORDS_OUT.labels(self.service, topic).inc(count)
        self._commit(offsets)
        BATCH_SECONDS.labels(self.service).observe(time.monotonic() - started)

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        # A commit refused after a rebalance loses nothing: the batch's outputs are
        # acknowledged. A new owner of the partitions reads the batch again from the last
        # committed offset (a replay); if they stay here, kafka-python keeps their position
        # and the next batch's commit covers this one.
        self._commit_retry.run(lambda: self._consumer.commit(offsets, timeout_ms=COMMIT_ATTEMPT_TIMEOUT_MS))

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
