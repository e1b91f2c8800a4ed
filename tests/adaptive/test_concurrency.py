"""Real threads and asyncio tasks: never more than the limit in flight, nothing leaks.

The limiter's clock is fake (the samples do not matter here); the calls take real time, a
millisecond or so, so that they overlap, and waits for a slot are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time

import pytest

from buttress import BulkheadFull
from buttress.adaptive import AIMD, AdaptiveConcurrency, Vegas
from buttress.testing import FakeClock
from tests._threads import run_in_threads


class Fixed:
    """A limit algorithm that never moves: the bound every admission must respect."""

    def __init__(self, limit: int) -> None:
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        return self._limit


class Overlap:
    """Counts the calls running at once and remembers the most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


class TestThreads:
    def test_never_more_than_the_limit_in_flight(self):
        limiter = AdaptiveConcurrency(algorithm=Fixed(4), clock=FakeClock())
        overlap = Overlap()

        def work(index: int) -> int:
            for _ in range(20):
                with limiter.acquire(timeout=30):
                    overlap.enter()
                    time.sleep(0.0005)
                    overlap.leave()
            return index

        run_in_threads(16, work)
        assert overlap.peak == 4
        stats = limiter.stats()
        assert (stats.inflight, stats.waiting, stats.samples) == (0, 0, 16 * 20)

    def test_decorated_calls_with_a_moving_limit_leave_nothing_behind(self):
        clock = FakeClock()
        limiter = AdaptiveConcurrency(
            algorithm=AIMD(initial_limit=2, max_limit=6), clock=clock, max_wait=30
        )
        overlap = Overlap()

        @limiter
        def call(index: int) -> None:
            overlap.enter()
            time.sleep(0.0002)
            clock.advance(0.001)
            overlap.leave()
            if index % 7 == 0:
                raise TimeoutError  # a drop: the limit backs off

        def work(index: int) -> None:
            for step in range(30):
                with contextlib.suppress(TimeoutError):
                    call(index + step)

        run_in_threads(12, work)
        assert overlap.peak <= 6
        assert limiter.inflight == 0
        assert limiter.stats().waiting == 0

    def test_timeouts_while_waiting_leak_nothing(self):
        limiter = AdaptiveConcurrency(algorithm=Fixed(2), clock=FakeClock())
        refused = [0] * 16

        def work(index: int) -> None:
            rng = random.Random(index)
            for _ in range(20):
                try:
                    permit = limiter.acquire(timeout=rng.choice([0, 0.0001, 0.001, 0.01]))
                except BulkheadFull:
                    refused[index] += 1
                    continue
                time.sleep(rng.choice([0, 0.0005, 0.002]))
                permit.success()

        run_in_threads(16, work)
        stats = limiter.stats()
        assert (stats.inflight, stats.waiting) == (0, 0)
        assert stats.rejected == sum(refused) > 0
        assert stats.samples == 16 * 20 - sum(refused)


class TestAsyncio:
    async def test_never_more_than_the_limit_in_flight(self):
        limiter = AdaptiveConcurrency(algorithm=Fixed(5), clock=FakeClock(), max_wait=None)
        overlap = Overlap()

        @limiter
        async def work() -> None:
            overlap.enter()
            await asyncio.sleep(0.001)
            overlap.leave()

        await asyncio.gather(*(work() for _ in range(200)))
        assert overlap.peak == 5
        assert limiter.inflight == 0

    @pytest.mark.parametrize("seed", range(5))
    async def test_cancellation_storms_leak_no_permit(self, seed):
        rng = random.Random(seed)
        limiter = AdaptiveConcurrency(
            algorithm=Vegas(initial_limit=3, max_limit=8, rng=random.Random(seed)),
            clock=FakeClock(),
        )
        overlap = Overlap()

        async def client() -> None:
            async with await limiter.aacquire(timeout=rng.choice([None, 0.002, 0.05])):
                overlap.enter()
                try:
                    await asyncio.sleep(rng.choice([0, 0.0005, 0.002]))
                finally:
                    overlap.leave()

        tasks = [asyncio.create_task(client()) for _ in range(150)]
        for _ in range(60):
            await asyncio.sleep(rng.choice([0, 0.0002, 0.001]))
            rng.choice(tasks).cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(
            result is None or isinstance(result, (asyncio.CancelledError, BulkheadFull))
            for result in results
        )
        assert any(isinstance(result, asyncio.CancelledError) for result in results)
        assert overlap.peak <= 8
        stats = limiter.stats()
        assert (stats.inflight, stats.waiting) == (0, 0)
        assert limiter.try_acquire() is not None

    async def test_threads_and_tasks_share_one_limiter(self):
        limiter = AdaptiveConcurrency(algorithm=Fixed(3), clock=FakeClock())
        overlap = Overlap()

        def thread_work() -> None:
            for _ in range(20):
                with limiter.acquire(timeout=30):
                    overlap.enter()
                    time.sleep(0.0005)
                    overlap.leave()

        async def task_work() -> None:
            for _ in range(20):
                async with await limiter.aacquire(timeout=30):
                    overlap.enter()
                    await asyncio.sleep(0.0005)
                    overlap.leave()

        threads = [threading.Thread(target=thread_work) for _ in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.gather(*(task_work() for _ in range(4)))

        def join() -> None:
            for thread in threads:
                thread.join(30)

        await asyncio.to_thread(join)
        assert overlap.peak <= 3
        assert limiter.inflight == 0
        assert limiter.stats().samples == 8 * 20
