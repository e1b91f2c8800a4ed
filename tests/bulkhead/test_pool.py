"""ThreadPoolBulkhead: bounded threads and queue, refusals, deadlines, abandoned calls, asyncio."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest

from buttress import BulkheadFull, Timeout
from buttress.bulkhead import BulkheadCallAbandoned, ThreadPoolBulkhead
from buttress.timeout import current_deadline, deadline

from .test_semaphore import wait_until


@pytest.fixture
def pool():
    made: list[ThreadPoolBulkhead] = []

    def make(*args: Any, **options: Any) -> ThreadPoolBulkhead:
        made.append(ThreadPoolBulkhead(*args, **options))
        return made[-1]

    yield make
    for item in made:
        item.shutdown(wait=False)


class TestThreadPoolBulkhead:
    @pytest.mark.parametrize(
        ("options", "error", "words"),
        [
            ({"max_threads": 0}, ValueError, "max_threads must be >= 1"),
            ({"max_threads": 1, "max_queue": -1}, ValueError, "max_queue must be >= 0"),
            ({"max_threads": 1, "keep_alive": 0}, ValueError, "keep_alive must be > 0"),
        ],
    )
    def test_bad_arguments(self, options, error, words):
        with pytest.raises(error, match=words):
            ThreadPoolBulkhead(**options)

    def test_runs_on_a_worker_thread_and_returns(self, pool):
        p = pool(2)
        assert p.call(lambda: threading.current_thread().name).startswith("buttress-thread-pool-")
        assert p.submit(lambda x: x * 2, 21).result(5) == 42
        with pytest.raises(KeyError):
            p.call(lambda: {"a": 1}["missing"])
        assert p.stats().completed == 3

    def test_refuses_beyond_threads_and_queue(self, pool):
        gate = threading.Event()
        p = pool(2, max_queue=1, name="io")
        futures = [p.submit(gate.wait, 5) for _ in range(3)]  # 2 run, 1 queued
        wait_until(lambda: p.stats().active == 2)
        stats = p.stats()
        assert (stats.active, stats.queued, stats.available) == (2, 1, 0)
        with pytest.raises(BulkheadFull) as info:
            p.submit(gate.wait, 5)
        assert (info.value.name, info.value.reason, info.value.limit) == ("io", "full", 2)
        gate.set()
        assert [f.result(5) for f in futures] == [True, True, True]
        assert p.stats().rejected == 1

    def test_deadline_abandons_a_running_call_which_keeps_its_slot(self, pool):
        events: list[object] = []
        release = threading.Event()
        p = pool(1, listeners=[events.append])
        with deadline(0.05), pytest.raises(Timeout) as info:
            p.call(release.wait, 10)
        assert "did not finish within 0.05 s" in str(info.value)
        assert isinstance(info.value, TimeoutError)
        stats = p.stats()
        assert (stats.active, stats.abandoned) == (1, 1)
        with pytest.raises(BulkheadFull):  # the abandoned call still counts
            p.call(lambda: None)
        assert events[0] == BulkheadCallAbandoned("thread-pool", "Event.wait", running=True)
        release.set()
        wait_until(lambda: p.stats().active == 0)
        assert p.stats().abandoned == 0
        assert p.call(lambda: "free again") == "free again"

    def test_deadline_drops_a_queued_call(self, pool):
        gate = threading.Event()
        ran: list[int] = []
        p = pool(1, max_queue=1)
        first = p.submit(gate.wait, 5)
        wait_until(lambda: p.stats().active == 1)
        with deadline(0.03), pytest.raises(Timeout):
            p.call(ran.append, 1)
        assert p.stats().queued == 0
        gate.set()
        assert first.result(5) is True
        p.shutdown()
        assert ran == []  # never run

    def test_calls_see_the_callers_context_and_deadline(self, pool):
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
        p = pool(1)
        var.set("mine")
        with deadline(30, name="outer"):
            seen = p.call(lambda: (var.get(), current_deadline()))
        assert seen[0] == "mine"
        assert seen[1] is not None
        assert seen[1].name == "outer"

    def test_decorates_sync_functions_only(self, pool):
        p: ThreadPoolBulkhead = pool(1)

        @p
        def where() -> str:
            return threading.current_thread().name

        assert where.__name__ == "where"
        assert where().startswith("buttress-")

        async def coro() -> None:
            return None

        with pytest.raises(TypeError, match="synchronous"):
            p(coro)
        with pytest.raises(TypeError, match="synchronous"):
            p.submit(coro)

    def test_idle_threads_end_and_shutdown_refuses(self):
        p = ThreadPoolBulkhead(3, keep_alive=0.02)
        p.call(lambda: None)
        wait_until(lambda: p.stats().threads == 0)
        p.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            p.call(lambda: None)

    async def test_acall_does_not_block_the_loop(self, pool):
        p = pool(2)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        assert await p.acall(time.sleep, 0.05) is None
        tick_task.cancel()
        assert ticks >= 5

    async def test_cancelling_acall_abandons_the_call(self, pool):
        release = threading.Event()
        p = pool(1)
        task = asyncio.create_task(p.acall(release.wait, 10))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert p.stats().abandoned == 1
        release.set()
        await asyncio.to_thread(wait_until, lambda: p.stats().active == 0)

    async def test_acall_honours_the_deadline_and_errors(self, pool):
        release = threading.Event()
        p = pool(1)
        with deadline(0.03), pytest.raises(Timeout):
            await p.acall(release.wait, 10)
        release.set()
        await asyncio.to_thread(wait_until, lambda: p.stats().active == 0)
        with pytest.raises(ZeroDivisionError):
            await p.acall(lambda: 1 / 0)
