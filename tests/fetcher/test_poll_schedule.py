import random

from hypothesis import given
from hypothesis import strategies as st

from services.fetcher.poll_schedule import PollSchedule, spread_offsets


def simulate(schedule: PollSchedule, failing: set[str], until: float) -> dict[str, list[float]]:
    """Run the schedule on a simulated clock where every poll takes no time; return each account's poll times."""
    polled: dict[str, list[float]] = {}
    now = 0.0
    while now <= until:
        for account, _ in schedule.take_due(now):
            polled.setdefault(account, []).append(now)
            schedule.finished(account, now, ok=account not in failing)
        now += schedule.seconds_until_next(now) or 0.0
    return polled


def test_a_failing_account_backs_off_while_the_others_keep_their_intervals():
    schedule = PollSchedule({"bad": 60, "good": 60, "slow": 300}, now=0.0, rng=random.Random(1))
    polled = simulate(schedule, failing={"bad"}, until=3600)
    assert polled["good"] == [60.0 * i for i in range(61)]
    assert polled["slow"] == [300.0 * i for i in range(13)]
    gaps = [b - a for a, b in zip(polled["bad"], polled["bad"][1:])]
    assert 60 <= gaps[0] <= 72 and 96 <= gaps[1] <= 144 and 192 <= gaps[2] <= 288, gaps
    assert all(720 <= gap <= 1080 for gap in gaps[5:]), "capped at 15 minutes, with jitter"
    assert schedule.failures == {"bad": len(polled["bad"])}


def test_everything_is_due_at_start_and_nothing_twice_while_running():
    schedule = PollSchedule({"a": 60, "b": 60}, now=0.0, rng=random.Random(1))
    assert sorted(a for a, _ in schedule.take_due(0.0)) == ["a", "b"]
    assert schedule.take_due(10_000.0) == [], "a running account is not handed out again"
    assert schedule.seconds_until_next(0.0) is None


def test_polls_do_not_drift_and_a_good_poll_resets_the_backoff():
    schedule = PollSchedule({"a": 60}, now=0.0, rng=random.Random(1))
    schedule.take_due(0.0)
    assert schedule.finished("a", now=2.5, ok=True) == 57.5, "due one interval after it was due, not after it ended"
    schedule.take_due(60.0)
    schedule.finished("a", now=61.0, ok=False)
    [(_, due)] = schedule.take_due(10_000.0)
    assert schedule.finished("a", now=due + 1, ok=True) == 59.0
    assert schedule.failures == {}


def test_staggered_first_polls_spread_over_the_interval_and_keep_it():
    intervals = {f"a{n}": 60 for n in range(200)}
    schedule = PollSchedule(intervals, now=0.0, rng=random.Random(1), stagger=True)
    polled = simulate(schedule, failing=set(), until=300)
    firsts = sorted(times[0] for times in polled.values())
    assert len(polled) == 200 and 0 <= firsts[0] and firsts[-1] < 60
    assert [round(b - a, 9) for a, b in zip(firsts, firsts[1:])] == [0.3] * 199, "evenly, not bunched"
    assert all(abs(b - a - 60) < 1e-6 for times in polled.values() for a, b in zip(times, times[1:])), "then one interval apart"


def test_a_restored_backoff_waits_out_its_rest_and_goes_on_from_its_step():
    # "bad" failed 3 times, the last 10 s before the restart: its backoff (240 s +-20 %) goes on.
    schedule = PollSchedule(
        {"bad": 60, "over": 60, "good": 60},
        now=0.0,
        rng=random.Random(1),
        failing={"bad": (3, 10.0), "over": (2, 3600.0), "gone": (5, 0.0)},
    )
    assert schedule.failures == {"bad": 3, "over": 2}, "accounts no longer configured are not restored"
    assert sorted(a for a, _ in schedule.take_due(0.0)) == ["good", "over"], "a backoff already over is due at once"
    [(account, due)] = schedule.take_due(10_000.0)
    assert account == "bad" and 192 - 10 <= due <= 288 - 10
    retry_in = schedule.finished("bad", now=due, ok=False)
    assert 384 <= retry_in <= 576 and schedule.failures["bad"] == 4, "the fourth failure's step, not the first's"


