"""Tests for the waits of buttress.retry: exact values, composition, validation and bounds."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress.retry import (
    Jitter,
    Wait,
    WaitExponential,
    WaitFixed,
    WaitLinear,
    WaitRandom,
    WaitSum,
)

JITTERS: tuple[Jitter, ...] = ("none", "full", "equal", "decorrelated")

# Realistic ranges: delays from a millisecond to a day, caps up to ~30 years, any rng value.
rng_values = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
initials = st.floats(min_value=1e-3, max_value=86_400.0)
multipliers = st.floats(min_value=1.0, max_value=100.0)
headrooms = st.floats(min_value=0.0, max_value=1e9)  # max = initial + headroom
attempt_numbers = st.integers(min_value=1, max_value=10**6)
previous_delays = st.floats(min_value=0.0, max_value=1e12)


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def sequence(values: list[float]) -> Callable[[], float]:
    iterator: Iterator[float] = iter(values)
    return lambda: next(iterator)


def expected_curve(initial: float, multiplier: float, maximum: float, attempt: int) -> float:
    """min(max, initial * multiplier ** (attempt - 1)), for initial > 0 (overflow means max)."""
    try:
        return min(maximum, initial * multiplier ** (attempt - 1))
    except OverflowError:
        return maximum


def check_bounds(wait: WaitExponential, attempt: int, previous: float, delay: float) -> None:
    """Assert that ``delay`` is within what ``wait``'s jitter mode promises."""
    initial, maximum = float(wait.initial), float(wait.max)  # type: ignore[arg-type]
    assert math.isfinite(delay)
    assert 0.0 <= delay <= maximum
    curve = expected_curve(initial, wait.multiplier, maximum, attempt)
    if wait.jitter == "none":
        assert delay == curve
    elif wait.jitter == "full":
        assert 0.0 <= delay <= curve
    elif wait.jitter == "equal":
        assert curve / 2 <= delay <= curve
    else:
        assert initial <= delay <= maximum
        assert delay <= 3 * max(previous, initial)


class Recording(Wait):
    """A wait that returns a constant and records how it was asked."""

    __slots__ = ("calls", "value")

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls: list[tuple[int, float]] = []

    def delay(self, attempt: int, previous: float) -> float:
        self.calls.append((attempt, previous))
        return self.value


class TestWaitFixed:
    def test_default_is_one_second(self) -> None:
        assert WaitFixed().delay(1, 0.0) == 1.0

    @pytest.mark.parametrize("attempt", [1, 2, 10, 10**9])
    def test_same_delay_for_every_attempt(self, attempt: int) -> None:
        assert WaitFixed(2.5).delay(attempt, 7.0) == 2.5

    def test_accepts_timedelta_and_zero(self) -> None:
        wait = WaitFixed(timedelta(milliseconds=250))
        assert wait.seconds == 0.25
        assert type(wait.seconds) is float
        assert wait == WaitFixed(0.25)
        assert WaitFixed(0).delay(1, 0.0) == 0.0

    def test_is_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            WaitFixed(1).seconds = 2  # type: ignore[misc]


class TestWaitLinear:
    def test_values_grow_by_the_increment_up_to_max(self) -> None:
        wait = WaitLinear(initial=1, increment=2, max=6)
        assert [wait.delay(attempt, 0.0) for attempt in range(1, 7)] == [1, 3, 5, 6, 6, 6]

    def test_zero_increment_is_fixed(self) -> None:
        wait = WaitLinear(initial=0.5, increment=0, max=2)
        assert {wait.delay(attempt, 0.0) for attempt in range(1, 20)} == {0.5}

    def test_defaults(self) -> None:
        wait = WaitLinear()
        assert [wait.delay(attempt, 0.0) for attempt in (1, 2, 30, 31, 1000)] == [1, 2, 30, 30, 30]

    def test_timedeltas_are_normalised(self) -> None:
        wait = WaitLinear(timedelta(seconds=1), timedelta(seconds=0.5), timedelta(minutes=1))
        assert (wait.initial, wait.increment, wait.max) == (1.0, 0.5, 60.0)

    @given(
        initial=st.floats(0, 1e6),
        increment=st.floats(0, 1e6),
        headroom=headrooms,
        attempt=attempt_numbers,
    )
    def test_never_exceeds_max_and_never_shrinks(
        self, initial: float, increment: float, headroom: float, attempt: int
    ) -> None:
        wait = WaitLinear(initial=initial, increment=increment, max=initial + headroom)
        delay = wait.delay(attempt, 0.0)
        assert initial <= delay <= initial + headroom
        assert wait.delay(attempt + 1, delay) >= delay


