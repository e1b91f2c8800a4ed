"""The web integrations' shared core: client addresses, key escaping, limit specs, replies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress import ConfigurationError
from buttress.contrib._web import (
    Engine,
    LimitSpec,
    client_address,
    describe_limit,
    escape_key,
    parse_networks,
    rate_limit_headers,
    rejection_body,
)
from buttress.ratelimit import Decision, Rate
from buttress.storage import MemoryStorage

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


class TestClientAddress:
    def test_the_peer_is_the_client_by_default(self):
        assert client_address("203.0.113.9") == "203.0.113.9"

    @pytest.mark.parametrize(
        "headers",
        [
            {"forwarded_for": "1.2.3.4"},
            {"forwarded_for": "1.2.3.4, 10.0.0.1"},
            {"forwarded": "for=1.2.3.4"},
        ],
    )
    def test_headers_from_an_untrusted_peer_change_nothing(self, headers):
        assert client_address("203.0.113.9", trusted=PROXIES, **headers) == "203.0.113.9"
        assert client_address("203.0.113.9", **headers) == "203.0.113.9"

    def test_the_right_most_untrusted_hop_behind_trusted_proxies(self):
        # The client may put anything on the left; the proxies append what they saw.
        chain = "6.6.6.6, 1.2.3.4, 10.1.1.1"
        assert client_address("10.0.0.2", forwarded_for=chain, trusted=PROXIES) == "1.2.3.4"

    def test_every_hop_trusted_gives_the_left_most(self):
        chain = "10.3.3.3, 10.1.1.1"
        assert client_address("10.0.0.2", forwarded_for=chain, trusted=PROXIES) == "10.3.3.3"

    def test_a_malformed_hop_stops_the_walk(self):
        chain = "1.2.3.4, garbage, 10.1.1.1"
        assert client_address("10.0.0.2", forwarded_for=chain, trusted=PROXIES) == "10.1.1.1"

    def test_forwarded_wins_and_accepts_ports_and_quotes(self):
        got = client_address(
            "10.0.0.2",
            forwarded='for="[2001:db8::7]:4711";proto=https, for=10.9.9.9',
            forwarded_for="9.9.9.9",
            trusted=PROXIES,
        )
        assert got == "2001:db8::7"
        assert client_address("10.0.0.2", forwarded="for=1.2.3.4:80", trusted=PROXIES) == "1.2.3.4"

    def test_ipv6_clients_are_keyed_by_prefix(self):
        one = client_address("2001:db8:1:2::1", ipv6_prefix=64)
        other = client_address("2001:db8:1:2:ffff::9", ipv6_prefix=64)
        assert one == other == "2001:db8:1:2::/64"
        assert client_address("2001:db8:1:3::1", ipv6_prefix=64) != one
        assert client_address("2001:db8::1") == "2001:db8::1"  # /128 by default

    def test_ipv4_mapped_addresses_are_ipv4(self):
        assert client_address("::ffff:192.0.2.1", ipv6_prefix=64) == "192.0.2.1"

    @pytest.mark.parametrize("peer", [None, "", "/run/app.sock", "not an address"])
    def test_an_unknown_peer(self, peer):
        assert client_address(peer) == "unknown"

    def test_bad_proxy_networks_are_refused(self):
        with pytest.raises(ValueError, match="trusted_proxies"):
            parse_networks(["10.0.0.0/8", "nonsense"])
        with pytest.raises(TypeError, match="trusted_proxies"):
            parse_networks([42])  # type: ignore[list-item]
        assert parse_networks("192.168.0.0/16")[0].num_addresses == 65536
        assert parse_networks(None) == ()


class TestEscapeKey:
    @given(st.text(max_size=60), st.text(max_size=60))
    def test_distinct_parts_stay_distinct_and_safe(self, one, two):
        a, b = escape_key(one), escape_key(two)
        assert (a == b) == (one == two)
        for escaped in (a, b):
            assert not any(c in escaped for c in ":{} ")
            assert escaped.isprintable()

    def test_long_parts_are_hashed(self):
        long = "x" * 500
        assert escape_key(long).startswith("#")
        assert escape_key(long) != escape_key(long + "y")
        assert len(escape_key(long)) == 65

    def test_plain_parts_are_kept(self):
        assert escape_key("203.0.113.9") == "203.0.113.9"
        assert escape_key("user-42") == "user-42"


class TestLimitSpec:
    def test_rates_are_scoped_and_escaped(self):
        spec = LimitSpec.make("100 per day; 10 per hour", "/limited:GET")
        assert spec.rates("GET") == (
            Rate(100, 86400, scope="/limited%3AGET"),
            Rate(10, 3600, scope="/limited%3AGET"),
        )

    def test_per_method_scopes_apart(self):
        spec = LimitSpec.make("1/second", "view", per_method=True)
        assert spec.rates("get") != spec.rates("POST")

    def test_methods_filter(self):
        spec = LimitSpec.make("1/second", "view", methods=["post"])
        assert spec.applies("POST")
        assert not spec.applies("GET")

    def test_dynamic_limits_are_read_per_request(self):
        plan = {"limit": "5/minute"}
        spec = LimitSpec.make(lambda: plan["limit"], "view")
        assert spec.rates("GET")[0].limit == 5
        plan["limit"] = "50/minute"
        assert spec.rates("GET")[0].limit == 50

    def test_costs(self):
        assert LimitSpec.make("1/second", "v", cost=3).request_cost() == 3
        assert LimitSpec.make("1/second", "v", cost=lambda: 7).request_cost() == 7
        with pytest.raises(ValueError, match="cost"):
            LimitSpec.make("1/second", "v", cost=lambda: -1).request_cost()

    def test_bad_declarations_fail_at_once(self):
        with pytest.raises(ConfigurationError, match="10 per fortnight"):
            LimitSpec.make("10 per fortnight", "v")
        with pytest.raises(TypeError, match="limit"):
            LimitSpec.make(42, "v")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cost"):
            LimitSpec.make("1/second", "v", cost=-2)
        with pytest.raises(TypeError, match="cost"):
            LimitSpec.make("1/second", "v", cost="2")  # type: ignore[arg-type]


class TestEngine:
    def test_all_limits_of_a_request_are_one_decision(self):
        engine = Engine(MemoryStorage())
        route = LimitSpec.make("5/minute", "route").rates("GET")
        app = LimitSpec.make("2/minute", "global").rates("GET")
        both = route + app
        assert [engine.decide("c", both).allowed for _ in range(3)] == [True, True, False]
        # The rejected third request took nothing from the route's limit: 3 left of 5.
        assert engine.decide("c", route).remaining == 2

    async def test_async_decisions(self):
        engine = Engine("memory://")
        rates = LimitSpec.make("1/minute", "r").rates("GET")
        assert (await engine.adecide("c", rates)).allowed
        assert not (await engine.adecide("c", rates)).allowed

    def test_limiters_are_bounded(self):
        engine = Engine("memory://", max_limiters=2)
        for limit in range(1, 6):
            engine.decide("c", (Rate(limit, 60),))
        assert len(engine._limiters) == 2

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="strategy"):
            Engine("memory://", strategy="leaky")
        with pytest.raises(TypeError, match="storage"):
            Engine(42)


def decision(allowed: bool, retry: float | None = None) -> Decision:
    rate = Rate(10, 3600, scope="x")
    return Decision(allowed, 10, 0 if not allowed else 4, 1799.2, retry, rate)


class TestReplies:
    def test_headers_of_an_admitted_request(self):
        rates = (Rate(100, 86400), Rate(10, 3600))
        assert rate_limit_headers(decision(True), rates) == [
            ("RateLimit-Limit", "10"),
            ("RateLimit-Remaining", "4"),
            ("RateLimit-Reset", "1800"),
            ("RateLimit-Policy", "100;w=86400, 10;w=3600"),
        ]

    def test_a_rejection_says_when_to_retry(self):
        headers = dict(rate_limit_headers(decision(False, 12.1), (Rate(10, 3600),)))
        assert headers["Retry-After"] == "13"
        headers = dict(rate_limit_headers(decision(False, 0.0), (Rate(10, 3600),)))
        assert headers["Retry-After"] == "1"  # never "0": a client would retry at once

    def test_legacy_names(self):
        headers = dict(rate_limit_headers(decision(True), (Rate(10, 3600),), legacy=True))
        assert set(headers) == {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
        assert int(headers["X-RateLimit-Reset"]) > 1_700_000_000  # a Unix time

    def test_json_for_json_clients(self):
        body, kind = rejection_body(decision(False, 59.5), "application/json")
        assert kind == "application/json"
        assert json.loads(body) == {
            "error": "too_many_requests",
            "message": "Too Many Requests: 10 per 1 hour",
            "limit": "10 per 1 hour",
            "retry_after": 60,
        }

    @pytest.mark.parametrize("accept", [None, "", "text/html,application/xhtml+xml,*/*", "*/*"])
    def test_text_otherwise(self, accept):
        body, kind = rejection_body(decision(False, 3), accept)
        assert kind.startswith("text/plain")
        assert body == b"Too Many Requests: 10 per 1 hour. Retry after 3 s.\n"

    def test_a_custom_message(self):
        body, _ = rejection_body(decision(False, 3), "text/plain", "Slow down")
        assert body == b"Slow down. Retry after 3 s.\n"

    def test_describe(self):
        assert describe_limit(Rate(2, 60)) == "2 per 1 minute"
        assert describe_limit(Rate(5, 30)) == "5 per 30 seconds"
        assert describe_limit(None) == "rate limit"


def test_a_short_part_that_escapes_long_is_hashed():
    part = ":" * 100  # 100 characters, 300 once escaped
    escaped = escape_key(part)
    assert escaped.startswith("#")
    assert len(escaped) == 65
    Rate(1, 60, scope=escaped)  # a valid scope
