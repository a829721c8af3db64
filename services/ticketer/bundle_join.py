"""The auto-bundle join: new-ticket candidates against a faust windowed table of open bundles.

faust 0.15 has no stream-table join (``faust.joins`` raises NotImplementedError), so
this module is the join. The table maps *bundle key* x *poll-cycle window* to the number
of the ticket whose opening mail had that key in that cycle. Windows are tumbling, one
poll cycle wide (like faust's ``TumblingWindow(1)``: cycle n is the range ``(n, n + 0.9)``).
A candidate of cycle c reads the windows of c - 1 and c (:func:`bundle_window`); a hit
is the ticket to add the mail to. A mail that opens a ticket is written into its own
cycle's window, once PostgreSQL has committed the ticket. A mail that only became a step
is not written, so cycle n + 2 finds nothing and opens a new ticket.

The table is a cache. PostgreSQL decides: the store verifies every hit and looks every
miss up by bundle key and opening cycle, under a per-key lock (``store.py``). A table
that lost its changelog, a rebalance that moved a partition before its changelog was
read, or a replay therefore costs look-ups, never a second ticket.

What faust does with such a table, found by reading faust 0.15.3 and pinned by
``tests/ticketer/test_bundle_windows.py``:

* ``relative_to_field`` needs the stream's values to be faust Records; ours are Avro
  bytes decoded by the handler, so the join names window ranges explicitly with
  ``window.current(poll_cycle)`` and ``table[key][range]``;
* ``WindowSet.current()`` and ``.delta()`` ignore ``relative_to_*`` and use the Kafka
  message timestamp, so they cannot select poll cycles;
* expiry (``expires=``) compares window ends with the wall clock (``time.time()``); a
  window whose timestamps are poll cycles is always stale, so faust would delete every
  entry at its next cleanup. The table therefore has no ``expires``; :meth:`prune`
  drops entries older than ``retention_seconds`` by the wall-clock time stored with each,
  and the changelog topic keeps records for the same time (``compact,delete``).

Partitions: faust writes a table change to the changelog partition of the *current
event*. The handler works on batches, where the current event is one of many, so
:class:`BundleTable` derives the partition from the bundle key itself with the same
murmur2 partitioner the classifier's producer uses for ``mail.classified`` keys. Table
and source are co-partitioned by construction; the handler checks each record's actual
partition against :func:`bundle_partition` and leaves the table out for any that differ.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

from faust.tables.table import Table
from faust.types.windows import WindowT
from faust.windows import Window
from mode import want_seconds

from mailintake.runtime.key_partitioning import key_partition
from services.ticketer.core import bundle_window

TABLE_NAME = "open-bundles"


@functools.lru_cache(maxsize=65536)
def bundle_partition(bundle_key: str, partitions: int) -> int:
    """The ``mail.classified`` partition of records keyed ``bundle_key``: Kafka's default
    murmur2 partitioning, which the classifier's producer uses (``aiokafka_key_partitioner``) and
    any other Kafka client would too."""
    return key_partition(bundle_key.encode("utf-8"), partitions)


class PollCycleWindow(Window):
    """Tumbling windows one poll cycle wide: cycle n is the range ``(n, n + 0.9)``.

    Written out rather than ``TumblingWindow(1)``: faust's compiled TumblingWindow turns
    ``expires=None`` into ``0.0``, and faust keeps its expiry bookkeeping (a heap entry
    per write, never popped) for any window whose ``expires`` is not None.
    """

    expires = None

    def ranges(self, timestamp: float) -> list[tuple[float, float]]:
        return [self.current(timestamp)]

    def current(self, timestamp: float) -> tuple[float, float]:
        cycle = math.floor(timestamp)
        return float(cycle), cycle + 0.9

    def earliest(self, timestamp: float) -> tuple[float, float]:
        return self.current(timestamp)

    def delta(self, timestamp: float, d: Any) -> tuple[float, float]:
        return self.current(timestamp - want_seconds(d))

    def stale(self, timestamp: float, latest_timestamp: float) -> bool:
        # Never by faust's clock (see the module docstring); BundleJoin.prune ages entries.
        return False


class BundleTable(Table):
    """A faust table whose keys are ``(bundle_key, window_range)``; its changelog partition
    is the bundle key's source partition, whatever event is current."""

    def partition_for_key(self, key: Any) -> int | None:
        bundle_key, _window_range = key
        return bundle_partition(bundle_key, self.partitions)


