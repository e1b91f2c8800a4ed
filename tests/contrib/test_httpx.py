"""ResilientTransport against real HTTP servers on loopback, through httpx.Client and AsyncClient.

Every scenario runs twice, sync and async (the ``make`` fixture's parameter). The servers are
:class:`tests.contrib._http_server.ScriptedServer` instances: real sockets, scripted failures.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from buttress import CircuitOpen, RateLimited, RetryBudget, State, Timeout
from buttress.chaos import ChaosPolicy, SyntheticResponse, flagged
from buttress.contrib.httpx import ResilientTransport, per_host_breaker, request_key
from buttress.testing import FakeClock, instant_waits
from tests.contrib._http_server import Reply, ScriptedServer


class Driver:
    """One client (sync or async) over one ResilientTransport, driven from sync test code."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.kind = kind
        self.transport = ResilientTransport(**options)
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "sync":
            self.client: httpx.Client | httpx.AsyncClient = httpx.Client(
                transport=self.transport, timeout=5
            )
        else:
            self.loop = asyncio.new_event_loop()
            self.client = httpx.AsyncClient(transport=self.transport, timeout=5)

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        if isinstance(self.client, httpx.Client):
            return self.client.request(method, url, **options)
        assert self.loop is not None
        return self.loop.run_until_complete(self.client.request(method, url, **options))

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def body(self, *chunks: bytes) -> Any:
        """A streaming (not replayable) request body of the right kind."""
        if self.kind == "sync":

            def sync_body() -> Iterator[bytes]:
                yield from chunks

            return sync_body()

        async def async_body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return async_body()

    def pool_connections(self) -> int:
        sync, asynchronous = self.transport.inner
        inner = sync if self.kind == "sync" else asynchronous
        return len(inner._pool.connections)  # type: ignore[union-attr]

    def close(self) -> None:
        if isinstance(self.client, httpx.Client):
            self.client.close()
        else:
            assert self.loop is not None
            self.loop.run_until_complete(self.client.aclose())
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def make(request):
    drivers: list[Driver] = []

    def build(**options: Any) -> Driver:
        driver = Driver(request.param, **options)
        drivers.append(driver)
        return driver

    yield build
    for driver in drivers:
        driver.close()


@pytest.fixture
def server():
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def other():
    with ScriptedServer() as running:
        yield running


def attempts_seen(server: ScriptedServer) -> list[str | None]:
    return [request.headers.get("x-attempt") for request in server.received]


