"""Tests for the shared argument checks in buttress._types."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from buttress._types import check_int, seconds, seconds_or_none


class TestSeconds:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (0, 0.0),
            (0.0, 0.0),
            (3, 3.0),
            (2.5, 2.5),
            (1e-9, 1e-9),
            (10**6, 1e6),
            (timedelta(0), 0.0),
            (timedelta(milliseconds=1500), 1.5),
            (timedelta(minutes=2), 120.0),
        ],
    )
    def test_accepts_numbers_and_timedeltas(self, value: object, expected: float) -> None:
        result = seconds(value, "delay")
        assert result == expected
        assert type(result) is float

    def test_accepts_other_real_numbers(self) -> None:
        """numbers.Real (Fraction, numpy scalars) are durations too; Decimal is not Real."""
        assert seconds(Fraction(1, 2), "delay") == 0.5

    @pytest.mark.parametrize("value", [0.5, 1, timedelta(microseconds=1), 1e-300], ids=repr)
    def test_accepts_positive_values_when_zero_is_refused(self, value: object) -> None:
        assert seconds(value, "ttl", allow_zero=False) > 0

    @pytest.mark.parametrize(
        "value",
        [True, False, "1", b"1", None, [1], Decimal(1), object()],
        ids=repr,
    )
    def test_rejects_non_durations_with_a_type_error_naming_the_argument(
        self, value: object
    ) -> None:
        with pytest.raises(TypeError, match=r"^delay must be a number of seconds or a timedelta"):
            seconds(value, "delay")

    def test_type_error_shows_the_type_and_value(self) -> None:
        with pytest.raises(TypeError, match=r"got str \('soon'\)"):
            seconds("soon", "delay")

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=repr)
    def test_rejects_non_finite_numbers(self, value: float) -> None:
        with pytest.raises(ValueError, match=r"^timeout must be a finite number of seconds"):
            seconds(value, "timeout")

    @pytest.mark.parametrize(
        "value", [-1, -0.001, -1e-300, timedelta(seconds=-1), timedelta(microseconds=-1)], ids=repr
    )
    @pytest.mark.parametrize("allow_zero", [True, False])
    def test_rejects_negative_values(self, value: object, allow_zero: bool) -> None:
        bound = ">= 0" if allow_zero else "> 0"
        with pytest.raises(ValueError, match=rf"^max_wait must be {bound} seconds, got"):
            seconds(value, "max_wait", allow_zero=allow_zero)

    @pytest.mark.parametrize("value", [0, 0.0, timedelta(0)], ids=repr)
    def test_rejects_zero_when_not_allowed(self, value: object) -> None:
        with pytest.raises(ValueError, match=r"^ttl must be > 0 seconds, got"):
            seconds(value, "ttl", allow_zero=False)

    def test_zero_is_allowed_by_default(self) -> None:
        assert seconds(0, "wait") == 0.0


class TestSecondsOrNone:
    @pytest.mark.parametrize("allow_zero", [True, False])
    def test_none_passes_through(self, allow_zero: bool) -> None:
        assert seconds_or_none(None, "timeout", allow_zero=allow_zero) is None

    def test_converts_durations_like_seconds(self) -> None:
        assert seconds_or_none(timedelta(seconds=3), "timeout") == 3.0
        assert seconds_or_none(2, "timeout") == 2.0

    @pytest.mark.parametrize(
        ("value", "error"),
        [(-1, ValueError), (math.nan, ValueError), ("1", TypeError), (False, TypeError)],
        ids=repr,
    )
    def test_rejects_bad_values_naming_the_argument(
        self, value: object, error: type[Exception]
    ) -> None:
        with pytest.raises(error, match=r"^timeout "):
            seconds_or_none(value, "timeout")

    def test_zero_follows_allow_zero(self) -> None:
        assert seconds_or_none(0, "timeout") == 0.0
        with pytest.raises(ValueError, match=r"^timeout must be > 0 seconds"):
            seconds_or_none(0, "timeout", allow_zero=False)


class TestCheckInt:
    @pytest.mark.parametrize(("value", "minimum"), [(1, 1), (5, 1), (0, 0), (-3, -5)])
    def test_accepts_whole_numbers_at_least_the_minimum(self, value: int, minimum: int) -> None:
        assert check_int(value, "attempts", minimum=minimum) == value

    def test_returns_the_same_object(self) -> None:
        big = 10**30
        assert check_int(big, "attempts", minimum=1) is big

    @pytest.mark.parametrize("value", [True, False, 1.0, "1", None, Decimal(1)], ids=repr)
    def test_rejects_non_ints_naming_the_argument(self, value: object) -> None:
        with pytest.raises(TypeError, match=r"^attempts must be an int, got"):
            check_int(value, "attempts", minimum=0)

    @pytest.mark.parametrize(("value", "minimum"), [(0, 1), (-1, 0), (9, 10)])
    def test_rejects_values_below_the_minimum(self, value: int, minimum: int) -> None:
        with pytest.raises(ValueError, match=rf"^buckets must be >= {minimum}, got {value}$"):
            check_int(value, "buckets", minimum=minimum)
