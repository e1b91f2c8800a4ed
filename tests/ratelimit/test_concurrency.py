"""ConcurrencyLimit and Permit on the memory store: at most N in flight, leases, waiting,
cancellation, and the store fault policy (with a store that fails on demand)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from buttress import RateLimited, StorageError
from buttress.ratelimit import ConcurrencyLimit, Permit, StoreDegraded
from buttress.storage import MemoryStorage
from buttress.testing import FakeClock

from . import CountingStorage, Recorder


def make(
    limit: int = 2, clock: FakeClock | None = None, **options: Any
) -> tuple[ConcurrencyLimit, MemoryStorage, FakeClock]:
    clock = clock or FakeClock(1000.0)
    storage = MemoryStorage(clock=clock)
    return ConcurrencyLimit(limit, storage=storage, clock=clock, **options), storage, clock


class TestConstruction:
    @pytest.mark.parametrize(
        ("options", "error", "words"),
        [
            ({"limit": 0}, ValueError, "limit must be >= 1"),
            ({"limit": -2}, ValueError, "limit must be >= 1"),
            ({"limit": 1.5}, TypeError, "limit must be an int"),
            ({"limit": True}, TypeError, "limit must be an int"),
            ({"limit": 2, "lease": 0}, ValueError, "lease must be > 0"),
            ({"limit": 2, "lease": -1}, ValueError, "lease must be > 0"),
            ({"limit": 2, "lease": "30"}, TypeError, "lease must be a number"),
            ({"limit": 2, "poll": 0}, ValueError, "poll must be > 0"),
            ({"limit": 2, "storage": 42}, TypeError, "storage must be"),
            ({"limit": 2, "on_store_error": "open"}, ValueError, "on_store_error must be one of"),
            ({"limit": 2, "store_failures": 0}, ValueError, "store_failures must be >= 1"),
        ],
    )
    def test_bad_arguments(self, options, error, words):
        with pytest.raises(error, match=words):
            ConcurrencyLimit(**options)

    def test_repr_and_defaults(self):
        limit = ConcurrencyLimit(3)
        assert repr(limit) == "ConcurrencyLimit(3, name='concurrency')"
        assert (limit.limit, limit.lease, limit.poll) == (3, 30.0, 0.05)
        assert isinstance(limit.storage, MemoryStorage)

    @pytest.mark.parametrize(("key", "error"), [(42, TypeError), ("", ValueError)])
    async def test_bad_key(self, key, error):
        limit, storage, _ = make()
        with pytest.raises(error, match="key must be"):
            limit.try_acquire(key)
        with pytest.raises(error, match="key must be"):
            await limit.atry_acquire(key)
        with pytest.raises(error, match="key must be"):
            limit.in_flight(key)
        assert len(storage) == 0


class TestPermits:
    def test_at_most_limit_held(self):
        limit, _, _ = make(2)
        first, second = limit.try_acquire("k"), limit.try_acquire("k")
        assert isinstance(first, Permit)
        assert isinstance(second, Permit)
        assert first.lease_id != second.lease_id
        assert (first.key, first.degraded, first.released) == ("k", False, False)
        assert limit.try_acquire("k") is None
        assert limit.in_flight("k") == 2
        assert limit.try_acquire("other") is not None  # keys are independent
        assert first.release() is True
        assert limit.in_flight("k") == 1
        assert limit.try_acquire("k") is not None

    def test_default_key(self):
        limit, _, _ = make(1)
        permit = limit.try_acquire()
        assert permit is not None
        assert limit.in_flight() == 1
        assert limit.in_flight("default") == 1
        assert limit.try_acquire("default") is None

    def test_release_exactly_once(self):
        limit, _, _ = make(1)
        permit = limit.try_acquire("k")
        assert permit is not None
        assert permit.release() is True
        assert permit.released
        assert permit.release() is False
        held = limit.try_acquire("k")  # the second release must not free this one's slot
        assert held is not None
        assert permit.release() is False
        assert limit.in_flight("k") == 1
        assert repr(permit) == "<Permit 'k' released>"
        assert repr(held) == "<Permit 'k' held>"

    def test_with_block_releases(self):
        limit, _, _ = make(1)
        permit = limit.try_acquire("k")
        assert permit is not None
        with permit:
            assert limit.in_flight("k") == 1
        assert permit.released
        assert limit.in_flight("k") == 0
        second = limit.try_acquire("k")
        assert second is not None
        with pytest.raises(KeyError), second:
            raise KeyError("boom")  # released on the way out of an exception too
        assert limit.in_flight("k") == 0

    async def test_async_with_block_releases(self):
        limit, _, _ = make(1)
        permit = await limit.atry_acquire("k")
        assert permit is not None
        async with permit:
            assert limit.in_flight("k") == 1
        assert permit.released
        assert limit.in_flight("k") == 0
        assert await permit.arelease() is False
        assert permit.release() is False

    def test_lease_expiry_frees_a_crashed_holders_slot(self):
        limit, _, clock = make(2, lease=10)
        crashed = [limit.try_acquire("k"), limit.try_acquire("k")]
        assert limit.try_acquire("k") is None
        clock.advance(9.999)
        assert limit.in_flight("k") == 2
        assert limit.try_acquire("k") is None
        clock.advance(0.001)
        assert limit.in_flight("k") == 0
        assert limit.try_acquire("k") is not None
        assert all(permit is not None and permit.release() is False for permit in crashed)

    def test_release_after_expiry_reports_false(self):
        # Permit.release: "False if ... the lease had expired (the slot was given back by its
        # TTL)", even when nothing else touched the key since.
        limit, _, clock = make(1, lease=10)
        permit = limit.try_acquire("k")
        assert permit is not None
        clock.advance(11)
        assert permit.release() is False

    def test_renew(self):
        limit, _, clock = make(1, lease=10)
        permit = limit.try_acquire("k")
        assert permit is not None
        clock.advance(8)
        assert permit.renew() is True
        clock.advance(8)  # 16 s after taking it: alive only thanks to the renewal
        assert limit.in_flight("k") == 1
        assert limit.try_acquire("k") is None
        clock.advance(2)
        assert limit.in_flight("k") == 0
        assert permit.renew() is False  # expired: renewing does not bring it back
        assert limit.in_flight("k") == 0

    def test_renew_after_release_is_false(self):
        limit, _, _ = make(1)
        permit = limit.try_acquire("k")
        assert permit is not None
        permit.release()
        assert permit.renew() is False
        assert limit.in_flight("k") == 0

    def test_expired_lease_sets_are_swept(self):
        clock = FakeClock(1000.0)
        storage = MemoryStorage(clock=clock)
        limit = ConcurrencyLimit(1, lease=5, storage=storage, clock=clock)
        for number in range(500):
            assert limit.try_acquire(f"k{number}") is not None
        assert len(storage) == 500
        clock.advance(6)
        for _ in range(1000):
            permit = limit.try_acquire("new")
            assert permit is not None
            permit.release()
        assert len(storage) == 0


class TestWaiting:
    def test_acquire_returns_at_once_when_free(self):
        limit, _, clock = make(1)
        assert limit.acquire("k", timeout=1) is not None
        assert clock.sleeps == []

    def test_acquire_times_out_with_rate_limited(self):
        limit, _, clock = make(1, poll=0.05)
        limit.try_acquire("k")
        with pytest.raises(RateLimited) as info:
            limit.acquire("k", timeout=0.5)
        assert info.value.retry_after == 0.05
        assert info.value.name == "concurrency"
        assert "all 1 slots of 'k' are taken" in str(info.value)
        assert sum(clock.sleeps) == pytest.approx(0.5)
        assert max(clock.sleeps) <= 0.05
        assert clock.sleeps[0] == 0.001  # backs off from a millisecond to the poll interval

    def test_acquire_gets_the_slot_when_a_lease_expires(self):
        limit, _, clock = make(1, lease=1, poll=0.05)
        limit.try_acquire("k")
        permit = limit.acquire("k", timeout=5)
        assert permit is not None
        assert 1001.0 <= clock.now() <= 1001.05

    def test_acquire_zero_timeout_tries_once(self):
        limit, _, clock = make(1)
        limit.try_acquire("k")
        with pytest.raises(RateLimited):
            limit.acquire("k", timeout=0)
        assert clock.sleeps == []

    async def test_aacquire_times_out(self):
        limit, _, clock = make(1, poll=0.05)
        await limit.aacquire("k")
        with pytest.raises(RateLimited):
            await limit.aacquire("k", timeout=0.25)
        assert sum(clock.sleeps) == pytest.approx(0.25)

    async def test_aacquire_waits_for_a_release(self):
        limit = ConcurrencyLimit(1, poll=0.01)
        holder = limit.try_acquire("k")
        assert holder is not None
        waiter = asyncio.create_task(limit.aacquire("k", timeout=2))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        holder.release()
        permit = await asyncio.wait_for(waiter, 1)
        assert permit is not None
        assert limit.in_flight("k") == 1

    async def test_cancelled_while_waiting_leaks_no_slot(self):
        limit = ConcurrencyLimit(2, poll=0.01)
        holders = [limit.try_acquire("k"), limit.try_acquire("k")]
        waiters = [asyncio.create_task(limit.aacquire("k")) for _ in range(5)]
        await asyncio.sleep(0.05)
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert limit.in_flight("k") == 2
        for holder in holders:
            assert holder is not None
            holder.release()
        assert limit.in_flight("k") == 0
        assert limit.try_acquire("k") is not None
        assert limit.try_acquire("k") is not None

    async def test_cancelled_during_the_store_call_leaks_no_slot(self):
        # The store grants the lease, then the caller is cancelled before it hears the answer:
        # the slot must be given back.
        clock = FakeClock(1000.0)
        store = SlowGrant(MemoryStorage(clock=clock))
        limit = ConcurrencyLimit(1, storage=store, clock=clock)
        task = asyncio.create_task(limit.atry_acquire("k"))
        await store.granted.wait()
        assert store.inner.count_leases("k") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert limit.in_flight("k") == 0


class SlowGrant(CountingStorage):
    """Grants a lease at once, then never answers (until cancelled)."""

    def __init__(self, inner: MemoryStorage) -> None:
        super().__init__(inner)
        self.granted = asyncio.Event()

    async def aacquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        granted = self.inner.acquire_lease(key, limit, lease_id, ttl, now=now)
        self.granted.set()
        await asyncio.Event().wait()
        return granted


class TestRealConcurrency:
    def test_threads_never_exceed_the_limit(self):
        limit = ConcurrencyLimit(3, poll=0.002)
        lock = threading.Lock()
        inside = 0
        seen: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def worker() -> None:
            nonlocal inside
            barrier.wait()
            try:
                for _ in range(25):
                    with limit.acquire("shared", timeout=10):
                        with lock:
                            inside += 1
                            seen.append(inside)
                        time.sleep(0.0005)
                        with lock:
                            inside -= 1
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(seen) == 8 * 25
        assert max(seen) <= 3
        assert max(seen) == 3  # the limit was reached: the check above was not vacuous
        assert limit.in_flight("shared") == 0

    async def test_tasks_never_exceed_the_limit(self):
        limit = ConcurrencyLimit(3, poll=0.002)
        inside = 0
        seen: list[int] = []

        async def worker() -> None:
            nonlocal inside
            for _ in range(5):
                async with await limit.aacquire("shared", timeout=10):
                    inside += 1
                    seen.append(inside)
                    await asyncio.sleep(0.001)
                    inside -= 1

        await asyncio.gather(*(worker() for _ in range(20)))
        assert len(seen) == 100
        assert max(seen) == 3
        assert limit.in_flight("shared") == 0


class TestStoreFaultPolicy:
    def failing(self, policy: str, **options: Any):
        clock = FakeClock(1000.0)
        store = CountingStorage(MemoryStorage(clock=clock))
        recorder = Recorder()
        limit = ConcurrencyLimit(
            2,
            storage=store,
            clock=clock,
            on_store_error=policy,  # type: ignore[arg-type]
            store_failures=3,
            store_cooldown=5,
            listeners=[recorder],
            **options,
        )
        store.failing = True
        return limit, store, clock, recorder

    def test_local_grants_from_an_in_process_store(self):
        limit, store, _, recorder = self.failing("local")
        permits = [limit.try_acquire("k") for _ in range(3)]
        assert permits[2] is None
        granted = [p for p in permits if p is not None]
        assert len(granted) == 2
        assert all(permit.degraded for permit in granted)
        assert store.calls["acquire_lease"] == 3
        assert granted[0].release() is True  # given back to the local store
        again = limit.try_acquire("k")
        assert again is not None
        assert again.degraded
        assert len(recorder.of(StoreDegraded)) == 1

    def test_fail_open_grants_everything(self):
        limit, _, _, _ = self.failing("fail-open")
        permits = [limit.try_acquire("k") for _ in range(10)]
        assert all(permit is not None and permit.degraded for permit in permits)
        for permit in permits:
            assert permit is not None
            assert permit.release() is False  # nothing was counted anywhere

    def test_fail_closed_grants_nothing(self):
        limit, _, clock, _ = self.failing("fail-closed")
        assert all(limit.try_acquire("k") is None for _ in range(5))
        with pytest.raises(RateLimited):
            limit.acquire("k", timeout=1)
        assert clock.now() - 1000.0 == pytest.approx(1.0)

    async def test_async_local(self):
        limit, store, _, _ = self.failing("local")
        permits = [await limit.atry_acquire("k") for _ in range(3)]
        assert [p is not None and p.degraded for p in permits] == [True, True, False]
        assert store.calls["aacquire_lease"] == 3

    def test_a_permit_outlives_the_store(self):
        limit, store, _, _ = self.failing("local")
        store.failing = False
        permit = limit.try_acquire("k")
        assert permit is not None
        assert not permit.degraded
        store.failing = True
        assert permit.release() is False  # the store failed: its lease expires by its TTL

    def test_in_flight_raises_when_the_store_fails(self):
        limit, _, _, _ = self.failing("local")
        with pytest.raises(StorageError):
            limit.in_flight("k")
