"""Hedging: the pure latency window, the asyncio and thread drivers, events, and hedged HTTP
(httpx, sync and async) against a slow server on loopback."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from buttress import RetryBudget, add_listener
from buttress._events import Event
from buttress.contrib.httpx import ResilientTransport
from buttress.hedge import Hedge, HedgeRefused, HedgeSent, HedgeWon, LatencyWindow
from tests.contrib._http_server import (
    Reply,
    ScriptedServer,
    first_attempt_slow_once,
    slow_first_attempts,
)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (in real time) until ``predicate()`` holds; fail after ``timeout`` seconds."""
    ends = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < ends, "timed out waiting"
        time.sleep(0.005)


@pytest.fixture
def hedges() -> Iterator[Callable[..., Hedge]]:
    """Make hedges; at the end, wait for their threads (losers included) to end."""
    made: list[Hedge] = []

    def build(**options: object) -> Hedge:
        hedge = Hedge(**options)  # type: ignore[arg-type]
        made.append(hedge)
        return hedge

    yield build
    for hedge in made:
        assert hedge.close(timeout=10)


class TestLatencyWindow:
    def test_quantiles_of_the_recent_samples(self):
        window = LatencyWindow(100)
        for value in range(1, 101):
            window.record(value / 1000)
        assert window.quantile(0.95) == pytest.approx(0.095)
        assert window.quantile(0.5) == pytest.approx(0.050)

    def test_old_samples_are_forgotten(self):
        window = LatencyWindow(10)
        for _ in range(10):
            window.record(1.0)
        for _ in range(10):
            window.record(0.001)
        assert len(window) == 10
        assert window.quantile(0.99) == pytest.approx(0.001)

    def test_empty(self):
        assert LatencyWindow().quantile(0.95) is None


class TestDelay:
    def test_percentile_after_enough_samples(self):
        hedge = Hedge(delay="p90", initial_delay=0.5, min_samples=10, min_delay=0.0)
        assert hedge.delay_now() == 0.5
        for value in range(1, 11):
            hedge.latencies.record(value / 100)
        assert hedge.delay_now() == pytest.approx(0.09)

    def test_min_delay_floors_the_percentile(self):
        hedge = Hedge(delay="p95", min_samples=1, min_delay=0.02)
        hedge.latencies.record(0.0001)
        assert hedge.delay_now() == 0.02

    @pytest.mark.parametrize(
        ("options", "error", "name"),
        [
            ({"delay": "p100"}, ValueError, "delay"),
            ({"delay": "fast"}, ValueError, "delay"),
            ({"delay": -1}, ValueError, "delay"),
            ({"max_hedges": 0}, ValueError, "max_hedges"),
            ({"budget": 0.1}, TypeError, "budget"),
            ({"min_samples": 0}, ValueError, "min_samples"),
            ({"max_threads": 1}, ValueError, "max_threads"),
            ({"max_threads": 2.5}, TypeError, "max_threads"),
        ],
    )
    def test_bad_arguments(self, options, error, name):
        with pytest.raises(error, match=name):
            Hedge(**options)


