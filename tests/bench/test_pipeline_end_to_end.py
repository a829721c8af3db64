"""The end-to-end bench's steady-state reading (``bench/pipeline_end_to_end.py``), on made-up data."""

from __future__ import annotations

import pytest

from bench.pipeline_end_to_end import CpuMeter, steady_window


def batches(starts: list[float], size: int) -> list[float]:
    """Ledger moments of batches of ``size`` mails, each batch sharing its start."""
    return [start for start in starts for _ in range(size)]


def test_equal_batches_at_equal_gaps_give_their_rate():
    # 20 batches of 50 mails, one every half second: 100 mails a second.
    moments = batches([1000.0 + 0.5 * n for n in range(20)], 50)
    start, end, mails = steady_window(moments)
    assert mails / (end - start) == pytest.approx(100.0)


def test_a_slow_start_and_a_drain_stay_outside_the_window():
    # A slow first batch (services starting), then 100 mails a second, then a slow last
    # batch (the drain), each of the two a twentieth of the mails: the steady rate is the middle's.
    starts = [1000.0] + [1006.0 + 0.5 * n for n in range(18)] + [1020.0]
    start, end, mails = steady_window(batches(starts, 50))
    assert 1006.0 <= start < end <= 1014.5
    assert mails / (end - start) == pytest.approx(100.0)


def test_a_window_without_two_distinct_moments_is_refused():
    with pytest.raises(ValueError, match="no commits apart"):
        steady_window([5.0] * 100)


def meter_with(samples: list[tuple[float, dict[str, float]]]) -> CpuMeter:
    meter = CpuMeter(pipeline=None, stack=None)  # type: ignore[arg-type] - samples given, none taken
    meter.samples.extend(samples)
    return meter


def test_cpu_between_two_moments_is_interpolated_from_the_samples_around_them():
    meter = meter_with([
        (100.0, {"classifier": 10.0, "kafka": 1.0}),
        (101.0, {"classifier": 11.0, "kafka": 1.5}),
        (103.0, {"classifier": 12.0, "kafka": 1.5}),
    ])
    used = meter.used_between(100.5, 102.0)
    assert used["classifier"] == pytest.approx(11.5 - 10.5)
    assert used["kafka"] == pytest.approx(1.5 - 1.25)


def test_a_moment_outside_the_samples_is_refused():
    meter = meter_with([(100.0, {"ticketer": 1.0}), (101.0, {"ticketer": 2.0})])
    with pytest.raises(ValueError, match="no CPU samples"):
        meter.used_between(99.0, 100.5)
    with pytest.raises(ValueError, match="no CPU samples"):
        meter.used_between(100.5, 101.5)
