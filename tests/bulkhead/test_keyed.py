"""KeyedBulkhead: one bulkhead per key, made on first use, bounded by max_keys."""

from __future__ import annotations

import asyncio

import pytest

from buttress import BulkheadFull
from buttress.bulkhead import BulkheadRejected, KeyedBulkhead, _keyed
from buttress.bulkhead._semaphore import _ThreadWaiter


class TestKeyedBulkhead:
    @pytest.mark.parametrize(
        ("options", "error", "words"),
        [
            ({"max_concurrent": 0}, ValueError, "max_concurrent must be >= 1"),
            ({"max_concurrent": 1, "max_keys": 0}, ValueError, "max_keys must be >= 1"),
            ({"max_concurrent": 1, "limits": [("a", 1)]}, TypeError, "limits must be a mapping"),
            ({"max_concurrent": 1, "limits": {"a": 0}}, ValueError, r"limits\['a'\] must be >= 1"),
            ({"max_concurrent": 1, "max_wait": -1}, ValueError, "max_wait must be >= 0"),
        ],
    )
    def test_bad_arguments(self, options, error, words):
        with pytest.raises(error, match=words):
            KeyedBulkhead(**options)

    @pytest.mark.parametrize(("key", "error"), [(3, TypeError), ("", ValueError)])
    def test_bad_key(self, key, error):
        with pytest.raises(error, match="key must be"):
            KeyedBulkhead(1).try_acquire(key)

    def test_keys_are_isolated(self):
        keyed = KeyedBulkhead(1, limits={"big": 2}, name="tenants")
        a = keyed.try_acquire("a")
        assert a is not None
        assert keyed.try_acquire("a") is None
        assert keyed.try_acquire("b") is not None  # a busy key takes nothing from another
        big = [keyed.acquire("big"), keyed.acquire("big")]
        with pytest.raises(BulkheadFull) as info:
            keyed.acquire("big")
        assert "tenants 'big': all 2 slots are in use" in str(info.value)
        stats = keyed.stats()
        assert (stats["a"].in_use, stats["big"].in_use, stats["big"].limit) == (1, 2, 2)
        for permit in big:
            permit.release()
        a.release()
        assert keyed.stats()["a"].in_use == 0

    def test_idle_bulkheads_make_room_least_recently_used_first(self):
        keyed = KeyedBulkhead(1, max_keys=2)
        keyed.call("a", lambda: None)
        keyed.call("b", lambda: None)
        keyed.call("a", lambda: None)  # "b" is now the least recently used
        keyed.call("c", lambda: None)
        assert keyed.keys() == ["a", "c"]
        assert len(keyed) == 2

    def test_busy_bulkheads_are_never_dropped(self):
        events: list[object] = []
        keyed = KeyedBulkhead(1, max_keys=2, listeners=[events.append])
        held = [keyed.acquire("a"), keyed.acquire("b")]
        with pytest.raises(BulkheadFull) as info:
            keyed.try_acquire("c")
        assert info.value.reason == "too-many-keys"
        assert isinstance(events[-1], BulkheadRejected)
        assert events[-1].key == "c"
        held[0].release()
        assert keyed.try_acquire("c") is not None  # "a" was idle: dropped for "c"
        assert keyed.keys() == ["b", "c"]
        held[1].release()

    def test_events_name_the_key(self):
        events: list[object] = []
        keyed = KeyedBulkhead(1, listeners=[events.append], name="tenants")
        keyed.acquire("t1")
        assert keyed.try_acquire("t1") is None
        assert events == [BulkheadRejected("tenants", "full", 1, 1, 0, "t1")]

    async def test_async_waiting_per_key(self):
        keyed = KeyedBulkhead(1, max_waiting=1)
        held = await keyed.aacquire("a")

        async def work() -> str:
            return "done"

        waiter = asyncio.create_task(keyed.acall("a", work))
        await asyncio.sleep(0.01)
        assert keyed.stats()["a"].waiting == 1
        with pytest.raises(BulkheadFull):
            await keyed.aacquire("a")  # the queue of one is full
        held.release()
        assert await waiter == "done"
        assert keyed.stats()["a"].in_use == 0

    def test_sync_wait_times_out(self):
        keyed = KeyedBulkhead(1, max_waiting=1, max_wait=0.02)
        keyed.acquire("a")
        with pytest.raises(BulkheadFull) as info:
            keyed.acquire("a")
        assert info.value.reason == "wait-timeout"
        assert keyed.stats()["a"].waiting == 0

    def test_a_slot_freed_while_a_caller_queues_reaches_it(self, monkeypatch):
        # Given back without a lock after the caller found no free slot, before it queued.
        keyed = KeyedBulkhead(1, max_waiting=1)
        held = keyed.acquire("a")

        class Racing(_ThreadWaiter):
            __slots__ = ()

            def __init__(self) -> None:
                super().__init__()
                assert held.release()

        monkeypatch.setattr(_keyed, "_ThreadWaiter", Racing)
        with keyed.acquire("a", timeout=2):
            assert keyed.stats()["a"].in_use == 1
        assert (keyed.stats()["a"].in_use, keyed.stats()["a"].waiting) == (0, 0)