class TestRun:
    async def test_the_hedge_wins_and_the_slow_attempt_is_cancelled(self):
        cancelled: list[int] = []

        async def attempt(number: int) -> str:
            try:
                await asyncio.sleep(5 if number == 1 else 0.01)
            except asyncio.CancelledError:
                cancelled.append(number)
                raise
            return f"answer {number}"

        hedge = Hedge(delay=0.05, budget=None)
        begun = time.monotonic()
        assert await hedge.run(attempt) == "answer 2"
        assert time.monotonic() - begun < 1
        assert cancelled == [1]
        assert (hedge.hedges, hedge.hedges_won) == (1, 1)

    async def test_a_fast_first_attempt_sends_no_hedge(self):
        calls: list[int] = []

        async def attempt(number: int) -> int:
            calls.append(number)
            return number

        hedge = Hedge(delay=0.5, budget=None)
        assert await hedge.run(attempt) == 1
        assert calls == [1]
        assert hedge.hedges == 0

    async def test_a_rejected_answer_waits_for_the_hedge_and_is_discarded(self):
        discarded: list[str] = []

        async def attempt(number: int) -> str:
            await asyncio.sleep(0.1 if number == 1 else 0.15)
            return "bad" if number == 1 else "good"

        hedge = Hedge(delay=0.01, budget=None)
        result = await hedge.run(attempt, accept=lambda r: r == "good", discard=discarded.append)
        assert result == "good"
        assert discarded == ["bad"]

    async def test_every_attempt_failing_raises_the_last_error(self):
        async def attempt(number: int) -> str:
            await asyncio.sleep(0.02 * number)
            raise ConnectionError(f"attempt {number}")

        hedge = Hedge(delay=0.01, max_hedges=2, budget=None)
        with pytest.raises(ConnectionError, match="attempt 3"):
            await hedge.run(attempt)
        assert hedge.hedges == 2

    async def test_the_budget_bounds_the_hedges(self):
        async def attempt(number: int) -> int:
            await asyncio.sleep(0.02)
            return number

        hedge = Hedge(delay=0.001, budget=RetryBudget(0.1, min_per_second=0.0))
        for _ in range(40):
            await hedge.run(attempt)
        assert 1 <= hedge.hedges <= 4
        assert hedge.hedges_refused == 40 - hedge.hedges

    async def test_decorator_and_acall(self):
        hedge = Hedge(delay=1.0, budget=None)

        @hedge
        async def double(x: int) -> int:
            return 2 * x

        assert inspect.iscoroutinefunction(double)
        assert await double(4) == 8
        assert await hedge.acall(double, 5) == 10

    async def test_events_of_a_hedge_that_wins(self):
        seen: list[Event] = []

        async def attempt(number: int) -> int:
            await asyncio.sleep(5 if number == 1 else 0.01)
            return number

        hedge = Hedge(delay=0.02, budget=None, name="search", listeners=[seen.append])
        assert await hedge.run(attempt, target="lookup") == 2
        sent, won = seen
        assert isinstance(sent, HedgeSent)
        assert (sent.policy, sent.target, sent.attempt, sent.delay) == ("search", "lookup", 2, 0.02)
        assert isinstance(won, HedgeWon)
        assert (won.target, won.attempt) == ("lookup", 2)
        assert won.latency < won.elapsed < 1

    async def test_a_refusal_is_an_event(self):
        seen: list[Event] = []

        async def attempt(number: int) -> int:
            await asyncio.sleep(0.05)
            return number

        hedge = Hedge(delay=0.01, budget=RetryBudget(0.0, 0.0), listeners=[seen.append])
        assert await hedge.run(attempt) == 1
        [refused] = seen
        assert isinstance(refused, HedgeRefused)
        assert (refused.attempt, refused.reason) == (2, "budget")
        assert hedge.hedges_refused == 1


