"""The failure-rate windows: a ring of the last N calls and buckets of the last N seconds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress.breaker._window import CountWindow, TimeWindow, Totals

outcomes = st.tuples(st.booleans(), st.booleans())  # (failure, slow)


def expected(calls: list[tuple[bool, bool]]) -> Totals:
    return Totals(len(calls), sum(f for f, _ in calls), sum(s for _, s in calls))


class TestTotals:
    def test_rates(self):
        totals = Totals(calls=8, failures=2, slow=6)
        assert totals.failure_rate == 0.25
        assert totals.slow_rate == 0.75

    def test_rates_of_an_empty_window_are_zero(self):
        assert Totals(0, 0, 0).failure_rate == 0.0
        assert Totals(0, 0, 0).slow_rate == 0.0


class TestCountWindow:
    def test_empty(self):
        assert CountWindow(3).totals(0.0) == Totals(0, 0, 0)

    def test_fills_up_to_its_size(self):
        window = CountWindow(3)
        window.record(True, False, 0.0)
        assert window.totals(0.0) == Totals(1, 1, 0)
        window.record(False, True, 0.0)
        window.record(True, True, 0.0)
        assert window.totals(0.0) == Totals(3, 2, 2)

    def test_wrap_around_drops_the_oldest(self):
        window = CountWindow(3)
        for failure, slow in [(True, True), (False, False), (False, True)]:
            window.record(failure, slow, 0.0)
        window.record(False, False, 0.0)  # pushes out (True, True)
        assert window.totals(0.0) == Totals(3, 0, 1)
        window.record(True, False, 0.0)  # pushes out (False, False)
        assert window.totals(0.0) == Totals(3, 1, 1)
        window.record(True, False, 0.0)  # pushes out (False, True)
        assert window.totals(0.0) == Totals(3, 2, 0)

    def test_many_laps_stay_exact(self):
        window = CountWindow(4)
        for number in range(1003):
            window.record(number % 3 == 0, number % 2 == 0, float(number))
        # The last four calls are numbers 999..1002.
        assert window.totals(0.0) == Totals(4, 2, 2)

    def test_size_one(self):
        window = CountWindow(1)
        window.record(True, True, 0.0)
        assert window.totals(0.0) == Totals(1, 1, 1)
        window.record(False, False, 0.0)
        assert window.totals(0.0) == Totals(1, 0, 0)

    def test_time_plays_no_part(self):
        window = CountWindow(2)
        window.record(True, False, 0.0)
        assert window.totals(1e9) == Totals(1, 1, 0)

    def test_clear(self):
        window = CountWindow(2)
        window.record(True, True, 0.0)
        window.record(True, True, 0.0)
        window.record(True, True, 0.0)
        window.clear()
        assert window.totals(0.0) == Totals(0, 0, 0)
        window.record(False, True, 0.0)
        assert window.totals(0.0) == Totals(1, 0, 1)

    @given(st.integers(1, 12), st.lists(outcomes, max_size=60), st.integers(0, 60))
    @settings(max_examples=200)
    def test_totals_are_those_of_the_last_size_calls(self, size, calls, clear_at):
        window = CountWindow(size)
        kept: list[tuple[bool, bool]] = []
        for index, (failure, slow) in enumerate(calls):
            if index == clear_at:
                window.clear()
                kept.clear()
            window.record(failure, slow, float(index))
            kept.append((failure, slow))
            assert window.totals(float(index)) == expected(kept[-size:])

    @pytest.mark.parametrize(
        ("size", "error", "words"),
        [
            (0, ValueError, "size must be >= 1"),
            (-3, ValueError, "size must be >= 1"),
            (2.5, TypeError, "size must be an int"),
            (True, TypeError, "size must be an int"),
        ],
    )
    def test_bad_size(self, size, error, words):
        with pytest.raises(error, match=words):
            CountWindow(size)


class TestTimeWindow:
    def test_calls_in_one_bucket_add_up(self):
        window = TimeWindow(10, buckets=5)  # buckets of 2 s
        window.record(True, False, 100.0)
        window.record(False, True, 100.5)
        window.record(True, True, 101.9)
        assert window.totals(101.9) == Totals(3, 2, 2)

    def test_buckets_age_out_one_by_one(self):
        window = TimeWindow(10, buckets=5)  # buckets [0, 2), [2, 4), ... seconds
        window.record(True, False, 0.5)  # bucket 0
        window.record(False, True, 3.0)  # bucket 1
        window.record(True, True, 9.9)  # bucket 4
        assert window.totals(9.9) == Totals(3, 2, 2)
        assert window.totals(9.99) == Totals(3, 2, 2)
        assert window.totals(10.0) == Totals(2, 1, 2)  # bucket 0 left the window
        assert window.totals(11.9) == Totals(2, 1, 2)
        assert window.totals(12.0) == Totals(1, 1, 1)  # bucket 1 left
        assert window.totals(17.9) == Totals(1, 1, 1)
        assert window.totals(18.0) == Totals(0, 0, 0)  # bucket 4 left

    def test_a_call_stays_between_seconds_minus_a_bucket_and_seconds(self):
        window = TimeWindow(10, buckets=5)
        window.record(True, False, 1.999)  # late in bucket 0: leaves at 10, 8.001 s later
        assert window.totals(9.999).calls == 1
        assert window.totals(10.0).calls == 0
        window.record(True, False, 10.0)  # early in bucket 5: leaves at 20, 10 s later
        assert window.totals(19.999).calls == 1
        assert window.totals(20.0).calls == 0

    def test_a_big_jump_empties_it(self):
        window = TimeWindow(10, buckets=5)
        for step in range(10):
            window.record(step % 2 == 0, False, float(step))
        assert window.totals(9.0) == Totals(10, 5, 0)
        assert window.totals(1e6) == Totals(0, 0, 0)
        window.record(True, False, 1e6)
        assert window.totals(1e6) == Totals(1, 1, 0)

    def test_recording_after_a_gap_counts_only_live_buckets(self):
        window = TimeWindow(4, buckets=4)
        window.record(True, False, 0.0)
        window.record(True, False, 1.0)
        window.record(False, False, 5.0)  # buckets 0 and 1 aged out on the way
        assert window.totals(5.0) == Totals(1, 0, 0)

    def test_a_bucket_reused_after_a_lap_starts_from_zero(self):
        window = TimeWindow(3, buckets=3)
        window.record(True, True, 0.5)  # bucket 0, slot 0
        window.record(False, False, 3.5)  # bucket 3, slot 0 again
        assert window.totals(3.5) == Totals(1, 0, 0)

    def test_one_bucket(self):
        window = TimeWindow(5, buckets=1)
        window.record(True, False, 0.0)
        window.record(True, False, 4.9)
        assert window.totals(4.99) == Totals(2, 2, 0)
        assert window.totals(5.0) == Totals(0, 0, 0)

    def test_timedelta(self):
        window = TimeWindow(timedelta(seconds=4), buckets=2)
        assert window.seconds == 4.0
        window.record(True, False, 0.0)
        assert window.totals(3.9).calls == 1
        assert window.totals(4.0).calls == 0

    def test_clear(self):
        window = TimeWindow(10)
        window.record(True, True, 1.0)
        window.clear()
        assert window.totals(1.0) == Totals(0, 0, 0)
        window.record(False, False, 1.0)
        assert window.totals(1.0) == Totals(1, 0, 0)

    @given(
        st.sampled_from([(4, 1), (4, 2), (4, 4), (8, 2), (8, 4), (10, 5), (10, 4), (3, 3)]),
        st.lists(st.tuples(st.integers(0, 24), outcomes), max_size=50),
    )
    @settings(max_examples=200)
    def test_totals_are_those_of_the_live_buckets(self, shape, steps):
        seconds, buckets = shape
        width = seconds / buckets
        window = TimeWindow(seconds, buckets=buckets)
        now = 0.0
        recorded: list[tuple[float, bool, bool]] = []
        for quarters, (failure, slow) in steps:
            now += quarters / 4
            window.record(failure, slow, now)
            recorded.append((now, failure, slow))
            current = int(now // width)
            live = [(f, s) for t, f, s in recorded if current - int(t // width) < buckets]
            assert window.totals(now) == expected(live)
        later = now + seconds
        assert window.totals(later) == Totals(0, 0, 0)

    @pytest.mark.parametrize(
        ("args", "error", "words"),
        [
            ((0,), ValueError, "seconds must be > 0"),
            ((-1,), ValueError, "seconds must be > 0"),
            ((float("inf"),), ValueError, "seconds must be a finite"),
            (("10",), TypeError, "seconds must be a number"),
            ((10, 0), ValueError, "buckets must be >= 1"),
            ((10, 2.0), TypeError, "buckets must be an int"),
        ],
    )
    def test_bad_arguments(self, args, error, words):
        with pytest.raises(error, match=words):
            TimeWindow(*args)
