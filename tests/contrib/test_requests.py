"""ResilientAdapter against real HTTP servers on loopback, through requests.Session.

The scenarios of ``test_httpx.py``, through the requests adapter (sync only).
"""

from __future__ import annotations

import email.utils
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from buttress import CircuitOpen, RateLimited, RetryBudget, State, Timeout
from buttress.chaos import ChaosPolicy, SyntheticResponse, flagged
from buttress.contrib.requests import ResilientAdapter, per_host_breaker, request_key
from buttress.hedge import Hedge, HedgeSent, HedgeWon
from buttress.testing import FakeClock, instant_waits
from tests.contrib._http_server import (
    Reply,
    ScriptedServer,
    first_attempt_slow_once,
    slow_first_attempts,
)


@pytest.fixture
def make():
    sessions: list[requests.Session] = []

    def build(**options: Any) -> tuple[requests.Session, ResilientAdapter]:
        session = requests.Session()
        adapter = ResilientAdapter(**options)
        session.mount("http://", adapter)
        sessions.append(session)
        return session, adapter

    yield build
    for session in sessions:
        session.close()


@pytest.fixture
def server():
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def other():
    with ScriptedServer() as running:
        yield running


def pool_connections(adapter: ResilientAdapter) -> int:
    pools = adapter.poolmanager.pools
    return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 - a container


class TestRetries:
    def test_503_with_retry_after_seconds_is_waited_and_retried(self, make, server):
        server.script(Reply(503, {"Retry-After": "3"}), Reply(200, body=b"fine"))
        session, _ = make(attempt_header="x-attempt")
        with instant_waits() as waits:
            response = session.get(f"{server.url}/orders", timeout=5)
        assert response.status_code == 200
        assert response.text == "fine"
        assert [r.headers.get("x-attempt") for r in server.received] == ["1", "2"]
        assert waits.delays == [3.0]

    def test_retry_after_as_http_date(self, make, server):
        when = email.utils.formatdate(time.time() + 4, usegmt=True)
        server.script(Reply(503, {"Retry-After": when}), Reply(200))
        session, _ = make()
        with instant_waits() as waits:
            assert session.get(server.url, timeout=5).status_code == 200
        assert len(waits.delays) == 1
        assert 2.5 <= waits.delays[0] <= 4.0

    def test_429_with_ratelimit_reset(self, make, server):
        server.script(Reply(429, {"RateLimit-Reset": "2"}), Reply(200))
        session, _ = make()
        with instant_waits() as waits:
            assert session.get(server.url, timeout=5).status_code == 200
        assert waits.delays == [2.0]

    def test_retry_after_beyond_max_wait_returns_the_response_at_once(self, make, server):
        server.default = Reply(429, {"Retry-After": "120"}, body=b"slow down")
        session, _ = make(max_wait=10)
        with instant_waits() as waits:
            response = session.get(server.url, timeout=5)
        assert response.status_code == 429
        assert response.text == "slow down"
        assert waits.delays == []
        assert server.count == 1

    def test_gives_back_the_last_response_when_attempts_run_out(self, make, server):
        server.default = Reply(503, body=b"down")
        session, _ = make(attempts=4, wait=0, breaker=None)
        response = session.get(server.url, timeout=5)
        assert (response.status_code, response.text) == (503, "down")
        assert server.count == 4

    def test_post_is_not_retried_unless_it_has_an_idempotency_key(self, make, server):
        server.default = Reply(503)
        session, _ = make(wait=0, breaker=None)
        assert session.post(server.url, data=b"x", timeout=5).status_code == 503
        assert server.count == 1
        server.script(Reply(503), Reply(201))
        response = session.post(
            server.url, data=b"order", headers={"Idempotency-Key": "k"}, timeout=5
        )
        assert response.status_code == 201
        assert [r.body for r in server.received[1:]] == [b"order", b"order"]

    def test_streaming_request_body_is_not_retried(self, make, server):
        server.default = Reply(503)
        session, _ = make(wait=0)

        def body() -> Iterator[bytes]:
            yield b"a"
            yield b"b"

        assert session.put(server.url, data=body(), timeout=5).status_code == 503
        assert server.count == 1
        assert server.received[0].body == b"ab"

    def test_reset_mid_response_is_retried(self, make, server):
        server.script(Reply(body=b"0123456789", reset_after=3), Reply(body=b"whole"))
        session, _ = make(wait=0)
        assert session.get(server.url, timeout=5).text == "whole"
        assert server.count == 2

    def test_reset_mid_response_reaches_a_streaming_caller(self, make, server):
        server.script(Reply(body=b"0123456789", reset_after=3))
        session, _ = make(wait=0)
        response = session.get(server.url, timeout=5, stream=True)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _ = response.content
        response.close()
        assert server.count == 1

    def test_dropped_connections_are_retried_then_raised_with_a_note(self, make, server):
        server.default = Reply(drop=True)
        session, _ = make(attempts=3, wait=0, breaker=None)
        with pytest.raises(requests.ConnectionError) as caught:
            session.get(server.url, timeout=5)
        assert server.count == 3
        assert any(
            "gave up after 3 attempts" in note for note in getattr(caught.value, "__notes__", [])
        )


