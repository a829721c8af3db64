"""When each account is polled next. Pure: the caller passes the clock.

Every account is either waiting in the queue or being polled, never both, so at most
one poll per account runs at a time. A good poll is due one interval after the previous
one was due (polls do not drift); a failed one backs off exponentially with jitter.
Neither touches any other account's due time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping

from services.fetcher.core import backoff_seconds


class PollSchedule:
    """``stagger``: each account's first poll is due at a random moment within its first
    interval instead of at once. Polls do not drift, so accounts that start due together
    stay due together every interval after; with more accounts than workers that is a
    queue every interval, and the last of it polled up to the queue's length late.

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
        self._queue = []
        for account_id, interval in sorted(self._intervals.items()):
            when = now + rng.uniform(0, interval) if stagger else now
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
        due now; several new at once are spread over their interval, as ``stagger`` does."""
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
        spread = len(added) > 1
        for account_id in sorted(added - self._running.keys()):
            when = now + self._rng.uniform(0, self._intervals[account_id]) if spread else now
            heapq.heappush(self._queue, (when, account_id))

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