@dataclass(frozen=True)
class OpenBundle:
    """A table entry: the ticket a bundle key opened in a cycle, and when it was written."""

    ticket_number: int
    written_at: float

    def to_table_value(self) -> dict[str, float | int]:
        return {"ticket": self.ticket_number, "at": self.written_at}

    @classmethod
    def from_table_value(cls, value: Any) -> OpenBundle | None:
        if isinstance(value, dict) and isinstance(value.get("ticket"), int):
            return cls(value["ticket"], float(value.get("at", 0.0)))
        return None


@dataclass(frozen=True)
class ChangelogRecord:
    """A table change for the table's changelog topic, serialised as faust serialises it."""

    topic: str
    partition: int
    key: bytes
    value: bytes


class BundleJoin:
    """Reads and writes the windowed table of open bundles.

    A new entry goes into the table's store at once, and its changelog record is handed
    to the caller to produce with the batch's other records, acknowledged before the
    batch's offsets are committed. Through faust's ``Table.__setitem__`` each entry was a
    send through faust's producer buffer, not awaited before the commit, and the most
    expensive part of the ticketer's event loop after decoding (BENCHMARKS.md). faust's
    recovery reads these records as its own: same topic, partition, key and value codecs.
    """

    def __init__(self, table: BundleTable, retention_seconds: float) -> None:
        if not isinstance(table.window, WindowT):
            raise TypeError("the bundle table must be windowed (BundleTable.using_window(PollCycleWindow()))")
        self._table = table
        self._window = table.window
        self.retention_seconds = retention_seconds

    def lookup(self, bundle_key: str, poll_cycle: int) -> int | None:
        """The ticket opened by ``bundle_key`` in the previous or the same poll cycle, per the table."""
        # Read from the table's store, not through ``Table.get``: that path raises and
        # catches a KeyError per miss and calls faust's sensors, and every new ticket is two
        # misses; it was the largest single cost of the ticketer's event loop.
        store = self._table.data
        for cycle in bundle_window(poll_cycle):
            key = (bundle_key, self._window.current(cycle))
            entry = OpenBundle.from_table_value(store[key] if key in store else None)
            if entry is not None:
                return entry.ticket_number
        return None

    def remember(self, bundle_key: str, poll_cycle: int, ticket_number: int, now: float | None = None) -> ChangelogRecord:
        """Record that ``bundle_key`` opened ``ticket_number`` in ``poll_cycle`` (after
        PostgreSQL committed it) in the table's store, and return the changelog record the
        caller must produce before it commits the source offset (see the class docstring)."""
        entry = OpenBundle(ticket_number, time.time() if now is None else now)
        key, value = (bundle_key, self._window.current(poll_cycle)), entry.to_table_value()
        self._table.data[key] = value
        changelog = self._table.changelog_topic
        key_bytes, _ = changelog.prepare_key(key, self._table.key_serializer)
        value_bytes, _ = changelog.prepare_value(value, self._table.value_serializer)
        return ChangelogRecord(changelog.get_topic_name(), self._table.partition_for_key(key), key_bytes, value_bytes)

    def prune(self, now: float | None = None) -> int:
        """Delete entries written more than ``retention_seconds`` ago; return how many.

        A deletion is a tombstone on the key's changelog partition, so a restart does not
        bring the entry back.
        """
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        stale = []
        for key, value in list(self._table.data.items()):
            entry = OpenBundle.from_table_value(value)
            if entry is None or entry.written_at < cutoff:
                stale.append(key)
        for key in stale:
            del self._table[key]
        return len(stale)
