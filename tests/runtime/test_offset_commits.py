"""The retry policy of offset commits, on the error classes both Kafka clients raise.

The commits here are plain functions that fail a given number of times; that the policy
rides out a real broker restart is shown in the classifier's and ticketer's
``test_commit_through_kafka_restart.py``.
"""

from __future__ import annotations

import kafka.errors
import pytest

from mailintake.runtime.offset_commits import CommitRetry, is_retriable

QUICK = dict(first_pause_seconds=0.01, longest_pause_seconds=0.02)


class FailingCommit:
    """A commit that raises ``errors`` in turn, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


@pytest.mark.parametrize(
    "error, retriable",
    [
        (kafka.errors.KafkaConnectionError("111 ECONNREFUSED"), True),
        (kafka.errors.KafkaTimeoutError(), True),
        (kafka.errors.CoordinatorNotAvailableError(), True),
        (kafka.errors.NotCoordinatorError(), True),
        (kafka.errors.CoordinatorLoadInProgressError(), True),
        (kafka.errors.CommitFailedError(), False),
        (kafka.errors.TopicAuthorizationFailedError(), False),
        (kafka.errors.IllegalStateError(), False),
        (ConnectionRefusedError(), False),
        (ValueError("a bug"), False),
    ],
)
def test_retriable_is_what_kafka_marks_retriable(error, retriable):
    assert is_retriable(error) is retriable


def test_retriable_errors_are_retried_until_the_commit_succeeds():
    commit = FailingCommit(kafka.errors.KafkaConnectionError("111 ECONNREFUSED"), kafka.errors.NotCoordinatorError())
    assert CommitRetry("test", **QUICK).run(commit) is True
    assert commit.calls == 3


def test_a_non_retriable_error_raises_at_once():
    commit = FailingCommit(kafka.errors.TopicAuthorizationFailedError())
    with pytest.raises(kafka.errors.TopicAuthorizationFailedError):
        CommitRetry("test", **QUICK).run(commit)
    assert commit.calls == 1


def test_retries_end_after_the_time_allowed_with_the_last_error():
    commit = FailingCommit(*[kafka.errors.KafkaConnectionError(str(n)) for n in range(10_000)])
    with pytest.raises(kafka.errors.KafkaConnectionError):
        CommitRetry("test", give_up_after_seconds=0.3, **QUICK).run(commit)
    assert 3 < commit.calls < 10_000


def test_a_commit_refused_after_a_rebalance_is_reported_not_raised():
    commit = FailingCommit(kafka.errors.CommitFailedError())
    assert CommitRetry("test", **QUICK).run(commit) is False
    assert commit.calls == 1