class TestRunSync:
    def test_the_hedge_wins_and_the_loser_is_discarded_when_it_ends(self, hedges):
        release = threading.Event()
        discarded: list[str] = []

        def attempt(number: int) -> str:
            if number == 1:
                release.wait(5)
                return "slow"
            return "fast"

        hedge = hedges(delay=0.02, budget=None)
        begun = time.monotonic()
        assert hedge.run_sync(attempt, discard=discarded.append) == "fast"
        assert time.monotonic() - begun < 1
        assert (hedge.hedges, hedge.hedges_won) == (1, 1)
        assert (hedge.running, hedge.abandoned) == (1, 1)  # the loser still runs, counted
        assert discarded == []
        release.set()
        wait_for(lambda: hedge.abandoned == 0)
        assert discarded == ["slow"]
        assert hedge.running == 0
        assert hedge.close(timeout=5)
        assert hedge.threads == 0

    def test_a_fast_first_attempt_sends_no_hedge(self, hedges):
        calls: list[int] = []

        def attempt(number: int) -> int:
            calls.append(number)
            return number

        hedge = hedges(delay=0.5, budget=None)
        for _ in range(20):
            assert hedge.run_sync(attempt) == 1
        assert calls == [1] * 20
        assert (hedge.calls, hedge.hedges, hedge.abandoned) == (20, 0, 0)
        assert hedge.threads == 1  # one worker served every call
        assert len(hedge.latencies) == 20

    def test_a_rejected_answer_waits_for_the_hedge_and_is_discarded(self, hedges):
        discarded: list[str] = []

        def attempt(number: int) -> str:
            time.sleep(0.1 if number == 1 else 0.15)
            return "bad" if number == 1 else "good"

        hedge = hedges(delay=0.01, budget=None)
        result = hedge.run_sync(attempt, accept=lambda r: r == "good", discard=discarded.append)
        assert result == "good"
        assert discarded == ["bad"]

    def test_every_attempt_failing_raises_the_last_error_itself(self, hedges):
        raised: list[BaseException] = []

        def attempt(number: int) -> str:
            time.sleep(0.02 * number)
            error = ConnectionError(f"attempt {number}")
            raised.append(error)
            raise error

        hedge = hedges(delay=0.01, max_hedges=2, budget=None)
        with pytest.raises(ConnectionError, match="attempt 3") as caught:
            hedge.run_sync(attempt)
        assert caught.value is raised[-1]  # never wrapped
        assert hedge.hedges == 2

    def test_a_first_attempt_failing_fast_is_raised_without_a_hedge(self, hedges):
        def attempt(number: int) -> str:
            raise KeyError(number)

        hedge = hedges(delay=0.5, budget=None)
        with pytest.raises(KeyError):
            hedge.run_sync(attempt)
        assert hedge.hedges == 0

    def test_the_budget_bounds_the_hedges(self, hedges):
        def attempt(number: int) -> int:
            time.sleep(0.02)
            return number

        hedge = hedges(delay=0.001, budget=RetryBudget(0.1, min_per_second=0.0))
        for _ in range(40):
            hedge.run_sync(attempt)
        assert 1 <= hedge.hedges <= 4
        assert hedge.hedges_refused == 40 - hedge.hedges

    def test_the_thread_bound_caps_the_attempts_in_flight(self, hedges):
        gate = threading.Event()
        seen: list[Event] = []
        results: list[int] = []

        def attempt(number: int) -> int:
            gate.wait(5)
            return number

        hedge = hedges(delay=0.2, budget=None, max_threads=2, listeners=[seen.append])
        callers = [
            threading.Thread(target=lambda: results.append(hedge.run_sync(attempt)))
            for _ in range(3)
        ]
        for caller in callers:
            caller.start()
        time.sleep(0.4)  # past the delay: the hedges found no thread
        assert hedge.running == 2
        gate.set()
        for caller in callers:
            caller.join(5)
        assert results == [1, 1, 1]
        assert hedge.hedges == 0
        assert hedge.hedges_refused == 3  # two waited without a hedge, one ran on its own thread
        assert {e.reason for e in seen if isinstance(e, HedgeRefused)} == {"threads"}

    def test_attempts_run_in_a_copy_of_the_callers_context(self, hedges):
        request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
        request_id.set("r-42")
        seen: list[tuple[int, str]] = []
        lock = threading.Lock()

        def attempt(number: int) -> int:
            with lock:
                seen.append((number, request_id.get()))
            time.sleep(0.2 if number == 1 else 0.0)
            return number

        hedge = hedges(delay=0.02, budget=None)
        assert hedge.run_sync(attempt) == 2
        assert sorted(seen) == [(1, "r-42"), (2, "r-42")]

    def test_a_failing_discard_is_logged_not_raised(self, hedges, caplog):
        def attempt(number: int) -> str:
            time.sleep(0.1 if number == 1 else 0.15)
            return "bad" if number == 1 else "good"

        def discard(_: str) -> None:
            raise OSError("cannot close")

        hedge = hedges(delay=0.01, budget=None)
        with caplog.at_level(logging.ERROR, "buttress.hedge"):
            assert hedge.run_sync(attempt, accept=lambda r: r == "good", discard=discard) == "good"
        assert "discarding an answer failed" in caplog.text

    def test_events_reach_listeners_global_listeners_and_the_log(self, hedges, caplog):
        release = threading.Event()
        mine: list[Event] = []
        everyone: list[Event] = []

        def attempt(number: int) -> str:
            if number == 1:
                release.wait(5)
            return str(number)

        hedge = hedges(delay=0.01, budget=None, name="lookup", listeners=[mine.append])
        with add_listener(everyone.append), caplog.at_level(logging.DEBUG, "buttress.hedge"):
            assert hedge.run_sync(attempt, target="fetch") == "2"
        release.set()
        assert [type(e) for e in mine] == [HedgeSent, HedgeWon]
        assert everyone == mine
        assert [r.name for r in caplog.records] == ["buttress.hedge", "buttress.hedge"]
        assert "lookup fetch: hedge (attempt 2) answered first" in caplog.text
        assert caplog.records[0].buttress_attempt == 2

    def test_close_ends_idle_threads_and_the_hedge_stays_usable(self, hedges):
        hedge = hedges(delay=1.0, budget=None)
        assert hedge.run_sync(lambda n: n) == 1
        assert hedge.threads == 1
        assert hedge.close(timeout=5)
        assert hedge.threads == 0
        assert hedge.run_sync(lambda n: n + 1) == 2
        with hedge:
            pass
        wait_for(lambda: hedge.threads == 0)
        with pytest.raises(ValueError, match="timeout"):
            hedge.close(timeout=-1)

    def test_decorator_and_call(self, hedges):
        hedge: Hedge = hedges(delay=1.0, budget=None)

        @hedge
        def double(x: int) -> int:
            """Twice x."""
            return 2 * x

        assert double(4) == 8
        assert double.__doc__ == "Twice x."
        assert list(inspect.signature(double).parameters) == ["x"]
        assert hedge.call(pow, 2, 5) == 32
        assert hedge.calls == 2

    def test_what_cannot_be_hedged_is_refused(self, hedges):
        hedge: Hedge = hedges()

        def numbers() -> Iterator[int]:
            yield 1

        async def coroutine() -> None:
            return None

        with pytest.raises(TypeError, match="generator"):
            hedge(numbers)
        with pytest.raises(TypeError, match="acall"):
            _ = hedge.call(coroutine)
        with pytest.raises(TypeError, match="callable"):
            hedge.call(42)  # type: ignore[arg-type]