def test_one_added_account_is_due_now_and_a_share_of_many_is_spread_over_the_interval():
    schedule = PollSchedule({}, now=0.0, rng=random.Random(1))
    schedule.set_accounts({"new": 60}, now=5.0)
    assert schedule.take_due(5.0) == [("new", 5.0)], "an account an operator just added is polled at once"

    share = {f"a{n}": 60 for n in range(200)}
    schedule = PollSchedule({}, now=0.0, rng=random.Random(1))
    schedule.set_accounts(share, now=100.0)
    polled = simulate(schedule, failing=set(), until=400)
    firsts = sorted(times[0] for times in polled.values())
    assert len(polled) == 200 and 100 <= firsts[0] and firsts[-1] < 160
    assert [round(b - a, 9) for a, b in zip(firsts, firsts[1:])] == [0.3] * 199, "evenly, not bunched"
    assert all(abs(b - a - 60) < 1e-6 for times in polled.values() for a, b in zip(times, times[1:])), "then one interval apart"


def circular_gaps(offsets: list[float], interval: float) -> list[float]:
    points = sorted(o % interval for o in offsets)
    return [b - a for a, b in zip(points, points[1:])] + [points[0] + interval - points[-1]]


def test_offsets_with_none_taken_are_one_slot_apart_from_a_random_start():
    offsets = spread_offsets(10, 5.0, (), random.Random(3))
    assert 0 <= offsets[0] < 0.5
    assert [round(b - a, 9) for a, b in zip(offsets, offsets[1:])] == [0.5] * 9
    assert spread_offsets(10, 5.0, (), random.Random(4))[0] != offsets[0], "the start is random, so replicas do not poll in step"
    assert spread_offsets(0, 5.0, (), random.Random(3)) == []


def test_offsets_fill_the_gaps_between_the_taken_ones_in_proportion():
    assert spread_offsets(3, 60, [0.0], random.Random(1)) == [15.0, 30.0, 45.0]
    # Gaps of 10 s and 50 s share five new polls 1 : 4 (the short gap takes the larger remainder).
    assert sorted(spread_offsets(5, 60, [0.0, 10.0], random.Random(1))) == [5.0, 20.0, 30.0, 40.0, 50.0]
    # Taken offsets are phases: a poll due in 70 s or overdue by 50 s is at 10 s of the interval.
    assert sorted(spread_offsets(5, 60, [-60.0, 70.0], random.Random(1))) == [5.0, 20.0, 30.0, 40.0, 50.0]


@given(
    count=st.integers(1, 300),
    interval=st.sampled_from([5.0, 60.0, 300.0]),
    taken=st.lists(st.floats(-1000, 1000, allow_nan=False), max_size=40),
)
def test_no_gap_among_the_polls_is_as_long_as_one_slot_of_the_new_ones(count, interval, taken):
    offsets = spread_offsets(count, interval, taken, random.Random(0))
    assert len(offsets) == count and all(0 <= o < interval for o in offsets)
    assert max(circular_gaps(offsets + taken, interval)) < interval / count + 1e-9


def test_a_share_arriving_beside_accounts_already_due_falls_between_them():
    schedule = PollSchedule({}, now=0.0, rng=random.Random(1))
    schedule.set_accounts({f"old{n}": 5 for n in range(5)}, now=0.0)
    schedule.set_accounts({f"old{n}": 5 for n in range(5)} | {f"new{n}": 5 for n in range(5)}, now=1.0)
    polled = simulate(schedule, failing=set(), until=20)
    firsts = sorted(times[0] for times in polled.values())
    assert len(firsts) == 10
    assert [round(gap, 9) for gap in circular_gaps(firsts, 5.0)] == [0.5] * 10, "each new one halfway between two old ones"
