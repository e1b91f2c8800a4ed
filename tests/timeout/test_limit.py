"""TimeLimit: coroutines cancelled at the deadline, sync calls in thread or cooperative mode."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from buttress import BulkheadFull, Retry, Timeout
from buttress.bulkhead import ThreadPoolBulkhead
from buttress.retry import WaitFixed
from buttress.testing import FakeClock
from buttress.timeout import TimedOut, TimeLimit, current_deadline, deadline, remaining, timeout

from ..bulkhead.test_semaphore import wait_until
from ._tasks import cancelling


class Flaky(Exception):
    pass


class TestConstruction:
    @pytest.mark.parametrize(
        ("args", "options", "error", "words"),
        [
            ((0,), {}, ValueError, "timeout must be > 0"),
            (("1",), {}, TypeError, "timeout must be a number"),
            ((1,), {"mode": "kill"}, ValueError, "mode must be one of thread, cooperative"),
            ((1,), {"pool": 3}, TypeError, "pool must be a ThreadPoolBulkhead"),
            ((1,), {"clock": object()}, TypeError, "clock must provide now"),
        ],
    )
    def test_bad_arguments(self, args, options, error, words):
        with pytest.raises(error, match=words):
            TimeLimit(*args, **options)

    def test_pool_only_in_thread_mode(self):
        with pytest.raises(ValueError, match="pool applies to mode='thread' only"):
            TimeLimit(1, mode="cooperative", pool=ThreadPoolBulkhead(1))

    def test_decorating_without_calling_is_explained(self):
        with pytest.raises(TypeError, match=r"write @timeout\(2\)"):
            timeout(lambda: None)  # type: ignore[arg-type]

    def test_defaults(self):
        limit = TimeLimit(2)
        assert (limit.timeout, limit.mode, limit.name) == (2.0, "thread", "timeout")
        assert isinstance(limit.pool, ThreadPoolBulkhead)
        assert limit.pool.max_threads == 16
        assert TimeLimit(2, mode="cooperative").pool is None
        assert repr(limit) == "TimeLimit(2, mode='thread', name='timeout')"


class TestAsync:
    async def test_a_slow_coroutine_is_cancelled(self):
        events: list[object] = []
        cancelled = False

        @timeout(0.02, name="fetch", listeners=[events.append])
        async def slow() -> None:
            nonlocal cancelled
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled = True
                raise

        began = time.monotonic()
        with pytest.raises(Timeout) as info:
            await slow()
        assert time.monotonic() - began < 5
        assert cancelled
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value.__cause__, asyncio.CancelledError)
        target = "TestAsync.test_a_slow_coroutine_is_cancelled.slow"
        assert str(info.value) == f"fetch: {target} did not finish within 0.02 s"
        assert events == [
            TimedOut(
                "fetch",
                "TestAsync.test_a_slow_coroutine_is_cancelled.slow",
                0.02,
                "cancelled",
                "fetch",
            )
        ]
        assert cancelling() == 0

    async def test_a_fast_coroutine_returns_and_sees_the_deadline(self):
        async def fast() -> float | None:
            return remaining()

        left = await TimeLimit(5).acall(fast)
        assert left is not None
        assert 4 < left <= 5
        assert current_deadline() is None

    async def test_an_outside_cancellation_stays_a_cancellation(self):
        started = asyncio.Event()

        async def slow() -> None:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(TimeLimit(5).acall(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_nested_limits_the_outer_sooner(self):
        inner_seen: list[object] = []

        async def work() -> None:
            inner_seen.append(current_deadline())
            await asyncio.sleep(10)

        outer = TimeLimit(0.03, name="outer")
        inner = TimeLimit(5, name="inner")
        with pytest.raises(Timeout) as info:
            await outer.acall(inner.acall, work)
        assert inner_seen[0].name == "outer"  # type: ignore[attr-defined]
        assert "within 0.03 s" in str(info.value)

    async def test_a_deadline_already_passed_starts_nothing(self):
        clock = FakeClock()
        ran = []

        async def work() -> None:
            ran.append(1)

        with deadline(1, clock=clock, name="request"):
            clock.advance(1)
            with pytest.raises(Timeout, match="not started: the deadline of request"):
                await TimeLimit(5, clock=clock).acall(work)
        assert ran == []

    async def test_retry_inside_gives_up_before_the_deadline(self):
        clock = FakeClock()
        calls = 0

        @timeout(30, clock=clock)
        @Retry(attempts=None, wait=WaitFixed(4), clock=clock)
        async def flaky() -> None:
            nonlocal calls
            calls += 1
            raise Flaky

        with pytest.raises(Flaky):
            await flaky()
        assert calls == 8  # at 0, 4, ..., 28: a wait to 32 would pass the deadline at 30

    async def test_a_swallowed_cancellation_returns_the_result(self):
        async def stubborn() -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return "finished anyway"
            return "never"

        assert await TimeLimit(0.01).acall(stubborn) == "finished anyway"
        assert cancelling() == 0

    async def test_decorator_keeps_the_name(self):
        @timeout(1)
        async def named() -> int:
            return 1

        assert named.__name__ == "named"
        assert await named() == 1


class TestThreadMode:
    def test_stops_waiting_at_the_deadline_and_counts_the_thread(self):
        release = threading.Event()
        pool = ThreadPoolBulkhead(1, name="db-threads")
        limit = TimeLimit(0.03, pool=pool, name="db")
        began = time.monotonic()
        with pytest.raises(Timeout) as info:
            limit.call(release.wait, 10)
        assert time.monotonic() - began < 5
        assert "goes on in its thread" in str(info.value)
        assert pool.stats().abandoned == 1
        with pytest.raises(BulkheadFull):  # the thread still running holds the only slot
            limit.call(lambda: None)
        release.set()
        wait_until(lambda: pool.stats().active == 0)
        assert limit.call(lambda: 5) == 5
        pool.shutdown()

    def test_returns_and_raises_like_the_function(self):
        limit = TimeLimit(5)

        @limit
        def where() -> str:
            assert current_deadline() is not None
            return threading.current_thread().name

        assert where().startswith("buttress-timeout-threads-")
        with pytest.raises(KeyError):
            limit.call(lambda: {"a": 1}["x"])
        assert limit.pool is not None
        limit.pool.shutdown()

    def test_call_refuses_coroutine_functions(self):
        async def coro() -> None:
            return None

        with pytest.raises(TypeError, match="acall"):
            TimeLimit(1).call(coro)  # type: ignore[unused-coroutine]


class TestCooperativeMode:
    def test_runs_in_the_callers_thread_with_the_deadline(self):
        clock = FakeClock()
        limit = TimeLimit(10, mode="cooperative", clock=clock)

        def work() -> tuple[str, float | None]:
            clock.advance(3)
            return threading.current_thread().name, remaining()

        assert limit.call(work) == (threading.current_thread().name, 7)

    def test_retry_inside_stops_at_the_deadline(self):
        clock = FakeClock()
        calls = 0

        @timeout(10, mode="cooperative", clock=clock)
        @Retry(attempts=None, wait=WaitFixed(3), clock=clock)
        def flaky() -> None:
            nonlocal calls
            calls += 1
            raise Flaky

        with pytest.raises(Flaky):
            flaky()
        assert calls == 4  # at 0, 3, 6, 9

    def test_a_late_result_stands(self):
        clock = FakeClock()
        limit = TimeLimit(1, mode="cooperative", clock=clock)

        def late() -> str:
            clock.advance(5)
            return "late"

        assert limit.call(late) == "late"

    def test_a_passed_deadline_starts_nothing(self):
        clock = FakeClock()
        with deadline(1, clock=clock):
            clock.advance(2)
            with pytest.raises(Timeout, match="not started"):
                TimeLimit(5, mode="cooperative", clock=clock).call(lambda: None)
