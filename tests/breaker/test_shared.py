"""A breaker sharing its state through Redis, seen from one process: round trips, views, events.

Several breaker objects with the same name and store stand for several processes here (each has
its own view); real processes and store faults are in ``test_shared_processes.py`` and
``test_shared_faults.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from buttress import CircuitOpen
from buttress.breaker import (
    BreakerStateChanged,
    CircuitBreaker,
    State,
)
from buttress.storage import BreakerStorage
from buttress.storage.redis import RedisStorage
from tests._threads import run_in_threads


class CountingStore(RedisStorage):
    """A real Redis store that counts its breaker round trips by operation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trips: collections.Counter[str] = collections.Counter()

    def breaker(self, name, operation, rules, arguments=(), *, now=None):
        self.trips[operation] += 1
        return super().breaker(name, operation, rules, arguments, now=now)

    async def abreaker(self, name, operation, rules, arguments=(), *, now=None):
        self.trips[operation] += 1
        return await super().abreaker(name, operation, rules, arguments, now=now)


@pytest.fixture
async def store(redis_url, redis_prefix):
    made = CountingStore(url=redis_url, prefix=redis_prefix)
    yield made
    await made.aclose()  # the asyncio client of the test's event loop too


@pytest.fixture
def name():
    return f"shared-{uuid.uuid4().hex[:8]}"


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def fail() -> str:
    raise Boom


def shared(store: RedisStorage, name: str, **options: Any) -> CircuitBreaker:
    return CircuitBreaker(name, storage=store, registry=None, **options)


def calls(func: Callable[[], object], times: int, *expected: type[BaseException]) -> None:
    for _ in range(times):
        with contextlib.suppress(*expected):
            func()


class TestConstruction:
    def test_a_url_makes_a_redis_store(self, redis_url, name):
        breaker = CircuitBreaker(name, storage=redis_url, registry=None)
        assert isinstance(breaker.storage, RedisStorage)
        assert isinstance(breaker.storage, BreakerStorage)
        assert breaker.shared
        breaker.storage.close()

    def test_in_process_breakers_have_no_store(self):
        breaker = CircuitBreaker("local", registry=None)
        assert breaker.storage is None
        assert not breaker.shared
        breaker.flush()  # a no-op

    @pytest.mark.parametrize("storage", ["memory://", object(), 42])
    def test_a_store_without_breaker_state_is_refused(self, storage):
        with pytest.raises(TypeError, match="storage"):
            CircuitBreaker("x", storage=storage, registry=None)

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("sync_interval", -1),
            ("trial_lease", 0),
            ("trial_lease", -2),
            ("store_cooldown", -0.5),
            ("sync_interval", "soon"),
        ],
    )
    def test_bad_numbers_are_refused_naming_the_argument(self, store, option, value):
        with pytest.raises((TypeError, ValueError), match=option):
            CircuitBreaker("x", storage=store, registry=None, **{option: value})


class TestRoundTrips:
    def test_successes_cost_one_round_trip_per_sync_interval(self, store, name):
        breaker = shared(store, name, sync_interval=60)
        protected = breaker(ok)
        for _ in range(500):
            assert protected() == "ok"
        # The first call learns the state; the 499 others write nothing yet.
        assert sum(store.trips.values()) == 1
        assert shared(store, name).metrics().calls == 0  # fail_max only: no window
        breaker.flush()
        assert store.trips["sync"] == 1

    def test_successes_are_written_after_the_interval(self, store, name):
        breaker = shared(store, name, failure_rate=0.5, window_size=50, sync_interval=0.05)
        protected = breaker(ok)
        calls(protected, 10)
        time.sleep(0.06)
        protected()
        assert store.trips["sync"] == 1
        assert shared(store, name, failure_rate=0.5, window_size=50).metrics().calls == 11

    def test_every_failure_is_one_round_trip_that_teaches_the_state(self, store, name):
        breaker = shared(store, name, fail_max=1000, sync_interval=60)
        protected = breaker(fail)
        protected_ok = breaker(ok)
        protected_ok()
        before = sum(store.trips.values())
        calls(protected, 5, Boom)
        assert sum(store.trips.values()) - before == 5
        assert breaker.metrics().consecutive_failures == 5

    def test_open_rejections_cost_no_round_trip(self, store, name):
        breaker = shared(store, name, fail_max=2, reset_timeout=60)
        calls(breaker(fail), 2, Boom)
        assert breaker.state is State.OPEN
        before = sum(store.trips.values())
        protected = breaker(ok)
        for _ in range(1000):
            with pytest.raises(CircuitOpen) as caught:
                protected()
        assert sum(store.trips.values()) == before
        assert caught.value.retry_after is not None
        assert 59 < caught.value.retry_after <= 60
        assert caught.value.name == name

    def test_a_successful_trial_closes_the_shared_breaker(self, store, name):
        one = shared(store, name, fail_max=1, reset_timeout=0.1)
        other = shared(store, name, fail_max=1, reset_timeout=0.1)
        other(ok)()  # learns CLOSED
        calls(one(fail), 1, Boom)
        time.sleep(0.15)
        assert one(ok)() == "ok"  # the trial
        assert one.state is State.CLOSED
        assert other.metrics().state is State.CLOSED


