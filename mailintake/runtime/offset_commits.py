"""Offset commits that ride out a Kafka restart, for every consumer of the pipeline.

A commit is the last step of a batch: its outputs are already acknowledged. When the
broker restarts under it (connection refused, no coordinator yet, coordinator still
loading the offsets topic), the client meets errors Kafka marks *retriable*. Exiting
then is correct (the batch is replayed, and the ticketer's ledger makes the replay
harmless) but it turns every broker restart into a crash of each consumer. So a commit
is retried on retriable errors, with growing pauses and a log line per retry, for a
bounded time; then, and on any other error, it raises, and the service stops as before.
aiokafka's commit already waits out retriable errors inside itself, without end, so
the time limit bounds each try as well as the retries.

One exception is not a failure of the commit but of the membership: the group rebalanced
(the broker forgot the member while it was away, or the partitions moved). The commit
is then refused for good, and the batch belongs to whoever owns the partitions now, which
reads it again from the last committed offset. :meth:`CommitRetry.run` returns
``False`` for it, as faust does for the ticketer, instead of stopping the service.

This serves the classifier's stream loop (aiokafka). The ticketer commits through
faust, on the same aiokafka commit (``tests/ticketer/test_commit_through_kafka_restart.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiokafka.errors
import structlog
import tenacity
from prometheus_client import Counter

log = structlog.get_logger(__name__)

COMMIT_RETRIES = Counter(
    "mailintake_offset_commit_retries_total",
    "Offset commits tried again after a retriable Kafka error (a broker restart)",
    ["service"],
)
COMMITS_LOST_TO_REBALANCE = Counter(
    "mailintake_offset_commits_lost_to_rebalance_total",
    "Offset commits refused because the group rebalanced; the partitions' owner replays the batch",
    ["service"],
)


def is_retriable(exc: BaseException) -> bool:
    """Whether Kafka marks ``exc`` as one that goes away by trying again."""
    return isinstance(exc, aiokafka.errors.KafkaError) and exc.retriable


@dataclass(frozen=True)
class CommitRetry:
    """How long and how often a commit is tried again.

    The defaults cover a broker restart (seen here: 10-33 s away) with room to spare and
    stay well below the two minutes after which ``/livez`` reports the service stalled.
    """

    service: str
    give_up_after_seconds: float = 60.0
    first_pause_seconds: float = 0.2
    longest_pause_seconds: float = 5.0

    def _policy(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(is_retriable),
            stop=tenacity.stop_after_delay(self.give_up_after_seconds),
            wait=tenacity.wait_exponential(multiplier=self.first_pause_seconds, max=self.longest_pause_seconds),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        COMMIT_RETRIES.labels(self.service).inc()
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "offset_commit.retrying",
            attempt=state.attempt_number,
            error=repr(error),
            pause_seconds=round(state.upcoming_sleep, 2),
            retrying_for_seconds=round(state.seconds_since_start, 1),
            give_up_after_seconds=self.give_up_after_seconds,
        )

    async def run(self, commit: Callable[[], Awaitable[object]]) -> bool:
        """Run ``commit`` until it succeeds (True), the group rebalanced (False), or it fails
        with a non-retriable error (raises it) or for longer than allowed (raises the last
        error, or ``TimeoutError`` if a try was still waiting)."""
        deadline = time.monotonic() + self.give_up_after_seconds

        async def one_try() -> object:
            return await asyncio.wait_for(commit(), max(deadline - time.monotonic(), 0.001))

        try:
            await self._policy()(one_try)
        except aiokafka.errors.CommitFailedError as exc:
            return self.lost_to_rebalance(repr(exc))
        return True

    def lost_to_rebalance(self, error: str) -> bool:
        """Count and log a commit the group's rebalance refused; False, for :meth:`run`."""
        COMMITS_LOST_TO_REBALANCE.labels(self.service).inc()
        log.warning("offset_commit.lost_to_rebalance", error=error)
        return False
