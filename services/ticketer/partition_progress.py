"""Which records of a batch may be handled and committed: only an unbroken run per partition.

A commit of offset ``n`` tells every future owner of the partition that all records below
``n`` are done. faust can withhold records from the agent without the agent knowing: its
drain loop drops a record whose offset is below the last one it read, and a read offset
left ahead of the position after a rebalance or seek makes it drop records that were
never handled. A batch that starts past the committed offset, or has a hole, must
therefore not be committed past the hole, whatever faust did to cause it. These
functions decide that from offsets alone; ``service.py`` asks the broker for the
committed offset and seeks back to the hole so the missing records are fetched again, and
:class:`HoleRefetch` says when to seek there again if that refetch was undone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionPlan:
    """What to do with one partition's records of a batch."""

    handle: tuple[int, ...]
    """Offsets to handle, ascending, each once: the already committed ones (a replay the
    ledger absorbs) and the unbroken run that starts at the committed offset."""

    commit: int | None
    """The offset to commit afterwards (one past the run), or None when the run is empty."""

    refetch_from: int | None
    """Where the hole starts, when records past it arrived without it: the consumer must
    seek there. None when nothing was held back."""

    held_back: int
    """How many records arrived past the hole and are left for the refetch."""


def plan_partition(offsets: Iterable[int], committed: int | None) -> PartitionPlan:
    """Plan one partition given the offsets a batch holds and the committed offset.

    ``committed`` is the next offset the group would resume from, or None when the group
    has never committed this partition; then the batch's lowest offset starts the run,
    since the consumer began there by its reset policy.
    """
    present = sorted(set(offsets))
    if not present:
        return PartitionPlan((), None, None, 0)
    start = present[0] if committed is None else committed
    below = [o for o in present if o < start]
    run_end = start
    for offset in present:
        if offset == run_end:
            run_end += 1
        elif offset > run_end:
            break
    run = list(range(start, run_end))
    held_back = sum(1 for o in present if o > run_end)
    return PartitionPlan(
        handle=tuple(below + run),
        commit=run_end if run else None,
        refetch_from=run_end if held_back else None,
        held_back=held_back,
    )


# Records past a hole that arrive after the seek back to it are records of a fetch from
# before the seek; in faust's drain loop each of them undoes the seek (see HoleRefetch).
# Once they have stopped for this long, a seek again sticks.
QUIET_AFTER_LATE_RECORDS_SECONDS = 0.5
# A hole still there this long after a seek back to it is sought again in any case.
REFETCH_AGAIN_AFTER_SECONDS = 5.0


@dataclass
class HoleRefetch:
    """A seek back to a hole in one partition, and when to seek there again.

    faust's drain loop drops a record below its last read offset. A seek sets that offset
    back to the hole, but records of a fetch from before the seek may still be on their
    way through the loop, and each moves the offset past the hole again: the refetched
    records are then dropped once more. Those late records reach the handler, past the
    hole; when they have stopped coming, a seek again sticks. Without them the refetch
    is given :data:`REFETCH_AGAIN_AFTER_SECONDS` (it can queue behind a full stream buffer).
    """

    offset: int
    sought_at: float
    late_at: float | None = None

    def note_records_past(self, now: float) -> None:
        """Records past the hole arrived after the seek."""
        self.late_at = now

    def due(self, now: float) -> bool:
        """Whether to seek to the hole again, if it is still unfilled."""
        if self.late_at is not None and now - self.late_at >= QUIET_AFTER_LATE_RECORDS_SECONDS:
            return True
        return now - self.sought_at >= REFETCH_AGAIN_AFTER_SECONDS
