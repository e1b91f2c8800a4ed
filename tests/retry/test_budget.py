"""Tests for RetryBudget: validation, the ratio and reserve, expiry, threads and its bound."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Literal, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress import RetryBudget
from buttress.testing import FakeClock
from tests._threads import run_in_threads

T = TypeVar("T")

TICK = 1 / 64
"""Every time in the property tests is a whole number of ticks: exact in binary floating point."""

# (ttl, buckets) pairs whose slot width (ttl / buckets) is an exact binary fraction or 1.5.
WINDOWS = [(10, 10), (10, 5), (8, 4), (8, 8), (6, 4), (1, 8), (4, 1), (2, 16)]


def withdraw_all(budget: RetryBudget, limit: int = 10_000) -> int:
    """Withdraw until refused; return how many were granted."""
    for granted in range(limit):
        if not budget.try_withdraw():
            return granted
    raise AssertionError("the budget never refused")


class TestValidation:
    def test_defaults(self) -> None:
        budget = RetryBudget(clock=FakeClock())
        assert (budget.ratio, budget.min_per_second, budget.ttl, budget.buckets) == (
            0.2,
            10.0,
            10.0,
            10,
        )

    def test_normalises_numbers_and_timedeltas(self) -> None:
        budget = RetryBudget(1, 2, timedelta(seconds=30), buckets=3, clock=FakeClock())
        assert (budget.ratio, budget.min_per_second, budget.ttl) == (1.0, 2.0, 30.0)
        assert all(
            type(value) is float for value in (budget.ratio, budget.min_per_second, budget.ttl)
        )

    def test_zero_ratio_and_minimum_are_allowed(self) -> None:
        budget = RetryBudget(0, 0, clock=FakeClock())
        budget.deposit()
        assert budget.available() == 0
        assert not budget.try_withdraw()

    @pytest.mark.parametrize("name", ["ratio", "min_per_second"])
    @pytest.mark.parametrize(
        ("value", "error", "message"),
        [
            (-0.1, ValueError, "must be a finite number >= 0"),
            (math.nan, ValueError, "must be a finite number >= 0"),
            (math.inf, ValueError, "must be a finite number >= 0"),
            (True, TypeError, "must be a number"),
            ("0.2", TypeError, "must be a number"),
            (None, TypeError, "must be a number"),
        ],
        ids=repr,
    )
    def test_rates_are_checked(
        self, name: str, value: object, error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=rf"^{name} {message}"):
            RetryBudget(**{name: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("ttl", "error", "message"),
        [
            (0, ValueError, r"^ttl must be > 0 seconds"),
            (timedelta(0), ValueError, r"^ttl must be > 0 seconds"),
            (-1, ValueError, r"^ttl must be > 0 seconds"),
            (math.nan, ValueError, r"^ttl must be a finite"),
            (math.inf, ValueError, r"^ttl must be a finite"),
            ("10", TypeError, r"^ttl must be a number"),
            (True, TypeError, r"^ttl must be a number"),
        ],
        ids=repr,
    )
    def test_ttl_is_checked(self, ttl: object, error: type[Exception], message: str) -> None:
        with pytest.raises(error, match=message):
            RetryBudget(ttl=ttl)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("buckets", "error", "message"),
        [
            (0, ValueError, r"^buckets must be >= 1, got 0"),
            (-3, ValueError, r"^buckets must be >= 1"),
            (2.0, TypeError, r"^buckets must be an int"),
            (True, TypeError, r"^buckets must be an int"),
        ],
        ids=repr,
    )
    def test_buckets_are_checked(
        self, buckets: object, error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=message):
            RetryBudget(buckets=buckets)  # type: ignore[arg-type]


class TestRetryBudget:
    def test_reserve_without_traffic_is_min_per_second_times_ttl(self) -> None:
        budget = RetryBudget(ratio=0.2, min_per_second=1, ttl=10, clock=FakeClock())
        assert budget.available() == 10
        assert withdraw_all(budget) == 10
        assert budget.available() == 0
        assert not budget.try_withdraw()

    def test_fractional_reserve_rounds_down(self) -> None:
        budget = RetryBudget(ratio=0, min_per_second=0.25, ttl=10, clock=FakeClock())
        assert budget.available() == 2
        assert withdraw_all(budget) == 2

    def test_deposits_allow_their_ratio(self) -> None:
        budget = RetryBudget(ratio=0.5, min_per_second=0, ttl=10, clock=FakeClock())
        for _ in range(10):
            budget.deposit()
        assert budget.available() == 5
        assert withdraw_all(budget) == 5
        budget.deposit()
        assert budget.available() == 0  # 5.5 allowed, 5 taken: not a whole retry left
        budget.deposit()
        assert budget.available() == 1
        assert withdraw_all(budget) == 1

    def test_ratio_and_reserve_add_up(self) -> None:
        budget = RetryBudget(ratio=0.2, min_per_second=0.5, ttl=10, clock=FakeClock())
        for _ in range(20):
            budget.deposit()
        assert budget.available() == 4 + 5
        assert withdraw_all(budget) == 9

    def test_deposits_expire_after_ttl(self) -> None:
        clock = FakeClock()
        budget = RetryBudget(ratio=1, min_per_second=0, ttl=10, buckets=10, clock=clock)
        for _ in range(4):
            budget.deposit()
        clock.advance(10 - TICK)
        assert budget.available() == 4
        clock.advance(TICK)
        assert budget.available() == 0

    def test_deposits_count_only_from_slots_wholly_inside_the_window(self) -> None:
        clock = FakeClock(start=0.25)
        budget = RetryBudget(ratio=1, min_per_second=0, ttl=10, buckets=10, clock=clock)
        budget.deposit()
        clock.advance(10.25)  # the window (0.5, 10.5] overlaps the deposit's slot, not the deposit
        assert budget.available() == 0
        assert not budget.try_withdraw()

    def test_withdrawals_expire_once_their_slot_leaves_the_window(self) -> None:
        clock = FakeClock(start=100)
        budget = RetryBudget(ratio=0, min_per_second=0.5, ttl=10, buckets=10, clock=clock)
        assert withdraw_all(budget) == 5
        clock.advance(10.5)  # the window (100.5, 110.5] still overlaps the slot [100, 101)
        assert budget.available() == 0
        clock.advance(0.5)
        assert budget.available() == 5
        assert withdraw_all(budget) == 5

    def test_a_sliding_window_replenishes_gradually(self) -> None:
        clock = FakeClock()
        budget = RetryBudget(ratio=0, min_per_second=1, ttl=4, buckets=4, clock=clock)
        granted = []
        for _ in range(12):
            granted.append(withdraw_all(budget))
            clock.advance(1)
        # The reserve is spent at once and comes back whole when its slot leaves the window:
        # at ttl + one slot width, since retries count from every slot overlapping the window.
        assert granted == [4, 0, 0, 0, 0, 4, 0, 0, 0, 0, 4, 0]

    def test_available_never_goes_negative(self) -> None:
        clock = FakeClock()
        budget = RetryBudget(ratio=1, min_per_second=0, ttl=10, clock=clock)
        for _ in range(5):
            budget.deposit()
        assert withdraw_all(budget) == 5
        clock.advance(10)  # the deposits expired; the retries still count
        assert budget.available() == 0
        assert not budget.try_withdraw()

    def test_a_single_bucket(self) -> None:
        clock = FakeClock()
        budget = RetryBudget(ratio=1, min_per_second=0, ttl=5, buckets=1, clock=clock)
        budget.deposit()
        assert budget.try_withdraw()
        assert not budget.try_withdraw()
        clock.advance(5)
        budget.deposit()
        assert not budget.try_withdraw()  # the retry's slot still overlaps the window
        clock.advance(5)
        assert not budget.try_withdraw()  # the deposit at 5 s is a whole window old
        budget.deposit()
        assert budget.try_withdraw()

    def test_repr_shows_configuration_and_availability(self) -> None:
        budget = RetryBudget(ratio=0.5, min_per_second=1, ttl=3, clock=FakeClock())
        assert repr(budget) == ("RetryBudget(ratio=0.5, min_per_second=1.0, ttl=3.0, available=3)")

    def test_concurrent_withdrawals_never_exceed_the_budget(self) -> None:
        budget = RetryBudget(ratio=0, min_per_second=10, ttl=10, clock=FakeClock())

        def work(index: int) -> int:
            return sum(budget.try_withdraw() for _ in range(40))

        assert sum(run_in_threads(16, work)) == 100
        assert budget.available() == 0

    def test_concurrent_deposits_and_withdrawals_are_all_counted(self) -> None:
        budget = RetryBudget(ratio=0.5, min_per_second=0, ttl=10, clock=FakeClock())

        def deposit(index: int) -> None:
            for _ in range(500):
                budget.deposit()

        run_in_threads(8, deposit)
        assert budget.available() == 2000

        def withdraw(index: int) -> int:
            return sum(budget.try_withdraw() for _ in range(200))

        assert sum(run_in_threads(16, withdraw)) == 2000
        assert budget.available() == 0


Operation = Literal["deposit", "withdraw"]

steps = st.one_of(st.just(0), st.integers(1, 64), st.integers(64, 64 * 12))
"""Ticks between operations: bursts, sub-second gaps and gaps longer than any window."""

schedules = st.lists(
    st.tuples(steps, st.sampled_from(["deposit", "withdraw"]), st.integers(1, 8)),
    max_size=120,
)
"""(ticks to advance, operation, how many times in a row) triples."""

# Small rates are the interesting ones: a reserve of a few retries is exhausted (and the bound
# tested) by short bursts.
ratios = st.one_of(st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]), st.floats(0, 3))
minimums = st.one_of(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]), st.floats(0, 3))


class TestRetryBudgetProperties:
    # Slot-boundary cases need more than the default 100 examples to show; long schedules make
    # single examples slow on a loaded machine, which is not what this test is about.
    @settings(max_examples=300, deadline=None)
    @given(
        window=st.sampled_from(WINDOWS),
        ratio=ratios,
        min_per_second=minimums,
        start=st.integers(0, 10**6),
        schedule=schedules,
    )
    def test_never_allows_more_retries_than_ratio_plus_minimum_over_its_window(
        self,
        window: tuple[int, int],
        ratio: float,
        min_per_second: float,
        start: int,
        schedule: list[tuple[int, Operation, int]],
    ) -> None:
        ttl, buckets = window
        clock = FakeClock(start=start * TICK)
        budget = RetryBudget(ratio, min_per_second, ttl, buckets=buckets, clock=clock)
        ttl_ticks = ttl * 64
        deposits: list[int] = []  # times, in ticks
        granted: list[int] = []
        now = start
        for step, operation, repeat in schedule:
            now += step
            clock.advance(step * TICK)
            assert clock.now() == now * TICK
            for _ in range(repeat):
                if operation == "deposit":
                    budget.deposit()
                    deposits.append(now)
                    continue
                allowed = budget.available() >= 1
                taken = budget.try_withdraw()
                assert taken == allowed
                if not taken:
                    continue
                granted.append(now)
                recent_retries = sum(1 for time in granted if time > now - ttl_ticks)
                recent_calls = sum(1 for time in deposits if time > now - ttl_ticks)
                assert recent_retries <= ratio * recent_calls + min_per_second * ttl

    @given(
        window=st.sampled_from(WINDOWS),
        min_per_second=st.one_of(minimums, st.floats(0, 5)),
        start=st.integers(0, 10**6),
        data=st.data(),
    )
    def test_without_deposits_grants_exactly_the_reserve_within_one_window(
        self,
        window: tuple[int, int],
        min_per_second: float,
        start: int,
        data: st.DataObject,
    ) -> None:
        ttl, buckets = window
        reserve = math.floor(min_per_second * ttl)
        extra = data.draw(st.integers(1, 20), label="extra")
        offsets = sorted(
            data.draw(
                st.lists(
                    st.integers(0, ttl * 64 - 1), min_size=reserve + extra, max_size=reserve + extra
                ),
                label="offsets",
            )
        )
        clock = FakeClock(start=start * TICK)
        budget = RetryBudget(0.5, min_per_second, ttl, buckets=buckets, clock=clock)
        assert budget.available() == reserve
        granted = 0
        elapsed = 0
        for offset in offsets:
            clock.advance((offset - elapsed) * TICK)
            elapsed = offset
            granted += budget.try_withdraw()
        assert granted == reserve
