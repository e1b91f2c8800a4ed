"""Hedging: the pure latency window, the asyncio driver, and hedged HTTP against a slow server."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from buttress import RetryBudget
from buttress.contrib.httpx import ResilientTransport
from buttress.hedge import Hedge, LatencyWindow
from tests.contrib._http_server import Reply, ScriptedServer


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

        assert await double(4) == 8
        assert await hedge.acall(double, 5) == 10
        with pytest.raises(TypeError, match="coroutine"):
            hedge(print)  # type: ignore[arg-type]


class TestHedgedHttp:
    async def test_against_a_slow_server_the_hedge_wins_and_the_loser_is_cancelled(self):
        with ScriptedServer() as server:
            server.script(Reply(delay=3.0, body=b"slow"), Reply(body=b"fast"))
            hedge = Hedge(delay=0.05, budget=None)
            transport = ResilientTransport(hedge=hedge, attempt_header="x-attempt")
            async with httpx.AsyncClient(transport=transport) as client:
                begun = time.monotonic()
                response = await client.get(server.url)
                elapsed = time.monotonic() - begun
            assert response.text == "fast"
            assert elapsed < 1.5
            assert [r.headers["x-attempt"] for r in server.received] == ["1", "2"]
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

    async def test_post_is_never_hedged(self):
        with ScriptedServer() as server:
            server.default = Reply(delay=0.1)
            hedge = Hedge(delay=0.01, budget=None)
            async with httpx.AsyncClient(transport=ResilientTransport(hedge=hedge)) as client:
                await client.post(server.url, content=b"x")
            assert server.count == 1
            assert hedge.hedges == 0
