"""Bulkhead: admission, waiting (threads and tasks), refusals, exactly-once release, events."""

from __future__ import annotations

import asyncio
import pickle
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from buttress import BulkheadFull, Rejected
from buttress.bulkhead import (
    Bulkhead,
    BulkheadPermit,
    BulkheadRejected,
    BulkheadStats,
    _semaphore,
    bulkhead,
)
from buttress.testing import FakeClock
from buttress.timeout import deadline

from .._threads import run_in_threads


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


async def async_wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


async def acquire(b: Bulkhead, timeout: float | None = None) -> BulkheadPermit:
    return await b.aacquire(timeout)


def assert_drained(b: Bulkhead) -> None:
    stats = b.stats()
    assert (stats.in_use, stats.available, stats.waiting) == (0, b.max_concurrent, 0)


class TestConstruction:
    @pytest.mark.parametrize(
        ("args", "options", "error", "words"),
        [
            ((0,), {}, ValueError, "max_concurrent must be >= 1"),
            ((1.5,), {}, TypeError, "max_concurrent must be an int"),
            ((True,), {}, TypeError, "max_concurrent must be an int"),
            ((2,), {"max_waiting": -1}, ValueError, "max_waiting must be >= 0"),
            ((2,), {"max_waiting": "3"}, TypeError, "max_waiting must be an int"),
            ((2,), {"max_wait": -1}, ValueError, "max_wait must be >= 0"),
            ((2,), {"max_wait": "1"}, TypeError, "max_wait must be a number"),
            ((2,), {"name": ""}, TypeError, "name must be a non-empty str"),
            ((2,), {"listeners": print}, TypeError, "listeners must be an iterable"),
        ],
    )
    def test_bad_arguments(self, args, options, error, words):
        with pytest.raises(error, match=words):
            Bulkhead(*args, **options)

    def test_decorating_without_calling_is_explained(self):
        def f():
            return 1

        with pytest.raises(TypeError, match=r"write @bulkhead\(10\)"):
            bulkhead(f)  # type: ignore[arg-type]

    def test_defaults_repr_and_timedelta(self):
        b = Bulkhead(3, max_wait=timedelta(milliseconds=250))
        assert (b.max_concurrent, b.max_waiting, b.max_wait, b.name) == (3, 0, 0.25, "bulkhead")
        assert repr(b) == "Bulkhead(3, max_waiting=0, max_wait=0.25, name='bulkhead')"
        assert b.stats() == BulkheadStats("bulkhead", 3, 0, 3, 0, 0, 0)


class TestPermits:
    def test_try_acquire_up_to_the_limit(self):
        b = Bulkhead(2)
        first, second = b.try_acquire(), b.try_acquire()
        assert isinstance(first, BulkheadPermit)
        assert isinstance(second, BulkheadPermit)
        assert b.try_acquire() is None
        assert b.stats() == BulkheadStats("bulkhead", 2, 2, 0, 0, 0, 1)
        assert first.release() is True
        assert b.in_use == 1
        assert b.available == 1

    def test_release_exactly_once(self):
        b = Bulkhead(1)
        permit = b.acquire()
        assert permit.release() is True
        assert permit.released
        assert permit.release() is False
        assert b.in_use == 0  # not -1
        assert "released" in repr(permit)

    def test_double_release_from_many_threads_counts_once(self):
        b = Bulkhead(1)
        permit = b.acquire()
        released = run_in_threads(8, lambda _: permit.release())
        assert released.count(True) == 1
        assert_drained(b)

    def test_with_block_releases_on_error(self):
        b = Bulkhead(1)

        def fail() -> None:
            with b.acquire():
                assert b.in_use == 1
                _ = 1 / 0

        with pytest.raises(ZeroDivisionError):
            fail()
        assert_drained(b)

    async def test_async_with_forms(self):
        b = Bulkhead(1)
        async with b.aacquire() as permit:
            assert isinstance(permit, BulkheadPermit)
            assert b.in_use == 1
        assert_drained(b)
        permit = await b.aacquire()
        async with permit:
            assert b.in_use == 1
        assert_drained(b)
        permit = await b.aacquire()
        assert await permit.arelease() is True
        assert await permit.arelease() is False