class TestRetries:
    def test_503_with_retry_after_seconds_is_waited_and_retried(self, make, server):
        server.script(Reply(503, {"Retry-After": "3"}), Reply(200, body=b"fine"))
        client = make(attempt_header="x-attempt")
        with instant_waits() as waits:
            response = client.get(f"{server.url}/orders")
        assert response.status_code == 200
        assert response.text == "fine"
        assert attempts_seen(server) == ["1", "2"]
        assert waits.delays == [3.0]

    def test_retry_after_as_http_date(self, make, server):
        when = email.utils.formatdate(time.time() + 4, usegmt=True)
        server.script(Reply(503, {"Retry-After": when}), Reply(200))
        client = make()
        with instant_waits() as waits:
            assert client.get(server.url).status_code == 200
        assert len(waits.delays) == 1
        assert 2.5 <= waits.delays[0] <= 4.0  # the date has whole seconds

    def test_429_with_ratelimit_reset(self, make, server):
        server.script(Reply(429, {"RateLimit-Reset": "2"}), Reply(200))
        client = make()
        with instant_waits() as waits:
            assert client.get(server.url).status_code == 200
        assert waits.delays == [2.0]
        assert server.count == 2

    def test_retry_after_beyond_max_wait_returns_the_response_at_once(self, make, server):
        server.default = Reply(429, {"Retry-After": "120"}, body=b"slow down")
        client = make(max_wait=10)
        with instant_waits() as waits:
            response = client.get(server.url)
        assert response.status_code == 429
        assert response.text == "slow down"
        assert response.headers["retry-after"] == "120"
        assert waits.delays == []
        assert server.count == 1

    def test_real_wait_between_attempts(self, make, server):
        server.script(Reply(503, {"Retry-After": "0.2"}), Reply(200))
        client = make(wait=0)
        begun = time.monotonic()
        assert client.get(server.url).status_code == 200
        elapsed = server.received[1].at - server.received[0].at
        assert elapsed >= 0.19
        assert time.monotonic() - begun >= 0.19

    def test_gives_back_the_last_response_when_attempts_run_out(self, make, server):
        server.default = Reply(503, body=b"down")
        client = make(attempts=4, wait=0, breaker=None)
        response = client.get(server.url)
        assert response.status_code == 503
        assert response.text == "down"
        assert server.count == 4

    def test_500_is_not_retried_by_default(self, make, server):
        server.default = Reply(500)
        client = make(wait=0)
        assert client.get(server.url).status_code == 500
        assert server.count == 1

    def test_post_is_not_retried(self, make, server):
        server.default = Reply(503)
        client = make(wait=0)
        assert client.request("POST", server.url, content=b"x").status_code == 503
        assert server.count == 1

    def test_post_with_idempotency_key_is_retried(self, make, server):
        server.script(Reply(503), Reply(201))
        client = make(wait=0)
        response = client.request(
            "POST", server.url, content=b"order", headers={"Idempotency-Key": "k-1"}
        )
        assert response.status_code == 201
        assert [r.body for r in server.received] == [b"order", b"order"]

    def test_replayable_put_body_is_sent_again(self, make, server):
        server.script(Reply(502), Reply(200))
        client = make(wait=0)
        assert client.request("PUT", server.url, content=b"payload").status_code == 200
        assert [r.body for r in server.received] == [b"payload", b"payload"]

    def test_streaming_request_body_is_not_retried(self, make, server):
        server.default = Reply(503)
        client = make(wait=0)
        response = client.request("PUT", server.url, content=client.body(b"a", b"b"))
        assert response.status_code == 503
        assert server.count == 1
        assert server.received[0].body == b"ab"

    def test_reset_mid_response_is_retried(self, make, server):
        server.script(Reply(body=b"0123456789", reset_after=3), Reply(body=b"whole"))
        client = make(wait=0)
        response = client.get(server.url)
        assert response.text == "whole"
        assert server.count == 2

    def test_reset_mid_response_reaches_the_caller_without_buffering(self, make, server):
        server.script(Reply(body=b"0123456789", reset_after=3), Reply(body=b"whole"))
        client = make(wait=0, buffer_body=False)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get(server.url)
        assert server.count == 1

    def test_dropped_connection_is_retried(self, make, server):
        server.script(Reply(drop=True), Reply(drop=True), Reply(body=b"third"))
        client = make(wait=0)
        assert client.get(server.url).text == "third"
        assert server.count == 3

    def test_connection_errors_are_raised_with_a_note_when_attempts_run_out(self, make, server):
        server.default = Reply(drop=True)
        client = make(attempts=3, wait=0, breaker=None)
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            client.get(server.url)
        assert server.count == 3
        assert any(
            "gave up after 3 attempts" in note for note in getattr(caught.value, "__notes__", [])
        )

    def test_refused_connections_are_retried(self, make):
        with ScriptedServer() as gone:
            url = gone.url
        client = make(attempts=3, wait=0, breaker=None)
        with pytest.raises(httpx.ConnectError) as caught:
            client.get(url)
        assert any("3 attempts" in note for note in getattr(caught.value, "__notes__", []))


class TestTimeouts:
    def test_attempt_timeout_cuts_a_slow_attempt_and_retries(self, make, server):
        server.script(Reply(delay=2.0), Reply(body=b"quick"))
        client = make(wait=0, attempt_timeout=0.2)
        begun = time.monotonic()
        assert client.get(server.url).text == "quick"
        assert time.monotonic() - begun < 1.5
        assert server.count == 2

    def test_total_timeout_covers_every_attempt(self, make, server):
        server.default = Reply(delay=2.0)
        client = make(wait=0, timeout=0.5, breaker=None, attempts=10)
        begun = time.monotonic()
        with pytest.raises((httpx.TimeoutException, Timeout)):
            client.get(server.url)
        assert time.monotonic() - begun < 1.2
        assert server.count <= 3


