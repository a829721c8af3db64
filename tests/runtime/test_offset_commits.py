"""The retry policy of offset commits, on the errors aiokafka raises.

The commits here are plain coroutines that fail a given number of times; that the policy
rides out a real broker restart is shown in the classifier's and ticketer's
``test_commit_through_kafka_restart.py``.
"""

from __future__ import annotations

import asyncio
import time

import aiokafka.errors
import pytest

from mailintake.runtime.offset_commits import CommitRetry, is_retriable

QUICK = dict(first_pause_seconds=0.01, longest_pause_seconds=0.02)


class FailingCommit:
    """A commit that raises ``errors`` in turn, then succeeds; ``hang`` makes every try
    wait that long first, as aiokafka's commit does while it retries inside itself."""

    def __init__(self, *errors: BaseException, hang: float = 0.0) -> None:
        self.errors = list(errors)
        self.hang = hang
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(self.hang)
        if self.errors:
            raise self.errors.pop(0)


def run(policy: CommitRetry, commit: FailingCommit) -> bool:
    return asyncio.run(policy.run(commit))


@pytest.mark.parametrize(
    "error, retriable",
    [
        (aiokafka.errors.KafkaConnectionError("111 ECONNREFUSED"), True),
        (aiokafka.errors.RequestTimedOutError(), True),
        (aiokafka.errors.CoordinatorNotAvailableError(), True),
        (aiokafka.errors.NotCoordinatorError(), True),
        (aiokafka.errors.CoordinatorLoadInProgressError(), True),
        (aiokafka.errors.CommitFailedError(), False),
        (aiokafka.errors.TopicAuthorizationFailedError(), False),
        (aiokafka.errors.IllegalStateError(), False),
        (ConnectionRefusedError(), False),
        (ValueError("a bug"), False),
    ],
)
def test_retriable_is_what_kafka_marks_retriable(error, retriable):
    assert is_retriable(error) is retriable


def test_retriable_errors_are_retried_until_the_commit_succeeds():
    commit = FailingCommit(aiokafka.errors.KafkaConnectionError("111 ECONNREFUSED"), aiokafka.errors.NotCoordinatorError())
    assert run(CommitRetry("test", **QUICK), commit) is True
    assert commit.calls == 3


def test_a_non_retriable_error_raises_at_once():
    commit = FailingCommit(aiokafka.errors.TopicAuthorizationFailedError())
    with pytest.raises(aiokafka.errors.TopicAuthorizationFailedError):
        run(CommitRetry("test", **QUICK), commit)
    assert commit.calls == 1


def test_retries_end_after_the_time_allowed_with_the_last_error():
    commit = FailingCommit(*[aiokafka.errors.KafkaConnectionError(str(n)) for n in range(10_000)])
    with pytest.raises(aiokafka.errors.KafkaConnectionError):
        run(CommitRetry("test", give_up_after_seconds=0.3, **QUICK), commit)
    assert 3 < commit.calls < 10_000


def test_a_try_that_hangs_past_the_time_allowed_is_ended():
    commit = FailingCommit(hang=5.0)
    with pytest.raises(TimeoutError):
        run(CommitRetry("test", give_up_after_seconds=0.2, **QUICK), commit)
    assert commit.calls == 1


class SlowThenHangingCommit:
    """A first try that fails retriably after ``first_seconds``; every later try hangs."""

    def __init__(self, first_seconds: float) -> None:
        self.first_seconds = first_seconds
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(self.first_seconds)
            raise aiokafka.errors.NotCoordinatorError()
        await asyncio.sleep(60)


def test_the_time_allowed_bounds_the_tries_together_not_each_alone():
    # 0.6 s go to the first try; the hanging second try gets what is left of the 1.0 s
    # (ending at ~1.0 s), where a limit of the whole 1.0 s per try would end it at ~1.6 s.
    commit = SlowThenHangingCommit(first_seconds=0.6)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run(CommitRetry("test", give_up_after_seconds=1.0, **QUICK), commit)
    assert commit.calls == 2
    assert time.monotonic() - started < 1.4


def test_a_commit_refused_after_a_rebalance_is_reported_not_raised():
    commit = FailingCommit(aiokafka.errors.CommitFailedError())
    assert run(CommitRetry("test", **QUICK), commit) is False
    assert commit.calls == 1
