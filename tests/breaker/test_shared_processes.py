"""A circuit breaker shared through Redis by real processes (``spawn``), on the shared server.

The processes are spawned once for the module; each test gives every process the same breaker
name (unique to the test) and the same rules, and starts them together at a wall-clock start gun.
Where a count must be exact whatever the machine's speed, the processes wait for one another
through counters in Redis instead of sleeping.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pytest

pytest.importorskip("redis")

PROCESSES = 4
STORE_TIMEOUT = 5.0  # generous: the shared server must never look down on a busy machine
RESULT_TIMEOUT = 30.0


def _wait_for(start: float) -> None:
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)


def _make_breaker(url: str, prefix: str, name: str, **options: Any) -> tuple[Any, Any, list[Any]]:
    """In a worker process: a shared breaker on its own store, and the events it emits."""
    from buttress import CircuitBreaker  # noqa: PLC0415 - runs in the spawned process
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415

    store = RedisStorage.from_url(url, prefix=prefix, timeout=STORE_TIMEOUT)
    events: list[Any] = []
    breaker = CircuitBreaker(
        name, storage=store, registry=None, listeners=[events.append], **options
    )
    return breaker, store, events


def _degraded(events: list[Any]) -> int:
    from buttress.breaker import BreakerStoreDegraded  # noqa: PLC0415 - in the worker

    return sum(isinstance(event, BreakerStoreDegraded) for event in events)


class Boom(Exception):
    """The failure of the protected functions here."""


def _boom() -> None:
    raise Boom


def _outcome(call: Callable[[], Any]) -> Any:
    """What ``call()`` returned, or the exception it raised."""
    try:
        return call()
    except Exception as error:
        return error


def fail(url: str, prefix: str, name: str, fail_max: int, start: float) -> dict[str, Any]:
    """In a worker process: ``fail_max`` failing calls, from ``start`` on."""
    breaker, store, events = _make_breaker(url, prefix, name, fail_max=fail_max, reset_timeout=60)
    _wait_for(start)
    began = time.time()
    failures = sum(isinstance(_outcome(lambda: breaker.call(_boom)), Boom) for _ in range(fail_max))
    ended = time.time()
    state = str(breaker.state)
    store.close()
    return {
        "failures": failures,
        "began": began,
        "ended": ended,
        "state": state,
        "degraded": _degraded(events),
        "pid": os.getpid(),
    }


def poll(
    url: str, prefix: str, name: str, fail_max: int, sync_interval: float, start: float
) -> dict[str, Any]:
    """In a worker process: succeed once to learn the state, then call from ``start`` until
    rejected (for at most 5 s). The protected function never fails here."""
    from buttress import CircuitOpen  # noqa: PLC0415 - runs in the spawned process

    breaker, store, events = _make_breaker(
        url, prefix, name, fail_max=fail_max, reset_timeout=60, sync_interval=sync_interval
    )
    assert breaker.call(lambda: "warm") == "warm"  # learns CLOSED
    _wait_for(start)
    admitted, rejected_at, message = 0, None, ""
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            breaker.call(lambda: None)
        except CircuitOpen as error:
            rejected_at, message = time.time(), str(error)
            break
        admitted += 1
        time.sleep(0.01)
    store.close()
    return {
        "admitted": admitted,
        "rejected_at": rejected_at,
        "message": message,
        "degraded": _degraded(events),
        "pid": os.getpid(),
    }


def first_call(url: str, prefix: str, name: str, fail_max: int) -> dict[str, Any]:
    """In a worker process: a fresh breaker (sync_interval=0) makes one succeeding call."""
    from buttress import CircuitOpen  # noqa: PLC0415 - runs in the spawned process

    breaker, store, events = _make_breaker(
        url, prefix, name, fail_max=fail_max, reset_timeout=60, sync_interval=0
    )
    ran: list[int] = []
    result: dict[str, Any] = {"pid": os.getpid()}
    try:
        breaker.call(lambda: ran.append(1))
    except CircuitOpen as error:
        result.update(rejected=True, message=str(error), retry_after=error.retry_after)
    else:
        result.update(rejected=False)
    result.update(ran=len(ran), degraded=_degraded(events), state=str(breaker.state))
    store.close()
    return result


def trial_storm(
    url: str,
    prefix: str,
    name: str,
    trials: int,
    threads: int,
    total: int,
    counters: str,
    start: float,
) -> dict[str, Any]:
    """In a worker process: ``threads`` threads call the half-open breaker once, together.

    An admitted call counts itself in Redis (``counters:ran``), and every thread counts itself
    in ``counters:decided`` once it knows whether it was admitted; admitted calls return only
    when all ``total`` threads of all processes were decided, so no trial ends (and closes the
    breaker) before every thread was answered.
    """
    import redis  # noqa: PLC0415 - runs in the spawned process

    from buttress import CircuitOpen  # noqa: PLC0415

    breaker, store, events = _make_breaker(
        url, prefix, name, reset_timeout=0.3, half_open_max_calls=trials
    )
    client: Any = redis.Redis.from_url(url, socket_timeout=STORE_TIMEOUT)
    ran_key, decided_key = f"{counters}:ran", f"{counters}:decided"
    lock = threading.Lock()
    result: dict[str, Any] = {"ran": 0, "rejected": 0, "messages": set(), "errors": []}

    def work() -> str:
        client.incr(ran_key)
        client.incr(decided_key)
        deadline = time.time() + 15
        while int(client.get(decided_key) or 0) < total and time.time() < deadline:
            time.sleep(0.01)
        return "done"

    def thread() -> None:
        _wait_for(start)
        try:
            outcome = breaker.call(work)
        except CircuitOpen as error:
            client.incr(decided_key)
            with lock:
                result["rejected"] += 1
                result["messages"].add(str(error).split(" is ", 1)[1])
        except Exception as error:
            client.incr(decided_key)
            with lock:
                result["errors"].append(repr(error))
        else:
            with lock:
                result["ran"] += outcome == "done"

    workers = [threading.Thread(target=thread) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    client.close()
    store.close()
    result.update(degraded=_degraded(events), pid=os.getpid())
    return result


def hold_trial_and_die(url: str, prefix: str, name: str, lease: float, how: str) -> None:
    """In a process of its own: take a trial permit, note the time in Redis, then die holding it
    (``os._exit`` inside the guarded block, or hang there until the test kills the process)."""
    import redis  # noqa: PLC0415 - runs in the spawned process

    breaker, _, _ = _make_breaker(url, prefix, name, reset_timeout=0.3, trial_lease=lease)
    client = redis.Redis.from_url(url, socket_timeout=STORE_TIMEOUT)
    before = time.time()  # the permit is taken after this, and leased from then on
    with breaker.guard():
        client.set(f"{{{prefix}}}:held:{name}", f"{before!r} {time.time()!r}")
        if how == "exit":
            os._exit(17)
        time.sleep(60)  # killed by the test meanwhile
    os._exit(3)  # never reached: the permit was not held until the end


def succeed_then_flush(
    url: str, prefix: str, name: str, window: int, successes: int, start: float
) -> dict[str, Any]:
    """In a worker process: one failure, then ``successes`` successes, then ``flush()``.

    ``sync_interval`` is long: the successes after the first write wait for the flush.
    """
    breaker, store, events = _make_breaker(
        url,
        prefix,
        name,
        failure_rate=0.9,
        window_size=window,
        window_type="count",
        sync_interval=60,
    )
    _wait_for(start)
    assert isinstance(_outcome(lambda: breaker.call(_boom)), Boom)
    for _ in range(successes):
        breaker.call(lambda: None)
    pending = breaker._shared.describe()["pending"][0]
    breaker.flush()
    flushed = breaker._shared.describe()["pending"][0]
    store.close()
    return {
        "pending": pending,
        "flushed": flushed,
        "degraded": _degraded(events),
        "pid": os.getpid(),
    }


def read_metrics(url: str, prefix: str, name: str, window: int) -> tuple[str, int, int]:
    """In a worker process: the shared metrics, read by a breaker that made no call."""
    breaker, store, _ = _make_breaker(
        url, prefix, name, failure_rate=0.9, window_size=window, window_type="count"
    )
    metrics = breaker.metrics()
    store.close()
    return str(metrics.state), metrics.calls, metrics.failures


def _warm_up(seconds: float) -> int:
    import buttress.breaker  # noqa: PLC0415 - import once, before the timed rounds
    import buttress.storage.redis  # noqa: F401, PLC0415

    time.sleep(seconds)
    return os.getpid()


@pytest.fixture(scope="module")
def pool(redis_url: str) -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=get_context("spawn")) as executor:
        # Start every worker process now (a pool starts them on demand) and import buttress.
        assert len(set(executor.map(_warm_up, [0.3] * PROCESSES))) == PROCESSES
        yield executor


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}-shared"


@pytest.fixture
def name() -> str:
    return f"breaker-{uuid.uuid4().hex[:12]}"


def make_breaker(redis_url: str, prefix: str, name: str, stores: list[Any], **options: Any):
    """In the test process: a shared breaker (its store closed at teardown), and its events."""
    from buttress import CircuitBreaker  # noqa: PLC0415 - needs the redis extra
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415

    store = RedisStorage.from_url(redis_url, prefix=prefix, timeout=STORE_TIMEOUT)
    stores.append(store)
    events: list[Any] = []
    breaker = CircuitBreaker(
        name, storage=store, registry=None, listeners=[events.append], **options
    )
    return breaker, events


@pytest.fixture
def stores() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for store in made:
        store.close()


def start_gun(delay: float = 0.5) -> float:
    """A wall-clock time shortly ahead: the processes start then."""
    return time.time() + delay


class TestFailuresOpenForAll:
    FAIL_MAX = 3
    SYNC_INTERVAL = 0.2

    def test_failures_in_one_process_reject_calls_in_the_others(
        self, pool, redis_url, prefix, name
    ):
        start = start_gun()
        # B and C learn CLOSED first, then call from the gun on; A fails from 0.3 s later.
        pollers = [
            pool.submit(poll, redis_url, prefix, name, self.FAIL_MAX, self.SYNC_INTERVAL, start)
            for _ in range(2)
        ]
        failer = pool.submit(fail, redis_url, prefix, name, self.FAIL_MAX, start + 0.3)
        a = failer.result(timeout=RESULT_TIMEOUT)
        polled = [future.result(timeout=RESULT_TIMEOUT) for future in pollers]
        assert (a["failures"], a["state"], a["degraded"]) == (self.FAIL_MAX, "open", 0)
        for b in polled:
            assert b["degraded"] == 0
            assert b["rejected_at"] is not None, "never rejected: the failures were not shared"
            assert "(shared)" in b["message"]
            assert "is open; trial calls in" in b["message"]
            assert b["admitted"] >= 1  # admitted until A failed: not rejected for another reason
            # Rejected only once the failures were written, and within about sync_interval
            # after (a success is written, and the state learned, once per sync_interval).
            assert b["rejected_at"] > a["began"]
            assert b["rejected_at"] - a["ended"] < self.SYNC_INTERVAL + 1.5
        assert len({a["pid"], *(b["pid"] for b in polled)}) == 3

        # Processes that never failed nor called before are rejected on their first call.
        fresh = [pool.submit(first_call, redis_url, prefix, name, self.FAIL_MAX) for _ in range(2)]
        for result in (future.result(timeout=RESULT_TIMEOUT) for future in fresh):
            assert result["rejected"], result
            assert result["ran"] == 0
            assert result["state"] == "open"
            assert 50 < result["retry_after"] <= 60
            assert result["degraded"] == 0

    def test_a_fresh_process_is_admitted_while_nobody_failed(self, pool, redis_url, prefix, name):
        # The counterpart of the check above: the same first call, on a breaker nobody tripped.
        result = pool.submit(first_call, redis_url, prefix, name, self.FAIL_MAX).result(
            timeout=RESULT_TIMEOUT
        )
        assert (result["rejected"], result["ran"], result["state"]) == (False, 1, "closed")


class TestHalfOpenTrials:
    THREADS = 4

    @pytest.mark.parametrize("trials", [1, 3])
    def test_exactly_n_trial_calls_run_across_processes(
        self, pool, redis_url, redis_prefix, prefix, name, stores, trials
    ):
        import redis  # noqa: PLC0415 - the redis extra is optional

        from buttress.breaker import State  # noqa: PLC0415

        breaker, _ = make_breaker(
            redis_url, prefix, name, stores, reset_timeout=0.3, half_open_max_calls=trials
        )
        breaker.open()  # the shared state: OPEN for 0.3 s, then trial calls
        assert breaker.metrics().state is State.OPEN
        total = PROCESSES * self.THREADS
        counters = f"{{{prefix}}}:trials:{name}"
        start = start_gun(0.8)  # past the open period
        futures = [
            pool.submit(
                trial_storm, redis_url, prefix, name, trials, self.THREADS, total, counters, start
            )
            for _ in range(PROCESSES)
        ]
        results = [future.result(timeout=RESULT_TIMEOUT) for future in futures]
        assert [result["errors"] for result in results] == [[]] * PROCESSES
        assert sum(result["degraded"] for result in results) == 0
        assert len({result["pid"] for result in results}) == PROCESSES
        assert sum(result["ran"] for result in results) == trials
        assert sum(result["rejected"] for result in results) == total - trials
        messages = set().union(*(result["messages"] for result in results))
        assert messages == {"half-open, trial calls busy (shared)"}
        client: Any = redis.Redis.from_url(redis_url, socket_timeout=STORE_TIMEOUT)
        try:
            assert int(client.get(f"{counters}:ran") or 0) == trials  # counted by the callee
            assert int(client.get(f"{counters}:decided") or 0) == total
        finally:
            client.close()
        # The trials succeeded: the shared breaker closed.
        assert breaker.metrics().state is State.CLOSED


class TestCrashedTrialHolder:
    LEASE = 1.5
    SYNC_INTERVAL = 0.2

    @pytest.mark.parametrize("how", ["exit", "kill"])
    def test_a_dead_holder_blocks_trials_only_until_its_lease_lapses(
        self, redis_url, prefix, name, stores, how
    ):
        import redis  # noqa: PLC0415 - the redis extra is optional

        from buttress import CircuitOpen  # noqa: PLC0415
        from buttress.breaker import BreakerStateChanged, State  # noqa: PLC0415

        breaker, events = make_breaker(
            redis_url,
            prefix,
            name,
            stores,
            reset_timeout=0.3,
            trial_lease=self.LEASE,
            sync_interval=self.SYNC_INTERVAL,
        )
        breaker.open()
        time.sleep(0.4)  # the open period is over: the next call asks for a trial permit
        client: Any = redis.Redis.from_url(redis_url, socket_timeout=STORE_TIMEOUT)
        held_key = f"{{{prefix}}}:held:{name}"
        process = get_context("spawn").Process(
            target=hold_trial_and_die, args=(redis_url, prefix, name, self.LEASE, how)
        )
        process.start()
        try:
            deadline = time.monotonic() + 20
            while (held := client.get(held_key)) is None:
                assert process.is_alive() or process.exitcode == 17, process.exitcode
                assert time.monotonic() < deadline, "the holder never took its permit"
                time.sleep(0.01)
            if how == "kill":
                process.kill()
            process.join(timeout=10)
        finally:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
            client.close()
        assert process.exitcode == (17 if how == "exit" else -9)
        asked_at, held_at = map(float, held.split())

        calls: list[float] = []
        with pytest.raises(CircuitOpen, match=r"half-open, trial calls busy \(shared\)") as info:
            breaker.call(lambda: calls.append(time.time()))
        assert time.time() - held_at < self.LEASE, "too slow to see the permit held"
        assert info.value.retry_after is not None
        assert 0 <= info.value.retry_after <= self.SYNC_INTERVAL + 1e-6

        deadline = time.time() + self.LEASE + 5
        rejections = 1
        while not calls and time.time() < deadline:
            if isinstance(
                _outcome(lambda: breaker.call(lambda: calls.append(time.time()))), CircuitOpen
            ):
                rejections += 1
                time.sleep(0.02)
        assert calls, "the dead holder's permit never lapsed"
        # Not before the lease lapsed (Redis's clock is this machine's), but soon after.
        assert calls[0] - asked_at >= self.LEASE - 0.01
        assert calls[0] - held_at < self.LEASE + self.SYNC_INTERVAL + 1.5
        assert rejections >= 2
        # The trial succeeded: closed, for every process.
        assert breaker.state is State.CLOSED
        assert breaker.metrics().state is State.CLOSED
        changes = [event for event in events if isinstance(event, BreakerStateChanged)]
        assert [(event.old, event.new) for event in changes][-1] == (
            State.HALF_OPEN,
            State.CLOSED,
        )
        assert changes[-1].reason == "1 trial call(s) succeeded"


class TestSharedWindow:
    @pytest.mark.parametrize(("successes", "window", "expected"), [(15, 50, 32), (40, 50, 50)])
    def test_successes_of_every_process_count_in_one_window(
        self, pool, redis_url, prefix, name, successes, window, expected
    ):
        start = start_gun(0.3)
        futures = [
            pool.submit(succeed_then_flush, redis_url, prefix, name, window, successes, start)
            for _ in range(2)
        ]
        results = [future.result(timeout=RESULT_TIMEOUT) for future in futures]
        assert len({result["pid"] for result in results}) == 2
        assert sum(result["degraded"] for result in results) == 0
        # The long sync_interval kept successes unwritten until flush() wrote them.
        assert all(result["pending"] > 0 for result in results)
        assert all(result["flushed"] == 0 for result in results)
        state, calls, failures = pool.submit(read_metrics, redis_url, prefix, name, window).result(
            timeout=RESULT_TIMEOUT
        )
        assert (state, calls) == ("closed", expected)
        if expected < window:
            assert failures == 2  # one from each process