class TestRefusals:
    def test_full_without_queue_is_refused_at_once(self):
        b = Bulkhead(1, name="db", max_wait=10)
        held = b.acquire()
        began = time.monotonic()
        with pytest.raises(BulkheadFull) as info:
            b.acquire()
        assert time.monotonic() - began < 1.0
        error = info.value
        assert isinstance(error, Rejected)
        assert (error.name, error.limit, error.in_use, error.waiting, error.reason) == (
            "db",
            1,
            1,
            0,
            "full",
        )
        assert "db: all 1 slots are in use" in str(error)
        held.release()

    def test_the_refusal_pickles_with_its_data(self):
        b = Bulkhead(1, name="db")
        b.acquire()
        with pytest.raises(BulkheadFull) as info:
            b.acquire()
        copy = pickle.loads(pickle.dumps(info.value))
        assert (copy.name, copy.limit, copy.in_use, copy.reason) == ("db", 1, 1, "full")

    def test_full_queue_is_refused_at_once(self):
        b = Bulkhead(1, max_waiting=1)
        held = b.acquire()
        results: list[BulkheadPermit] = []
        waiter = threading.Thread(target=lambda: results.append(b.acquire(timeout=5)))
        waiter.start()
        wait_until(lambda: b.waiting == 1)
        with pytest.raises(BulkheadFull, match="1 callers wait"):
            b.acquire(timeout=5)
        held.release()
        waiter.join()
        assert isinstance(results[0], BulkheadPermit)
        results[0].release()
        assert_drained(b)
        assert b.stats().rejected == 1

    def test_zero_timeout_never_waits(self):
        b = Bulkhead(1, max_waiting=5)
        b.acquire()
        with pytest.raises(BulkheadFull) as info:
            b.acquire(timeout=0)
        assert info.value.reason == "full"
        assert b.waiting == 0

    def test_wait_times_out(self):
        b = Bulkhead(1, max_waiting=2, max_wait=0.05)
        held = b.acquire()
        began = time.monotonic()
        with pytest.raises(BulkheadFull) as info:
            b.acquire()
        assert 0.04 <= time.monotonic() - began < 2
        assert info.value.reason == "wait-timeout"
        assert "no slot freed within 0.05 s" in str(info.value)
        assert b.waiting == 0
        held.release()
        assert_drained(b)

    async def test_async_wait_times_out(self):
        b = Bulkhead(1, max_waiting=2)
        held = await b.aacquire()
        with pytest.raises(BulkheadFull) as info:
            await b.aacquire(timeout=0.03)
        assert info.value.reason == "wait-timeout"
        assert b.waiting == 0
        held.release()
        assert_drained(b)

    def test_the_deadline_cuts_a_wait_short(self):
        b = Bulkhead(1, max_waiting=2, max_wait=30)
        held = b.acquire()
        began = time.monotonic()
        with deadline(0.05), pytest.raises(BulkheadFull) as info:
            b.acquire()
        assert time.monotonic() - began < 5
        assert info.value.reason == "deadline"
        held.release()
        assert_drained(b)

    def test_a_passed_deadline_refuses_without_waiting(self):
        clock = FakeClock()
        b = Bulkhead(1, max_waiting=2)
        held = b.acquire()
        with deadline(1, clock=clock):
            clock.advance(2)
            with pytest.raises(BulkheadFull) as info:
                b.acquire()
        assert info.value.reason == "full"
        assert b.waiting == 0
        held.release()

    def test_events_on_refusal(self):
        events: list[object] = []
        b = Bulkhead(1, name="db", listeners=[events.append])
        b.acquire()
        assert b.try_acquire() is None
        with pytest.raises(BulkheadFull):
            b.acquire()
        assert events == [
            BulkheadRejected("db", "full", 1, 1, 0),
            BulkheadRejected("db", "full", 1, 1, 0),
        ]
        assert isinstance(events[0], BulkheadRejected)
        assert events[0].describe() == "db: call refused (full); 1/1 in use, 0 waiting"

    def test_no_event_on_success(self):
        events: list[object] = []
        b = Bulkhead(1, listeners=[events.append])
        with b.acquire():
            pass
        assert events == []