class TestHedgedHttp:
    async def test_against_a_slow_server_the_hedge_wins_and_the_loser_is_cancelled(self):
        with ScriptedServer() as server:
            server.handler = first_attempt_slow_once(3.0)
            hedge = Hedge(delay=0.05, budget=None)
            transport = ResilientTransport(hedge=hedge, attempt_header="x-attempt")
            async with httpx.AsyncClient(transport=transport) as client:
                begun = time.monotonic()
                response = await client.get(server.url)
                elapsed = time.monotonic() - begun
            assert response.text == "fast"
            assert elapsed < 1.5
            assert sorted(r.headers["x-attempt"] for r in server.received) == ["1", "2"]
            assert hedge.hedges_won == 1
            for _ in range(100):  # the server learns of the closed connection a moment later
                if server.gone:
                    break
                await asyncio.sleep(0.01)
            assert server.gone == 1

    async def test_against_a_slow_server_the_budget_is_respected(self):
        with ScriptedServer() as server:
            server.default = Reply(delay=0.03)
            hedge = Hedge(delay=0.005, budget=RetryBudget(0.1, min_per_second=0.0))
            transport = ResilientTransport(hedge=hedge)
            async with httpx.AsyncClient(transport=transport) as client:
                for _ in range(30):
                    assert (await client.get(server.url)).status_code == 200
            assert 1 <= hedge.hedges <= 3
            assert server.count == 30 + hedge.hedges

    async def test_hedging_works_with_retries_off_and_emits_events(self):
        seen: list[Event] = []
        with ScriptedServer() as server:
            server.handler = slow_first_attempts(3.0)
            hedge = Hedge(delay=0.02, budget=None, listeners=[seen.append])
            transport = ResilientTransport(hedge=hedge, attempts=1, attempt_header="x-attempt")
            async with httpx.AsyncClient(transport=transport) as client:
                assert (await client.get(server.url)).text == "fast"
        assert hedge.hedges_won == 1
        assert [type(e) for e in seen] == [HedgeSent, HedgeWon]

    async def test_post_is_never_hedged(self):
        with ScriptedServer() as server:
            server.default = Reply(delay=0.1)
            hedge = Hedge(delay=0.01, budget=None)
            async with httpx.AsyncClient(transport=ResilientTransport(hedge=hedge)) as client:
                await client.post(server.url, content=b"x")
            assert server.count == 1
            assert hedge.hedges == 0


