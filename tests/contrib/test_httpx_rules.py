"""The sans-I/O rules the HTTP integrations share (buttress.contrib._http): pure functions."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from buttress.contrib._http import (
    host_key,
    parse_rate_limit_reset,
    parse_retry_after,
    per_host_breaker,
    server_delay,
)

NOW = 1_700_000_000.0


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("120", 120.0),
            (" 3 ", 3.0),
            ("0", 0.0),
            ("1.5", 1.5),
            ("-1", None),
            ("", None),
            ("soon", None),
            ("nan", None),
            ("inf", None),
        ],
    )
    def test_seconds(self, value, expected):
        assert parse_retry_after(value, now=NOW) == expected

    def test_http_date(self):
        date = email.utils.formatdate(NOW + 30, usegmt=True)
        assert parse_retry_after(date, now=NOW) == pytest.approx(30.0)

    def test_http_date_in_the_past_is_zero(self):
        date = email.utils.formatdate(NOW - 30, usegmt=True)
        assert parse_retry_after(date, now=NOW) == 0.0

    def test_obsolete_date_forms(self):
        assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now=NOW) == 0.0


class TestRateLimitReset:
    def test_seconds_and_unix_time(self):
        assert parse_rate_limit_reset("42", now=NOW) == 42.0
        assert parse_rate_limit_reset(str(int(NOW + 60)), now=NOW) == pytest.approx(60.0)
        assert parse_rate_limit_reset("x", now=NOW) is None
        assert parse_rate_limit_reset("-3", now=NOW) is None


class TestServerDelay:
    def test_retry_after_comes_first(self):
        headers = httpx.Headers({"Retry-After": "5", "RateLimit-Reset": "50"})
        assert server_delay(headers, now=NOW) == 5.0

    def test_then_the_rate_limit_headers(self):
        assert server_delay(httpx.Headers({"ratelimit-reset": "7"}), now=NOW) == 7.0
        github = httpx.Headers({"X-RateLimit-Reset": str(int(NOW + 9))})
        assert server_delay(github, now=NOW) == pytest.approx(9.0)
        structured = httpx.Headers({"RateLimit": '"default";r=0;t=12'})
        assert server_delay(structured, now=NOW) == 12.0

    def test_a_malformed_retry_after_falls_through(self):
        headers = httpx.Headers({"Retry-After": "later", "RateLimit-Reset": "4"})
        assert server_delay(headers, now=NOW) == 4.0

    def test_nothing(self):
        assert server_delay(httpx.Headers({"content-type": "text/plain"})) is None


class TestKeysAndBreakers:
    def test_host_key(self):
        assert host_key("HTTPS", "Example.COM", None) == "https://example.com:443"
        assert host_key("http", "127.0.0.1", 8000) == "http://127.0.0.1:8000"
        assert host_key("http", "::1", None) == "http://[::1]:80"

    def test_per_host_breaker_checks_its_arguments_at_once(self):
        with pytest.raises(ValueError, match="failure_rate"):
            per_host_breaker(failure_rate=2.0)
        make = per_host_breaker(reset_timeout=7)
        first, second = make("a"), make("b")
        assert first is not second
        assert first.rules.reset_timeout == 7
        assert first.name == "http a"
