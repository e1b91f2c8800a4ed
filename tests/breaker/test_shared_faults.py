"""A shared circuit breaker when its Redis fails: a private ``redis-server`` per test, stopped,
frozen and started again mid-test.

Several breakers with the same name, each on a store of its own, stand for processes (one test
uses real spawned processes). Wall time is measured to prove that no call hangs and that a dead
store costs one timeout per ``store_cooldown``, not one per call.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from multiprocessing import get_context
from typing import Any, TypeVar

import pytest

from buttress import CircuitBreaker, CircuitOpen, StorageError
from buttress.breaker import BreakerStateChanged, BreakerStoreDegraded, BreakerStoreRecovered, State

from .._redis_server import PrivateRedis

pytest.importorskip("redis")

T = TypeVar("T")

TIMEOUT = 0.25  # the store's timeout for connecting and for each command
CALL_BOUND = 2.0  # the most wall time one call may take, whatever the store does


class Boom(Exception):
    """The failure of the protected functions here."""


def boom() -> None:
    raise Boom


def ok() -> str:
    return "ok"


@pytest.fixture
def name() -> str:
    return f"breaker-{uuid.uuid4().hex[:12]}"


def make(
    server: PrivateRedis, stores: list[Any], name: str, **options: Any
) -> tuple[CircuitBreaker, list[Any]]:
    """A shared breaker on a store of its own (a process of its own), and its events."""
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - needs the redis extra

    store = RedisStorage.from_url(server.url, prefix="faults", timeout=TIMEOUT)
    stores.append(store)
    events: list[Any] = []
    breaker = CircuitBreaker(
        name, storage=store, registry=None, listeners=[events.append], **options
    )
    return breaker, events


def of(events: list[Any], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


def timed(call: Callable[[], T]) -> tuple[T | BaseException, float]:
    """Run ``call``; return its result or exception, and the seconds it took."""
    began = time.monotonic()
    try:
        result: T | BaseException = call()
    except Exception as error:
        result = error
    return result, time.monotonic() - began


def run_locally(breaker: CircuitBreaker, fail_max: int) -> list[tuple[Any, float]]:
    """Three successes, ``fail_max`` failures, one more call: each result (or error), timed."""
    results: list[tuple[Any, float]] = [timed(lambda: breaker.call(ok)) for _ in range(3)]
    results += [timed(lambda: breaker.call(boom)) for _ in range(fail_max)]
    results.append(timed(lambda: breaker.call(ok)))
    return results


def check_local_run(results: list[tuple[Any, float]], fail_max: int) -> None:
    outcomes = [result for result, _ in results]
    assert outcomes[:3] == ["ok"] * 3
    assert all(isinstance(outcome, Boom) for outcome in outcomes[3:-1])
    rejection = outcomes[-1]
    assert isinstance(rejection, CircuitOpen), rejection
    assert "(shared)" not in str(rejection)  # rejected by the local breaker
    assert rejection.retry_after is not None
    assert 20 < rejection.retry_after <= 30  # a fresh local open period
    assert len(outcomes) == 3 + fail_max + 1
    assert max(elapsed for _, elapsed in results) < CALL_BOUND


class TestStoreDown:
    FAIL_MAX = 3

    def options(self) -> dict[str, Any]:
        return {"fail_max": self.FAIL_MAX, "reset_timeout": 30, "store_cooldown": 30}

    def test_every_breaker_carries_on_with_local_state(self, server, stores, name):
        fleet = [make(server, stores, name, **self.options()) for _ in range(3)]
        for breaker, _ in fleet:
            assert breaker.call(ok) == "ok"  # each learns the shared state: CLOSED
            assert breaker.shared
        server.stop()
        for index, (breaker, events) in enumerate(fleet):
            results = run_locally(breaker, self.FAIL_MAX)
            check_local_run(results, self.FAIL_MAX)
            assert (breaker.state, breaker.shared) == (State.OPEN, False)
            [degraded] = of(events, BreakerStoreDegraded)
            assert isinstance(degraded.error, StorageError)
            assert degraded.retry_in == pytest.approx(30, abs=2)
            assert of(events, BreakerStoreRecovered) == []
            # The others are not affected: the state each opened is its own now.
            for other, _ in fleet[index + 1 :]:
                assert other.state is State.CLOSED
        metrics = fleet[0][0].metrics()  # the local state (the store is not asked again)
        assert (metrics.state, metrics.consecutive_failures) == (State.OPEN, 0)

    def test_real_processes_carry_on_with_local_state(self, server, name):
        context = get_context("spawn")
        go = context.Event()
        readies = [context.Event() for _ in range(2)]
        results: Any = context.Queue()
        processes = [
            context.Process(
                target=carry_on_locally,
                args=(server.url, name, self.options(), ready, go, results),
            )
            for ready in readies
        ]
        for process in processes:
            process.start()
        try:
            for ready in readies:
                assert ready.wait(30), "a process never learned the shared state"
            server.stop()
            go.set()
            reports = [results.get(timeout=30) for _ in processes]
        finally:
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=10)
        assert [process.exitcode for process in processes] == [0, 0]
        assert len({report["pid"] for report in reports}) == 2
        for report in reports:
            assert report["outcomes"][:3] == ["ok"] * 3
            assert report["outcomes"][3:-1] == ["Boom"] * self.FAIL_MAX
            assert report["outcomes"][-1] == "CircuitOpen"
            assert "(shared)" not in report["message"]
            assert max(report["elapsed"]) < CALL_BOUND
            assert (report["degraded"], report["recovered"]) == (1, 0)
            assert report["state"] == "open"


def carry_on_locally(
    url: str, name: str, options: dict[str, Any], ready: Any, go: Any, results: Any
) -> None:
    """In a spawned process: learn the shared state, wait for the test to stop Redis, then run
    three successes, the failures that trip the breaker and one more call, and report."""
    import os  # noqa: PLC0415 - runs in the spawned process

    from buttress import CircuitBreaker, CircuitOpen  # noqa: PLC0415
    from buttress.breaker import (  # noqa: PLC0415
        BreakerStoreDegraded,
        BreakerStoreRecovered,
    )
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415

    store = RedisStorage.from_url(url, prefix="faults", timeout=TIMEOUT)
    events: list[Any] = []
    breaker = CircuitBreaker(
        name, storage=store, registry=None, listeners=[events.append], **options
    )
    assert breaker.call(ok) == "ok"
    ready.set()
    assert go.wait(30)
    timed_results = run_locally(breaker, options["fail_max"])
    outcomes = [
        result if isinstance(result, str) else type(result).__name__ for result, _ in timed_results
    ]
    last = timed_results[-1][0]
    results.put(
        {
            "outcomes": outcomes,
            "message": str(last) if isinstance(last, CircuitOpen) else "",
            "elapsed": [elapsed for _, elapsed in timed_results],
            "degraded": len(of(events, BreakerStoreDegraded)),
            "recovered": len(of(events, BreakerStoreRecovered)),
            "state": str(breaker.state),
            "pid": os.getpid(),
        }
    )
    store.close()


class TestLastStateKept:
    def test_a_learned_open_period_is_kept_until_it_ends(self, server, stores, name):
        options = {"fail_max": 2, "reset_timeout": 1.0, "store_cooldown": 30}
        tripper, _ = make(server, stores, name, **options)
        breaker, events = make(server, stores, name, **options)
        for _ in range(2):
            with pytest.raises(Boom):
                tripper.call(boom)
        with pytest.raises(CircuitOpen, match=r"is open; .*\(shared\)") as learned:
            breaker.call(ok)  # learns OPEN and the end of the open period
        left = learned.value.retry_after
        assert left is not None
        assert 0.5 < left <= 1.0
        learned_at = time.monotonic()
        server.stop()

        # The view still answers: no store call is needed to reject.
        rejection, elapsed = timed(lambda: breaker.call(ok))
        assert isinstance(rejection, CircuitOpen)
        assert elapsed < 0.1
        # Reading the metrics asks the store: it fails, and the breaker goes local, still OPEN.
        metrics, elapsed = timed(breaker.metrics)
        assert elapsed < CALL_BOUND
        assert not isinstance(metrics, BaseException)
        assert metrics.state is State.OPEN
        assert len(of(events, BreakerStoreDegraded)) == 1
        assert (breaker.state, breaker.shared) == (State.OPEN, False)
        # The local breaker keeps the open period learned, not a new one.
        assert metrics.retry_after is not None
        assert 0 < metrics.retry_after <= left - (time.monotonic() - learned_at) + 0.05
        with pytest.raises(CircuitOpen) as local:
            breaker.call(ok)
        assert "(shared)" not in str(local.value)
        assert local.value.retry_after is not None
        assert local.value.retry_after <= metrics.retry_after

        time.sleep(local.value.retry_after + 0.05)  # the learned open period ends
        result, elapsed = timed(lambda: breaker.call(ok))  # a local trial call
        assert (result, breaker.state) == ("ok", State.CLOSED)
        assert elapsed < CALL_BOUND
        changes = [(event.old, event.new) for event in of(events, BreakerStateChanged)]
        assert changes[-2:] == [(State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]
        assert len(of(events, BreakerStoreDegraded)) == 1

    def test_a_learned_forced_open_is_kept(self, server, stores, name):
        options = {"sync_interval": 0.1, "store_cooldown": 30}
        controller, _ = make(server, stores, name, **options)
        breaker, events = make(server, stores, name, **options)
        assert breaker.call(ok) == "ok"
        controller.force_open()
        with pytest.raises(Boom):
            breaker.call(boom)  # admitted on the CLOSED view; written at once: learns FORCED_OPEN
        with pytest.raises(CircuitOpen, match=r"forced open \(shared\)"):
            breaker.call(ok)
        server.stop()
        time.sleep(0.15)  # past sync_interval: the next call asks the store, which is down
        for _ in range(3):
            rejection, elapsed = timed(lambda: breaker.call(ok))
            assert isinstance(rejection, CircuitOpen)
            assert "forced open" in str(rejection)
            assert "(shared)" not in str(rejection)
            assert rejection.retry_after is None
            assert elapsed < CALL_BOUND
        assert (breaker.state, breaker.shared) == (State.FORCED_OPEN, False)
        assert len(of(events, BreakerStoreDegraded)) == 1


class TestRejoin:
    COOLDOWN = 0.3

    def test_the_shared_state_is_adopted_again_after_a_restart(self, server, stores, name):
        options = {
            "fail_max": 2,
            "reset_timeout": 30,
            "store_cooldown": self.COOLDOWN,
            "sync_interval": 0.05,
        }
        breaker, events = make(server, stores, name, **options)
        other, _ = make(server, stores, name, **options)
        assert breaker.call(ok) == "ok"
        assert other.call(ok) == "ok"
        server.stop()
        for _ in range(2):
            with pytest.raises(Boom):
                breaker.call(boom)
        with pytest.raises(CircuitOpen) as local:
            breaker.call(ok)  # opened locally, for 30 s
        assert "(shared)" not in str(local.value)
        assert breaker.state is State.OPEN
        assert len(of(events, BreakerStoreDegraded)) == 1

        server.start()  # the same port, an empty server: no state, no scripts
        time.sleep(self.COOLDOWN + 0.1)
        result, elapsed = timed(lambda: breaker.call(ok))
        # The store answered: the shared state (CLOSED, on the new server) wins over the local
        # OPEN.
        assert result == "ok"
        assert elapsed < CALL_BOUND
        [recovered] = of(events, BreakerStoreRecovered)
        assert recovered.down_for >= self.COOLDOWN
        assert (breaker.state, breaker.shared) == (State.CLOSED, True)

        # It follows the shared state again: opened by another breaker, it rejects too.
        other.open()
        deadline = time.monotonic() + 3
        admitted = 0
        while (outcome := timed(lambda: breaker.call(ok))[0]) == "ok":
            admitted += 1
            assert time.monotonic() < deadline, "the shared OPEN was never learned"
            time.sleep(0.02)
        assert isinstance(outcome, CircuitOpen), outcome
        assert "(shared)" in str(outcome)
        assert admitted <= 10  # learned within about one sync_interval
        assert breaker.state is State.OPEN
        assert len(of(events, BreakerStoreDegraded)) == 1
        assert len(of(events, BreakerStoreRecovered)) == 1


class TestFrozenStore:
    COOLDOWN = 0.6
    DURATION = 2.0

    def options(self) -> dict[str, Any]:
        # sync_interval=0: without the guard, every call would write to the store.
        return {"fail_max": 5, "sync_interval": 0, "store_cooldown": self.COOLDOWN}

    def check(self, elapsed: list[float], events: list[Any]) -> None:
        waited = [seconds for seconds in elapsed if seconds >= TIMEOUT * 0.8]
        assert len(elapsed) >= 15
        assert max(elapsed) < CALL_BOUND  # never a hang
        # One store timeout per cooldown: at the first call, then once per cooldown.
        assert 2 <= len(waited) <= 1 + math.ceil(self.DURATION / self.COOLDOWN)
        assert len(of(events, BreakerStoreDegraded)) == 1

    def test_costs_one_timeout_per_cooldown(self, server, stores, name):
        breaker, events = make(server, stores, name, **self.options())
        assert breaker.call(ok) == "ok"
        server.freeze()  # connections hang: only the store's timeout ends a call
        elapsed: list[float] = []
        try:
            end = time.monotonic() + self.DURATION
            while time.monotonic() < end:
                result, seconds = timed(lambda: breaker.call(ok))
                assert result == "ok"
                elapsed.append(seconds)
                time.sleep(0.01)
        finally:
            server.thaw()
        self.check(elapsed, events)
        assert of(events, BreakerStoreRecovered) == []
        # Thawed: the store is tried again after the cooldown, and answers.
        deadline = time.monotonic() + self.COOLDOWN + 3
        while not of(events, BreakerStoreRecovered):
            assert time.monotonic() < deadline, "never recovered"
            assert breaker.call(ok) == "ok"
            time.sleep(0.02)
        assert breaker.shared

    async def test_async_costs_one_timeout_per_cooldown_and_never_blocks_the_loop(
        self, server, stores, name
    ):
        breaker, events = make(server, stores, name, **self.options())

        @breaker
        async def protected() -> str:
            await asyncio.sleep(0)
            return "ok"

        assert await protected() == "ok"
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        server.freeze()
        elapsed: list[float] = []
        ticked: list[int] = []
        try:
            end = time.monotonic() + self.DURATION
            index = 0
            while time.monotonic() < end:
                before, began = ticks, time.monotonic()
                call = protected() if index % 2 else breaker.acall(protected)
                assert await call == "ok"
                elapsed.append(time.monotonic() - began)
                ticked.append(ticks - before)
                index += 1
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            server.thaw()
        self.check(elapsed, events)
        # The loop ran on while a call waited for Redis (a blocked loop would not tick at all).
        for seconds, count in zip(elapsed, ticked, strict=True):
            if seconds >= TIMEOUT * 0.8:
                assert count >= 5, (seconds, count)


class TestManualControlWhileDown:
    def test_raises_storage_error_and_applies_locally(self, server, stores, name):
        breaker, events = make(
            server, stores, name, fail_max=2, reset_timeout=30, store_cooldown=30
        )
        assert breaker.call(ok) == "ok"
        server.stop()

        def control(action: Callable[[], None], state: State) -> None:
            began = time.monotonic()
            with pytest.raises(StorageError):
                action()
            assert time.monotonic() - began < CALL_BOUND
            assert (breaker.state, breaker.shared) == (state, False)

        control(breaker.open, State.OPEN)
        with pytest.raises(CircuitOpen, match="is open") as rejected:
            breaker.call(ok)
        assert "(shared)" not in str(rejected.value)
        assert len(of(events, BreakerStoreDegraded)) == 1

        control(breaker.close, State.CLOSED)
        assert breaker.call(ok) == "ok"

        control(breaker.force_open, State.FORCED_OPEN)
        with pytest.raises(CircuitOpen, match="forced open"):
            breaker.call(ok)

        control(breaker.disable, State.DISABLED)
        for _ in range(4):  # more than fail_max: a disabled breaker never trips
            with pytest.raises(Boom):
                breaker.call(boom)
        assert (breaker.state, breaker.shared) == (State.DISABLED, False)

        control(breaker.reset, State.CLOSED)
        control(breaker.half_open, State.HALF_OPEN)
        assert breaker.call(ok) == "ok"  # the trial call closes the local breaker
        assert (breaker.state, breaker.shared) == (State.CLOSED, False)

        changes = [(event.old, event.new) for event in of(events, BreakerStateChanged)]
        assert changes == [
            (State.CLOSED, State.OPEN),
            (State.OPEN, State.CLOSED),
            (State.CLOSED, State.FORCED_OPEN),
            (State.FORCED_OPEN, State.DISABLED),
            (State.DISABLED, State.CLOSED),
            (State.CLOSED, State.HALF_OPEN),
            (State.HALF_OPEN, State.CLOSED),
        ]
        assert len(of(events, BreakerStoreDegraded)) == 1

    def test_a_frozen_store_costs_one_timeout(self, server, stores, name):
        breaker, events = make(server, stores, name, store_cooldown=30)
        assert breaker.call(ok) == "ok"
        server.freeze()
        try:
            began = time.monotonic()
            with pytest.raises(StorageError):
                breaker.force_open()
            assert time.monotonic() - began < CALL_BOUND
        finally:
            server.thaw()
        assert (breaker.state, breaker.shared) == (State.FORCED_OPEN, False)
        assert len(of(events, BreakerStoreDegraded)) == 1