class TestHedgedHttpSync:
    """``httpx.Client`` (sync): attempts on the hedge's threads, losers closed when they end."""

    def test_against_a_slow_server_the_hedge_wins_and_the_losers_connection_is_reused(self, hedges):
        with ScriptedServer() as server:
            server.handler = first_attempt_slow_once(1.0)
            hedge = hedges(delay=0.05, budget=None)
            transport = ResilientTransport(hedge=hedge, attempt_header="x-attempt")
            with httpx.Client(transport=transport) as client:
                begun = time.monotonic()
                response = client.get(server.url)
                elapsed = time.monotonic() - begun
                assert response.text == "fast"
                assert elapsed < 0.8
                assert hedge.hedges_won == 1
                assert hedge.abandoned == 1
                wait_for(lambda: hedge.abandoned == 0)  # the slow answer came and was closed
                pool = transport.inner[0]._pool  # type: ignore[union-attr]
                assert len(pool.connections) == 2
                assert all(connection.is_idle() for connection in pool.connections)
                for _ in range(5):
                    assert client.get(server.url).status_code == 200
            assert sorted(r.headers["x-attempt"] for r in server.received[:2]) == ["1", "2"]
            assert server.connections == 2

    def test_hundreds_of_hedged_requests_do_not_leak_connections(self, hedges):
        with ScriptedServer() as server:
            server.handler = slow_first_attempts(0.1)
            hedge = hedges(delay=0.01, budget=None)
            transport = ResilientTransport(hedge=hedge, attempt_header="x-attempt")
            with httpx.Client(transport=transport) as client:
                for _ in range(200):
                    assert client.get(server.url).status_code == 200
                wait_for(lambda: hedge.abandoned == 0)
                pool = transport.inner[0]._pool  # type: ignore[union-attr]
                assert all(connection.is_idle() for connection in pool.connections)
                assert len(pool.connections) == server.connections
            assert hedge.hedges == 200
            assert hedge.hedges_won >= 150  # the rest: a loaded machine let the slow one win
            assert server.count == 400
            # Each loser held its connection about 100 ms; a leak would open one per request.
            assert server.connections <= 25

    def test_unbuffered_losers_are_closed_too(self, hedges):
        with ScriptedServer() as server:
            server.handler = slow_first_attempts(0.1)
            hedge = hedges(delay=0.01, budget=None)
            transport = ResilientTransport(
                hedge=hedge, attempt_header="x-attempt", buffer_body=False
            )
            with httpx.Client(transport=transport) as client:
                for _ in range(100):
                    assert client.get(server.url).status_code == 200
                wait_for(lambda: hedge.abandoned == 0)
                pool = transport.inner[0]._pool  # type: ignore[union-attr]
                assert all(connection.is_idle() for connection in pool.connections)
            assert hedge.hedges == 100
            assert server.connections <= 25

    def test_against_a_slow_server_the_budget_is_respected(self, hedges):
        with ScriptedServer() as server:
            server.default = Reply(delay=0.03)
            hedge = hedges(delay=0.005, budget=RetryBudget(0.1, min_per_second=0.0))
            with httpx.Client(transport=ResilientTransport(hedge=hedge)) as client:
                for _ in range(30):
                    assert client.get(server.url).status_code == 200
            assert 1 <= hedge.hedges <= 3
            assert server.count == 30 + hedge.hedges
            assert hedge.hedges_refused == 30 - hedge.hedges

    @pytest.mark.parametrize(
        ("method", "options"),
        [
            ("POST", {"content": b"x"}),
            ("PATCH", {"content": b"x"}),
            ("PUT", {"content": iter([b"not", b"replayable"])}),
        ],
    )
    def test_non_idempotent_requests_are_never_hedged(self, hedges, method, options):
        with ScriptedServer() as server:
            server.default = Reply(delay=0.1)
            hedge = hedges(delay=0.01, budget=None)
            with httpx.Client(transport=ResilientTransport(hedge=hedge)) as client:
                client.request(method, server.url, **options)
            assert server.count == 1
            assert (hedge.calls, hedge.hedges) == (0, 0)

    def test_a_post_with_an_idempotency_key_is_hedged(self, hedges):
        with ScriptedServer() as server:
            server.handler = slow_first_attempts(0.3)
            hedge = hedges(delay=0.02, budget=None)
            transport = ResilientTransport(hedge=hedge, attempt_header="x-attempt")
            with httpx.Client(transport=transport) as client:
                response = client.post(
                    server.url, content=b"order", headers={"Idempotency-Key": "o-1"}
                )
                assert response.text == "fast"
                wait_for(lambda: hedge.abandoned == 0)
            assert [r.body for r in server.received] == [b"order", b"order"]

    def test_hedging_works_with_retries_off(self, hedges):
        with ScriptedServer() as server:
            server.handler = slow_first_attempts(0.3)
            hedge = hedges(delay=0.02, budget=None)
            transport = ResilientTransport(hedge=hedge, attempts=1, attempt_header="x-attempt")
            with httpx.Client(transport=transport) as client:
                assert client.get(server.url).text == "fast"
                wait_for(lambda: hedge.abandoned == 0)
            assert hedge.hedges_won == 1

    def test_a_503_does_not_win_and_is_retried(self, hedges):
        with ScriptedServer() as server:
            server.script(Reply(503), Reply(200, body=b"fine"))
            hedge = hedges(delay=1.0, budget=None)
            transport = ResilientTransport(hedge=hedge, wait=0, attempt_header="x-attempt")
            with httpx.Client(transport=transport) as client:
                assert client.get(server.url).text == "fine"
            assert [r.headers["x-attempt"] for r in server.received] == ["1", "2"]
            assert hedge.calls == 2  # each attempt of the retry is hedged

    def test_events_name_the_method_and_origin_only(self, hedges):
        seen: list[Event] = []
        with ScriptedServer() as server:
            server.handler = slow_first_attempts(0.3)
            hedge = hedges(delay=0.02, budget=None, listeners=[seen.append])
            transport = ResilientTransport(hedge=hedge, attempt_header="x-attempt")
            with httpx.Client(transport=transport) as client:
                client.get(f"{server.url}/search?token=secret")
                wait_for(lambda: hedge.abandoned == 0)
        assert [type(e) for e in seen] == [HedgeSent, HedgeWon]
        assert {e.target for e in seen if isinstance(e, (HedgeSent, HedgeWon))} == {
            f"GET http://127.0.0.1:{server.port}"
        }

    def test_closing_the_client_closes_the_hedges_threads(self, hedges):
        with ScriptedServer() as server:
            hedge = hedges(delay=1.0, budget=None)
            with httpx.Client(transport=ResilientTransport(hedge=hedge)) as client:
                assert client.get(server.url).status_code == 200
                assert hedge.threads == 1
            assert hedge.threads == 0