class TestBreakerPerHost:
    def test_an_open_host_is_refused_without_a_socket_and_others_still_served(
        self, make, server, other
    ):
        server.default = Reply(503)
        breaker = per_host_breaker(fail_max=3, failure_rate=None, reset_timeout=60)
        client = make(attempts=1, breaker=breaker)
        for _ in range(3):
            assert client.get(server.url).status_code == 503
        connections, received = server.connections, server.count
        with pytest.raises(CircuitOpen) as caught:
            client.get(server.url)
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 50
        assert (server.connections, server.count) == (connections, received)
        assert client.get(other.url).status_code == 200
        breakers = client.transport.breakers()
        assert breakers[f"http://127.0.0.1:{server.port}"].state is State.OPEN
        assert breakers[f"http://127.0.0.1:{other.port}"].state is State.CLOSED

    def test_4xx_do_not_count_as_failures(self, make, server):
        server.default = Reply(404)
        client = make(attempts=1, breaker=per_host_breaker(fail_max=2, failure_rate=None))
        for _ in range(10):
            assert client.get(server.url).status_code == 404
        assert server.count == 10

    def test_connection_errors_count_as_failures(self, make, server):
        server.default = Reply(drop=True)
        client = make(attempts=1, breaker=per_host_breaker(fail_max=2, failure_rate=None))
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(server.url)
        with pytest.raises(CircuitOpen):
            client.get(server.url)
        assert server.count == 2

    def test_circuit_open_stops_the_retries(self, make, server):
        server.default = Reply(503)
        client = make(attempts=5, wait=0, breaker=per_host_breaker(fail_max=2, failure_rate=None))
        with pytest.raises(CircuitOpen):
            client.get(server.url)
        assert server.count == 2

    def test_custom_key_shares_one_breaker(self, make, server, other):
        server.default = Reply(503)
        client = make(
            attempts=1,
            key=lambda request: "partner",
            breaker=per_host_breaker(fail_max=2, failure_rate=None, reset_timeout=60),
        )
        for _ in range(2):
            client.get(server.url)
        with pytest.raises(CircuitOpen):
            client.get(other.url)
        assert other.count == 0
        assert list(client.transport.breakers()) == ["partner"]


class TestPool:
    def test_connections_return_to_the_pool_after_thousands_of_retried_requests(self, make, server):
        toggle = threading.Lock()
        state = {"n": 0}

        def every_other(_request):
            with toggle:
                state["n"] += 1
                return Reply(503, body=b"x" * 2000) if state["n"] % 2 else Reply(body=b"ok")

        server.handler = every_other
        client = make(wait=0, budget=None, breaker=None)
        for _ in range(1500):
            assert client.get(server.url).status_code == 200
        assert server.count == 3000
        assert client.pool_connections() == 1
        assert server.connections == 1

    def test_streamed_responses_of_a_failing_host_are_closed_too(self, make, server):
        server.default = Reply(503, body=b"y" * 50_000)
        client = make(attempts=3, wait=0, budget=None, breaker=None, buffer_body=False)
        for _ in range(300):
            assert client.get(server.url).status_code == 503
        assert server.count == 900
        assert client.pool_connections() == 1
        assert server.connections == 1


class TestBudget:
    def test_the_budget_caps_load_under_a_persistent_outage(self, make, server):
        server.default = Reply(503)
        calls = 300
        budget = RetryBudget(0.2, min_per_second=1.0, ttl=10)
        client = make(attempts=5, wait=0, breaker=None, budget=budget)
        for _ in range(calls):
            assert client.get(server.url).status_code == 503
        minimum = 1.0 * 10
        assert server.count <= 1.2 * calls + minimum
        assert server.count > calls  # retries did happen, within the budget
        assert budget.available() == 0

    def test_one_budget_shared_by_two_clients(self, make, server):
        server.default = Reply(503)
        budget = RetryBudget(0.0, min_per_second=0.5, ttl=10)  # 5 retries in all
        first = make(attempts=3, wait=0, breaker=None, budget=budget)
        second = make(attempts=3, wait=0, breaker=None, budget=budget)
        for _ in range(5):
            first.get(server.url)
            second.get(server.url)
        assert server.count == 10 + 5