class TestWaitExponential:
    def test_no_jitter_follows_the_capped_curve(self) -> None:
        wait = WaitExponential(initial=0.5, multiplier=2, max=5, jitter="none")
        delays = [wait.delay(attempt, 0.0) for attempt in range(1, 8)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
        assert [wait.curve(attempt) for attempt in range(1, 8)] == delays

    def test_other_multipliers(self) -> None:
        wait = WaitExponential(initial=1, multiplier=3, max=100, jitter="none")
        assert [wait.delay(attempt, 0.0) for attempt in range(1, 6)] == [1, 3, 9, 27, 81]
        flat = WaitExponential(initial=2, multiplier=1, max=100, jitter="none")
        assert flat.delay(10**9, 0.0) == 2.0

    def test_full_jitter_scales_the_curve(self) -> None:
        wait = WaitExponential(initial=1, multiplier=2, max=10, jitter="full", rng=constant(0.5))
        delays = [wait.delay(attempt, 0.0) for attempt in range(1, 7)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]

    def test_equal_jitter_keeps_half_the_curve(self) -> None:
        wait = WaitExponential(initial=1, multiplier=2, max=10, jitter="equal", rng=constant(0.5))
        delays = [wait.delay(attempt, 0.0) for attempt in range(1, 7)]
        assert delays == [0.75, 1.5, 3.0, 6.0, 7.5, 7.5]
        low = WaitExponential(initial=1, multiplier=2, max=10, jitter="equal", rng=constant(0.0))
        assert low.delay(3, 0.0) == 2.0

    def test_decorrelated_jitter_grows_from_the_previous_delay(self) -> None:
        wait = WaitExponential(
            initial=1, multiplier=2, max=10, jitter="decorrelated", rng=constant(0.5)
        )
        previous = 0.0
        delays = []
        for attempt in range(1, 7):
            previous = wait.delay(attempt, previous)
            delays.append(previous)
        # 1 + (3*max(prev, 1) - 1) * 0.5, capped at 10
        assert delays == [2.0, 3.5, 5.75, 9.125, 10.0, 10.0]

    def test_decorrelated_ignores_attempt_and_multiplier(self) -> None:
        wait = WaitExponential(
            initial=1, multiplier=7, max=100, jitter="decorrelated", rng=constant(0.0)
        )
        assert wait.delay(1, 0.0) == wait.delay(50, 0.0) == 1.0

    @pytest.mark.parametrize("jitter", ["full", "equal"])
    def test_seeded_rng_gives_exact_values(self, jitter: Jitter) -> None:
        wait = WaitExponential(
            initial=0.25, multiplier=2, max=4, jitter=jitter, rng=random.Random(1).random
        )
        reference = random.Random(1)
        for attempt in range(1, 10):
            curve = min(4.0, 0.25 * 2 ** (attempt - 1))
            r = reference.random()
            expected = curve * r if jitter == "full" else curve / 2 + curve / 2 * r
            assert wait.delay(attempt, 0.0) == expected

    def test_seeded_decorrelated_gives_exact_values(self) -> None:
        wait = WaitExponential(
            initial=0.5, max=20, jitter="decorrelated", rng=random.Random(7).random
        )
        reference = random.Random(7)
        previous = 0.0
        for attempt in range(1, 12):
            high = 3 * max(previous, 0.5)
            expected = min(20.0, 0.5 + (high - 0.5) * reference.random())
            previous = wait.delay(attempt, previous)
            assert previous == expected

    def test_default_is_full_jitter(self) -> None:
        wait = WaitExponential(rng=constant(0.5))
        assert wait.jitter == "full"
        assert wait.delay(1, 0.0) == 0.05

    @pytest.mark.parametrize("attempt", [1100, 10**6, 10**12])
    @pytest.mark.parametrize("jitter", ["none", "full", "equal"])
    def test_huge_attempt_numbers_give_max(self, attempt: int, jitter: Jitter) -> None:
        wait = WaitExponential(initial=1, multiplier=2, max=30, jitter=jitter, rng=constant(0.5))
        assert wait.curve(attempt) == 30.0
        expected = {"none": 30.0, "full": 15.0, "equal": 22.5}[jitter]
        assert wait.delay(attempt, 0.0) == expected

    def test_zero_initial_stays_zero_for_huge_attempt_numbers(self) -> None:
        # 0 * 2 ** n is 0 for every n; a curve that is 0 for attempt 1000 must not jump to max
        # at attempt 1100 just because 2.0 ** 1099 overflows.
        wait = WaitExponential(initial=0, multiplier=2, max=30, jitter="none")
        assert wait.delay(1000, 0.0) == 0.0
        assert wait.delay(1100, 0.0) == 0.0

    def test_timedeltas_are_normalised(self) -> None:
        wait = WaitExponential(
            initial=timedelta(milliseconds=100), max=timedelta(seconds=5), multiplier=3
        )
        assert (wait.initial, wait.max, wait.multiplier) == (0.1, 5.0, 3.0)
        assert type(wait.multiplier) is float

    def test_replace_validates_again(self) -> None:
        wait = WaitExponential(initial=1, max=10, jitter="none")
        assert dataclasses.replace(wait, max=20).delay(5, 0.0) == 16.0
        with pytest.raises(ValueError, match=r"^max "):
            dataclasses.replace(wait, max=0.5)

    @given(
        jitter=st.sampled_from(JITTERS),
        initial=initials,
        multiplier=multipliers,
        headroom=headrooms,
        attempt=attempt_numbers,
        previous=previous_delays,
        r=rng_values,
    )
    def test_delay_stays_within_the_bounds_of_its_jitter(
        self,
        jitter: Jitter,
        initial: float,
        multiplier: float,
        headroom: float,
        attempt: int,
        previous: float,
        r: float,
    ) -> None:
        wait = WaitExponential(
            initial=initial,
            multiplier=multiplier,
            max=initial + headroom,
            jitter=jitter,
            rng=constant(r),
        )
        check_bounds(wait, attempt, previous, wait.delay(attempt, previous))

    @given(
        jitter=st.sampled_from(JITTERS),
        initial=initials,
        multiplier=multipliers,
        headroom=headrooms,
        rs=st.lists(rng_values, min_size=1, max_size=60),
    )
    def test_delays_fed_back_as_previous_stay_within_bounds(
        self,
        jitter: Jitter,
        initial: float,
        multiplier: float,
        headroom: float,
        rs: list[float],
    ) -> None:
        wait = WaitExponential(
            initial=initial,
            multiplier=multiplier,
            max=initial + headroom,
            jitter=jitter,
            rng=sequence(rs),
        )
        previous = 0.0  # what the policy passes before the first wait
        for attempt in range(1, len(rs) + 1):
            delay = wait.delay(attempt, previous)
            check_bounds(wait, attempt, previous, delay)
            previous = delay


class TestWaitRandom:
    def test_exact_with_an_injected_rng(self) -> None:
        assert WaitRandom(1, 3, rng=constant(0.25)).delay(1, 0.0) == 1.5
        assert WaitRandom(1, 3, rng=constant(0.0)).delay(5, 9.0) == 1.0

    def test_seeded_rng_gives_exact_values(self) -> None:
        wait = WaitRandom(min=0.5, max=2.5, rng=random.Random(3).random)
        reference = random.Random(3)
        for attempt in range(1, 10):
            assert wait.delay(attempt, 0.0) == 0.5 + 2.0 * reference.random()

    def test_equal_bounds_give_a_fixed_delay(self) -> None:
        assert WaitRandom(2, 2, rng=constant(0.9)).delay(1, 0.0) == 2.0

    def test_timedeltas_are_normalised(self) -> None:
        wait = WaitRandom(timedelta(seconds=1), timedelta(seconds=2))
        assert (wait.min, wait.max) == (1.0, 2.0)

    @given(low=st.floats(0, 1e9), span=st.floats(0, 1e9), r=rng_values)
    def test_stays_within_min_and_max(self, low: float, span: float, r: float) -> None:
        wait = WaitRandom(min=low, max=low + span, rng=constant(r))
        assert low <= wait.delay(1, 0.0) <= low + span


class TestWaitSum:
    def test_plus_builds_a_sum(self) -> None:
        total = WaitFixed(1) + WaitRandom(0, 1, rng=constant(0.5))
        assert isinstance(total, WaitSum)
        assert total.delay(1, 0.0) == 1.5

    def test_plain_numbers_on_either_side(self) -> None:
        assert WaitFixed(1) + 2 == WaitSum(WaitFixed(1), WaitFixed(2))
        assert 2 + WaitFixed(1) == WaitSum(WaitFixed(2), WaitFixed(1))
        assert 0.5 + WaitFixed(1) + timedelta(seconds=2) == WaitSum(
            WaitSum(WaitFixed(0.5), WaitFixed(1)), WaitFixed(2)
        )
        assert (0.5 + WaitFixed(1) + timedelta(seconds=2)).delay(1, 0.0) == 3.5

    def test_builtin_sum_works(self) -> None:
        total = sum([WaitFixed(1), WaitLinear(1, 1, 10), WaitFixed(0.5)], start=WaitFixed(0))
        assert [total.delay(attempt, 0.0) for attempt in (1, 2, 3)] == [2.5, 3.5, 4.5]
        plain = sum([WaitFixed(1), WaitFixed(2)])  # starts from 0 + WaitFixed(1)
        assert isinstance(plain, Wait)
        assert plain.delay(1, 0.0) == 3.0

    def test_both_parts_see_the_same_attempt_and_previous(self) -> None:
        first, second = Recording(1), Recording(2)
        total = first + second
        assert total.delay(4, 2.5) == 3.0
        assert first.calls == second.calls == [(4, 2.5)]

    def test_a_user_subclass_composes(self) -> None:
        total = WaitExponential(initial=1, max=8, jitter="none") + Recording(0.25)
        assert [total.delay(attempt, 0.0) for attempt in range(1, 6)] == [
            1.25,
            2.25,
            4.25,
            8.25,
            8.25,
        ]

    @pytest.mark.parametrize("other", ["1", None, True, [1]], ids=repr)
    def test_adding_a_non_duration_is_a_type_error(self, other: Any) -> None:
        with pytest.raises(TypeError):
            WaitFixed(1) + other
        with pytest.raises(TypeError):
            other + WaitFixed(1)

    @pytest.mark.parametrize("other", [-1, math.nan, math.inf, timedelta(seconds=-1)], ids=repr)
    def test_adding_a_bad_duration_is_a_value_error(self, other: Any) -> None:
        with pytest.raises(ValueError, match="must be"):
            WaitFixed(1) + other
        with pytest.raises(ValueError, match="must be"):
            other + WaitFixed(1)

    @pytest.mark.parametrize(
        ("first", "second", "name"),
        [(1, WaitFixed(1), "first"), (WaitFixed(1), "x", "second"), (None, None, "first")],
    )
    def test_parts_must_be_waits(self, first: Any, second: Any, name: str) -> None:
        with pytest.raises(TypeError, match=rf"^{name} must be a Wait"):
            WaitSum(first, second)


class TestValidation:
    @pytest.mark.parametrize(
        ("cls", "kwargs", "error", "message"),
        [
            (WaitFixed, {"seconds": -1}, ValueError, r"^seconds must be >= 0"),
            (WaitFixed, {"seconds": math.nan}, ValueError, r"^seconds must be a finite"),
            (WaitFixed, {"seconds": "1"}, TypeError, r"^seconds must be a number"),
            (WaitFixed, {"seconds": True}, TypeError, r"^seconds must be a number"),
            (WaitLinear, {"initial": -1}, ValueError, r"^initial must be >= 0"),
            (WaitLinear, {"increment": -1}, ValueError, r"^increment must be >= 0"),
            (WaitLinear, {"increment": math.inf}, ValueError, r"^increment must be a finite"),
            (WaitLinear, {"max": math.nan}, ValueError, r"^max must be a finite"),
            (
                WaitLinear,
                {"initial": 5, "max": 1},
                ValueError,
                r"^max \(1\.0\) must be >= initial \(5\.0\)",
            ),
            (WaitExponential, {"initial": -0.1}, ValueError, r"^initial must be >= 0"),
            (WaitExponential, {"initial": math.nan}, ValueError, r"^initial must be a finite"),
            (WaitExponential, {"max": -1}, ValueError, r"^max must be >= 0"),
            (
                WaitExponential,
                {"initial": 5, "max": 1},
                ValueError,
                r"^max \(1\.0\) must be >= initial \(5\.0\)",
            ),
            (WaitExponential, {"multiplier": 0.5}, ValueError, r"^multiplier must be .*>= 1"),
            (WaitExponential, {"multiplier": 0}, ValueError, r"^multiplier must be .*>= 1"),
            (WaitExponential, {"multiplier": math.nan}, ValueError, r"^multiplier must be"),
            (WaitExponential, {"multiplier": math.inf}, ValueError, r"^multiplier must be"),
            (WaitExponential, {"multiplier": True}, TypeError, r"^multiplier must be a number"),
            (WaitExponential, {"multiplier": "2"}, TypeError, r"^multiplier must be a number"),
            (WaitExponential, {"jitter": "bogus"}, ValueError, r"^jitter must be one of"),
            (WaitExponential, {"jitter": "Full"}, ValueError, r"^jitter must be one of"),
            (WaitExponential, {"rng": 0.5}, TypeError, r"^rng must be a callable"),
            (WaitExponential, {"rng": None}, TypeError, r"^rng must be a callable"),
            (WaitRandom, {"min": -1}, ValueError, r"^min must be >= 0"),
            (WaitRandom, {"max": math.nan}, ValueError, r"^max must be a finite"),
            (
                WaitRandom,
                {"min": 2, "max": 1},
                ValueError,
                r"^max \(1\.0\) must be >= min \(2\.0\)",
            ),
            (WaitRandom, {"rng": random.Random(1)}, TypeError, r"^rng must be a callable"),
        ],
        ids=lambda value: (
            value.__name__ if isinstance(value, type) and issubclass(value, Wait) else None
        ),
    )
    def test_bad_arguments_are_refused_at_construction(
        self, cls: type[Wait], kwargs: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=message):
            cls(**kwargs)

    def test_the_base_class_is_abstract(self) -> None:
        with pytest.raises(TypeError):
            Wait()  # type: ignore[abstract]

    def test_max_equal_to_initial_is_allowed(self) -> None:
        assert WaitExponential(initial=2, max=2, jitter="none").delay(5, 0.0) == 2.0
        assert WaitLinear(initial=2, increment=1, max=2).delay(5, 0.0) == 2.0
