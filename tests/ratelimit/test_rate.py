"""Rates and the limit-string notation: every accepted form, and clear errors for the rest."""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from buttress import ConfigurationError
from buttress.ratelimit import Rate, parse_rates
from buttress.ratelimit._rate import MAX_LIMIT, MAX_PERIOD

MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0


def caret_position(error: BaseException) -> int:
    """The column the caret line of a parse error points at, relative to the quoted string."""
    # The message is "<why>\n    <text>\n    <caret>": both lines are indented by four spaces.
    lines = str(error).split("\n")
    assert len(lines) == 3, str(error)
    assert lines[1].startswith("    ")
    assert lines[2].strip() == "^"
    return lines[2].index("^") - 4


class TestParseRates:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("10/minute", [(10, MINUTE)]),
            ("10 per hour", [(10, HOUR)]),
            ("100/day; 10/hour", [(100, DAY), (10, HOUR)]),
            ("5 per 30 seconds", [(5, 30.0)]),
            ("2/minute", [(2, MINUTE)]),
            ("1/second", [(1, 1.0)]),
            ("3/seconds", [(3, 1.0)]),
            ("3 per minutes", [(3, MINUTE)]),
            ("7/hours", [(7, HOUR)]),
            ("7/days", [(7, DAY)]),
            ("1/month", [(1, 30 * DAY)]),
            ("2/months", [(2, 30 * DAY)]),
            ("1/year", [(1, 365 * DAY)]),
            ("4 per 2 years", [(4, 2 * 365 * DAY)]),
            ("1000 / 2 hours", [(1000, 2 * HOUR)]),
            ("10 per 1.5 hours", [(10, 1.5 * HOUR)]),
            ("1/0.5 second", [(1, 0.5)]),
            ("10/MINUTE", [(10, MINUTE)]),
            ("10 Per Hour", [(10, HOUR)]),
            ("10 PER 30 SECONDS", [(10, 30.0)]),
            ("  10/minute  ", [(10, MINUTE)]),
            ("10/ minute", [(10, MINUTE)]),
            ("10/minute, 5/second", [(10, MINUTE), (5, 1.0)]),
            ("10/second;1000/hour", [(10, 1.0), (1000, HOUR)]),
            ("1/second; 10 per minute, 100/day", [(1, 1.0), (10, MINUTE), (100, DAY)]),
        ],
    )
    def test_notation(self, text, expected):
        rates = parse_rates(text)
        assert [(rate.limit, rate.period) for rate in rates] == expected
        assert all(isinstance(rate, Rate) for rate in rates)

    def test_order_is_kept_and_result_is_a_tuple(self):
        rates = parse_rates("10/hour; 1/second")
        assert rates == (Rate(10, per=HOUR), Rate(1, per=1))

    def test_month_is_thirty_days_and_year_is_365_days(self):
        assert parse_rates("1/month")[0].period == 30 * 24 * 3600
        assert parse_rates("1/year")[0].period == 365 * 24 * 3600

    def test_rates_pass_through(self):
        rate = Rate(5, per=2)
        assert parse_rates(rate) == (rate,)
        assert parse_rates([rate, Rate(1, per=1)]) == (rate, Rate(1, per=1))
        assert parse_rates((rate,)) == (rate,)

    def test_largest_limit_and_longest_period_are_accepted(self):
        assert parse_rates(f"{MAX_LIMIT}/second")[0].limit == MAX_LIMIT
        assert parse_rates("1 per 10 years")[0].period == MAX_PERIOD

    @pytest.mark.parametrize(
        ("text", "position", "words"),
        [
            ("", 0, "empty"),
            ("   ", 0, "empty"),
            ("abc", 0, "expected"),
            ("10 minute", 0, "expected"),
            ("10perminute", 0, "expected"),
            ("10 per", 0, "expected"),
            ("per minute", 0, "expected"),
            ("-1/minute", 0, "expected"),
            ("10.5/minute", 0, "expected"),
            ("10/1e3 seconds", 0, "expected"),
            ("10/fortnight", 3, "unknown unit 'fortnight'"),
            ("10/min", 3, "unknown unit 'min'"),
            ("10 per 5 secondss", 9, "unknown unit 'secondss'"),
            ("10/minute;", 10, "empty"),
            ("10/minute;;5/second", 10, "empty"),
            ("10/minute; x/hour", 11, "expected"),
            ("10/minute, 5/lightyear", 13, "unknown unit 'lightyear'"),
        ],
    )
    def test_malformed_string_shows_where_it_fails(self, text, position, words):
        with pytest.raises(ConfigurationError) as info:
            parse_rates(text)
        message = str(info.value)
        assert repr(text) in message
        assert words in message
        assert f"at position {position}" in message
        assert caret_position(info.value) == position

    def test_configuration_error_is_a_value_error(self):
        with pytest.raises(ValueError, match="invalid rate limit"):
            parse_rates("ten/minute")

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("0/minute", "limit must be between 1 and 2**53, got 0"),
            (f"{MAX_LIMIT + 1}/second", "limit must be between 1"),
            ("10 per 0 seconds", "per must be > 0 seconds"),
            ("10/0 minutes", "per must be > 0 seconds"),
            ("1 per 11 years", "per must be between 1 ms and ten years"),
            ("1 per 3651 days", "per must be between 1 ms and ten years"),
            ("1 per 122 months", "per must be between 1 ms and ten years"),
        ],
    )
    def test_out_of_range_values_raise_configuration_errors(self, text, words):
        with pytest.raises(ConfigurationError) as info:
            parse_rates(text)
        assert words in str(info.value)
        assert repr(text) in str(info.value)
        assert caret_position(info.value) == 0

    @pytest.mark.parametrize(
        ("text", "position"),
        [("10/minute; 0/hour", 11), ("10/minute;0/hour", 10), ("1/second, 1 per 11 years", 10)],
    )
    def test_out_of_range_value_in_a_later_limit_points_at_that_limit(self, text, position):
        with pytest.raises(ConfigurationError) as info:
            parse_rates(text)
        assert caret_position(info.value) == position
        assert text[position].isdigit()

    @pytest.mark.parametrize(
        "value", [None, 10, 10.0, b"10/minute", object(), {"limit": 10}, [], (), ["10/minute"]]
    )
    def test_anything_but_a_string_or_rates_is_a_type_error(self, value):
        with pytest.raises(TypeError, match="limits must be"):
            parse_rates(value)

    def test_a_mixed_sequence_is_a_type_error(self):
        with pytest.raises(TypeError, match="non-empty sequence of Rate"):
            parse_rates([Rate(1, per=1), "10/minute"])  # type: ignore[list-item]


