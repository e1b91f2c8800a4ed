"""The one timer per event loop behind async time limits: exactly the overdue calls time out.

The interleaving tests run real asyncio (tasks, cancellation, ``call_at`` handles) on a loop
whose clock is virtual: its selector, asked to wait for the next handle, moves the clock there
at once. Deadlines and durations are therefore exact, and nothing depends on the machine's
speed.
"""

from __future__ import annotations

import asyncio
import gc
import selectors
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from buttress import Timeout
from buttress.timeout import TimeLimit, current_deadline
from buttress.timeout import _timers as timers
from buttress.timeout._timers import FIRED, LoopTimer, timer_of

from ._tasks import cancelling


class _VirtualSelector(selectors.DefaultSelector):
    """A selector that, asked to wait, moves its loop's clock forward instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout > 0:
            self.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual (see the module docstring)."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


class LoopClock:
    """A clock reading the virtual loop's time: the deadlines and the timer agree exactly."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.loop = loop

    def now(self) -> float:
        return self.loop.time()

    def sleep(self, seconds: float) -> None:  # pragma: no cover - never blocks in these tests
        raise AssertionError("no blocking sleep on a virtual loop")

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def run_virtual(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, None]]) -> None:
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(main(loop))
    finally:
        loop.close()


def pending_fires(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """The timer's handles still scheduled (not cancelled) on ``loop``."""
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [
        handle
        for handle in scheduled
        if not handle.cancelled() and "LoopTimer.fire" in repr(handle)
    ]


# One planned call: it starts at `start`, its limit is `limit`, its work takes `work`, and
# someone outside cancels its task at `cancel_at` (None: nobody does). Times in ms.
calls = st.lists(
    st.tuples(
        st.integers(0, 50),
        st.integers(1, 100),
        st.integers(0, 150),
        st.none() | st.integers(0, 200),
    ),
    min_size=1,
    max_size=40,
)


class TestInterleavings:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(plan=calls)
    def test_exactly_the_overdue_calls_time_out(
        self, plan: list[tuple[int, int, int, int | None]]
    ) -> None:
        for start, limit, work, cancel_at in plan:
            # Ties are decided by the order of handles of equal time: keep the plan clear-cut.
            assume(work != limit)
            assume(cancel_at is None or cancel_at not in (start, start + limit, start + work))
        outcomes: dict[int, str] = {}

        async def main(loop: VirtualTimeLoop) -> None:
            clock = LoopClock(loop)

            async def one(index: int, start: int, limit: int, work: int) -> None:
                await asyncio.sleep(start / 1000)

                async def job() -> str:
                    await asyncio.sleep(work / 1000)
                    return "done"

                try:
                    outcomes[index] = await TimeLimit(limit / 1000, clock=clock).acall(job)
                except Timeout:
                    outcomes[index] = "timeout"
                    assert cancelling() == 0
                except asyncio.CancelledError:
                    outcomes[index] = "cancelled"
                    raise

            tasks = [
                asyncio.create_task(one(index, start, limit, work))
                for index, (start, limit, work, _) in enumerate(plan)
            ]
            for task, (_, _, _, cancel_at) in zip(tasks, plan, strict=True):
                if cancel_at is not None:
                    loop.call_at(cancel_at / 1000, task.cancel)
            await asyncio.gather(*tasks, return_exceptions=True)
            timer = timer_of(loop)
            assert (timer.live, timer.heap) == (0, [])
            # The idle timer is left at most one handle, which finds nothing and is not set again.
            assert len(pending_fires(loop)) <= 1
            await asyncio.sleep(1)
            assert pending_fires(loop) == []
            assert timer.handle is None

        run_virtual(main)
        for index, (start, limit, work, cancel_at) in enumerate(plan):
            if cancel_at is not None and cancel_at < start:  # cancelled before the limit began
                assert index not in outcomes
                continue
            ends = {"done": start + work, "timeout": start + limit}
            if cancel_at is not None:
                ends["cancelled"] = cancel_at
            expected = min(ends, key=lambda outcome: ends[outcome])
            assert outcomes[index] == expected, (index, plan[index])

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        outer=st.integers(1, 100),
        inner=st.integers(1, 100),
        work=st.integers(0, 150),
    )
    def test_nested_limits_take_the_smaller(self, outer: int, inner: int, work: int) -> None:
        assume(work not in (outer, inner))
        seen: list[object] = []

        async def main(loop: VirtualTimeLoop) -> None:
            clock = LoopClock(loop)

            async def job() -> str:
                seen.append(current_deadline())
                await asyncio.sleep(work / 1000)
                return "done"

            outer_limit = TimeLimit(outer / 1000, clock=clock, name="outer")
            inner_limit = TimeLimit(inner / 1000, clock=clock, name="inner")
            try:
                seen.append(await outer_limit.acall(inner_limit.acall, job))
            except Timeout as error:
                seen.append(str(error))
            assert cancelling() == 0
            assert timer_of(loop).live == 0

        run_virtual(main)
        deadline, outcome = seen
        assert deadline.name == ("inner" if inner < outer else "outer")  # type: ignore[attr-defined]
        if work < min(outer, inner):
            assert outcome == "done"
        else:
            assert isinstance(outcome, str)
            assert f"within {min(outer, inner) / 1000:g} s" in outcome

    def test_a_timeout_inside_leaves_the_outer_limit_running(self) -> None:
        async def main(loop: VirtualTimeLoop) -> None:
            clock = LoopClock(loop)

            async def slow() -> None:
                await asyncio.sleep(1)

            async def outer_work() -> str:
                with pytest.raises(Timeout):
                    await TimeLimit(0.01, clock=clock).acall(slow)
                await asyncio.sleep(0.05)
                return "outer done"

            assert await TimeLimit(0.1, clock=clock).acall(outer_work) == "outer done"

        run_virtual(main)