class TestWaitingThreads:
    def test_a_release_hands_the_slot_to_the_first_waiter(self):
        b = Bulkhead(1, max_waiting=3)
        held = b.acquire()

        def start(index: int) -> None:
            threads[index].start()
            wait_until(lambda: b.waiting == index + 1)

        got: list[int] = []

        def take(i: int) -> None:
            with b.acquire(timeout=5):
                got.append(i)

        threads = [threading.Thread(target=take, args=(i,)) for i in range(3)]
        for index in range(3):
            start(index)
        assert b.try_acquire() is None  # no barging past waiters
        held.release()
        for thread in threads:
            thread.join()
        assert got == [0, 1, 2]
        assert_drained(b)

    def test_threads_never_exceed_the_limit(self):
        b = Bulkhead(3, max_waiting=100)
        lock = threading.Lock()
        inside = [0]
        peak = [0]

        def work(_: int) -> None:
            for _ in range(50):
                with b.acquire(timeout=10):
                    with lock:
                        inside[0] += 1
                        peak[0] = max(peak[0], inside[0])
                    time.sleep(0)
                    with lock:
                        inside[0] -= 1

        run_in_threads(12, work)
        assert peak[0] == 3
        assert_drained(b)

    def test_decorator_on_threads_refuses_beyond_the_limit(self):
        b = Bulkhead(2)
        gate = threading.Event()
        inside = threading.Semaphore(0)

        @b
        def slow() -> str:
            inside.release()
            gate.wait(5)
            return "done"

        results: list[object] = []
        threads = [threading.Thread(target=lambda: results.append(slow())) for _ in range(2)]
        for thread in threads:
            thread.start()
        inside.acquire(timeout=5)
        inside.acquire(timeout=5)
        with pytest.raises(BulkheadFull):
            slow()
        gate.set()
        for thread in threads:
            thread.join()
        assert results == ["done", "done"]
        assert_drained(b)