class TestRate:
    def test_typed_constructor(self):
        rate = Rate(10, per=60)
        assert rate.limit == 10
        assert rate.period == 60.0
        assert rate.per == 60.0
        assert isinstance(rate.period, float)
        assert rate == parse_rates("10/minute")[0]

    def test_default_period_is_one_second(self):
        assert Rate(3).period == 1.0

    def test_timedelta_period(self):
        rate = Rate(10, per=timedelta(minutes=1))
        assert rate.period == 60.0
        assert rate == Rate(10, per=60)
        assert hash(rate) == hash(Rate(10, per=60.0))
        assert Rate(1, per=timedelta(milliseconds=250)).period == 0.25

    def test_immutable_hashable_and_picklable(self):
        rate = Rate(10, per=60)
        with pytest.raises(AttributeError):
            rate.limit = 11
        with pytest.raises(AttributeError):
            del rate.period
        assert not hasattr(rate, "__dict__")
        assert (rate.limit, rate.period) == (10, 60.0)
        assert rate != Rate(10, per=61)
        assert rate != Rate(11, per=60)
        assert rate != (10, 60.0)
        assert len({rate, Rate(10, per=60.0), Rate(10, per=timedelta(seconds=60))}) == 1
        assert pickle.loads(pickle.dumps(rate)) == rate
        assert eval(repr(rate), {"Rate": Rate}) == rate  # noqa: S307 - our own repr

    @pytest.mark.parametrize(
        ("rate", "text"),
        [
            (Rate(10, per=60), "10/minute"),
            (Rate(1, per=1), "1/second"),
            (Rate(5, per=3600), "5/hour"),
            (Rate(100, per=86_400), "100/day"),
            (Rate(1, per=30 * 86_400), "1/month"),
            (Rate(1, per=365 * 86_400), "1/year"),
            (Rate(1, per=7200), "1 per 2 hours"),
            (Rate(10, per=90), "10 per 90 seconds"),
            (Rate(5, per=30), "5 per 30 seconds"),
            (Rate(1, per=0.5), "1 per 0.5 seconds"),
            (Rate(3, per=2 * 86_400), "3 per 2 days"),
        ],
    )
    def test_str(self, rate, text):
        assert str(rate) == text
        assert parse_rates(str(rate)) == (rate,)

    @given(
        limit=st.integers(min_value=1, max_value=10**9),
        period=st.integers(min_value=1, max_value=int(MAX_PERIOD)),
    )
    @example(limit=1, period=1_000_000)  # "1 per 1e+06 seconds" with the '%g' format
    @example(limit=1, period=1_234_567)  # "1 per 1.23457e+06 seconds": digits lost
    def test_str_parses_back_to_the_same_rate(self, limit, period):
        rate = Rate(limit, per=period)
        assert parse_rates(str(rate)) == (rate,)

    @pytest.mark.parametrize("limit", [0, -1, -100, MAX_LIMIT + 1])
    def test_limit_out_of_range(self, limit):
        with pytest.raises(ValueError, match=r"limit must be between 1 and 2\*\*53"):
            Rate(limit, per=60)

    @pytest.mark.parametrize("limit", [1.0, 10.5, "10", None, True, False])
    def test_limit_not_an_int(self, limit):
        with pytest.raises(TypeError, match="limit must be an int"):
            Rate(limit, per=60)

    @pytest.mark.parametrize(
        ("per", "error", "words"),
        [
            (0, ValueError, "per must be > 0 seconds"),
            (-1, ValueError, "per must be > 0 seconds"),
            (timedelta(0), ValueError, "per must be > 0 seconds"),
            (timedelta(seconds=-5), ValueError, "per must be > 0 seconds"),
            (float("nan"), ValueError, "per must be a finite number"),
            (float("inf"), ValueError, "per must be a finite number"),
            (MAX_PERIOD + 1, ValueError, "per must be between 1 ms and ten years"),
            (timedelta(days=3651), ValueError, "per must be between 1 ms and ten years"),
            ("60", TypeError, "per must be a number of seconds or a timedelta"),
            (None, TypeError, "per must be a number of seconds or a timedelta"),
            (True, TypeError, "per must be a number of seconds or a timedelta"),
        ],
    )
    def test_bad_period(self, per: Any, error, words):
        with pytest.raises(error, match=words):
            Rate(10, per=per)

    def test_ten_years_exactly_is_accepted(self):
        assert Rate(1, per=timedelta(days=3650)).period == MAX_PERIOD
