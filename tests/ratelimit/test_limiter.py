"""The Limiter front on the memory store: decisions, bad input, waiting, threads and tasks, the
rejection cache, events, the store fault policy (with a failing store) and bounded memory."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress import ConfigurationError, RateLimited, StorageError, add_listener
from buttress.ratelimit import (
    ALGORITHMS,
    Decision,
    Limiter,
    Rate,
    RateLimitDecided,
    StoreDegraded,
    StoreRecovered,
)
from buttress.storage import MemoryStorage
from buttress.testing import FakeClock

from . import CountingStorage, Recorder


def make(
    limits: Any = "3/minute", clock: FakeClock | None = None, **options: Any
) -> tuple[Limiter, MemoryStorage, FakeClock]:
    clock = clock or FakeClock(1000.0)
    storage = options.pop("storage", None) or MemoryStorage(clock=clock)
    limiter = Limiter(limits, storage=storage, clock=clock, **options)
    return limiter, storage, clock


class CompetingClock(FakeClock):
    """A fake clock that lets a competitor act while the caller sleeps."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__(start)
        self.competitor: Callable[[], object] = lambda: None

    def sleep(self, seconds: float | timedelta) -> None:
        super().sleep(seconds)
        self.competitor()


class CountingMemory(MemoryStorage):
    """A memory store counting its decisions (still a MemoryStorage, unlike CountingStorage)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.decisions = 0

    def decide(self, *args: Any, **kwargs: Any) -> Decision:
        self.decisions += 1
        return super().decide(*args, **kwargs)

    def single(self, algorithm: str, rate: Rate) -> Callable[[str, int], Decision]:
        inner = super().single(algorithm, rate)

        def counted(key: str, cost: int) -> Decision:
            self.decisions += 1
            return inner(key, cost)

        return counted


class TestConstruction:
    def test_limit_forms(self):
        clock = FakeClock()
        assert Limiter("10/second; 1000/hour", clock=clock).rates == (
            Rate(10, per=1),
            Rate(1000, per=3600),
        )
        assert Limiter(Rate(5, per=2), clock=clock).rates == (Rate(5, per=2),)
        assert Limiter([Rate(1, per=1), Rate(2, per=60)], clock=clock).rates == (
            Rate(1, per=1),
            Rate(2, per=60),
        )

    def test_defaults_and_repr(self):
        limiter = Limiter("10/minute")
        assert limiter.algorithm == "fixed-window"
        assert limiter.on_store_error == "local"
        assert isinstance(limiter.storage, MemoryStorage)
        assert repr(limiter) == "Limiter('10/minute', algorithm='fixed-window', name='limiter')"

    def test_storage_url(self):
        assert isinstance(Limiter("1/second", storage="memory://").storage, MemoryStorage)
        with pytest.raises(ConfigurationError, match="unsupported storage URL"):
            Limiter("1/second", storage="ftp://example.com")

    def test_the_given_store_is_used(self):
        limiter, storage, _ = make()
        assert limiter.storage is storage

    @pytest.mark.parametrize("algorithm", ["leaky-bucket", "", "GCRA", None, 1])
    def test_unknown_algorithm(self, algorithm):
        with pytest.raises(ValueError, match="algorithm must be one of fixed-window"):
            Limiter("1/second", algorithm=algorithm)

    @pytest.mark.parametrize("policy", ["open", "fail_open", "", None, True])
    def test_bad_on_store_error(self, policy):
        with pytest.raises(ValueError, match="on_store_error must be one of local, fail-open"):
            Limiter("1/second", on_store_error=policy)

    @pytest.mark.parametrize("storage", [None, 42, object(), b"memory://", MemoryStorage])
    def test_bad_storage(self, storage):
        # The class itself (not an instance) has every method of the protocol as an attribute,
        # so a runtime isinstance() check alone accepts it.
        with pytest.raises(TypeError, match="storage must be"):
            Limiter("1/second", storage=storage)

    @pytest.mark.parametrize(
        ("limits", "error"),
        [
            ("0/second", ConfigurationError),
            ("10/fortnight", ConfigurationError),
            ("", ConfigurationError),
            (10, TypeError),
            (None, TypeError),
            ([], TypeError),
        ],
    )
    def test_bad_limits(self, limits, error):
        with pytest.raises(error):
            Limiter(limits)

    @pytest.mark.parametrize(
        ("options", "error", "words"),
        [
            ({"name": ""}, TypeError, "name must be a non-empty str"),
            ({"name": 3}, TypeError, "name must be a non-empty str"),
            ({"store_failures": 0}, ValueError, "store_failures must be >= 1"),
            ({"store_failures": 1.5}, TypeError, "store_failures must be an int"),
            ({"store_cooldown": -1}, ValueError, "store_cooldown must be >= 0"),
            ({"store_cooldown": "5"}, TypeError, "store_cooldown must be a number"),
            ({"rejection_cache": "yes"}, TypeError, "rejection_cache must be True, False"),
            ({"listeners": print}, TypeError, "listeners must be an iterable"),
            ({"listeners": [1]}, TypeError, "listeners must contain callables"),
            ({"clock": object()}, TypeError, "clock must provide now()"),
        ],
    )
    def test_bad_options(self, options, error, words):
        with pytest.raises(error, match=words):
            Limiter("1/second", **options)


class TestHit:
    def test_decision_fields(self):
        limiter, _, _ = make("3/minute")
        decision = limiter.hit("user:1")
        assert decision == Decision(
            allowed=True,
            limit=3,
            remaining=2,
            reset_after=60.0,
            retry_after=None,
            rate=Rate(3, per=60),
            degraded=False,
        )
        assert decision
        limiter.hit("user:1", cost=2)
        rejected = limiter.hit("user:1")
        assert not rejected
        assert (rejected.remaining, rejected.retry_after, rejected.reset_after) == (0, 60.0, 60.0)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_every_algorithm_by_name(self, algorithm):
        limiter, _, clock = make("5/minute", algorithm=algorithm)
        assert limiter.algorithm == algorithm
        remaining = [limiter.hit("k").remaining for _ in range(5)]
        assert remaining == [4, 3, 2, 1, 0]
        rejected = limiter.hit("k")
        assert not rejected.allowed
        assert rejected.retry_after is not None
        assert 0 < rejected.retry_after <= 120
        assert limiter.hit("other").allowed  # keys are independent
        clock.advance(rejected.retry_after + 1e-9)
        assert limiter.hit("k").allowed

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_peek_counts_nothing(self, algorithm):
        limiter, storage, _ = make("2/minute", algorithm=algorithm)
        for _ in range(10):
            peeked = limiter.peek("k")
            assert (peeked.allowed, peeked.remaining) == (True, 1)
        assert len(storage) == 0
        assert limiter.hit("k").allowed
        assert limiter.peek("k", cost=2).allowed is False
        assert limiter.hit("k").allowed
        assert not limiter.peek("k").allowed

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_reset(self, algorithm):
        limiter, _, _ = make("2/minute", algorithm=algorithm)
        limiter.hit("k", cost=2)
        limiter.hit("other", cost=2)
        assert not limiter.hit("k").allowed
        limiter.reset("k")
        assert limiter.hit("k").remaining == 1
        assert not limiter.hit("other").allowed  # only that key

    def test_weighted_cost_and_several_limits(self):
        limiter, _, clock = make("5/second; 8/minute")
        assert limiter.hit("k", cost=4).remaining == 1
        rejected = limiter.hit("k", cost=2)
        assert (rejected.allowed, rejected.rate, rejected.retry_after) == (
            False,
            Rate(5, per=1),
            1.0,
        )
        clock.advance(1)
        allowed = limiter.hit("k", cost=3)
        assert (allowed.allowed, allowed.rate, allowed.remaining) == (True, Rate(8, per=60), 1)
        blocked = limiter.hit("k", cost=2)
        assert (blocked.allowed, blocked.rate, blocked.retry_after) == (
            False,
            Rate(8, per=60),
            59.0,
        )
        assert limiter.hit("k", cost=1).allowed  # the rejected cost of 2 took nothing

    async def test_async_forms(self):
        limiter, storage, _ = make("2/minute")
        assert (await limiter.ahit("k")).remaining == 1
        assert (await limiter.apeek("k")).remaining == 0
        assert (await limiter.ahit("k")).allowed
        assert not (await limiter.ahit("k")).allowed
        await limiter.areset("k")
        assert (await limiter.apeek("k")).remaining == 1
        assert len(storage) == 0


SYNC_CALLS: dict[str, Callable[..., Any]] = {
    "hit": lambda limiter, key, cost: limiter.hit(key, cost),
    "peek": lambda limiter, key, cost: limiter.peek(key, cost),
    "acquire": lambda limiter, key, cost: limiter.acquire(key, cost, timeout=1),
}
ASYNC_CALLS: dict[str, Callable[..., Any]] = {
    "ahit": lambda limiter, key, cost: limiter.ahit(key, cost),
    "apeek": lambda limiter, key, cost: limiter.apeek(key, cost),
    "aacquire": lambda limiter, key, cost: limiter.aacquire(key, cost, timeout=1),
}
BAD_INPUT: list[tuple[Any, Any, type[Exception], str]] = [
    (42, 1, TypeError, "key must be a str"),
    (None, 1, TypeError, "key must be a str"),
    (b"k", 1, TypeError, "key must be a str"),
    (("k",), 1, TypeError, "key must be a str"),
    ("", 1, ValueError, "key must be a non-empty str of at most 1024"),
    ("x" * 1025, 1, ValueError, "key must be a non-empty str of at most 1024"),
    ("k", 0, ValueError, "cost must be between 1 and the smallest limit"),
    ("k", -3, ValueError, "cost must be between 1 and the smallest limit"),
    ("k", 6, ValueError, r"cost must be between 1 and the smallest limit \(5\), got 6"),
    ("k", True, TypeError, "cost must be an int"),
    ("k", 1.0, TypeError, "cost must be an int"),
    ("k", "1", TypeError, "cost must be an int"),
    ("k", None, TypeError, "cost must be an int"),
]


class TestBadInput:
    @pytest.mark.parametrize("call", SYNC_CALLS)
    @pytest.mark.parametrize(("key", "cost", "error", "words"), BAD_INPUT)
    def test_rejected_and_nothing_written(self, call, key, cost, error, words):
        limiter, storage, clock = make("5/second; 100/hour")
        with pytest.raises(error, match=words):
            SYNC_CALLS[call](limiter, key, cost)
        assert len(storage) == 0
        assert clock.sleeps == []

    @pytest.mark.parametrize("call", ASYNC_CALLS)
    @pytest.mark.parametrize(("key", "cost", "error", "words"), BAD_INPUT)
    async def test_async_rejected_and_nothing_written(self, call, key, cost, error, words):
        limiter, storage, clock = make("5/second; 100/hour")
        with pytest.raises(error, match=words):
            await ASYNC_CALLS[call](limiter, key, cost)
        assert len(storage) == 0
        assert clock.sleeps == []

    def test_longest_key_is_accepted(self):
        limiter, storage, _ = make()
        assert limiter.hit("x" * 1024).allowed
        assert len(storage) == 1

    def test_cost_equal_to_the_smallest_limit_is_accepted(self):
        limiter, _, _ = make("5/second; 100/hour")
        assert limiter.hit("k", cost=5).remaining == 0

    async def test_reset_checks_the_key(self):
        limiter, _, _ = make()
        with pytest.raises(TypeError, match="key must be a str"):
            limiter.reset(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key must be a non-empty str"):
            await limiter.areset("")

    @pytest.mark.parametrize(
        ("timeout", "error"), [(-1, ValueError), ("1", TypeError), (float("nan"), ValueError)]
    )
    def test_bad_timeout(self, timeout, error):
        limiter, _, _ = make()
        with pytest.raises(error, match="timeout"):
            limiter.acquire("k", timeout=timeout)


class TestAcquire:
    def test_sleeps_until_admitted(self):
        limiter, _, clock = make("1/second")
        first = limiter.acquire("k")
        assert first.allowed
        assert clock.sleeps == []
        second = limiter.acquire("k", timeout=5)
        assert second.allowed
        assert clock.sleeps == [1.0]
        assert clock.now() == 1001.0

    def test_a_wait_past_the_timeout_is_not_started(self):
        limiter, _, clock = make("1/second")
        limiter.hit("k")
        with pytest.raises(RateLimited) as info:
            limiter.acquire("k", timeout=0.5)
        assert info.value.retry_after == 1.0
        assert info.value.name == "limiter"
        assert "would pass the timeout of 0.5 s" in str(info.value)
        assert clock.sleeps == []

    def test_a_wait_ending_exactly_at_the_timeout_is_started(self):
        limiter, _, clock = make("1/second")
        limiter.hit("k")
        assert limiter.acquire("k", timeout=timedelta(seconds=1)).allowed
        assert clock.sleeps == [1.0]

    def test_time_already_waited_counts_against_the_timeout(self):
        clock = CompetingClock(1000.0)
        limiter, _, _ = make("1/second", clock=clock)
        limiter.hit("k")
        # Someone else takes the slot freed while we slept: the second wait of 1 s would end
        # 2 s after we began, past the timeout.
        clock.competitor = lambda: limiter.hit("k")
        with pytest.raises(RateLimited) as info:
            limiter.acquire("k", timeout=1.5)
        assert clock.sleeps == [1.0]
        assert info.value.retry_after == 1.0

    def test_weighted_wait_on_a_token_bucket(self):
        limiter, _, clock = make("4/second", algorithm="token-bucket")
        limiter.hit("k", cost=4)
        limiter.acquire("k", cost=3)
        assert clock.sleeps == [0.75]

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_every_algorithm_admits_after_its_wait(self, algorithm):
        limiter, _, clock = make("3/minute", algorithm=algorithm)
        for _ in range(3):
            limiter.hit("k")
        assert limiter.acquire("k", timeout=120).allowed
        assert 0 < sum(clock.sleeps) <= 120
        assert all(sleep >= 0.001 for sleep in clock.sleeps)

    async def test_aacquire_with_a_fake_clock(self):
        limiter, _, clock = make("1/second")
        await limiter.aacquire("k")
        assert (await limiter.aacquire("k", timeout=1)).allowed
        assert clock.sleeps == [1.0]
        with pytest.raises(RateLimited) as info:
            await limiter.aacquire("k", timeout=0.25)
        assert info.value.retry_after == 1.0
        assert clock.sleeps == [1.0]

    async def test_aacquire_does_not_block_the_event_loop(self):
        limiter = Limiter("20/second", algorithm="token-bucket")
        for _ in range(20):
            assert limiter.hit("k").allowed
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        began = time.monotonic()
        decisions = await asyncio.gather(*(limiter.aacquire("k", timeout=2) for _ in range(3)))
        elapsed = time.monotonic() - began
        stop.set()
        await task
        assert all(decision.allowed for decision in decisions)
        assert 0.1 <= elapsed < 1.5  # three tokens at 20 per second: about 0.15 s
        assert ticks >= 10  # the loop kept running while the acquirers waited


class TestConcurrentUse:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    @pytest.mark.parametrize("limits", ["500/hour", "500/hour; 5000/day"])  # single(), several()
    def test_threads_admit_exactly_the_limit(self, algorithm, limits):
        limiter = Limiter(limits, algorithm=algorithm, storage=MemoryStorage())
        admitted = [0] * 8
        barrier = threading.Barrier(8)

        def worker(number: int) -> None:
            barrier.wait()
            for _ in range(150):
                if limiter.hit("shared").allowed:
                    admitted[number] += 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(admitted) == 500

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_tasks_admit_exactly_the_limit(self, algorithm):
        limiter = Limiter("300/hour", algorithm=algorithm, storage=MemoryStorage())

        async def worker() -> int:
            count = 0
            for _ in range(20):
                count += (await limiter.ahit("shared")).allowed
                await asyncio.sleep(0)
            return count

        assert sum(await asyncio.gather(*(worker() for _ in range(40)))) == 300


class TestRejectionCache:
    def make_cached(self, limits: str = "2/minute", **options: Any):
        clock = FakeClock(1000.0)
        store = CountingStorage(MemoryStorage(clock=clock))
        recorder = Recorder()
        limiter = Limiter(limits, storage=store, clock=clock, listeners=[recorder], **options)
        return limiter, store, clock, recorder

    def test_on_by_default_for_a_shared_store(self):
        limiter, store, _, _ = self.make_cached()
        for _ in range(3):
            limiter.hit("k")
        calls = store.total
        for _ in range(50):
            assert not limiter.hit("k").allowed
        assert store.total == calls

    def test_a_flood_on_a_rejected_key_does_not_reach_the_store(self):
        limiter, store, clock, recorder = self.make_cached(rejection_cache=True)
        limiter.hit("k")
        limiter.hit("k")
        first = limiter.hit("k")
        assert not first.allowed
        assert store.calls["decide"] == 3
        clock.advance(10)
        for _ in range(1000):
            cached = limiter.hit("k")
            assert not cached.allowed
        assert store.calls["decide"] == 3
        assert cached.retry_after == 50.0
        assert (cached.limit, cached.rate, cached.remaining) == (2, Rate(2, per=60), 0)
        assert cached.reset_after == 50.0
        events = recorder.of(RateLimitDecided)
        assert [event.cached for event in events[:4]] == [False, False, False, True]
        assert len(events) == 1003
        assert not limiter.peek("k").allowed  # peeks are answered by the cache too
        assert store.calls["decide"] == 3
        assert limiter.hit("other").allowed  # other keys still reach the store
        assert store.calls["decide"] == 4

    def test_expires_at_retry_after(self):
        limiter, store, clock, _ = self.make_cached(rejection_cache=True)
        limiter.hit("k", cost=2)
        rejected = limiter.hit("k")
        assert rejected.retry_after == 60.0
        clock.advance(59.999)
        assert not limiter.hit("k").allowed
        assert store.calls["decide"] == 2
        clock.advance(0.001)
        assert limiter.hit("k").allowed
        assert store.calls["decide"] == 3

    def test_a_smaller_cost_still_asks_the_store(self):
        limiter, store, _, _ = self.make_cached("5/minute", rejection_cache=True)
        assert limiter.hit("k", cost=3).allowed
        assert not limiter.hit("k", cost=3).allowed  # remembered: cost 3 is rejected
        assert limiter.hit("k", cost=2).allowed  # smaller: asked, and it fits
        assert store.calls["decide"] == 3
        assert not limiter.hit("k", cost=4).allowed  # larger than the rejected one: cached
        assert store.calls["decide"] == 3

    async def test_reset_clears_it(self):
        limiter, store, _, _ = self.make_cached(rejection_cache=True)
        limiter.hit("k", cost=2)
        assert not limiter.hit("k").allowed
        limiter.reset("k")
        assert limiter.hit("k").allowed
        assert store.calls["decide"] == 3
        limiter.hit("k")
        assert not (await limiter.ahit("k")).allowed
        await limiter.areset("k")
        assert (await limiter.ahit("k")).allowed

    async def test_ahit_uses_it(self):
        limiter, store, _, _ = self.make_cached(rejection_cache=True)
        await limiter.ahit("k", cost=2)
        assert not (await limiter.ahit("k")).allowed
        for _ in range(20):
            assert not (await limiter.ahit("k")).allowed
            assert not (await limiter.apeek("k")).allowed
        assert store.calls["adecide"] == 2

    def test_off_when_disabled(self):
        limiter, store, _, _ = self.make_cached(rejection_cache=False)
        for _ in range(10):
            limiter.hit("k")
        assert store.calls["decide"] == 10

    def test_off_by_default_on_memory(self):
        clock = FakeClock()
        storage = CountingMemory(clock=clock)
        limiter = Limiter("1/minute", storage=storage, clock=clock)
        for _ in range(10):
            limiter.hit("k")
        assert storage.decisions == 10

    def test_explicitly_on_for_memory(self):
        clock = FakeClock()
        storage = CountingMemory(clock=clock)
        recorder = Recorder()
        limiter = Limiter(
            "1/minute", storage=storage, clock=clock, rejection_cache=True, listeners=[recorder]
        )
        for _ in range(10):
            limiter.hit("k")
        assert storage.decisions == 2  # the admission, then the rejection that is remembered
        assert [event.cached for event in recorder.of(RateLimitDecided)][:3] == [
            False,
            False,
            True,
        ]

    def test_memory_stays_bounded(self):
        limiter, _, _, _ = self.make_cached("1/hour", rejection_cache=True)
        for number in range(12_000):
            limiter.hit(f"k{number}")
            limiter.hit(f"k{number}")
        assert limiter._cache is not None
        assert len(limiter._cache) <= 10_000


class TestEvents:
    def test_decided_event_per_hit(self):
        recorder = Recorder()
        limiter, _, _ = make("1/minute", name="api", listeners=[recorder])
        limiter.hit("user:1")
        limiter.hit("user:1", cost=1)
        events = recorder.of(RateLimitDecided)
        assert [(e.policy, e.key, e.cost, e.decision.allowed, e.cached) for e in events] == [
            ("api", "user:1", 1, True, False),
            ("api", "user:1", 1, False, False),
        ]
        assert "'user:1': allowed; 0/1 left of 1/minute" in events[0].describe()
        assert "rejected (retry after 60.00 s)" in events[1].describe()

    async def test_global_listener_receives_them(self):
        recorder = Recorder()
        limiter, _, _ = make("1/minute")
        with add_listener(recorder):
            limiter.hit("k")
            await limiter.ahit("k")
        limiter.hit("k")
        assert [e.decision.allowed for e in recorder.of(RateLimitDecided)] == [True, False]

    def test_a_broken_listener_does_not_break_the_decision(self, caplog):
        def broken(event: object) -> None:
            raise RuntimeError("listener bug")

        limiter, _, _ = make("1/minute", listeners=[broken])
        assert limiter.hit("k").allowed
        assert "listener bug" in caplog.text


class TestStoreFaultPolicy:
    """The guard around the store, with a store that fails on demand (the Redis version of these
    tests, with a real server stopped and started, is in test_faults.py)."""

    def failing(self, policy: str, limits: str = "2/minute", **options: Any):
        clock = FakeClock(1000.0)
        store = CountingStorage(MemoryStorage(clock=clock))
        recorder = Recorder()
        limiter = Limiter(
            limits,
            storage=store,
            clock=clock,
            on_store_error=policy,  # type: ignore[arg-type]
            store_failures=3,
            store_cooldown=5,
            listeners=[recorder],
            **options,
        )
        store.failing = True
        return limiter, store, clock, recorder

    def test_local_decides_in_process(self):
        limiter, store, _, recorder = self.failing("local")
        decisions = [limiter.hit("k") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, False, False]
        assert all(d.degraded for d in decisions)
        assert decisions[2].retry_after == 60.0
        assert store.calls["decide"] == 3  # then the guard stops calling it
        [degraded] = recorder.of(StoreDegraded)
        assert (degraded.mode, degraded.policy) == ("local", "limiter")
        assert isinstance(degraded.error, StorageError)
        assert not limiter.peek("k").allowed
        assert limiter.peek("other").degraded

    def test_fail_open_admits(self):
        limiter, _, _, _ = self.failing("fail-open")
        decisions = [limiter.hit("k") for _ in range(10)]
        assert all(d.allowed and d.degraded for d in decisions)
        assert decisions[0].limit == 2
        assert decisions[0].retry_after is None

    def test_fail_closed_rejects_until_the_store_is_tried_again(self):
        limiter, _, clock, _ = self.failing("fail-closed")
        early = [limiter.hit("k") for _ in range(3)]
        assert all(not d.allowed and d.degraded for d in early)
        assert all(d.retry_after is not None and d.retry_after > 0 for d in early)
        assert early[-1].retry_after == 5.0  # the third failure opened the circuit
        clock.advance(2)
        later = limiter.hit("k")
        assert (later.allowed, later.retry_after, later.degraded) == (False, 3.0, True)

    def test_the_store_is_tried_again_after_the_cooldown_and_recovers(self):
        limiter, store, clock, recorder = self.failing("local")
        for _ in range(10):
            limiter.hit("k")
        assert store.calls["decide"] == 3
        clock.advance(5)
        store.failing = False
        decision = limiter.hit("k")
        assert store.calls["decide"] == 4
        assert (decision.allowed, decision.degraded) == (True, False)
        [recovered] = recorder.of(StoreRecovered)
        assert recovered.down_for == 5.0
        assert len(recorder.of(StoreDegraded)) == 1

    def test_a_store_still_down_after_the_cooldown_is_left_alone_again(self):
        limiter, store, clock, recorder = self.failing("fail-open")
        for _ in range(3):
            limiter.hit("k")
        clock.advance(5)
        for _ in range(10):
            assert limiter.hit("k").degraded
        assert 4 <= store.calls["decide"] <= 6  # at most store_failures more tries
        assert len(recorder.of(StoreDegraded)) == 1  # one event per outage
        assert recorder.of(StoreRecovered) == []

    async def test_async_follows_the_same_policy(self):
        limiter, store, clock, recorder = self.failing("local")
        decisions = [await limiter.ahit("k") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, False, False]
        assert all(d.degraded for d in decisions)
        assert store.calls["adecide"] == 3
        clock.advance(5)
        store.failing = False
        assert not (await limiter.ahit("k")).degraded
        assert len(recorder.of(StoreRecovered)) == 1

    def test_degraded_rejections_are_not_cached(self):
        limiter, store, clock, _ = self.failing("local", rejection_cache=True)
        for _ in range(3):
            limiter.hit("k")
        clock.advance(5)
        store.failing = False
        assert limiter.hit("k").allowed  # the store's answer, not a cached local rejection

    def test_reset_raises_when_the_store_fails(self):
        limiter, _, _, _ = self.failing("local")
        with pytest.raises(StorageError):
            limiter.reset("k")

    def test_acquire_fail_closed_gives_up_at_the_timeout(self):
        limiter, _, clock, _ = self.failing("fail-closed")
        with pytest.raises(RateLimited):
            limiter.acquire("k", timeout=3)
        assert clock.now() - 1000.0 <= 3


class TestSeveralRatesInMemory:
    """A memory limiter with several limits decides through ``MemoryStorage.several``."""

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    @settings(max_examples=40, deadline=None)
    @given(steps=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 3)), max_size=40))
    def test_the_same_decisions_as_decide(self, algorithm, steps):
        # One rate given twice (one limit), and the same rate in another scope (another limit).
        rates = (Rate(3, per=10), Rate(5, per=60), Rate(3, per=10), Rate(3, per=10, scope="b"))
        clock = FakeClock(1000.0)
        several = MemoryStorage(clock=clock).several(algorithm, rates)
        reference = MemoryStorage(clock=clock)
        for number, (gap, cost) in enumerate(steps):
            clock.advance(gap / 4)
            got = several("k", cost)
            assert got == reference.decide(algorithm, "k", rates, cost), f"step {number}"

    @pytest.mark.parametrize(
        ("make_function", "error", "words"),
        [
            (lambda store: store.several("leaky-bucket", (Rate(1),)), ValueError, "algorithm"),
            (lambda store: store.several(None, (Rate(1),)), ValueError, "algorithm"),
            (lambda store: store.several("gcra", ()), ValueError, "at least one Rate"),
            (lambda store: store.several("gcra", [Rate(1)]), TypeError, "tuple of Rate"),
            (lambda store: store.several("gcra", (Rate(1), "1/second")), TypeError, "rates"),
            (lambda store: store.single("leaky-bucket", Rate(1)), ValueError, "algorithm"),
            (lambda store: store.single("gcra", "1/second"), TypeError, "rate must be a Rate"),
        ],
    )
    def test_bad_arguments(self, make_function, error, words):
        storage = MemoryStorage()
        with pytest.raises(error, match=words):
            make_function(storage)
        assert storage._tables == {}  # nothing was made for them

    def test_the_limiter_uses_it(self):
        clock = FakeClock(1000.0)
        storage = MemoryStorage(clock=clock)
        limiter = Limiter("2/minute; 3/hour", storage=storage, clock=clock)
        assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
        clock.advance(60)
        assert limiter.hit("k").remaining == 0  # the hour's third, and last, unit
        decision = limiter.hit("k")
        assert not decision.allowed
        assert decision.rate == Rate(3, per=3600)
        assert len(storage) == 2


class TestMemoryBounds:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    @pytest.mark.parametrize(("limits", "states"), [("3/minute", 1), ("3/minute; 5/2 minutes", 2)])
    def test_expired_keys_are_swept(self, algorithm, limits, states):
        clock = FakeClock(1000.0)
        storage = MemoryStorage(clock=clock)
        limiter = Limiter(limits, algorithm=algorithm, storage=storage, clock=clock)
        for number in range(1000):
            limiter.hit(f"old:{number}")
        assert len(storage) == 1000 * states
        clock.advance(360)  # three of the longest periods: every state is as good as fresh
        for _ in range(2000):
            limiter.hit("new")
        assert len(storage) == states
        assert limiter.hit("old:1").remaining == 2

    def test_live_keys_are_kept(self):
        clock = FakeClock(1000.0)
        storage = MemoryStorage(clock=clock, sweep_every=1)
        limiter = Limiter("3/minute", storage=storage, clock=clock)
        limiter.hit("live", cost=3)
        for number in range(100):
            clock.advance(0.5)
            limiter.hit(f"k{number}")
        assert not limiter.hit("live").allowed
        assert len(storage) == 101

    def test_rejections_and_peeks_store_nothing(self):
        limiter, storage, _ = make("1/minute")
        for number in range(200):
            limiter.peek(f"k{number}")
        assert len(storage) == 0
        limiter.hit("k")
        for _ in range(200):
            limiter.hit("k")
        assert len(storage) == 1