class TestViews:
    def test_a_failure_elsewhere_opens_this_breaker_at_its_next_write(self, store, name):
        events: list[Any] = []
        here = shared(store, name, fail_max=2, sync_interval=0.05, listeners=[events.append])
        there = shared(store, name, fail_max=2)
        protected = here(ok)
        protected()  # learns CLOSED
        calls(there(fail), 2, Boom)
        time.sleep(0.06)
        protected()  # admitted on the view; its write teaches OPEN
        with pytest.raises(CircuitOpen):
            protected()
        changes = [e for e in events if isinstance(e, BreakerStateChanged)]
        assert [(e.old, e.new) for e in changes] == [(State.CLOSED, State.OPEN)]
        assert changes[0].reason == "changed by another process"

    def test_a_transition_this_process_caused_carries_its_reason(self, store, name):
        events: list[Any] = []
        breaker = shared(store, name, fail_max=3, listeners=[events.append])
        calls(breaker(fail), 3, Boom)
        changes = [e for e in events if isinstance(e, BreakerStateChanged)]
        assert [(e.new, e.reason) for e in changes] == [(State.OPEN, "3 failures in a row")]
        assert changes[0].open_for == pytest.approx(30.0, abs=0.1)

    def test_manual_control_applies_to_every_process(self, store, name):
        here = shared(store, name, sync_interval=0)
        there = shared(store, name, sync_interval=0)
        here.force_open()
        with pytest.raises(CircuitOpen) as caught:
            there(ok)()
        assert caught.value.retry_after is None
        here.close()
        time.sleep(0.01)
        assert there(ok)() == "ok"  # a forced-open view is asked again after sync_interval
        here.disable()
        calls(there(fail), 20, Boom)
        assert there.metrics().state is State.DISABLED

    def test_outcomes_of_an_earlier_state_are_dropped(self, store, name):
        breaker = shared(store, name, fail_max=2, sync_interval=60)
        other = shared(store, name, fail_max=2)
        guard = breaker.guard()
        guard.__enter__()  # admitted while CLOSED, generation 0
        other.open()
        other.close()  # generation 2
        guard.__exit__(Boom, Boom(), None)  # a failure of generation 0: written, then dropped
        assert store.trips["sync"] == 1
        assert other.metrics().consecutive_failures == 0
        assert breaker.state is State.CLOSED

    def test_metrics_describe_the_shared_window(self, store, name):
        options = {"failure_rate": 0.9, "window_size": 10, "sync_interval": 0}
        one, two = shared(store, name, **options), shared(store, name, **options)
        calls(one(ok), 3)
        calls(two(fail), 2, Boom)
        one.flush()
        metrics = two.metrics()
        assert (metrics.calls, metrics.failures) == (5, 2)
        assert metrics.failure_rate == pytest.approx(0.4)
        assert metrics.state is State.CLOSED


class TestHalfOpen:
    def test_threads_never_run_more_than_the_permitted_trials(self, store, name):
        breakers = [
            shared(store, name, fail_max=1, reset_timeout=0.05, half_open_max_calls=2)
            for _ in range(3)
        ]
        breakers[0].open()
        time.sleep(0.1)
        inside = 0
        most = 0
        answered = threading.Condition()
        outcomes: collections.Counter[str] = collections.Counter()

        def slow():
            # A trial holds its permit until every other thread has been answered, so that no
            # thread can come late and find the breaker already closed by a finished trial.
            nonlocal inside, most
            with answered:
                inside += 1
                most = max(most, inside)
                answered.wait_for(lambda: sum(outcomes.values()) + inside >= 12, timeout=10)
                inside -= 1

        def worker(index):
            try:
                breakers[index % 3](slow)()
                outcome = "ran"
            except CircuitOpen:
                outcome = "rejected"
            with answered:
                outcomes[outcome] += 1
                answered.notify_all()

        run_in_threads(12, worker)
        assert most <= 2
        assert outcomes["ran"] == 2
        assert outcomes["rejected"] == 10

    async def test_tasks_never_run_more_than_the_permitted_trials(self, store, name):
        breakers = [
            shared(store, name, fail_max=1, reset_timeout=0.05, half_open_max_calls=3)
            for _ in range(2)
        ]
        breakers[0].open()
        await asyncio.sleep(0.1)
        ran = []

        async def slow(index: int) -> int:
            ran.append(index)
            await asyncio.sleep(0.2)
            return index

        async def one(index: int) -> Any:
            try:
                return await breakers[index % 2](slow)(index)
            except CircuitOpen:
                return None

        results = await asyncio.gather(*(one(i) for i in range(10)))
        assert len(ran) == 3
        assert sorted(r for r in results if r is not None) == sorted(ran)
        assert store.trips["trial"] >= 3
        # Three trial successes (success_threshold=1): the shared breaker closed.
        assert breakers[1].metrics().state is State.CLOSED

    async def test_async_guard_and_flush(self, store, name):
        breaker = shared(store, name, failure_rate=0.5, window_size=10, sync_interval=60)
        for _ in range(3):
            async with breaker.guard():
                pass
        with pytest.raises(Boom):
            async with breaker.guard():
                raise Boom
        await breaker.aflush()
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures) == (4, 1)

    def test_a_failed_trial_reopens_for_every_process(self, store, name):
        options = {"fail_max": 1, "reset_timeout": 0.05, "reset_timeout_multiplier": 4}
        one, two = shared(store, name, **options), shared(store, name, **options)
        one.open()
        time.sleep(0.1)
        calls(one(fail), 1, Boom)  # the trial fails: open again, for 0.05 * 4 s
        with pytest.raises(CircuitOpen) as caught:
            two(ok)()
        retry_after = caught.value.retry_after
        assert retry_after is not None
        assert 0.1 < retry_after <= 0.2