class TestTimeouts:
    def test_attempt_timeout_cuts_a_slow_attempt_and_retries(self, make, server):
        server.script(Reply(delay=2.0), Reply(body=b"quick"))
        session, _ = make(wait=0, attempt_timeout=0.2)
        begun = time.monotonic()
        assert session.get(server.url, timeout=5).text == "quick"
        assert time.monotonic() - begun < 1.5
        assert server.count == 2

    def test_total_timeout_covers_every_attempt(self, make, server):
        server.default = Reply(delay=2.0)
        session, _ = make(wait=0, timeout=0.5, breaker=None, attempts=10)
        begun = time.monotonic()
        with pytest.raises((requests.Timeout, Timeout)):
            session.get(server.url, timeout=5)
        assert time.monotonic() - begun < 1.2
        assert server.count <= 3


class TestBreakerPerHost:
    def test_an_open_host_is_refused_without_a_socket_and_others_still_served(
        self, make, server, other
    ):
        server.default = Reply(503)
        session, adapter = make(
            attempts=1, breaker=per_host_breaker(fail_max=3, failure_rate=None, reset_timeout=60)
        )
        for _ in range(3):
            assert session.get(server.url, timeout=5).status_code == 503
        connections, received = server.connections, server.count
        with pytest.raises(CircuitOpen):
            session.get(server.url, timeout=5)
        assert (server.connections, server.count) == (connections, received)
        assert session.get(other.url, timeout=5).status_code == 200
        breakers = adapter.breakers()
        assert breakers[f"http://127.0.0.1:{server.port}"].state is State.OPEN
        assert breakers[f"http://127.0.0.1:{other.port}"].state is State.CLOSED

    def test_4xx_do_not_count_as_failures(self, make, server):
        server.default = Reply(404)
        session, _ = make(attempts=1, breaker=per_host_breaker(fail_max=2, failure_rate=None))
        for _ in range(10):
            assert session.get(server.url, timeout=5).status_code == 404

    def test_connection_errors_count_as_failures(self, make, server):
        server.default = Reply(drop=True)
        session, _ = make(attempts=1, breaker=per_host_breaker(fail_max=2, failure_rate=None))
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                session.get(server.url, timeout=5)
        with pytest.raises(CircuitOpen):
            session.get(server.url, timeout=5)
        assert server.count == 2


class TestPool:
    def test_connections_return_to_the_pool_after_thousands_of_retried_requests(self, make, server):
        toggle = threading.Lock()
        state = {"n": 0}

        def every_other(_request):
            with toggle:
                state["n"] += 1
                return Reply(503, body=b"x" * 2000) if state["n"] % 2 else Reply(body=b"ok")

        server.handler = every_other
        session, adapter = make(wait=0, budget=None, breaker=None)
        for _ in range(1500):
            assert session.get(server.url, timeout=5).status_code == 200
        assert server.count == 3000
        assert pool_connections(adapter) == 1
        assert server.connections == 1

    def test_streamed_responses_of_a_failing_host_are_closed_too(self, make, server):
        server.default = Reply(503, body=b"y" * 50_000)
        session, adapter = make(attempts=3, wait=0, budget=None, breaker=None)
        for _ in range(300):
            response = session.get(server.url, timeout=5, stream=True)
            assert response.status_code == 503
            response.close()
        assert server.count == 900
        assert pool_connections(adapter) == 1
        assert server.connections == 1