class TestWaitingTasks:
    async def test_tasks_wait_without_blocking_the_loop(self):
        b = Bulkhead(1, max_waiting=5)
        held = await b.aacquire()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        async def take() -> str:
            async with b.aacquire(timeout=5):
                return "got"

        tick_task = asyncio.create_task(ticker())
        waiter = asyncio.create_task(take())
        await async_wait_until(lambda: b.waiting == 1)
        before = ticks
        await asyncio.sleep(0.01)
        assert ticks > before  # the loop kept running while the task waited
        held.release()
        assert await waiter == "got"
        tick_task.cancel()
        assert_drained(b)

    async def test_cancelled_waiter_takes_no_slot(self):
        b = Bulkhead(1, max_waiting=5)
        held = await b.aacquire()
        waiter = asyncio.create_task(acquire(b))
        await async_wait_until(lambda: b.waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert b.waiting == 0
        held.release()
        assert_drained(b)

    async def test_cancelled_after_being_granted_passes_the_slot_on(self):
        b = Bulkhead(1, max_waiting=5)
        held = await b.aacquire()
        first = asyncio.create_task(acquire(b))
        second = asyncio.create_task(acquire(b))
        await async_wait_until(lambda: b.waiting == 2)
        held.release()  # granted to `first`, which has not run yet
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        permit = await asyncio.wait_for(second, 5)
        assert b.in_use == 1
        permit.release()
        assert_drained(b)

    async def test_a_thread_releases_to_a_task(self):
        b = Bulkhead(1, max_waiting=5)
        held = b.acquire()
        waiter = asyncio.create_task(acquire(b, 5))
        await async_wait_until(lambda: b.waiting == 1)
        thread = threading.Thread(target=held.release)
        thread.start()
        permit = await asyncio.wait_for(waiter, 5)
        thread.join()
        permit.release()
        assert_drained(b)

    async def test_a_task_releases_to_a_thread(self):
        b = Bulkhead(1, max_waiting=5)
        held = await b.aacquire()
        got: list[BulkheadPermit] = []
        thread = threading.Thread(target=lambda: got.append(b.acquire(timeout=5)))
        thread.start()
        await async_wait_until(lambda: b.waiting == 1)
        held.release()
        await asyncio.to_thread(thread.join)
        got[0].release()
        assert_drained(b)

    def test_a_waiter_whose_loop_closed_passes_the_slot_on(self):
        b = Bulkhead(1, max_waiting=5)
        held = b.acquire()
        loop = asyncio.new_event_loop()
        task = loop.create_task(acquire(b))
        loop.run_until_complete(asyncio.sleep(0.01))
        assert b.waiting == 1
        # The loop goes away with its waiter still queued (never cancelled).
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        loop.close()
        got: list[BulkheadPermit] = []
        thread = threading.Thread(target=lambda: got.append(b.acquire(timeout=5)))
        b_max = b.max_waiting
        assert b_max == 5
        thread.start()
        wait_until(lambda: b.waiting == 2)
        held.release()  # the dead waiter cannot take it: the thread gets it
        thread.join(5)
        assert len(got) == 1
        task.get_coro().close()  # what garbage collection would do: leaves, holding nothing
        got[0].release()
        assert_drained(b)

    async def test_decorator_and_acall(self):
        b = Bulkhead(2)

        @b
        async def double(x: int) -> int:
            assert b.in_use == 1
            return 2 * x

        assert double.__name__ == "double"
        assert await double(4) == 8
        assert await b.acall(double.__wrapped__, 5) == 10  # type: ignore[attr-defined]
        assert_drained(b)

    def test_call_and_sync_decorator_release_on_error(self):
        b = Bulkhead(1)

        @b
        def boom() -> None:
            raise KeyError("x")

        with pytest.raises(KeyError):
            boom()
        with pytest.raises(KeyError):
            b.call(boom.__wrapped__)  # type: ignore[attr-defined]
        assert b.call(lambda x: x + 1, 1) == 2
        assert_drained(b)

    def test_call_refuses_coroutine_functions_and_decorator_refuses_generators(self):
        b = Bulkhead(1)

        async def coro() -> None:
            return None

        def gen():
            yield 1

        with pytest.raises(TypeError, match="acall"):
            b.call(coro)  # type: ignore[unused-coroutine]
        with pytest.raises(TypeError, match="generator"):
            b(gen)
        with pytest.raises(TypeError, match="callables"):
            b(3)  # type: ignore[arg-type]


class TestDecoratorFastPath:
    """The decorator takes a free slot inline and hands it on inline: waiters still come first."""

    def test_a_decorated_call_hands_its_slot_to_a_waiting_thread(self):
        b = Bulkhead(1, max_waiting=1)
        inside, leave = threading.Event(), threading.Event()

        @b
        def hold() -> str:
            inside.set()
            leave.wait(5)
            return "held"

        results: list[object] = []
        holder = threading.Thread(target=lambda: results.append(hold()))
        holder.start()
        assert inside.wait(5)
        waiter = threading.Thread(target=lambda: results.append(b.call(lambda: "waited")))
        waiter.start()
        wait_until(lambda: b.waiting == 1)
        leave.set()
        holder.join(5)
        waiter.join(5)
        assert results == ["held", "waited"]
        assert_drained(b)

    def test_a_decorated_call_waits_when_full_and_may_be_refused(self):
        b = Bulkhead(1, max_waiting=1, max_wait=0.01)
        held = b.acquire()

        @b
        def work() -> int:
            assert b.in_use == 1
            return 7

        with pytest.raises(BulkheadFull, match=r"no slot freed within 0\.01 s"):
            work()
        threading.Timer(0.02, held.release).start()
        b.max_wait = 5.0
        assert work() == 7
        assert_drained(b)

    async def test_async_decorated_calls_queue_and_hand_on(self):
        b = Bulkhead(1, max_waiting=5)
        order: list[int] = []
        gate = asyncio.Event()

        @b
        async def work(n: int) -> int:
            order.append(n)
            if n == 0:
                await gate.wait()
            return n

        first = asyncio.create_task(work(0))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(work(n)) for n in (1, 2, 3)]
        await asyncio.sleep(0)
        assert b.waiting == 3
        gate.set()
        assert await asyncio.gather(first, *rest) == [0, 1, 2, 3]
        assert order == [0, 1, 2, 3]
        assert_drained(b)

    async def test_async_decorated_call_releases_on_error_and_cancellation(self):
        b = Bulkhead(1)
        started = asyncio.Event()

        @b
        async def stuck() -> None:
            started.set()
            await asyncio.sleep(10)

        @b
        async def boom() -> None:
            raise KeyError("x")

        with pytest.raises(KeyError):
            await boom()
        task = asyncio.create_task(stuck())
        await started.wait()
        assert b.in_use == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_drained(b)