class TestLoopTimer:
    async def test_one_handle_serves_many_calls(self) -> None:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()

        async def wait() -> None:
            await release.wait()

        limit = TimeLimit(30)
        tasks = [asyncio.create_task(limit.acall(wait)) for _ in range(50)]
        await asyncio.sleep(0)
        timer = timer_of(loop)
        assert timer.live == 50
        assert len(pending_fires(loop)) == 1
        release.set()
        await asyncio.gather(*tasks)
        assert (timer.live, timer.heap) == (0, [])

    async def test_a_sooner_deadline_moves_the_handle(self) -> None:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()

        async def wait() -> None:
            await release.wait()

        late = asyncio.create_task(TimeLimit(30).acall(wait))
        await asyncio.sleep(0)
        with pytest.raises(Timeout):
            await TimeLimit(0.01).acall(wait)
        timer = timer_of(loop)
        assert timer.live == 1
        assert [handle.when() for handle in pending_fires(loop)] == [timer.handle_at]
        assert timer.handle_at == timer.heap[0][0]  # set again for the late call
        release.set()
        await late

    async def test_finished_entries_are_compacted(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        timer = LoopTimer(weakref.ref(loop))
        keep = timer.arm(loop, task, loop.time() + 60)
        for _ in range(1000):
            timer.disarm(timer.arm(loop, task, loop.time() + 60))
            assert len(timer.heap) <= 2 * timer.live + 65
        assert timer.live == 1
        timer.disarm(keep)
        assert (timer.live, timer.heap) == (0, [])
        timer._cancel_handle()

    async def test_a_timer_for_one_call_cancels_its_handle(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        timer = LoopTimer(None)
        entry = timer.arm(loop, task, loop.time() + 60)
        handle = timer.handle
        assert handle is not None
        timer.disarm(entry)
        assert handle.cancelled()
        assert timer.handle is None
        assert timer.loop_ref() is None

    async def test_the_marker_is_set_only_by_the_timer(self) -> None:
        started = asyncio.Event()

        async def slow() -> None:
            started.set()
            await asyncio.sleep(10)

        task = asyncio.create_task(TimeLimit(5).acall(slow))
        await started.wait()
        timer = timer_of(asyncio.get_running_loop())
        assert [entry[2] for entry in timer.heap] == [task]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert all(entry[2] is not FIRED for entry in timer.heap)
        assert timer.live == 0

    def test_timers_do_not_keep_loops_alive(self) -> None:
        async def quick() -> int:
            return 1

        async def main() -> int:
            return await TimeLimit(30).acall(quick)

        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(main()) == 1
        key = id(loop)
        assert key in timers._registry
        loop_ref = weakref.ref(loop)
        loop.close()
        del loop
        gc.collect()
        assert loop_ref() is None
        assert key not in timers._registry

    def test_each_loop_has_its_own_timer(self) -> None:
        found: list[LoopTimer] = []

        async def main() -> None:
            found.append(timer_of(asyncio.get_running_loop()))
            found.append(timer_of(asyncio.get_running_loop()))

        for _ in range(2):
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()
        first, again, second, _ = found
        assert first is again
        assert first is not second