class TestBulkheadAndRateLimit:
    def test_rate_limit_spaces_requests(self, make, server):
        clock = FakeClock()
        client = make(rate_limit="5/second", clock=clock, breaker=None)
        for _ in range(10):
            assert client.get(server.url).status_code == 200
        assert clock.now() >= 0.9
        assert server.count == 10

    def test_rate_limit_wait_bounded(self, make, server):
        clock = FakeClock()
        client = make(rate_limit="1/minute", rate_limit_wait=1, clock=clock)
        client.get(server.url)
        with pytest.raises(RateLimited):
            client.get(server.url)
        assert server.count == 1

    def test_bulkhead_holds_one_request_per_host_at_a_time(self, make, server, other):
        server.default = Reply(delay=0.15)
        other.default = Reply(delay=0.15)
        client = make(bulkhead=1)
        errors: list[BaseException] = []

        def many(url: str) -> None:
            try:
                client.get(url)
            except BaseException as error:
                errors.append(error)

        if client.kind == "sync":
            threads = [
                threading.Thread(target=many, args=(url,))
                for url in (server.url, server.url, server.url, other.url)
            ]
            begun = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            assert isinstance(client.client, httpx.AsyncClient)
            session = client.client

            async def together() -> None:
                await asyncio.gather(
                    *(session.get(url) for url in (server.url, server.url, server.url, other.url))
                )

            assert client.loop is not None
            begun = time.monotonic()
            client.loop.run_until_complete(together())
        elapsed = time.monotonic() - begun
        assert errors == []
        starts = sorted(request.at for request in server.received)
        assert all(later - earlier >= 0.14 for earlier, later in itertools.pairwise(starts))
        assert 0.44 <= elapsed < 1.5
        assert other.count == 1


class TestChaos:
    def test_injected_503s_are_retried_and_never_reach_the_server(self, make, server):
        chaos = ChaosPolicy(
            rate=1.0,
            result=SyntheticResponse(503, {"Retry-After": "1"}),
            enabled=True,
            flag="drill",
        )
        client = make(attempts=3, chaos=chaos, breaker=None)
        with instant_waits() as waits, flagged("drill"):
            response = client.get(server.url)
        assert response.status_code == 503
        assert waits.delays == [1.0, 1.0]
        assert server.count == 0
        assert client.get(server.url).status_code == 200  # outside the flag: real
        assert server.count == 1

    def test_injected_connection_errors_trip_the_breaker(self, make, server):
        chaos = ChaosPolicy(rate=1.0, error=httpx.ConnectError("injected"), enabled=True)
        client = make(
            attempts=1, chaos=chaos, breaker=per_host_breaker(fail_max=2, failure_rate=None)
        )
        for _ in range(2):
            with pytest.raises(httpx.ConnectError, match="injected"):
                client.get(server.url)
        with pytest.raises(CircuitOpen):
            client.get(server.url)
        assert server.count == 0


class TestConfiguration:
    @pytest.mark.parametrize(
        ("options", "error", "names"),
        [
            ({"attempts": 0}, ValueError, "attempts"),
            ({"max_wait": -1}, ValueError, "max_wait"),
            ({"timeout": 0}, ValueError, "timeout"),
            ({"statuses": [700]}, ValueError, "statuses"),
            ({"methods": "GET"}, TypeError, "methods"),
            ({"attempt_header": "bad header"}, ValueError, "attempt_header"),
            ({"budget": 0.2}, TypeError, "budget"),
            ({"breaker": 3}, TypeError, "breaker"),
            ({"bulkhead": 0}, ValueError, "bulkhead"),
            ({"rate_limit": 5}, TypeError, "rate_limit"),
            ({"chaos": "yes"}, TypeError, "chaos"),
            ({"transport": object()}, TypeError, "transport"),
            ({"chaos": ChaosPolicy(result=42)}, TypeError, "SyntheticResponse"),
        ],
    )
    def test_bad_arguments_are_refused_naming_them(self, options, error, names):
        with pytest.raises(error, match=names):
            ResilientTransport(**options)

    def test_a_sync_inner_transport_is_not_used_for_async(self):
        transport = ResilientTransport(httpx.HTTPTransport())

        async def use() -> None:
            async with httpx.AsyncClient(transport=transport) as client:
                await client.get("http://127.0.0.1:9/")

        with pytest.raises(RuntimeError, match="sync transport"):
            asyncio.run(use())
        transport.close()

    def test_request_key_is_the_origin(self):
        assert request_key(httpx.Request("GET", "https://API.example.com/x")) == (
            "https://api.example.com:443"
        )
        assert request_key(httpx.Request("GET", "http://[::1]:8080/")) == "http://[::1]:8080"