class TestLockFreeSlots:
    """Real threads on the lock-free fast path, mixed with waiters, timeouts and refusals."""

    @pytest.mark.parametrize(("limit", "queue"), [(1, 0), (3, 0), (3, 4), (4, 40)])
    def test_stress_never_exceeds_the_limit_and_every_slot_comes_back(self, limit, queue):
        b = Bulkhead(limit, max_waiting=queue)
        lock = threading.Lock()
        inside = [0]
        peak = [0]
        outcomes = {"ran": 0, "refused": 0}

        def hold(rng: random.Random) -> None:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                assert inside[0] <= limit
            if rng.random() < 0.3:
                time.sleep(rng.random() / 2000)  # up to 0.5 ms; else switch threads or not
            elif rng.random() < 0.5:
                time.sleep(0)
            with lock:
                inside[0] -= 1

        @b
        def decorated(rng: random.Random) -> None:
            hold(rng)

        def work(index: int) -> None:
            rng = random.Random(index)
            for _ in range(150):
                how = rng.randrange(4)
                try:
                    if how == 0:
                        decorated(rng)
                    elif how == 1:
                        with b.acquire(timeout=rng.choice([None, 0, 0.0005, 0.01])):
                            hold(rng)
                    elif how == 2:
                        permit = b.try_acquire()
                        if permit is None:
                            raise BulkheadFull("full", name="b", limit=limit)
                        try:
                            hold(rng)
                        finally:
                            assert permit.release()
                            assert not permit.release()
                    else:
                        with b.acquire():
                            if rng.random() < 0.5:
                                hold(rng)
                            else:
                                raise KeyError("raised inside")
                except BulkheadFull:
                    with lock:
                        outcomes["refused"] += 1
                except KeyError:
                    pass
                else:
                    with lock:
                        outcomes["ran"] += 1

        run_in_threads(24, work)
        assert inside[0] == 0
        assert 1 <= peak[0] <= limit
        assert outcomes["ran"] > 0
        assert_drained(b)
        assert b.idle
        assert len(b._free) == limit

    def test_releases_racing_waiters_lose_no_wake_up(self):
        # Many short holders on the fast path and waiters with no timeout: a token given back
        # while a waiter joins the queue must reach a waiter, or this hangs (timed out below).
        b = Bulkhead(2, max_waiting=64)
        done = [0]
        lock = threading.Lock()

        @b
        def short() -> None:
            with lock:
                done[0] += 1

        def work(index: int) -> None:
            for _ in range(300):
                if index % 2:
                    short()
                else:
                    with b.acquire(timeout=None):
                        time.sleep(0)

        finished = threading.Event()

        def run() -> None:
            run_in_threads(16, work)
            finished.set()

        runner = threading.Thread(target=run)
        runner.start()
        assert finished.wait(60), "a waiter was never woken"
        runner.join()
        assert_drained(b)

    def test_a_permit_released_from_many_threads_gives_back_one_slot(self):
        b = Bulkhead(2)
        for _ in range(50):
            permit = b.acquire()

            def release(_: int, permit: BulkheadPermit = permit) -> bool:
                return permit.release()

            assert sum(run_in_threads(8, release)) == 1
            assert b.available == 2
            assert permit.released

    # The race the lock-free release must survive, made certain: the slot is given back (no
    # lock: nobody waits yet) after the newcomer found none free and before it joins the queue.

    def test_a_slot_freed_while_a_thread_queues_reaches_it(self, monkeypatch):
        b = Bulkhead(1, max_waiting=1)
        held = b.acquire()

        class Racing(_semaphore._ThreadWaiter):
            __slots__ = ()

            def __init__(self) -> None:
                super().__init__()
                assert held.release()

        monkeypatch.setattr(_semaphore, "_ThreadWaiter", Racing)
        started = time.monotonic()
        with b.acquire(timeout=2):  # a lost token would leave it waiting 2 s, then refused
            assert b.in_use == 1
        assert time.monotonic() - started < 1
        assert_drained(b)

    async def test_a_slot_freed_while_a_task_queues_reaches_it(self, monkeypatch):
        b = Bulkhead(1, max_waiting=1)
        held = await b.aacquire()

        class Racing(_semaphore._TaskWaiter):
            __slots__ = ()

            def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
                super().__init__(loop)
                assert held.release()

        monkeypatch.setattr(_semaphore, "_TaskWaiter", Racing)
        permit = await asyncio.wait_for(acquire(b), 1)  # a lost token: wait 1 s, time out
        assert b.in_use == 1
        permit.release()
        assert_drained(b)
