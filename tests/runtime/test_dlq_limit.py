import pytest

from mailintake.runtime.stream_processor import DlqLimit, DlqRateExceeded


def test_ratio_over_the_window_stops_the_service():
    limit = DlqLimit(max_ratio=0.5, window=10, min_records=10, max_consecutive=100)
    for dead in [False, True] * 5:
        limit.record(dead)  # exactly 50%: allowed
    with pytest.raises(DlqRateExceeded, match="60% of the last 10"):
        limit.record(True)


def test_consecutive_dead_letters_stop_before_the_ratio_has_data():
    limit = DlqLimit(max_ratio=0.9, window=1000, min_records=1000, max_consecutive=3)
    for _ in range(3):
        limit.record(True)
    with pytest.raises(DlqRateExceeded, match="4 records in a row"):
        limit.record(True)


def test_a_good_record_resets_the_run():
    limit = DlqLimit(max_ratio=0.9, window=1000, min_records=1000, max_consecutive=2)
    for dead in [True, True, False, True, True]:
        limit.record(dead)


def test_dead_letters_that_left_the_window_no_longer_count():
    limit = DlqLimit(max_ratio=0.5, window=10, min_records=10, max_consecutive=100)
    for dead in [True] * 5 + [False] * 10 + [True] * 5:
        limit.record(dead)  # the window now holds 5 good and 5 dead records: 50%, allowed
    with pytest.raises(DlqRateExceeded, match="60% of the last 10"):
        limit.record(True)