class TestBudget:
    def test_the_budget_caps_load_under_a_persistent_outage(self, make, server):
        server.default = Reply(503)
        calls = 300
        budget = RetryBudget(0.2, min_per_second=1.0, ttl=10)
        session, _ = make(attempts=5, wait=0, breaker=None, budget=budget)
        for _ in range(calls):
            assert session.get(server.url, timeout=5).status_code == 503
        assert server.count <= 1.2 * calls + 1.0 * 10
        assert server.count > calls


class TestBulkheadRateLimitChaos:
    def test_rate_limit_spaces_requests(self, make, server):
        clock = FakeClock()
        session, _ = make(rate_limit="5/second", clock=clock, breaker=None)
        for _ in range(10):
            assert session.get(server.url, timeout=5).status_code == 200
        assert clock.now() >= 0.9

    def test_rate_limit_wait_bounded(self, make, server):
        session, _ = make(rate_limit="1/minute", rate_limit_wait=1, clock=FakeClock())
        session.get(server.url, timeout=5)
        with pytest.raises(RateLimited):
            session.get(server.url, timeout=5)
        assert server.count == 1

    def test_bulkhead_holds_one_request_per_host_at_a_time(self, make, server, other):
        server.default = Reply(delay=0.15)
        other.default = Reply(delay=0.15)
        session, _ = make(bulkhead=1)
        errors: list[BaseException] = []

        def one(url: str) -> None:
            try:
                session.get(url, timeout=5)
            except BaseException as error:
                errors.append(error)

        threads = [
            threading.Thread(target=one, args=(url,))
            for url in (server.url, server.url, server.url, other.url)
        ]
        begun = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - begun
        assert errors == []
        starts = sorted(request.at for request in server.received)
        assert all(later - earlier >= 0.14 for earlier, later in itertools.pairwise(starts))
        assert 0.44 <= elapsed < 1.5

    def test_injected_503s_are_retried_and_never_reach_the_server(self, make, server):
        chaos = ChaosPolicy(
            rate=1.0,
            result=SyntheticResponse(503, {"Retry-After": "1"}, b"injected"),
            enabled=True,
            flag="drill",
        )
        session, _ = make(attempts=3, chaos=chaos, breaker=None)
        with instant_waits() as waits, flagged("drill"):
            response = session.get(server.url, timeout=5)
        assert (response.status_code, response.text) == (503, "injected")
        assert waits.delays == [1.0, 1.0]
        assert server.count == 0
        assert session.get(server.url, timeout=5).status_code == 200


def settled(hedge: Hedge, timeout: float = 5.0) -> None:
    """Wait until no loser of ``hedge`` runs any more (their responses are closed by then)."""
    ends = time.monotonic() + timeout
    while hedge.abandoned:
        assert time.monotonic() < ends, "a losing attempt did not end"
        time.sleep(0.005)


@pytest.fixture
def hedges() -> Iterator[list[Hedge]]:
    """Hedges made by a test; their threads (losers included) must end with it."""
    made: list[Hedge] = []
    yield made
    for hedge in made:
        assert hedge.close(timeout=10)


