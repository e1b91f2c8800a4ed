"""Store faults on a real Redis: a private ``redis-server`` per test, stopped, frozen and started
again mid-test, to check every ``on_store_error`` policy, the guard and the recovery.

Each test starts its own server on a free loopback port (never the shared one) and kills it at
teardown. The limiters use a fake clock for the guard's cooldown (so no test waits for it) while
Redis decides on its own clock; wall time is measured only to prove that nothing hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from buttress import StorageError
from buttress.ratelimit import (
    ConcurrencyLimit,
    Limiter,
    RateLimitDecided,
    StoreDegraded,
    StoreRecovered,
)
from buttress.testing import FakeClock

from .._redis_server import PrivateRedis
from . import Recorder

redis = pytest.importorskip("redis")

T = TypeVar("T")

TIMEOUT = 0.2  # the store's timeout for connecting and for each command
FAILURES = 3  # store_failures of every limiter here
COOLDOWN = 5.0  # store_cooldown, on the fake clock
HIT_BOUND = 1.0  # the most wall time one decision may take, whatever the store does


def make_store(server: PrivateRedis, stores: list[Any]) -> Any:
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - needs the redis extra

    store = RedisStorage.from_url(server.url, prefix="faults", timeout=TIMEOUT)
    stores.append(store)
    return store


def timed(call: Callable[[], T]) -> tuple[T, float]:
    began = time.monotonic()
    result = call()
    return result, time.monotonic() - began


async def atimed(call: Callable[[], Any]) -> tuple[Any, float]:
    began = time.monotonic()
    result = await call()
    return result, time.monotonic() - began


def limiter_for(
    server: PrivateRedis,
    stores: list[Any],
    policy: str,
    limits: str = "5/minute",
    **options: Any,
):
    clock, recorder = FakeClock(0.0), Recorder()
    store = make_store(server, stores)
    limiter = Limiter(
        limits,
        storage=store,
        on_store_error=policy,  # type: ignore[arg-type]
        store_failures=FAILURES,
        store_cooldown=COOLDOWN,
        listeners=[recorder],
        clock=clock,
        **options,
    )
    return limiter, clock, recorder


class TestLimiterPolicies:
    def test_local_decides_in_process_and_limits_still_hold(self, server, stores):
        limiter, _, recorder = limiter_for(server, stores, "local")
        assert [limiter.hit("k").degraded for _ in range(2)] == [False, False]
        server.stop()
        results = [timed(lambda: limiter.hit("k")) for _ in range(8)]
        decisions = [decision for decision, _ in results]
        assert all(decision.degraded for decision in decisions)
        # The in-process store starts empty: 5 more are admitted in this process, not 8.
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
        assert decisions[-1].retry_after is not None
        assert decisions[-1].retry_after > 0
        assert max(elapsed for _, elapsed in results) < HIT_BOUND
        [degraded] = recorder.of(StoreDegraded)
        assert degraded.mode == "local"
        assert isinstance(degraded.error, StorageError)
        assert f"Redis decide failed on redis://127.0.0.1:{server.port}/0" in str(degraded.error)

    def test_fail_open_admits(self, server, stores):
        limiter, _, recorder = limiter_for(server, stores, "fail-open", limits="1/minute")
        assert limiter.hit("k").allowed
        server.stop()
        results = [timed(lambda: limiter.hit("k")) for _ in range(10)]
        assert all(d.allowed and d.degraded for d, _ in results)
        assert max(elapsed for _, elapsed in results) < HIT_BOUND
        assert len(recorder.of(StoreDegraded)) == 1

    def test_fail_closed_rejects_with_retry_after(self, server, stores):
        limiter, clock, recorder = limiter_for(server, stores, "fail-closed")
        assert limiter.hit("k").allowed
        server.stop()
        results = [timed(lambda: limiter.hit("k")) for _ in range(10)]
        assert all(not d.allowed and d.degraded for d, _ in results)
        assert all(d.retry_after is not None and d.retry_after > 0 for d, _ in results)
        assert results[-1][0].retry_after == COOLDOWN  # the guard is open: tried again then
        assert max(elapsed for _, elapsed in results) < HIT_BOUND
        clock.advance(2)
        assert limiter.hit("k").retry_after == COOLDOWN - 2
        assert len(recorder.of(StoreDegraded)) == 1

    def test_the_default_policy_never_raises(self, server, stores):
        limiter = Limiter("2/minute", storage=make_store(server, stores))
        server.stop()
        for _ in range(5):
            assert limiter.hit("k").degraded
            assert limiter.peek("k").degraded

    def test_a_limiter_made_from_a_url(self, server):
        # The URL form (default prefix, default timeout, rejection cache on): fine on a private
        # server, whose keys are all ours.
        limiter = Limiter("2/minute", storage=server.url, algorithm="gcra")
        try:
            assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
            assert not limiter.peek("k").allowed
            server.stop()
            assert limiter.hit("other").degraded
        finally:
            limiter.storage.close()


class TestGuard:
    def test_a_frozen_store_costs_at_most_store_failures_timeouts(self, server, stores):
        limiter, _, recorder = limiter_for(server, stores, "fail-open")
        assert limiter.hit("k").allowed
        server.freeze()  # connections hang: only the store's timeout ends a call
        results = [timed(lambda: limiter.hit("k")) for _ in range(20)]
        elapsed = [seconds for _, seconds in results]
        assert all(d.degraded for d, _ in results)
        assert max(elapsed) < HIT_BOUND  # never a hang
        assert sum(elapsed[:FAILURES]) >= FAILURES * TIMEOUT * 0.9  # these waited for Redis
        assert sum(elapsed[FAILURES:]) < 0.1  # the rest did not: the guard left the store alone
        assert sum(elapsed) < 20 * TIMEOUT / 2
        assert len(recorder.of(StoreDegraded)) == 1

    def test_recovers_when_the_server_is_back(self, server, stores):
        limiter, clock, recorder = limiter_for(server, stores, "local", limits="3/minute")
        assert not limiter.hit("k").degraded
        server.stop()
        for _ in range(5):
            assert limiter.hit("k").degraded
        server.start()  # the same port; an empty server: no data, no scripts loaded
        clock.advance(COOLDOWN)
        decisions = [limiter.hit("k") for _ in range(4)]
        assert not any(d.degraded for d in decisions)
        # Redis decides again, from scratch: the new server has no record of "k".
        assert [(d.allowed, d.remaining) for d in decisions] == [
            (True, 2),
            (True, 1),
            (True, 0),
            (False, 0),
        ]
        [recovered] = recorder.of(StoreRecovered)
        assert recovered.down_for == COOLDOWN
        assert len(recorder.of(StoreDegraded)) == 1

    def test_first_call_after_a_restart_is_answered_by_redis(self, server, stores):
        # A restart the limiter never saw fail: the pooled connection is dead and the server has
        # no scripts. The next decision must still come from Redis.
        limiter, _, recorder = limiter_for(server, stores, "fail-closed")
        assert limiter.hit("k").allowed
        server.stop()
        server.start()
        decision = limiter.hit("k")
        assert (decision.allowed, decision.degraded) == (True, False)
        assert recorder.of(StoreDegraded) == []

    def test_script_flush_is_survived(self, server, stores):
        limiter, _, recorder = limiter_for(server, stores, "fail-closed", limits="2/minute")
        assert limiter.hit("k").allowed
        client = server.client()
        client.script_flush()
        client.close()
        decision = limiter.hit("k")  # NOSCRIPT: the script is loaded again
        assert (decision.allowed, decision.degraded, decision.remaining) == (True, False, 0)
        assert recorder.of(StoreDegraded) == []

    def test_rejection_cache_answers_while_redis_is_down(self, server, stores):
        limiter, _, recorder = limiter_for(server, stores, "fail-open", limits="1/minute")
        assert limiter.hit("k").allowed
        assert not limiter.hit("k").allowed  # remembered locally until its retry_after
        server.stop()
        decision = limiter.hit("k")
        assert (decision.allowed, decision.degraded) == (False, False)
        assert recorder.of(RateLimitDecided)[-1].cached
        assert recorder.of(StoreDegraded) == []


class TestAsyncFaults:
    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            # The in-process store starts empty: 5 admitted in this process, then rejections.
            ("local", [True] * 5 + [False]),
            ("fail-open", [True] * 6),
            ("fail-closed", [False] * 6),
        ],
    )
    async def test_policies(self, server, stores, policy, expected):
        limiter, _, recorder = limiter_for(server, stores, policy, limits="5/minute")
        first = await limiter.ahit("k")
        assert (first.allowed, first.degraded) == (True, False)
        server.stop()
        results = [await atimed(lambda: limiter.ahit("k")) for _ in range(6)]
        assert [d.allowed for d, _ in results] == expected
        assert all(d.degraded for d, _ in results)
        assert max(elapsed for _, elapsed in results) < HIT_BOUND
        assert len(recorder.of(StoreDegraded)) == 1

    async def test_a_frozen_store_does_not_hang_nor_block_the_loop(self, server, stores):
        limiter, _, _ = limiter_for(server, stores, "fail-open")
        assert (await limiter.ahit("k")).allowed
        server.freeze()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        results = [await atimed(lambda: limiter.ahit("k")) for _ in range(10)]
        task.cancel()
        elapsed = [seconds for _, seconds in results]
        assert ticks >= 20  # the loop ran on while the calls waited for Redis
        assert all(d.degraded and d.allowed for d, _ in results)
        assert max(elapsed) < HIT_BOUND
        assert sum(elapsed[FAILURES:]) < 0.1
        server.thaw()

    async def test_recovers_and_reloads_scripts(self, server, stores):
        limiter, clock, recorder = limiter_for(server, stores, "local", limits="3/minute")
        assert not (await limiter.ahit("k")).degraded
        server.stop()
        for _ in range(4):
            assert (await limiter.ahit("k")).degraded
        server.start()
        clock.advance(COOLDOWN)
        decisions = [await limiter.ahit("k") for _ in range(4)]
        assert [(d.allowed, d.degraded) for d in decisions] == [(True, False)] * 3 + [
            (False, False)
        ]
        assert len(recorder.of(StoreRecovered)) == 1

    async def test_script_flush_is_survived(self, server, stores):
        limiter, _, recorder = limiter_for(server, stores, "fail-closed", limits="2/minute")
        assert (await limiter.ahit("k")).allowed
        client = server.client()
        client.script_flush()
        client.close()
        decision = await limiter.ahit("k")
        assert (decision.allowed, decision.degraded, decision.remaining) == (True, False, 0)
        assert recorder.of(StoreDegraded) == []


class TestConcurrencyLimitFaults:
    def limit_for(self, server: PrivateRedis, stores: list[Any], policy: str) -> ConcurrencyLimit:
        store = make_store(server, stores)
        return ConcurrencyLimit(
            2,
            storage=store,
            lease=30,
            poll=0.01,
            on_store_error=policy,  # type: ignore[arg-type]
            store_failures=FAILURES,
            store_cooldown=COOLDOWN,
            clock=FakeClock(0.0),
        )

    def test_local_grants_from_an_in_process_store(self, server, stores):
        limit = self.limit_for(server, stores, "local")
        held = limit.try_acquire("k")
        assert held is not None
        assert not held.degraded
        server.stop()
        results = [timed(lambda: limit.try_acquire("k")) for _ in range(3)]
        permits = [permit for permit, _ in results]
        assert [permit is not None for permit in permits] == [True, True, False]
        assert all(permit is None or permit.degraded for permit in permits)
        assert max(elapsed for _, elapsed in results) < HIT_BOUND
        assert held.release() is False  # Redis is down: the lease will expire by its TTL

    def test_fail_open_grants(self, server, stores):
        limit = self.limit_for(server, stores, "fail-open")
        server.stop()
        permits = [limit.try_acquire("k") for _ in range(5)]
        assert all(permit is not None and permit.degraded for permit in permits)

    def test_fail_closed_refuses_without_waiting_long(self, server, stores):
        limit = self.limit_for(server, stores, "fail-closed")
        server.stop()
        assert limit.try_acquire("k") is None
        began = time.monotonic()
        with pytest.raises(Exception, match="slots of 'k' are taken"):
            limit.acquire("k", timeout=0.5)  # fake clock: polls without sleeping
        assert time.monotonic() - began < HIT_BOUND

    async def test_async_local(self, server, stores):
        limit = self.limit_for(server, stores, "local")
        server.stop()
        permits = [await limit.atry_acquire("k") for _ in range(3)]
        assert [permit is not None and permit.degraded for permit in permits] == [
            True,
            True,
            False,
        ]
