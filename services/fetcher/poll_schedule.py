"""When each account is polled next. Pure: the caller passes the clock.

Every account is either waiting in the queue or being polled, never both, so at most
one poll per account runs at a time. A good poll is due one interval after the previous
one was due (polls do not drift); a failed one backs off exponentially with jitter.
Neither touches any other account's due time.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from services.fetcher.core import backoff_seconds


def spread_offsets(count: int, interval: float, taken: Sequence[float], rng: random.Random) -> list[float]:
    """``count`` offsets from now, each within one ``interval``, at which accounts of that
    interval fall due evenly among the ``taken`` offsets, those of the accounts already due
    at that interval.

    The new offsets fill the gaps between the taken ones in proportion to each gap's length
    and are spaced evenly within each gap; with none taken they are ``interval / count``
    apart, the first at a random moment of the first such slot (so two replicas given
    their shares together do not poll in step). Random offsets, drawn one by one, bunch:
    of ten accounts over 5 s, four to nine fell within about two seconds in one bench run,
    and their mails reached the classifier and the ticketer as one burst that queued there
    (BENCHMARKS.md, "polls spread evenly").
    """
    if count <= 0:
        return []
    if not taken:
        slot = interval / count
        start = rng.uniform(0, slot)
        return [start + i * slot for i in range(count)]
    points = sorted(t % interval for t in taken)
    gaps = [(b - a) for a, b in zip(points, points[1:])] + [points[0] + interval - points[-1]]
    shares = [count * gap / interval for gap in gaps]
    placed = [math.floor(share) for share in shares]
    # The largest remainders take what flooring left over; the longer gap first on a tie.
    for j in sorted(range(len(gaps)), key=lambda j: (placed[j] - shares[j], -gaps[j]))[: count - sum(placed)]:
        placed[j] += 1
    return [
        (points[j] + gaps[j] * (i + 1) / (placed[j] + 1)) % interval
        for j in range(len(gaps))
        for i in range(placed[j])
    ]


def _by_interval(account_ids: Iterable[str], intervals: Mapping[str, int]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = defaultdict(list)
    for account_id in sorted(account_ids):
        groups[intervals[account_id]].append(account_id)
    return groups


class PollSchedule:
    """``stagger``: the accounts' first polls are spread evenly over their first interval
    (:func:`spread_offsets`) instead of all due at once. Polls do not drift, so accounts
    that start due together stay due together every interval after; with more accounts
    than workers that is a queue every interval, and the last of it polled up to the
    queue's length late.

    ``failing``: accounts whose last polls failed before this schedule began (a restart),
    as (consecutive failures, seconds since the last one). Their backoff goes on where it
    was: the first poll waits out what is left of it, and the next failure backs off one
    step further instead of starting over at the first.
    """

    def __init__(
        self,
        intervals: Mapping[str, int],
        now: float,
        rng: random.Random,
        *,
        stagger: bool = False,
        failing: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        self._intervals = dict(intervals)
        self._rng = rng
        failing = {a: f for a, f in (failing or {}).items() if a in self._intervals and f[0] > 0}
        self.failures: dict[str, int] = {account_id: failures for account_id, (failures, _) in failing.items()}
        """Consecutive failed polls per account (absent: the last one was good)."""
        first_due = dict.fromkeys(self._intervals, now)
        if stagger:
            for interval, group in _by_interval(self._intervals, self._intervals).items():
                first_due.update(zip(group, (now + o for o in spread_offsets(len(group), interval, (), rng))))
        self._queue = []
        for account_id, interval in sorted(self._intervals.items()):
            when = first_due[account_id]
            if account_id in failing:
                failures, since = failing[account_id]
                when = max(when, now + backoff_seconds(interval, failures, rng) - since)
            self._queue.append((when, account_id))
        heapq.heapify(self._queue)
        self._running: dict[str, float] = {}

    def take_due(self, now: float) -> list[tuple[str, float]]:
        """(account id, when it was due) of every waiting account that is due; they count as running."""
        due = []
        while self._queue and self._queue[0][0] <= now:
            when, account_id = heapq.heappop(self._queue)
            self._running[account_id] = when
            due.append((account_id, when))
        return due

    def seconds_until_next(self, now: float) -> float | None:
        """Until the next waiting account is due; None when all are running."""
        return max(0.0, self._queue[0][0] - now) if self._queue else None

    def set_accounts(self, intervals: Mapping[str, int], now: float) -> None:
        """Follow a changed account list: removed accounts leave the queue (one being polled
        finishes first), changed intervals apply from the next poll. One new account is
        due now; several new at once are spread over their interval among the accounts
        already there (:func:`spread_offsets`)."""
        removed = self._intervals.keys() - intervals.keys()
        added = intervals.keys() - self._intervals.keys()
        self._intervals = dict(intervals)
        if removed:
            self._queue = [(when, account_id) for when, account_id in self._queue if account_id not in removed]
            heapq.heapify(self._queue)
            for account_id in removed:
                self.failures.pop(account_id, None)
        # Several accounts arrive together when a replica gets its share of the mailboxes
        # (at start, or a dead replica's after a rebalance). Due together, they would stay
        # due together every interval, and their mails would reach the classifier and the
        # ticketer as one burst per interval, queueing there for seconds.
        arriving = added - self._running.keys()
        if len(added) <= 1:
            for account_id in arriving:
                heapq.heappush(self._queue, (now, account_id))
            return
        taken: dict[int, list[float]] = defaultdict(list)
        for when, account_id in self._queue:
            taken[self._intervals[account_id]].append(when - now)
        for account_id, was_due in self._running.items():
            if account_id in self._intervals:
                taken[self._intervals[account_id]].append(was_due - now)
        for interval, group in _by_interval(arriving, self._intervals).items():
            for account_id, offset in zip(group, spread_offsets(len(group), interval, taken[interval], self._rng)):
                heapq.heappush(self._queue, (now + offset, account_id))

    def finished(self, account_id: str, now: float, ok: bool) -> float:
        """Put a polled account back in the queue; return seconds until its next poll
        (0 for an account that was removed meanwhile: it is not queued again)."""
        was_due = self._running.pop(account_id)
        interval = self._intervals.get(account_id)
        if interval is None:
            return 0.0
        if ok:
            self.failures.pop(account_id, None)
            when = max(was_due + interval, now)
        else:
            self.failures[account_id] = self.failures.get(account_id, 0) + 1
            when = now + backoff_seconds(interval, self.failures[account_id], self._rng)
        heapq.heappush(self._queue, (when, account_id))
        return when - now