class TestHedging:
    def test_the_hedge_wins_against_a_slow_server_and_the_losers_connection_is_reused(
        self, make, server, hedges
    ):
        server.handler = first_attempt_slow_once(1.0)
        hedge = Hedge(delay=0.05, budget=None)
        hedges.append(hedge)
        session, adapter = make(hedge=hedge, attempt_header="x-attempt")
        begun = time.monotonic()
        response = session.get(server.url, timeout=5)
        assert response.text == "fast"
        assert time.monotonic() - begun < 0.8
        assert response.request.headers["x-attempt"] == "2"
        assert (hedge.hedges_won, hedge.abandoned) == (1, 1)
        settled(hedge)
        assert pool_connections(adapter) == 2
        for _ in range(5):
            assert session.get(server.url, timeout=5).status_code == 200
        assert server.connections == 2

    @pytest.mark.parametrize("stream", [False, True])
    def test_hundreds_of_hedged_requests_do_not_leak_connections(
        self, make, server, hedges, stream
    ):
        server.handler = slow_first_attempts(0.1)
        hedge = Hedge(delay=0.01, budget=None)
        hedges.append(hedge)
        # Room for the ~10 losers in flight at once (a full pool would discard connections).
        session, adapter = make(hedge=hedge, attempt_header="x-attempt", pool_maxsize=30)
        for _ in range(200):
            with session.get(server.url, timeout=5, stream=stream) as response:
                assert response.text in ("fast", "slow")
        settled(hedge)
        assert hedge.hedges == 200
        assert hedge.hedges_won >= 150  # the rest: a loaded machine let the slow one win
        assert server.count == 400
        # Each loser held its connection about 100 ms; a leak would open one per request.
        assert server.connections <= 25
        assert pool_connections(adapter) <= 25

    def test_the_budget_caps_hedges(self, make, server, hedges):
        server.default = Reply(delay=0.03)
        hedge = Hedge(delay=0.005, budget=RetryBudget(0.1, min_per_second=0.0))
        hedges.append(hedge)
        session, _ = make(hedge=hedge)
        for _ in range(30):
            assert session.get(server.url, timeout=5).status_code == 200
        assert 1 <= hedge.hedges <= 3
        assert server.count == 30 + hedge.hedges

    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    def test_non_idempotent_requests_are_never_hedged(self, make, server, hedges, method):
        server.default = Reply(delay=0.1)
        hedge = Hedge(delay=0.01, budget=None)
        hedges.append(hedge)
        session, _ = make(hedge=hedge)
        session.request(method, server.url, data=b"x", timeout=5)
        assert server.count == 1
        assert (hedge.calls, hedge.hedges) == (0, 0)

    def test_events_and_retries_off(self, make, server, hedges):
        seen: list[object] = []
        server.handler = slow_first_attempts(0.3)
        hedge = Hedge(delay=0.01, budget=None, listeners=[seen.append])
        hedges.append(hedge)
        session, _ = make(hedge=hedge, attempts=1, attempt_header="x-attempt")
        assert session.get(f"{server.url}/q?key=secret", timeout=5).text == "fast"
        settled(hedge)
        assert [type(event) for event in seen] == [HedgeSent, HedgeWon]
        assert {event.target for event in seen} == {  # type: ignore[attr-defined]
            f"GET http://127.0.0.1:{server.port}"
        }

    def test_closing_the_session_closes_the_hedges_threads(self, server, hedges):
        hedge = Hedge(delay=1.0, budget=None)
        hedges.append(hedge)
        with requests.Session() as session:
            session.mount("http://", ResilientAdapter(hedge=hedge))
            assert session.get(server.url, timeout=5).status_code == 200
            assert hedge.threads == 1
        assert hedge.threads == 0


class TestConfiguration:
    @pytest.mark.parametrize(
        ("options", "error", "names"),
        [
            ({"attempts": 0}, ValueError, "attempts"),
            ({"attempt_timeout": -1}, ValueError, "attempt_timeout"),
            ({"idempotency_header": ""}, ValueError, "idempotency_header"),
            ({"bulkhead": "x"}, TypeError, "bulkhead"),
            ({"chaos": ChaosPolicy(result="x")}, TypeError, "SyntheticResponse"),
            ({"hedge": 0.1}, TypeError, "hedge"),
        ],
    )
    def test_bad_arguments_are_refused_naming_them(self, options, error, names):
        with pytest.raises(error, match=names):
            ResilientAdapter(**options)

    def test_request_key_is_the_origin(self):
        request = requests.Request("GET", "https://API.example.com/x").prepare()
        assert request_key(request) == "https://api.example.com:443"
