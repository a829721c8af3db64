"""The ticketer's Kafka edge: a faust-streaming app, mail.classified -> PostgreSQL -> ticket.events.

One agent takes ``mail.classified`` in batches (``noack_take``) and hands each to one
batch task, which handles the batches in the order taken (while one is in PostgreSQL the
agent fills the next, and steps 4-5 of one batch run while the next does steps 1-3;
steps 4-5 of the batches still run one at a time, in order). Per batch:

1. decodes each record; one that cannot be decoded becomes a dead letter (``mail.dlq``,
   with source topic, partition, offset and reason), counted against the DLQ-rate cap;
2. joins each new-ticket candidate with the window table of open bundles
   (``bundle_join.py``) to find the ticket it may join;
3. applies the batch to PostgreSQL in one transaction (``store.py``; a thread, since
   SQLAlchemy and psycopg are synchronous here), each mail guarded by the ledger;
4. produces every event and dead letter and awaits each acknowledgement;
5. commits the batch's offsets (next offset per partition) to Kafka.

The offsets are committed by this module, not by faust's acknowledgement machinery, and
that is the exactly-once argument. What faust 0.15.3 does on its own, read in its
source (``faust/transport/consumer.py``, ``faust/streams.py``, ``_cython/streams.pyx``):

* a stream acknowledges an event in a ``finally`` block, so also when the agent body
  raised, and ``Consumer.on_task_error`` then commits: the record that failed would be
  committed unprocessed. ``noack()``/``noack_take`` leave acknowledging to the agent;
* but events the stream skips during a rebalance (``flow_control`` suspended, or a
  ``generation_id`` from before the rebalance) are acknowledged as "done" without ever
  reaching the agent, and the Cython iterator does so inline, past any hook. A later
  commit can then move past a record no one processed;
* a commit first publishes the messages attached with ``Event.send``/``attach`` and
  awaits them, then calls ``producer.flush()`` (which waits for in-flight sends but
  does not report their failures), then commits the contiguous acknowledged offsets;
* ``processing_guarantee="exactly_once"`` puts outputs and offsets into one Kafka
  transaction, but the effect that matters here is in PostgreSQL, outside it.

So the source topic is declared with ``acks=False`` (faust never tracks nor commits its
offsets) and the agent commits, after steps 3 and 4 completed, exactly the offsets it
processed. A crash anywhere before the commit replays the batch: the ledger turns each
replayed mail into a no-op that re-emits the events stored with it (same ids, same
timestamps), so ``ticket.events`` is at-least-once with stable ids and PostgreSQL is
exactly once. Events faust skips in a rebalance are simply not committed; the consumer
is positioned at the committed offset after the rebalance and reads them again. Events
taken before the latest rebalance are dropped for the same reason. And a commit only ever
names the end of an unbroken run of handled offsets that starts at the committed offset
(``partition_progress.py``): faust's drain loop also drops records below its last read
offset, which can be left ahead of the position, so records that arrive past a hole are
held back and the consumer seeks back to the hole, and again while the hole lasts (a seek
can be undone by records fetched before it), whether or not more records arrive.
Any exception other than an undecodable record stops the worker (non-zero exit), so the
orchestrator restarts it rather than let it go on past a record that failed.

Around that: SIGTERM finishes the batch in flight (its offsets are committed), then the
app stops and its consumer leaves the group, so the partitions move at once (a batch that
was waiting is dropped uncommitted). A rebalance waits for the batch in flight before
partitions are revoked. The app's consumer hands each fetched record to the stream
without faust's per-record tasks (``faust_delivery.py``). faust's web server is off;
``/metrics``, ``/livez`` and ``/readyz`` come from ``mailintake/runtime/http_endpoint.py``.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

from mailintake.contracts import InvalidMessage, get_topic, record_key
from mailintake.contracts.records import Decision, MailClassified, record_decoder, record_encoder
from mailintake.database import engine_for
from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.key_partitioning import aiokafka_key_partitioner
from mailintake.runtime.producer_sizes import MAX_REQUEST_BYTES
from mailintake.runtime.record_batches import key_partitions, send_in_batches
from mailintake.runtime.stream_processor import (
    BATCH_SECONDS,
    RECORDS_IN,
    RECORDS_OUT,
    DlqLimit,
    Output,
    dead_letter_counted,
)
from services.ticketer.bundle_join import TABLE_NAME, BundleJoin, BundleTable, PollCycleWindow, bundle_partition
from services.ticketer.faust_delivery import InlineDeliveryApp
from services.ticketer.partition_progress import HoleRefetch, plan_partition
from services.ticketer.settings import TicketerSettings
from services.ticketer.store import BatchItem, HandledMail, TicketStore

SERVICE = "ticketer"
SOURCE_TOPIC = "mail.classified"
OUTPUT_TOPIC = "ticket.events"

# How long the agent waits to fill a batch before it hands on what it has: a little
# latency buys batches large enough to make a PostgreSQL transaction worth its cost.
BATCH_WAIT_SECONDS = 0.2
# Table entries older than this are pruned; a bundle needs them for two poll intervals.
BUNDLE_TABLE_RETENTION_SECONDS = 24 * 3600.0
PRUNE_EVERY_SECONDS = 600.0

# The event loop (faust, Kafka) and the database thread share the GIL. At Python's default
# 5 ms switch interval each socket call of the loop can wait that long for the GIL while
# the database thread encodes parameters; at 0.5 ms the ticketer measured about twice
# the throughput (bench/ticketer_throughput.py).
GIL_SWITCH_INTERVAL_SECONDS = 0.0005

HELD_BACK = Counter(
    "mailintake_ticketer_held_back_total",
    "Records that arrived past a hole in their partition's offsets (records faust withheld) and were fetched again",
)
STALE_DROPPED = Counter(
    "mailintake_ticketer_stale_events_dropped_total",
    "Events taken before a rebalance and left for the new assignment to fetch again",
)
OUTCOMES = Counter("mailintake_ticketer_outcomes_total", "Mails handled by outcome", ["outcome", "replay"])
BUNDLE_JOIN = Counter(
    "mailintake_ticketer_bundle_join_total",
    "New-ticket candidates by what the window table said: hit, miss, or not joinable (partition differs)",
    ["result"],
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AppliedBatch:
    """A batch PostgreSQL has committed: what remains is to produce and commit offsets."""

    outputs: list[Output]
    offsets: dict[Any, int]
    started: float


class TicketerWorker:
    """The faust app with its agent; :meth:`run_until` drives it on the running event loop."""

    def __init__(
        self, settings: TicketerSettings, health: Health, *, source_topic: str = SOURCE_TOPIC, store: TicketStore | None = None
    ) -> None:
        """``source_topic`` carries ``mail.classified`` records; another name only for a
        benchmark that must not share the topic (it needs as many partitions)."""
        self._settings = settings
        self._health = health
        self._store = store or TicketStore(engine_for(settings.database_url.get_secret_value()), settings)
        self._partitions = get_topic(SOURCE_TOPIC).partitions
        self.source_topic = source_topic
        # faust keeps table files under its data directory, which defaults to one in the
        # working directory; with the memory store it only creates empty folders there.
        self._datadir = tempfile.TemporaryDirectory(prefix="mailintake-ticketer-faust-")
        self.app = InlineDeliveryApp(
            settings.group_id,
            datadir=self._datadir.name,
            broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
            store="memory://",
            web_enabled=False,
            autodiscover=False,
            topic_replication_factor=settings.table_replication_factor,
            # The table is a cache that PostgreSQL backs; a standby copy would only cost reads.
            table_standby_replicas=0,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.session_timeout_seconds,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
            producer_acks=-1,
            producer_max_request_size=MAX_REQUEST_BYTES,
            producer_partitioner=aiokafka_key_partitioner,
            key_serializer="raw",
            value_serializer="raw",
        )
        self._source = self.app.topic(source_topic, key_serializer="raw", value_serializer="raw", acks=False)
        table = self.app.tables.add(
            BundleTable(
                self.app,
                name=TABLE_NAME,
                beacon=self.app.tables.beacon,
                partitions=self._partitions,
                default=None,
                help="Open bundles: (bundle key, poll-cycle window) -> ticket number",
                extra_topic_configs={"retention.ms": str(int(BUNDLE_TABLE_RETENTION_SECONDS * 1000))},
            )
        )
        table.using_window(PollCycleWindow())
        self._join = BundleJoin(table, BUNDLE_TABLE_RETENTION_SECONDS)
        self.app.agent(self._source, name="ticketer.handle_classified_mails")(self._handle_stream)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self.app.on_partitions_assigned.connect(self._on_partitions_assigned)
        # Per partition: where the next batch continues (the broker's committed offset,
        # then the end of each batch handled); and the last seek back to a hole, if any.
        self._resume_at: dict[Any, int] = {}
        self._refetches: dict[Any, HoleRefetch] = {}
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ticketer-db")
        self._offsets: AIOKafkaConsumer | None = None
        self._dlq_limit = DlqLimit(max_ratio=settings.max_dlq_ratio)
        self._batch_lock = asyncio.Lock()
        # One batch may wait while one is handled; a full queue holds the agent (back-pressure).
        self._waiting: asyncio.Queue[list[Any]] = asyncio.Queue(maxsize=1)
        self._batches_task: asyncio.Task | None = None
        self._closing = False
        self._batch_started: float | None = None
        self._finishing: asyncio.Task | None = None
        self._finish_started: float | None = None
        self._last_prune = time.monotonic()
        self.failure: BaseException | None = None

    # --- the agent and the batch task ----------------------------------------

    async def _handle_stream(self, stream: Any) -> None:
        """The agent: hands each batch to :meth:`_handle_batches` and goes back to faust at
        once, so the next batch fills while this one is in PostgreSQL and Kafka."""
        async for events in stream.noack_take(self._settings.max_batch, within=BATCH_WAIT_SECONDS):
            if self.failure is not None:
                # Hold here: faust would restart a crashed agent at the next event, past
                # the batch that failed. run_until sees the failure and stops the app.
                await asyncio.Event().wait()
            await self._waiting.put(events)

    async def _handle_batches(self) -> None:
        """Handles the batches in the order faust took them.

        A batch is applied to PostgreSQL (:meth:`_apply`) and then finished
        (:meth:`_finish`: its events and table changes produced and acknowledged, its
        offsets committed). The finish of one batch runs while the next is decoded and
        applied; finishes run one at a time, in order, so offsets are committed in the
        order the batches were taken, and none after a finish that failed.
        """
        while True:
            events = await self._waiting.get()
            async with self._batch_lock:
                if self._closing or self.failure is not None:
                    continue  # not processed, not committed: the next owner reads them
                self._batch_started = time.monotonic()
                try:
                    applied = await self._apply(events)
                    self._maybe_prune()
                    if self._finishing is not None:
                        await self._finishing
                    if applied is not None and self.failure is None:
                        self._finishing = asyncio.create_task(self._finish(applied), name="ticketer-finish")
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # noqa: BLE001 - any failure stops the worker, see the docstring
                    self._fail(exc)
                finally:
                    self._batch_started = None

    def _fail(self, exc: BaseException) -> None:
        log.error("ticketer.batch_failed", error=repr(exc), exc_info=exc)
        if self.failure is None:
            self.failure = exc

    async def _until_finished(self) -> None:
        """Wait for the batch being finished, if any (its offsets committed or failed)."""
        if self._finishing is not None:
            await asyncio.shield(self._finishing)

    async def _apply(self, events: list[Any]) -> AppliedBatch | None:
        started = time.monotonic()
        # Events fetched before the latest rebalance are stale: faust drops such events
        # and, after the assignment, fetches again from the committed offset. A batch taken
        # before the rebalance must do the same: committing it now could move the offset
        # past an event faust dropped, and that mail would never be handled.
        generation = self.app.consumer_generation_id
        current = [event for event in events if event.message.generation_id == generation]
        if len(current) < len(events):
            STALE_DROPPED.inc(len(events) - len(current))
            log.info("ticketer.stale_events_dropped", count=len(events) - len(current), generation=generation)
        events, offsets = await self._unbroken_runs(current)
        if not events:
            return None
        outputs: list[Output] = []
        items: list[BatchItem] = []
        joinables: list[bool] = []
        join_results: collections.Counter[str] = collections.Counter()
        decode_mail = record_decoder(SOURCE_TOPIC)
        for event in events:
            message = event.message
            try:
                mail = decode_mail(message.value or b"")
            except InvalidMessage as exc:
                outputs.append(dead_letter_counted(SERVICE, message, exc, self._dlq_limit))
                continue
            self._dlq_limit.record(False)
            assert isinstance(mail, MailClassified)
            joinable = self._joinable(mail, message.partition)
            items.append(BatchItem(mail, self._bundle_hint(mail, joinable, join_results)))
            joinables.append(joinable)
        RECORDS_IN.labels(SERVICE, self.source_topic).inc(len(events))
        for join_result, count in join_results.items():
            BUNDLE_JOIN.labels(join_result).inc(count)

        handled: list[HandledMail] = []
        if items:
            loop = asyncio.get_running_loop()
            handled = await loop.run_in_executor(self._db, self._store.apply_batch, items)
        encode_event = record_encoder(OUTPUT_TOPIC)
        outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        for result, joinable in zip(handled, joinables):
            outcomes[self._note(result)] += 1
            outputs.extend(Output(OUTPUT_TOPIC, record_key(e), encode_event(e)) for e in result.events)
            opened = result.opened_ticket
            if opened is not None and joinable:
                change = self._join.remember(result.mail.bundle_key, result.mail.poll_cycle, opened)
                outputs.append(Output(change.topic, change.key, change.value, change.partition))
        for labels, count in outcomes.items():
            OUTCOMES.labels(*labels).inc(count)
        return AppliedBatch(outputs, offsets, started)

    async def _finish(self, batch: AppliedBatch) -> None:
        """Produce the batch's events, dead letters and window-table changes, await every
        acknowledgement, then commit its offsets. A failure stops the worker, with nothing
        of the batch committed."""
        self._finish_started = time.monotonic()
        try:
            sends = await self._send(batch.outputs)
            await asyncio.gather(*sends)  # raises if Kafka did not acknowledge: nothing gets committed
            # Counted per topic: a labelled inc() costs ~1.3 us, and a mail has two or three outputs.
            for topic, count in collections.Counter(output.topic for output in batch.outputs).items():
                RECORDS_OUT.labels(SERVICE, topic).inc(count)
            if batch.offsets and not await self._commit_offsets(batch.offsets):
                # A rebalance came first: ask the broker where to resume next time.
                for tp in batch.offsets:
                    self._resume_at.pop(tp, None)
            BATCH_SECONDS.labels(SERVICE).observe(time.monotonic() - batch.started)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure stops the worker, see the docstring
            self._fail(exc)
        finally:
            self._finish_started = None

    async def _send(self, outputs: list[Output]) -> list[asyncio.Future]:
        """Hand ``outputs`` to faust's producer in record batches (``record_batches.py``);
        partitions are chosen as faust's partitioner (``aiokafka_key_partitioner``) would."""
        producer = self.app.producer._ensure_producer()  # the AIOKafkaProducer under faust's
        partition_for_key = await key_partitions(producer, (output.topic for output in outputs))
        return await send_in_batches(producer, outputs, partition_for_key)

    async def _commit_offsets(self, offsets: dict[Any, int]) -> bool:
        """Commit ``offsets``; False when a rebalance came first (the new owner replays them)."""
        # faust's transport-level commit; it skips partitions no longer assigned (their
        # new owner replays them) and crashes the app on any other failure. Through a
        # broker restart it waits: aiokafka retries retriable commit errors itself, without
        # end (tests/ticketer/test_commit_through_kafka_restart.py), and a commit stuck for
        # longer than the stall limit fails /livez.
        return await self.app.consumer._commit(offsets)

    async def _unbroken_runs(self, events: list[Any]) -> tuple[list[Any], dict[Any, int]]:
        """The events to handle and the offsets to commit after them.

        The events are those that continue each partition from its committed offset
        without a hole (and any replays below it), in offset order, each once; for a
        partition with a hole (records faust withheld) it seeks back to the hole so they
        are fetched again (``partition_progress.py``)."""
        by_partition: dict[Any, dict[int, Any]] = {}
        for event in events:
            by_partition.setdefault(event.message.tp, {}).setdefault(event.message.offset, event)
        kept: list[Any] = []
        commits: dict[Any, int] = {}
        for tp, by_offset in by_partition.items():
            if tp not in self._resume_at:
                self._resume_at[tp] = await self._broker_committed_offset(tp)
            plan = plan_partition(by_offset, self._resume_at[tp])
            kept.extend(by_offset[offset] for offset in plan.handle)
            if plan.commit is not None:
                commits[tp] = plan.commit
                # The next batch continues here, even before this one is committed.
                self._resume_at[tp] = plan.commit
                sought = self._refetches.get(tp)
                if sought is not None and sought.offset < plan.commit:
                    del self._refetches[tp]  # the hole is filled
            if plan.refetch_from is not None:
                HELD_BACK.inc(plan.held_back)
                await self._refetch(tp, plan.refetch_from, plan.held_back)
        return kept, commits

    async def _broker_committed_offset(self, tp: Any) -> int:
        """Where the group resumes ``tp``: its committed offset or, for a group that never
        committed it, the log start (the consumer's reset policy is "earliest")."""
        reader = await self._offsets_reader()
        partition = TopicPartition(tp.topic, tp.partition)
        committed = await reader.committed(partition)
        if committed is None:
            committed = (await reader.beginning_offsets([partition]))[partition]
        return committed

    async def _offsets_reader(self) -> AIOKafkaConsumer:
        """A Kafka client of the worker's own, on its event loop, for reading offsets.

        Not faust's consumer: its thread runs calls from a queue with two workers, and
        during a rebalance both can be taken, one by the revoke callback (which waits for
        the batch in flight) and one by a long poll; a batch that asked that thread for an
        offset then waited for the callback, and the rebalance for the batch, until the
        callback gave up (half a session timeout, each time a replica joined). This client
        is in the group's name but never subscribes, so it reads the group's offsets
        without joining it.
        """
        if self._offsets is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=[server.strip() for server in self._settings.kafka_bootstrap_servers.split(",")],
                group_id=self._settings.group_id,
                enable_auto_commit=False,
                client_id=f"{self._settings.group_id}-offsets",
            )
            await reader.start()
            self._offsets = reader
        return self._offsets

    async def _refetch(self, tp: Any, offset: int, held_back: int) -> None:
        # Records past the hole that were fetched before the seek still arrive for a
        # while; seeking again for each of them would be undone like the first seek
        # (``HoleRefetch``). The hole is sought again once they stop, by the next batch or
        # by :meth:`_refetch_unfilled_holes`.
        last = self._refetches.get(tp)
        now = time.monotonic()
        if last is not None and last.offset == offset:
            if held_back:
                last.note_records_past(now)
            if not last.due(now):
                return
        self._refetches[tp] = HoleRefetch(offset, now)
        log.warning("ticketer.offset_hole", topic=tp.topic, partition=tp.partition, refetch_from=offset, held_back=held_back)
        await self.app.consumer.seek(tp, offset)

    async def _refetch_unfilled_holes(self) -> None:
        """Seek again to every hole that a refetch has not filled in time.

        A seek can be undone (``HoleRefetch``) by the records of a fetch from before it.
        Those late records lead a batch back to the hole only while they last; when the
        partition then goes quiet, no batch would notice the hole again and the
        partition would stall at it.
        """
        now = time.monotonic()
        assigned = self.app.consumer.assignment()
        for tp, sought in list(self._refetches.items()):
            if not sought.due(now) or self._resume_at.get(tp) != sought.offset:
                continue
            if tp not in assigned:
                self._refetches.pop(tp, None)  # a batch may have dropped it meanwhile
                continue
            await self._refetch(tp, sought.offset, held_back=0)

    def _joinable(self, mail: MailClassified, partition: int) -> bool:
        """Whether the window table may hold ``mail``'s bundle: a bundling new-ticket
        candidate on the partition its bundle key hashes to."""
        return (
            mail.decision is Decision.NEW_TICKET
            and mail.ticket_options.auto_bundle
            and bool(mail.bundle_key)
            and bundle_partition(mail.bundle_key, self._partitions) == partition
        )

    def _bundle_hint(self, mail: MailClassified, joinable: bool, join_results: collections.Counter[str]) -> int | None:
        """What the window table says of a bundling new-ticket candidate; ``joinable`` is
        :meth:`_joinable` of the mail on the partition it came from. The look-up's result
        (hit, miss or not joinable) is counted in ``join_results``."""
        if not (mail.decision is Decision.NEW_TICKET and mail.ticket_options.auto_bundle and mail.bundle_key):
            return None
        if not joinable:
            join_results["not_joinable"] += 1
            return None
        found = self._join.lookup(mail.bundle_key, mail.poll_cycle)
        join_results["hit" if found is not None else "miss"] += 1
        return found

    def _note(self, result: HandledMail) -> tuple[str, str]:
        """Log the handled mail; return its outcome's metric labels (outcome, replay)."""
        outcome = result.events[-1]
        log.info(
            "mail.handled",
            account_id=result.mail.account_id,
            source_id=result.mail.source_id,
            message_id=result.mail.message_id,
            poll_cycle=result.mail.poll_cycle,
            outcome=outcome.kind.value,
            ticket_number=outcome.ticket_number,
            replay=not result.written,
        )
        return outcome.kind.value, str(not result.written).lower()

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS:
            self._last_prune = time.monotonic()
            pruned = self._join.prune()
            if pruned:
                log.info("bundle_table.pruned", entries=pruned)

    async def _on_partitions_revoked(self, _sender: Any, _revoked: Any, **_kwargs: Any) -> None:
        # Let the batches in flight finish and commit before their partitions move, so the
        # next owner does not replay them; bounded so a stuck batch cannot stall the group.
        async def batches_done() -> None:
            async with self._batch_lock:
                await self._until_finished()

        try:
            await asyncio.wait_for(batches_done(), timeout=self._settings.session_timeout_seconds / 2)
        except TimeoutError:
            log.warning("ticketer.revoke_without_waiting", reason="batch still in flight")
        finally:
            self._forget_partitions()

    async def _on_partitions_assigned(self, _sender: Any, _assigned: Any, **_kwargs: Any) -> None:
        self._forget_partitions()

    def _forget_partitions(self) -> None:
        # Another owner may have committed meanwhile; the broker is asked again.
        self._resume_at.clear()
        self._refetches.clear()

    # --- running -------------------------------------------------------------

    async def run_until(self, stop: threading.Event) -> None:
        """Start the app, run until ``stop`` is set or something failed, then stop gracefully.

        Raises the failure, if any, after the app stopped.
        """
        await self.app.start()
        self._batches_task = asyncio.create_task(self._handle_batches(), name="ticketer-batches")
        self._health.set_ready(True)
        log.info("processor.started", topic=self.source_topic, group_id=self._settings.group_id)
        try:
            while not stop.is_set() and self.failure is None and self.app.crash_reason is None:
                if self._batches_task.done():  # it only ends by failing; make that the failure
                    self.failure = self._batches_task.exception() or RuntimeError("the batch task ended")
                    break
                started = min((t for t in (self._batch_started, self._finish_started) if t is not None), default=None)
                # Live while the agent waits for records or a batch is young; a batch that
                # hangs (a stuck database) stops the heartbeat and fails /livez.
                if started is None or time.monotonic() - started < self._health.stall_after_seconds:
                    self._health.beat()
                if self._refetches and not self.app.rebalancing:
                    await self._refetch_unfilled_holes()
                await asyncio.sleep(0.2)
        finally:
            await self._stop()
        failure = self.failure or self.app.crash_reason
        if failure is not None:
            raise failure

    async def _stop(self) -> None:
        self._health.set_ready(False, "stopping")
        if self.failure is None and self.app.crash_reason is None:
            async with self._batch_lock:  # the batches in flight finish and commit
                self._closing = True
                await self._until_finished()
        else:
            self._closing = True
        if self._batches_task is not None:
            self._batches_task.cancel()
        await self.app.stop()
        self._db.shutdown(wait=True)
        if self._offsets is not None:
            await self._offsets.stop()
        self._datadir.cleanup()
        log.info("processor.stopped", topic=self.source_topic)


def run(settings: TicketerSettings, health: Health, stop: threading.Event) -> None:
    """Run the ticketer until ``stop`` is set (SIGTERM); raise what made it fail."""

    async def run_worker() -> None:
        # Built inside the running loop: faust binds its services to the loop it first sees.
        await TicketerWorker(settings, health).run_until(stop)

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    asyncio.run(run_worker())


class SchemaNotCurrent(RuntimeError):
    """The database is not at the migration head; the ticketer would write to the wrong schema."""


def check_schema(settings: TicketerSettings) -> None:
    """Refuse to start on a database that `mailintake db upgrade` has not brought up to date."""
    from alembic.script import ScriptDirectory

    from mailintake.database.migrate import alembic_config, current_revision

    url = settings.database_url.get_secret_value()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    current = current_revision(url)
    if current != head:
        raise SchemaNotCurrent(f"database schema is at revision {current}, not {head}: run `mailintake db upgrade`")
