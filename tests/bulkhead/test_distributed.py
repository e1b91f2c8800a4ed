"""DistributedBulkhead: the bulkhead face over ConcurrencyLimit; several real processes on Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pytest

from buttress import BulkheadFull
from buttress.bulkhead import BulkheadRejected, DistributedBulkhead
from buttress.ratelimit import ConcurrencyLimit, Permit
from buttress.storage import MemoryStorage
from buttress.timeout import deadline

PROCESSES = 4
THREADS = 4
LIMIT = 3
CALLS = 15


def make(limit: int = 2, **options: Any) -> DistributedBulkhead:
    return DistributedBulkhead(
        ConcurrencyLimit(limit, storage=MemoryStorage(), poll=0.005, name="shared"), **options
    )


class TestOnMemory:
    def test_bad_arguments(self):
        with pytest.raises(TypeError, match="limit must be a ConcurrencyLimit"):
            DistributedBulkhead(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_waiting must be >= 0"):
            make(max_waiting=-1)
        with pytest.raises(TypeError, match="key must be a non-empty str"):
            make(key="")

    def test_slots_refusals_and_stats(self):
        events: list[object] = []
        b = make(2, key="db", listeners=[events.append])
        assert (b.name, b.max_concurrent) == ("shared", 2)
        first, second = b.acquire(), b.try_acquire()
        assert isinstance(first, Permit)
        assert second is not None
        assert b.try_acquire() is None
        with pytest.raises(BulkheadFull) as info:
            b.acquire()
        assert (info.value.reason, info.value.limit, info.value.name) == ("full", 2, "shared")
        stats = b.stats()
        assert (stats.in_use, stats.available, stats.rejected) == (2, 0, 2)
        assert events[0] == BulkheadRejected("shared", "full", 2, 2, 0, "db")
        first.release()
        second.release()
        assert b.stats().in_use == 0

    def test_waits_for_a_release(self):
        b = make(1, max_waiting=1, max_wait=5)
        held = b.acquire()
        threading.Timer(0.02, held.release).start()
        with b.acquire():
            assert b.stats().in_use == 1
        assert b.stats().in_use == 0

    def test_wait_times_out_and_deadline(self):
        b = make(1, max_waiting=2, max_wait=0.03)
        b.acquire()
        with pytest.raises(BulkheadFull) as info:
            b.acquire()
        assert info.value.reason == "wait-timeout"
        with deadline(0.02), pytest.raises(BulkheadFull) as info:
            b.acquire(timeout=10)
        assert info.value.reason == "deadline"
        assert b.stats().waiting == 0

    async def test_async_decorator_and_cancellation(self):
        b = make(1, max_waiting=1)

        @b
        async def work() -> int:
            assert b.stats().in_use == 1
            return 7

        assert await work() == 7
        held = await b.aacquire()
        waiter = asyncio.create_task(b.aacquire())
        await asyncio.sleep(0.02)
        assert b.stats().waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert b.stats().waiting == 0
        await held.arelease()
        assert b.stats().in_use == 0

    def test_sync_call(self):
        b = make(1)
        assert b.call(lambda x: x + 1, 1) == 2
        assert b.stats().in_use == 0


def hold_slots(url: str, prefix: str, key: str, counter: str, start: float) -> dict[str, Any]:
    """In a worker process: THREADS threads each make CALLS calls through the bulkhead.

    Each holder counts itself in and out of a Redis counter and checks what it sees there and
    what the store reports: neither may ever exceed LIMIT.
    """
    import redis  # noqa: PLC0415 - runs in the spawned process

    from buttress.bulkhead import DistributedBulkhead  # noqa: PLC0415
    from buttress.ratelimit import ConcurrencyLimit  # noqa: PLC0415
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415

    store = RedisStorage.from_url(url, prefix=prefix, timeout=5.0)
    limit = ConcurrencyLimit(
        LIMIT, storage=store, lease=30, poll=0.005, on_store_error="fail-closed"
    )
    bulkhead = DistributedBulkhead(limit, key=key, max_waiting=THREADS, max_wait=30)
    client: Any = redis.Redis.from_url(url, socket_timeout=5.0)
    lock = threading.Lock()
    result: dict[str, Any] = {"calls": 0, "peak": 0, "store_peak": 0, "errors": []}

    def thread() -> None:
        delay = start - time.time()
        if delay > 0:
            time.sleep(delay)
        for _ in range(CALLS):
            try:
                with bulkhead.acquire():
                    inside = client.incr(counter)
                    held = limit.in_flight(key)
                    time.sleep(0.002)
                    client.decr(counter)
                with lock:
                    result["calls"] += 1
                    result["peak"] = max(result["peak"], inside)
                    result["store_peak"] = max(result["store_peak"], held)
            except Exception as error:  # noqa: PERF203 - recorded; the other calls go on
                with lock:
                    result["errors"].append(repr(error))

    threads = [threading.Thread(target=thread) for _ in range(THREADS)]
    for worker in threads:
        worker.start()
    for worker in threads:
        worker.join()
    client.close()
    store.close()
    return result


class TestAcrossProcesses:
    def test_never_more_than_the_limit_in_flight(self, redis_url, redis_prefix):
        key = f"bh-{uuid.uuid4().hex[:8]}"
        counter = f"{{{redis_prefix}}}:{key}:inside"
        start = time.time() + 2.0  # all processes started and connected by then
        with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as executor:
            futures = [
                executor.submit(hold_slots, redis_url, redis_prefix, key, counter, start)
                for _ in range(PROCESSES)
            ]
            results = [future.result(timeout=120) for future in futures]
        assert [r["errors"] for r in results] == [[]] * PROCESSES
        assert sum(r["calls"] for r in results) == PROCESSES * THREADS * CALLS
        assert max(r["peak"] for r in results) <= LIMIT
        assert max(r["store_peak"] for r in results) <= LIMIT
        assert max(r["peak"] for r in results) >= 2  # the processes did overlap
        import redis  # noqa: PLC0415

        client: Any = redis.Redis.from_url(redis_url)
        try:
            assert int(client.get(counter)) == 0
        finally:
            client.close()
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415

        store = RedisStorage.from_url(redis_url, prefix=redis_prefix)
        try:
            assert store.count_leases(key) == 0  # every slot came back
        finally:
            store.close()
