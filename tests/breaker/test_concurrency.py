"""Real threads and asyncio tasks: half-open trial limits, exact counting, no lock held while
the protected call runs. The breaker's clock is fake; only the calls themselves take real time
(a few milliseconds), so that they overlap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from buttress import CircuitBreaker, CircuitOpen, State
from buttress.testing import FakeClock

THREADS = 16
JOIN = 30.0  # seconds; a deadlock fails the test instead of hanging it


class Boom(Exception):
    pass


class Overlap:
    """Counts the calls running at once and remembers the most."""

    def __init__(self, seconds: float = 0.002) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.completed = 0
        self.seconds = seconds

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1
            self.completed += 1

    def __call__(self) -> str:
        self.enter()
        try:
            time.sleep(self.seconds)
        finally:
            self.leave()
        return "done"

    async def run_async(self) -> str:
        self.enter()
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.leave()
        return "done"


def attempt(breaker: CircuitBreaker, fn: Callable[[], object]) -> object:
    """Call through the breaker; return the result, the rejection or the exception raised."""
    try:
        return breaker.call(fn)
    except Exception as error:
        return error


async def attempt_async(breaker: CircuitBreaker, fn: Callable[[], Any]) -> object:
    try:
        return await breaker.acall(fn)
    except Exception as error:
        return error


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Start ``count`` threads together (a barrier), fail on any error or a hang."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=JOIN)
            target(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert errors == []


def half_open_breaker(max_calls: int, **options: Any) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "concurrent",
        clock=FakeClock(1000.0),
        registry=None,
        half_open_max_calls=max_calls,
        success_threshold=10**9,  # stay half-open for the whole test
        **options,
    )
    breaker.half_open()
    return breaker


class TestHalfOpenWithThreads:
    @pytest.mark.parametrize("max_calls", [1, 3])
    def test_never_more_trials_than_permitted(self, max_calls):
        breaker = half_open_breaker(max_calls)
        trial = Overlap()
        admitted: list[int] = []
        rejected: list[int] = []

        retry_afters: set[float | None] = set()

        def worker(index: int) -> None:
            for _ in range(25):
                outcome = attempt(breaker, trial)
                if isinstance(outcome, CircuitOpen):
                    retry_afters.add(outcome.retry_after)
                    rejected.append(index)
                else:
                    assert outcome == "done"
                    admitted.append(index)

        run_threads(THREADS, worker)
        assert trial.peak <= max_calls
        assert trial.peak == max_calls  # 16 threads over 25 rounds do fill the slots
        assert len(admitted) + len(rejected) == THREADS * 25
        assert trial.completed == len(admitted)
        assert rejected, "with more threads than slots some calls must be rejected"
        assert retry_afters == {0.0}
        assert breaker.state is State.HALF_OPEN
        # Every slot was given back: exactly max_calls guards can be held again now.
        guards = [breaker.guard() for _ in range(max_calls)]
        for guard in guards:
            guard.__enter__()
        with pytest.raises(CircuitOpen):
            breaker.call(trial)
        for guard in guards:
            guard.__exit__(None, None, None)

    def test_failing_and_ignored_trials_also_respect_the_limit(self):
        breaker = half_open_breaker(2, ignore=[KeyError])
        trial = Overlap()

        def ignored() -> None:
            trial()
            raise KeyError("ignored")

        def worker(index: int) -> None:
            for _ in range(20):
                outcome = attempt(breaker, ignored if index % 2 else trial)
                assert isinstance(outcome, (CircuitOpen, KeyError)) or outcome == "done"

        run_threads(THREADS, worker)
        assert trial.peak <= 2
        assert breaker.state is State.HALF_OPEN

    def test_the_first_failure_reopens_for_everyone(self):
        clock = FakeClock(1000.0)
        breaker = CircuitBreaker(
            "concurrent", clock=clock, registry=None, fail_max=1, half_open_max_calls=4
        )
        breaker.half_open()
        trial = Overlap()

        def failing() -> None:
            trial()
            raise Boom

        def worker(index: int) -> None:
            for _ in range(10):
                assert isinstance(attempt(breaker, failing), (CircuitOpen, Boom))

        run_threads(THREADS, worker)
        assert trial.peak <= 4
        assert breaker.state is State.OPEN


class TestHalfOpenWithTasks:
    @pytest.mark.parametrize("max_calls", [1, 3])
    async def test_never_more_trials_than_permitted(self, max_calls):
        breaker = half_open_breaker(max_calls)
        trial = Overlap(seconds=0.001)
        outcomes: list[str] = []

        async def worker() -> None:
            for _ in range(10):
                outcome = await attempt_async(breaker, trial.run_async)
                outcomes.append("rejected" if isinstance(outcome, CircuitOpen) else str(outcome))
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(50))), JOIN)
        assert trial.peak == max_calls
        assert outcomes.count("done") == trial.completed
        assert len(outcomes) == 500
        assert "rejected" in outcomes

    async def test_with_async_guards(self):
        breaker = half_open_breaker(2)
        trial = Overlap(seconds=0.001)

        rejections: list[CircuitOpen] = []

        async def one_block() -> None:
            try:
                async with breaker.guard():
                    await trial.run_async()
            except CircuitOpen as error:
                rejections.append(error)
                await asyncio.sleep(0)

        async def worker() -> None:
            for _ in range(10):
                await one_block()

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(30))), JOIN)
        assert trial.peak == 2
        assert trial.completed + len(rejections) == 300

    async def test_cancelled_trials_give_their_slots_back(self):
        breaker = half_open_breaker(2)
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.sleep(3600)

        tasks = [asyncio.create_task(breaker.acall(hang)) for _ in range(2)]
        await started.wait()
        await asyncio.sleep(0)
        with pytest.raises(CircuitOpen):
            await breaker.acall(hang)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        trial = Overlap(seconds=0)
        assert await breaker.acall(trial.run_async) == "done"
        async with breaker.guard(), breaker.guard():
            pass  # both slots free at once


class TestExactCounting:
    @pytest.mark.parametrize("window_type", ["count", "time"])
    def test_every_outcome_is_counted(self, window_type):
        per_thread = 400
        breaker = CircuitBreaker(
            "counted",
            clock=FakeClock(1000.0),
            registry=None,
            failure_rate=1.0,  # never reached: a quarter of the calls fail
            window_type=window_type,
            window_size=THREADS * per_thread,
        )

        def down() -> None:
            raise Boom

        def worker(index: int) -> None:
            for number in range(per_thread):
                if number % 4 == 0:
                    with pytest.raises(Boom):
                        breaker.call(down)
                else:
                    breaker.call(lambda: None)

        run_threads(THREADS, worker)
        metrics = breaker.metrics()
        assert metrics.state is State.CLOSED
        assert (metrics.calls, metrics.failures) == (
            THREADS * per_thread,
            THREADS * per_thread // 4,
        )

    def test_a_count_window_keeps_exactly_its_size(self):
        breaker = CircuitBreaker(
            "counted",
            clock=FakeClock(1000.0),
            registry=None,
            failure_rate=1.0,
            window_size=100,
        )

        def worker(index: int) -> None:
            for _ in range(300):
                breaker.call(lambda: None)

        run_threads(THREADS, worker)
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures) == (100, 0)

    def test_disabled_counts_every_outcome(self):
        breaker = CircuitBreaker(
            "counted", clock=FakeClock(1000.0), registry=None, window_size=10_000
        )
        breaker.disable()

        def down() -> None:
            raise Boom

        def worker(index: int) -> None:
            for _ in range(200):
                with pytest.raises(Boom):
                    breaker.call(down)

        run_threads(THREADS, worker)
        metrics = breaker.metrics()
        assert (metrics.state, metrics.calls, metrics.failures) == (
            State.DISABLED,
            THREADS * 200,
            THREADS * 200,
        )

    def test_fail_max_trips_exactly_once(self):
        events: list[object] = []
        breaker = CircuitBreaker(
            "counted",
            clock=FakeClock(1000.0),
            registry=None,
            fail_max=50,
            listeners=[events.append],
        )

        def down() -> None:
            raise Boom

        def worker(index: int) -> None:
            for _ in range(20):
                assert isinstance(attempt(breaker, down), (Boom, CircuitOpen))

        run_threads(THREADS, worker)
        assert breaker.state is State.OPEN
        opened = [e for e in events if getattr(e, "new", None) is State.OPEN]
        assert len(opened) == 1


class TestNoLockHeldDuringTheCall:
    @pytest.mark.parametrize("state", ["closed", "half_open", "disabled"])
    def test_a_blocked_call_does_not_block_another(self, state):
        breaker = CircuitBreaker(
            "unlocked",
            clock=FakeClock(1000.0),
            registry=None,
            failure_rate=0.5,
            window_size=10,
            half_open_max_calls=2,
            success_threshold=10,
        )
        if state == "half_open":
            breaker.half_open()
        elif state == "disabled":
            breaker.disable()
        release = threading.Event()
        inside = threading.Event()
        other_done = threading.Event()

        def blocker() -> str:
            inside.set()
            assert release.wait(JOIN)
            return "released"

        def other() -> None:
            assert breaker.call(lambda: "quick") == "quick"
            with pytest.raises(Boom), breaker.guard():
                raise Boom
            other_done.set()

        first = threading.Thread(target=breaker.call, args=(blocker,), daemon=True)
        first.start()
        assert inside.wait(JOIN)
        second = threading.Thread(target=other, daemon=True)
        second.start()
        assert other_done.wait(JOIN), "another thread's call waited for the blocked one"
        assert first.is_alive()  # still blocked inside the protected call
        breaker.metrics()  # inspection does not wait either
        breaker.force_open()  # nor does manual control
        breaker.close()
        release.set()
        first.join(JOIN)
        second.join(JOIN)
        assert not first.is_alive()

    def test_a_blocked_task_does_not_block_another(self):
        result: list[str] = []

        async def scenario() -> None:
            breaker = CircuitBreaker(
                "unlocked",
                clock=FakeClock(1000.0),
                registry=None,
                failure_rate=0.5,
                window_size=10,
            )
            release = asyncio.Event()

            async def blocker() -> str:
                await release.wait()
                return "released"

            async def quick() -> str:
                return "quick"

            blocked = asyncio.create_task(breaker.acall(blocker))
            await asyncio.sleep(0)
            result.append(await breaker.acall(quick))
            assert not blocked.done()
            release.set()
            result.append(await blocked)

        # On a thread of its own, so that a lock held across an await fails the test instead of
        # hanging the event loop of the test run.
        thread = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
        thread.start()
        thread.join(JOIN)
        assert not thread.is_alive(), "the second task waited for the first"
        assert result == ["quick", "released"]
