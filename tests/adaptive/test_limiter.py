"""AdaptiveConcurrency on a fake clock: admission, permits, samples, decorators, events."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

import buttress.adaptive
from buttress import BulkheadFull, CircuitOpen, Event, Timeout
from buttress.adaptive import (
    AIMD,
    AdaptiveConcurrency,
    AdaptiveLimitChanged,
    AdaptiveRejected,
    Gradient2,
    Vegas,
    Windowed,
)
from buttress.testing import FakeClock


class Spy:
    """A limit algorithm that records its samples and keeps (or is told) its limit."""

    def __init__(self, limit: int = 2) -> None:
        self._limit = limit
        self.samples: list[tuple[float, float, int, bool]] = []

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        self.samples.append((start, rtt, inflight, dropped))
        return self._limit

    def set(self, limit: int) -> None:
        self._limit = limit


class Boom(Exception):
    pass


def make(limit: int = 2, **kwargs: Any) -> tuple[AdaptiveConcurrency, Spy, FakeClock]:
    clock = FakeClock(100.0)
    spy = Spy(limit)
    return AdaptiveConcurrency("spy", algorithm=spy, clock=clock, **kwargs), spy, clock


class TestAdmission:
    def test_admits_up_to_the_limit_then_refuses(self):
        limiter, _, _ = make(2)
        first, second = limiter.try_acquire(), limiter.try_acquire()
        assert first is not None
        assert second is not None
        assert limiter.try_acquire() is None
        stats = limiter.stats()
        assert (stats.limit, stats.inflight, stats.rejected, stats.available) == (2, 2, 1, 0)

    def test_acquire_without_waiting_raises_bulkhead_full(self):
        limiter, _, _ = make(1)
        limiter.acquire()
        with pytest.raises(BulkheadFull, match="limit of 1") as caught:
            limiter.acquire(timeout=0)
        assert caught.value.name == "spy"

    def test_a_wait_that_times_out_raises_and_leaves_the_queue(self):
        limiter, _, _ = make(1)
        limiter.acquire()
        with pytest.raises(BulkheadFull, match=r"within 0\.01 s"):
            limiter.acquire(timeout=0.01)
        assert limiter.stats().waiting == 0
        assert limiter.stats().rejected == 1

    async def test_an_async_wait_that_times_out_raises_and_leaves_the_queue(self):
        limiter, _, _ = make(1)
        await limiter.aacquire()
        with pytest.raises(BulkheadFull):
            await limiter.aacquire(timeout=0.01)
        assert limiter.stats().waiting == 0

    def test_max_waiting_refuses_beyond_the_queue(self):
        limiter, _, _ = make(1, max_waiting=0)
        limiter.acquire()
        with pytest.raises(BulkheadFull):
            limiter.acquire(timeout=5)  # no place to wait: refused at once

    async def test_a_freed_slot_goes_to_the_first_waiter(self):
        limiter, _, _ = make(1)
        held = await limiter.aacquire()
        order: list[int] = []

        async def wait(index: int) -> None:
            permit = await limiter.aacquire(timeout=5)
            order.append(index)
            permit.success()

        tasks = [asyncio.create_task(wait(index)) for index in range(3)]
        await asyncio.sleep(0)
        assert limiter.stats().waiting == 3
        assert limiter.try_acquire() is None  # no barging past the waiters
        held.success()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert limiter.inflight == 0

    async def test_a_task_cancelled_after_being_handed_a_slot_gives_it_back(self):
        limiter, _, _ = make(1)
        held = await limiter.aacquire()
        waiter = asyncio.create_task(limiter.aacquire())
        await asyncio.sleep(0)
        held.success()  # hands the slot to the waiter, which has not run yet
        assert limiter.inflight == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert limiter.inflight == 0
        assert limiter.try_acquire() is not None

    async def test_a_growing_limit_wakes_waiters(self):
        limiter, spy, _ = make(1)
        held = await limiter.aacquire()
        waiter = asyncio.create_task(limiter.aacquire(timeout=5))
        await asyncio.sleep(0)
        spy.set(3)
        held.success()  # the sample raises the limit: the waiter gets a slot
        permit = await waiter
        assert limiter.limit == 3
        assert limiter.inflight == 1
        permit.ignore()

    def test_a_shrinking_limit_lets_inflight_drain(self):
        limiter, spy, _ = make(3)
        permits = [limiter.try_acquire() for _ in range(3)]
        spy.set(1)
        permits[0].success()  # type: ignore[union-attr]
        assert limiter.limit == 1
        assert limiter.inflight == 2
        assert limiter.try_acquire() is None
        permits[1].success()  # type: ignore[union-attr]
        permits[2].success()  # type: ignore[union-attr]
        assert limiter.try_acquire() is not None


class TestPermits:
    def test_success_feeds_the_measured_rtt_and_inflight(self):
        limiter, spy, clock = make(3)
        limiter.try_acquire()
        permit = limiter.try_acquire()
        assert permit is not None
        clock.advance(0.25)
        assert permit.success() is True
        assert spy.samples == [(100.0, 0.25, 2, False)]
        assert limiter.inflight == 1

    def test_dropped_is_a_sample_and_ignore_is_not(self):
        limiter, spy, clock = make(3)
        dropped, ignored = limiter.try_acquire(), limiter.try_acquire()
        clock.advance(1.0)
        dropped.dropped()  # type: ignore[union-attr]
        ignored.ignore()  # type: ignore[union-attr]
        assert spy.samples == [(100.0, 1.0, 1, True)]
        stats = limiter.stats()
        assert (stats.inflight, stats.samples, stats.dropped) == (0, 1, 1)

    def test_only_the_first_report_counts(self):
        limiter, spy, _ = make(2)
        permit = limiter.try_acquire()
        other = limiter.try_acquire()
        assert permit is not None
        assert other is not None
        assert permit.success() is True
        assert permit.dropped() is False
        assert permit.ignore() is False
        assert permit.reported
        assert len(spy.samples) == 1
        assert limiter.inflight == 1

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (None, "success"),
            (Timeout("slow"), "dropped"),
            (TimeoutError(), "dropped"),
            (CircuitOpen("open", name="x"), "dropped"),
            (Boom(), "ignored"),
            (KeyboardInterrupt(), "ignored"),
        ],
    )
    def test_the_context_manager_classifies_how_the_block_ended(self, error, expected):
        limiter, spy, _ = make(2)
        permit = limiter.try_acquire()
        assert permit is not None
        with pytest.raises(type(error)) if error is not None else _nothing(), permit:
            if error is not None:
                raise error
        outcome = "ignored" if not spy.samples else "dropped" if spy.samples[0][3] else "success"
        assert outcome == expected
        assert limiter.inflight == 0

    def test_a_report_inside_the_block_wins(self):
        limiter, spy, _ = make(2)
        with limiter.acquire() as permit:
            permit.dropped()
        assert [sample[3] for sample in spy.samples] == [True]

    async def test_async_with(self):
        limiter, spy, _ = make(2)
        async with await limiter.aacquire() as permit:
            assert permit.inflight == 1
        assert len(spy.samples) == 1
        assert limiter.inflight == 0


class _nothing:  # noqa: N801 - reads as a context manager expression
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


class TestDecorator:
    def test_sync_function(self):
        limiter, spy, clock = make(2)

        @limiter
        def work(x: int) -> int:
            """Doubles."""
            clock.advance(0.5)
            return 2 * x

        assert work(4) == 8
        assert work.__name__ == "work"
        assert work.__doc__ == "Doubles."
        assert spy.samples == [(100.0, 0.5, 1, False)]

    async def test_coroutine_function(self):
        limiter, spy, clock = make(2)

        @limiter
        async def work(x: int) -> int:
            await clock.sleep_async(0.5)
            return 2 * x

        assert await work(4) == 8
        assert spy.samples == [(100.0, 0.5, 1, False)]

    def test_methods(self):
        limiter, spy, _ = make(2)

        class Client:
            @limiter
            def get(self) -> str:
                return "ok"

        assert Client().get() == "ok"
        assert len(spy.samples) == 1

    def test_drop_on_and_other_exceptions(self):
        limiter, spy, _ = make(2, drop_on=Boom)

        @limiter
        def fail(error: BaseException) -> None:
            raise error

        with pytest.raises(Boom):
            fail(Boom())
        with pytest.raises(ValueError, match="x"):
            fail(ValueError("x"))
        with pytest.raises(TimeoutError):
            fail(TimeoutError())  # not in this limiter's drop_on: ignored
        assert [sample[3] for sample in spy.samples] == [True]
        assert limiter.inflight == 0

    async def test_rejection_raises_bulkhead_full(self):
        limiter, _, _ = make(1)
        held = limiter.try_acquire()

        @limiter
        async def work() -> None:
            raise AssertionError("not admitted")

        with pytest.raises(BulkheadFull):
            await work()
        assert held is not None

    async def test_max_wait_lets_calls_wait(self):
        limiter, _, _ = make(1, max_wait=5)

        @limiter
        async def work(x: int) -> int:
            await asyncio.sleep(0.001)
            return x

        assert await asyncio.gather(*(work(i) for i in range(5))) == [0, 1, 2, 3, 4]
        assert limiter.inflight == 0

    async def test_call_and_acall(self):
        limiter, spy, _ = make(2)

        async def coro(x: int) -> int:
            return x

        assert limiter.call(lambda x: x + 1, 1) == 2
        assert await limiter.acall(coro, 3) == 3
        assert len(spy.samples) == 2
        with pytest.raises(TypeError, match="acall"):
            limiter.call(coro, 1)  # type: ignore[unused-coroutine]  # refused before any call

    def test_decorating_a_non_callable_is_refused(self):
        limiter, _, _ = make(1)
        with pytest.raises(TypeError, match="callables"):
            limiter(42)  # type: ignore[arg-type]


class TestEvents:
    def test_limit_changes_and_rejections_reach_listeners(self):
        events: list[Event] = []
        clock = FakeClock()
        limiter = AdaptiveConcurrency(
            "events", algorithm=AIMD(initial_limit=1), clock=clock, listeners=[events.append]
        )
        permit = limiter.try_acquire()
        assert limiter.try_acquire() is None
        clock.advance(0.01)
        permit.success()  # type: ignore[union-attr]
        changed = [event for event in events if isinstance(event, AdaptiveLimitChanged)]
        rejected = [event for event in events if isinstance(event, AdaptiveRejected)]
        assert [(event.old, event.new) for event in changed] == [(1, 2)]
        assert "limit 1 -> 2" in changed[0].describe()
        assert len(rejected) == 1
        assert "rejected at 1/1" in rejected[0].describe()


class TestConfiguration:
    def test_defaults(self):
        limiter = AdaptiveConcurrency()
        assert isinstance(limiter.algorithm, Windowed)
        assert isinstance(limiter.algorithm.algorithm, Vegas)
        assert limiter.max_wait == 0.0
        assert limiter.limit == 20
        assert "AdaptiveConcurrency('adaptive'" in repr(limiter)

    def test_the_limit_starts_at_the_algorithms(self):
        assert AdaptiveConcurrency(algorithm=Gradient2(initial_limit=7)).limit == 7

    @pytest.mark.parametrize(
        ("kwargs", "error", "argument"),
        [
            ({"algorithm": object()}, TypeError, "algorithm"),
            ({"max_wait": -1}, ValueError, "max_wait"),
            ({"max_waiting": -1}, ValueError, "max_waiting"),
            ({"drop_on": ()}, ValueError, "drop_on"),
            ({"drop_on": "x"}, TypeError, "drop_on"),
            ({"clock": object()}, TypeError, "clock"),
            ({"listeners": print}, TypeError, "listeners"),
        ],
    )
    def test_bad_arguments_name_themselves(self, kwargs, error, argument):
        with pytest.raises(error, match=argument):
            AdaptiveConcurrency(**kwargs)

    def test_bad_timeout(self):
        limiter = AdaptiveConcurrency()
        with pytest.raises(ValueError, match="timeout"):
            limiter.acquire(timeout=-1)

    def test_rejections_pickle(self):
        limiter, _, _ = make(1)
        limiter.acquire()
        with pytest.raises(BulkheadFull) as caught:
            limiter.acquire(timeout=0)
        copy = pickle.loads(pickle.dumps(caught.value))
        assert copy.name == "spy"

    def test_the_package_exports_what_it_lists(self):
        public = {name for name in vars(buttress.adaptive) if not name.startswith("_")}
        public -= {"_algorithms", "_events", "_limiter"}
        assert set(buttress.adaptive.__all__) == {
            name
            for name in public
            if not isinstance(getattr(buttress.adaptive, name), type(pytest))
        }
