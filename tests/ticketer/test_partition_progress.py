"""The commit plan per partition: never past a hole, replays kept, duplicates once; and when to seek to a hole again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.ticketer.partition_progress import (
    QUIET_AFTER_LATE_RECORDS_SECONDS,
    REFETCH_AGAIN_AFTER_SECONDS,
    HoleRefetch,
    plan_partition,
)


def test_a_run_from_the_committed_offset_is_handled_and_committed():
    plan = plan_partition([10, 11, 12], committed=10)
    assert plan.handle == (10, 11, 12) and plan.commit == 13
    assert plan.refetch_from is None and plan.held_back == 0


def test_records_after_a_withheld_first_record_are_held_back_and_refetched():
    plan = plan_partition([12, 13, 14], committed=10)
    assert plan.handle == () and plan.commit is None
    assert plan.refetch_from == 10 and plan.held_back == 3


def test_a_hole_inside_the_batch_stops_the_commit_at_the_hole():
    plan = plan_partition([10, 11, 14, 15], committed=10)
    assert plan.handle == (10, 11) and plan.commit == 12
    assert plan.refetch_from == 12 and plan.held_back == 2


def test_replays_below_the_committed_offset_are_handled_without_moving_the_commit_back():
    plan = plan_partition([7, 8, 9], committed=10)
    assert plan.handle == (7, 8, 9) and plan.commit is None and plan.refetch_from is None


def test_refetched_records_behind_stale_ones_are_sorted_and_taken_once():
    plan = plan_partition([14, 15, 10, 11, 12, 13, 14, 15], committed=10)
    assert plan.handle == (10, 11, 12, 13, 14, 15) and plan.commit == 16 and plan.held_back == 0


def test_without_a_committed_offset_the_batch_starts_the_run():
    plan = plan_partition([5, 6, 8], committed=None)
    assert plan.handle == (5, 6) and plan.commit == 7 and plan.refetch_from == 7 and plan.held_back == 1


@given(st.lists(st.integers(0, 40), max_size=30), st.one_of(st.none(), st.integers(0, 40)))
def test_the_commit_never_passes_an_offset_that_was_not_handled(offsets, committed):
    plan = plan_partition(offsets, committed)
    assert set(plan.handle) <= set(offsets) and list(plan.handle) == sorted(set(plan.handle))
    if plan.commit is not None:
        start = min(offsets) if committed is None else committed
        assert set(range(start, plan.commit)) <= set(plan.handle)
        assert plan.commit > start
    assert plan.held_back == sum(1 for o in set(offsets) if o not in plan.handle)


def test_a_refetch_is_given_time_when_no_late_records_come():
    sought = HoleRefetch(offset=57, sought_at=100.0)
    assert not sought.due(100.0 + QUIET_AFTER_LATE_RECORDS_SECONDS + 0.1)
    assert not sought.due(100.0 + REFETCH_AGAIN_AFTER_SECONDS - 0.1)
    assert sought.due(100.0 + REFETCH_AGAIN_AFTER_SECONDS)


def test_a_hole_is_sought_again_once_late_records_past_it_have_stopped():
    sought = HoleRefetch(offset=57, sought_at=100.0)
    sought.note_records_past(100.2)
    assert not sought.due(100.2 + QUIET_AFTER_LATE_RECORDS_SECONDS - 0.1), "late records may still be coming"
    sought.note_records_past(100.6)
    assert not sought.due(100.2 + QUIET_AFTER_LATE_RECORDS_SECONDS + 0.1), "the latest late record counts"
    assert sought.due(100.6 + QUIET_AFTER_LATE_RECORDS_SECONDS)
    assert 100.6 + QUIET_AFTER_LATE_RECORDS_SECONDS < 100.0 + REFETCH_AGAIN_AFTER_SECONDS
