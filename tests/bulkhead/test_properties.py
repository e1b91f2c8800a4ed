"""Property tests: random interleavings of acquire, wait, time-out, cancel and raise.

Whatever happens, at most ``max_concurrent`` holders are ever inside at once, and once every
actor has finished the bulkhead is back to ``max_concurrent`` free slots with nobody waiting:
no slot leaks, none is released twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttress import BulkheadFull
from buttress.bulkhead import Bulkhead, KeyedBulkhead


class Boom(Exception):
    pass


@dataclass(frozen=True)
class Actor:
    delay: int  # loop turns (or tiny sleeps) before asking for a slot
    timeout: float | None  # the acquire's timeout (None: the bulkhead's max_wait)
    hold: int  # loop turns holding the slot
    raises: bool  # the protected code raises
    cancel_at: int | None  # loop turns after which the actor's task is cancelled


actors = st.lists(
    st.builds(
        Actor,
        delay=st.integers(0, 4),
        timeout=st.sampled_from([None, 0, 0.001, 0.005, 1.0]),
        hold=st.integers(0, 5),
        raises=st.booleans(),
        cancel_at=st.none() | st.integers(0, 12),
    ),
    min_size=1,
    max_size=14,
)
sizes = st.tuples(st.integers(1, 3), st.integers(0, 5))

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Tracker:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.peak = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            assert self.inside <= self.limit

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


def assert_drained(b: Bulkhead) -> None:
    stats = b.stats()
    assert stats.in_use == 0
    assert stats.available == b.max_concurrent
    assert stats.waiting == 0
    assert not b._waiters


async def run_actors(b: Bulkhead, plan: list[Actor], tracker: Tracker) -> None:
    async def actor(spec: Actor) -> None:
        for _ in range(spec.delay):
            await asyncio.sleep(0)
        async with b.aacquire(timeout=spec.timeout):
            tracker.enter()
            try:
                for _ in range(spec.hold):
                    await asyncio.sleep(0)
                if spec.raises:
                    raise Boom
            finally:
                tracker.leave()

    async def cancel_later(task: asyncio.Task[None], turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()

    tasks = [asyncio.create_task(actor(spec)) for spec in plan]
    cancellers = [
        asyncio.create_task(cancel_later(task, spec.cancel_at))
        for task, spec in zip(tasks, plan, strict=True)
        if spec.cancel_at is not None
    ]
    outcomes = await asyncio.gather(*tasks, *cancellers, return_exceptions=True)
    for outcome in outcomes:
        assert outcome is None or isinstance(outcome, (BulkheadFull, Boom, asyncio.CancelledError))


class TestInterleavings:
    @SETTINGS
    @given(sizes=sizes, plan=actors, max_wait=st.sampled_from([None, 0.002, 0.5]))
    def test_tasks(self, sizes, plan, max_wait):
        limit, queue = sizes
        b = Bulkhead(limit, max_waiting=queue, max_wait=max_wait)
        tracker = Tracker(limit)
        # A leaked slot shows as waiters stuck for ever: fail after 10 s instead of hanging.
        asyncio.run(asyncio.wait_for(run_actors(b, plan, tracker), 10))
        assert tracker.inside == 0
        assert_drained(b)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(sizes=sizes, plan=actors)
    def test_threads_and_tasks_together(self, sizes, plan):
        limit, queue = sizes
        b = Bulkhead(limit, max_waiting=queue + 2)
        tracker = Tracker(limit)
        errors: list[BaseException] = []

        def thread_actor(spec: Actor) -> None:
            try:
                time.sleep(spec.delay / 10_000)
                with b.acquire(timeout=spec.timeout):
                    tracker.enter()
                    try:
                        time.sleep(spec.hold / 10_000)
                        if spec.raises:
                            raise Boom
                    finally:
                        tracker.leave()
            except (BulkheadFull, Boom):
                pass
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=thread_actor, args=(spec,)) for spec in plan]
        for thread in threads:
            thread.start()
        asyncio.run(asyncio.wait_for(run_actors(b, plan, tracker), 10))
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
        assert errors == []
        assert tracker.inside == 0
        assert_drained(b)

    @SETTINGS
    @given(plan=actors, keys=st.lists(st.sampled_from("abc"), min_size=14, max_size=14))
    def test_keyed_tasks(self, plan, keys):
        keyed = KeyedBulkhead(1, max_waiting=2, max_keys=2)
        trackers = {key: Tracker(1) for key in "abc"}

        async def actor(spec: Actor, key: str) -> None:
            for _ in range(spec.delay):
                await asyncio.sleep(0)
            with await keyed.aacquire(key, timeout=spec.timeout):
                trackers[key].enter()
                try:
                    for _ in range(spec.hold):
                        await asyncio.sleep(0)
                    if spec.raises:
                        raise Boom
                finally:
                    trackers[key].leave()

        async def main() -> None:
            tasks = [
                asyncio.create_task(actor(spec, key))
                for spec, key in zip(plan, keys[: len(plan)], strict=True)
            ]
            for task, spec in zip(tasks, plan, strict=True):
                if spec.cancel_at is not None:
                    asyncio.get_running_loop().call_later(spec.cancel_at / 1000, task.cancel)
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in outcomes:
                assert outcome is None or isinstance(
                    outcome, (BulkheadFull, Boom, asyncio.CancelledError)
                )

        asyncio.run(asyncio.wait_for(main(), 10))
        assert len(keyed) <= 2
        for stats in keyed.stats().values():
            assert (stats.in_use, stats.waiting) == (0, 0)
