"""The Redis store on the real server, decision by decision against the memory store.

Scripts get an explicit ``now`` wherever answers are compared, so both stores see the same times.
Times in the random tests sit on a quarter-second grid: a key's TTL is relative to the script's
``now``, and a grid keeps every TTL far longer than the real time a test takes, so that Redis never
expires a key the memory store still needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, cast

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import buttress.storage.redis
from buttress import ConfigurationError, StorageError
from buttress.ratelimit import Decision, Rate
from buttress.ratelimit._algorithms import ALGORITHMS, State, decide, expires_at
from buttress.storage import MemoryStorage, Storage, storage_from_url
from buttress.storage.redis import RedisStorage

from .._redis_server import private_server

SHORT = {
    "fixed-window": "fw",
    "sliding-window": "swlog",
    "sliding-window-counter": "counter",
    "token-bucket": "bucket",
    "gcra": "tat",
}
TWO_RATES = (Rate(3, per=10), Rate(5, per=60))

# (time offset, cost, consume): rejections by either rate, peeks, windows rolling over.
SCENARIO = [
    (0.0, 1, True),
    (0.0, 1, True),
    (0.5, 2, True),
    (0.5, 1, True),
    (1.25, 1, False),
    (1.25, 1, True),
    (3.3, 2, True),
    (7.1, 1, True),
    (10.2, 2, True),
    (10.2, 1, True),
    (12.0, 1, False),
    (14.9, 3, True),
    (21.7, 1, True),
    (33.3, 1, True),
    (44.4, 2, True),
    (52.5, 1, True),
    (59.9, 1, True),
    (60.3, 1, True),
    (75.0, 3, True),
    (75.0, 4, True),
    (200.0, 1, True),
    (200.0, 1, False),
]


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """A prefix for one test, under the run's prefix (so the run's clean-up deletes its keys)."""
    return f"{redis_prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisStorage]:
    store = RedisStorage.from_url(redis_url, prefix=prefix)
    yield store
    store.close()


@pytest.fixture
async def astore(redis_url: str, prefix: str) -> AsyncIterator[RedisStorage]:
    store = RedisStorage.from_url(redis_url, prefix=prefix)
    yield store
    await store.aclose()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def state_keys(prefix: str, key: str, algorithm: str, rate: Rate) -> list[str]:
    return [f"{{{prefix}:{key}}}:{SHORT[algorithm]}:{rate.limit}:{rate.period!r}"]


def keys_of(raw: redis.Redis, prefix: str) -> list[str]:
    return sorted(raw.scan_iter(match=f"{{{prefix}*", count=1000))


def snapshot(raw: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its value (sorted sets with their scores)."""
    found: dict[str, Any] = {}
    for name in keys_of(raw, prefix):
        if raw.type(name) == "zset":
            found[name] = members(raw, name)
        else:
            found[name] = raw.dump(name)  # bytes, whatever the value (some are binary)
    return found


def assert_same(got: Decision, want: Decision, context: object = None) -> None:
    """Every field of a Redis decision equals the memory store's (floats to 1e-9)."""
    assert got.allowed == want.allowed, context
    assert got.limit == want.limit, context
    assert got.remaining == want.remaining, context
    assert got.rate == want.rate, context
    assert got.degraded is want.degraded is False, context
    assert got.reset_after == pytest.approx(want.reset_after, rel=1e-12, abs=1e-9), context
    if want.retry_after is None:
        assert got.retry_after is None, context
    else:
        assert got.retry_after == pytest.approx(want.retry_after, rel=1e-12, abs=1e-9), context


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A redis-server of our own on a unix socket (no TCP port): its statistics are ours alone."""
    servers = private_server(tmp_path_factory.mktemp("redis"), unix=True)
    private = next(servers)
    assert private.socket is not None
    try:
        yield private.socket
    finally:
        servers.close()  # stops it


# -- conformance with the memory store -----------------------------------------------------------


class TestSameAnswersAsMemory:
    @pytest.mark.parametrize("base", [1000.0, 1_700_000_000.0])
    @pytest.mark.parametrize(
        "rates",
        [(Rate(4, per=10),), TWO_RATES, (Rate(3, per=10), Rate(3, per=10))],
        ids=["one-rate", "two-rates", "same-rate-twice"],
    )
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_scripted_scenario(self, store, algorithm, rates, base):
        memory = MemoryStorage()
        for step, (at, cost, consume) in enumerate(SCENARIO):
            now = base + at
            got = store.decide(algorithm, "k", rates, cost, consume=consume, now=now)
            want = memory.decide(algorithm, "k", rates, cost, consume=consume, now=now)
            assert_same(got, want, (step, at, cost, consume))
            # The same IEEE doubles on both sides, and 17 digits on the wire: bit for bit.
            assert got == want, (step, at, cost, consume)

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        algorithm=st.sampled_from(ALGORITHMS),
        rates=st.lists(
            st.builds(Rate, st.integers(1, 8), per=st.sampled_from([5.0, 7.5, 10.0, 30.0, 60.0])),
            min_size=1,
            max_size=3,
        ).map(tuple),
        base=st.tuples(
            st.sampled_from([0.0, 1000.0, 1_700_000_000.0]), st.integers(0, 4_000_000)
        ).map(lambda pair: pair[0] + pair[1] * 0.25),
        steps=st.lists(
            st.tuples(
                st.integers(0, 160).map(lambda quarters: quarters * 0.25),
                st.integers(1, 3),
                st.sampled_from([True, True, True, False]),
            ),
            min_size=1,
            max_size=25,
        ),
    )
    def test_random_sequences(self, store, algorithm, rates, base, steps):
        key = uuid.uuid4().hex  # fresh state for every example
        memory = MemoryStorage()
        most = min(rate.limit for rate in rates)  # the Limiter refuses larger costs
        now = base
        for step, (delay, wanted, consume) in enumerate(steps):
            now += delay
            cost = min(wanted, most)
            got = store.decide(algorithm, key, rates, cost, consume=consume, now=now)
            want = memory.decide(algorithm, key, rates, cost, consume=consume, now=now)
            assert_same(got, want, (step, now, cost, consume))

    async def test_async_answers_equal_sync_answers(self, store, astore, redis_url):
        for algorithm in ALGORITHMS:
            for at, cost, consume in SCENARIO:
                now = 5000.0 + at
                got = await astore.adecide(
                    algorithm, "async", TWO_RATES, cost, consume=consume, now=now
                )
                want = store.decide(algorithm, "sync", TWO_RATES, cost, consume=consume, now=now)
                assert got == want
        assert await astore.aacquire_lease("a", 1, "x", 5, now=1.0)
        assert store.acquire_lease("s", 1, "x", 5, now=1.0)
        assert not await astore.aacquire_lease("a", 1, "y", 5, now=2.0)
        assert await astore.acount_leases("a", now=2.0) == store.count_leases("s", now=2.0) == 1
        assert await astore.arenew_lease("a", "x", 5, now=3.0)
        assert await astore.arelease_lease("a", "x", now=3.0)
        assert not await astore.arelease_lease("a", "x", now=3.0)
        await astore.areset("gcra", "async", TWO_RATES)
        fresh = await astore.adecide("gcra", "async", TWO_RATES, 1, consume=False, now=5000.0)
        assert fresh.remaining == 2

    def test_is_a_storage(self, store):
        assert isinstance(store, Storage)


class TestRobustness:
    def test_the_log_forgets_what_left_the_window(self, store, raw, prefix):
        # Peeks and rejections only read the log; an admission reads past the entries that have
        # left the window (they are removed later, see TestLazyLog). Every answer is the memory
        # store's all along.
        rate = Rate(3, per=10)
        memory = MemoryStorage()
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        steps = [
            (0.0, 1, True),
            (1.0, 1, True),
            (2.0, 1, True),
            (5.0, 1, True),  # rejected
            (10.0, 1, False),  # the entry of 0.0 has left: a peek that fits
            (10.5, 2, True),  # rejected, until 1.0 leaves
        ]
        for at, cost, consume in steps:
            got = store.decide("sliding-window", "k", (rate,), cost, consume=consume, now=at)
            want = memory.decide("sliding-window", "k", (rate,), cost, consume=consume, now=at)
            assert got == want, at
        assert raw.zcard(log) == 3
        got = store.decide("sliding-window", "k", (rate,), 2, now=11.0)
        assert got == memory.decide("sliding-window", "k", (rate,), 2, now=11.0)
        assert got.allowed
        assert raw.zcard(log) == 4  # 0.0 and 1.0 linger (two units: fewer than SWEEP)
        assert raw.zcount(log, "(1.0", "+inf") == 2  # 2.0 and 11.0

    def test_the_log_counts_exactly_when_the_clock_goes_back(self, store):
        rate = Rate(3, per=10)
        memory = MemoryStorage()
        for at in (100.0, 99.0, 99.5, 99.5, 105.0):
            got = store.decide("sliding-window", "k", (rate,), 1, now=at)
            want = memory.decide("sliding-window", "k", (rate,), 1, now=at)
            assert (got.allowed, got.remaining) == (want.allowed, want.remaining), at

    @pytest.mark.parametrize(
        "history",
        [
            [(0.0, 1), (1.0, 0), (2.0, 0), (2.0, 0), (3.0, 1), (4.0, 1), (11.5, 1)],
            # Requests of cost 0 and 1 at one time, the oldest in the window once 0.0 has left.
            [(0.0, 1), (5.0, 1), (5.0, 0), (5.0, 0), (5.0, 2), (5.0, 0), (10.5, 1), (10.5, 1)],
        ],
    )
    def test_requests_of_cost_zero_are_logged(self, store, history):
        rates = (Rate(8, per=10),)
        memory = MemoryStorage()
        for algorithm in ALGORITHMS:
            for at, cost in history:
                got = store.decide(algorithm, "k", rates, cost, now=at)
                assert got == memory.decide(algorithm, "k", rates, cost, now=at), (at, cost)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_long_keys_and_extreme_rates(self, store, algorithm):
        # The scripts read limit and period back from the end of the key's name.
        key = "x" * 300 + ":9:9.5}:fw:1:1.0"  # a key that looks like the end of a key name
        memory = MemoryStorage()
        rates = (Rate(2**53, per=123456.78901234567), Rate(7, per=315_359_999.99999994))
        for at in (1000.0, 1000.25, 1001.0):
            for chosen in (rates[:1], rates[1:], rates):
                got = store.decide(algorithm, key, chosen, 3, now=at)
                assert got == memory.decide(algorithm, key, chosen, 3, now=at), (at, chosen)
        shortest = (Rate(2**53 - 1, per=0.0012345678901234567),)  # the longest period repr
        got = store.decide(algorithm, key, shortest, 1, consume=False, now=1000.0)
        assert got == memory.decide(algorithm, key, shortest, 1, consume=False, now=1000.0)

    def test_a_lost_log_is_a_fresh_one(self, store, raw, prefix):
        rate = Rate(2, per=10)
        for at in (0.0, 1.0):
            assert store.decide("sliding-window", "k", (rate,), 1, now=at).allowed
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        raw.delete(log)
        fresh = store.decide("sliding-window", "k", (rate,), 1, now=2.0)
        assert (fresh.allowed, fresh.remaining) == (True, 1)

    def test_a_client_that_decodes_responses(self, redis_url, prefix):
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        store = RedisStorage(client, prefix=prefix)
        memory = MemoryStorage()
        try:
            for algorithm in ALGORITHMS:
                for at, cost, consume in SCENARIO[:8]:
                    got = store.decide(algorithm, "k", TWO_RATES, cost, consume=consume, now=at)
                    assert got == memory.decide(
                        algorithm, "k", TWO_RATES, cost, consume=consume, now=at
                    )
                # On the server's clock (the kept packed command): replies are bytes all the same.
                for rates in (TWO_RATES[:1], TWO_RATES):
                    first = store.decide(algorithm, f"clocked{len(rates)}", rates, 1)
                    second = store.decide(algorithm, f"clocked{len(rates)}", rates, 1)
                    assert first.allowed, algorithm
                    assert second.allowed, algorithm
                    assert second.remaining == first.remaining - 1, algorithm
            assert store.acquire_lease("k", 1, "a", 5, now=0.0)
            assert not store.acquire_lease("k", 1, "b", 5, now=0.0)
            assert store.count_leases("k", now=0.0) == 1
            assert store.release_lease("k", "a", now=0.0)
        finally:
            client.close()


SWEEP = 32  # sliding_window.lua: stale entries are removed once their costs add up to this
V1_SCRIPT = Path(__file__).with_name("sliding_window_v1.lua")
ENTRY = struct.Struct(">7d")  # sliding_window.lua: c, t, n, b, o, f, e


class Entry(NamedTuple):
    """One sliding log entry's member, unpacked (see ``lua/sliding_window.lua``)."""

    c: float
    t: float
    n: float
    b: float
    o: float
    f: float
    e: float


def v1_decide(
    store: RedisStorage, raw: redis.Redis, rates: tuple[Rate, ...], cost: int, *, now: float
) -> Decision:
    """A decision by the text-member sliding log script of an earlier build, on ``store``'s keys."""
    lua = Path(buttress.storage.redis.__file__).with_name("lua")
    text = "\n".join(
        path.read_text("utf-8") for path in (lua / "head.lua", V1_SCRIPT, lua / "tail.lua")
    )
    sha = cast(str, raw.script_load(text))  # SCRIPT LOAD adds a script; it removes none
    plan = store._plan("sliding-window", rates)
    nkeys, *args = store._arguments(plan, "k", cost, True, now)
    command = cast(Callable[..., bytes], raw.execute_command)  # untyped in redis-py
    # The reply is packed doubles: read as bytes, whatever the client decodes.
    return plan.decision(command("EVALSHA", sha, nkeys, *args, NEVER_DECODE=True))


def members(raw: redis.Redis, log: str) -> list[tuple[Entry | bytes, float]]:
    """A sorted set's members with their scores; a sliding log's entries unpacked."""
    command = cast(Callable[..., list[Any]], raw.execute_command)  # untyped in redis-py
    found = command("ZRANGE", log, 0, -1, "WITHSCORES", NEVER_DECODE=True)
    if found and isinstance(found[0], (list, tuple)):  # redis-py 8 pairs them
        pairs = [(member, float(score)) for member, score in found]
    else:
        pairs = [(found[i], float(found[i + 1])) for i in range(0, len(found), 2)]
    return [
        (Entry(*ENTRY.unpack(member)) if len(member) == ENTRY.size else member, score)
        for member, score in pairs
    ]


def newest_entry(raw: redis.Redis, log: str) -> Entry:
    newest, score = members(raw, log)[-1]
    assert isinstance(newest, Entry)
    assert newest.t == score  # the member keeps its own time
    return newest


class TestLazyLog:
    def test_stale_entries_are_removed_once_their_costs_add_up(self, store, raw, prefix):
        # One admission a second on a 10-second window: from t = 10 on, one entry leaves the
        # window at each admission. The set holds the ten live entries and up to SWEEP - 1
        # stale ones, which are removed together once there are SWEEP of them.
        rate = Rate(100, per=10)
        memory = MemoryStorage()
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        stale_counts = []
        for step in range(120):
            at = 1000.0 + step
            got = store.decide("sliding-window", "k", (rate,), 1, now=at)
            assert got == memory.decide("sliding-window", "k", (rate,), 1, now=at), step
            live = raw.zcount(log, f"({at - 10}", "+inf")
            assert live == min(step + 1, 10)
            stale_counts.append(raw.zcard(log) - live)
        assert max(stale_counts) == SWEEP - 1
        assert stale_counts[9:] == [(step - 9) % SWEEP for step in range(9, 120)]

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        limit=st.integers(1, 60),
        period=st.sampled_from([2.0, 5.0, 10.0]),
        two=st.booleans(),
        steps=st.lists(
            st.tuples(
                st.integers(0, 12).map(lambda quarters: quarters * 0.25),
                st.integers(1, 4),
                st.sampled_from([True, True, True, True, False]),
            ),
            min_size=50,
            max_size=300,
        ),
    )
    def test_same_answers_as_memory_and_bounded_memory(
        self, store, raw, prefix, limit, period, two, steps
    ):
        # Long sequences, so that stale entries pile up and are swept again and again.
        key = uuid.uuid4().hex
        rate = Rate(limit, per=period)
        rates = (rate, Rate(limit * 3, per=period * 4)) if two else (rate,)
        memory = MemoryStorage()
        logs = [state_keys(prefix, key, "sliding-window", r)[0] for r in rates]
        now = 5000.0
        for step, (delay, wanted, consume) in enumerate(steps):
            now += delay
            cost = min(wanted, limit)
            got = store.decide("sliding-window", key, rates, cost, consume=consume, now=now)
            want = memory.decide("sliding-window", key, rates, cost, consume=consume, now=now)
            assert_same(got, want, (step, now, cost, consume))
            if got.allowed and consume:
                for r, log in zip(rates, logs, strict=True):
                    # Each stale entry costs at least 1: fewer than SWEEP of them remain.
                    live = raw.zcount(log, f"({now - r.period!r}", "+inf")
                    assert 0 <= raw.zcard(log) - live < SWEEP, (step, r)

    def test_a_request_of_cost_zero_removes_stale_entries(self, store, raw, prefix):
        # Entries of cost 0 add nothing to the sum that decides sweeps: an admission of cost 0
        # that finds entries newly out of the window removes every stale one at once.
        rate = Rate(5, per=10)
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        memory = MemoryStorage()
        for at, cost in [(0.0, 1), (1.0, 0), (2.0, 1), (11.5, 1), (12.5, 0), (12.5, 1)]:
            got = store.decide("sliding-window", "k", (rate,), cost, now=at)
            assert got == memory.decide("sliding-window", "k", (rate,), cost, now=at), at
            if at == 11.5:
                assert raw.zcard(log) == 4  # 0.0 and 1.0 linger; 2.0 and 11.5 are live
        assert [score for _, score in members(raw, log)] == [11.5, 12.5, 12.5]

    @pytest.mark.parametrize("two", [False, True], ids=["one rate", "two rates"])
    def test_a_log_of_another_layout_is_begun_again(self, store, raw, prefix, two):
        # Text members, as an earlier build wrote them, under this build's key (its keys had
        # another name, so this happens only by accident): not one of these logs, so a fresh
        # log, never a script error.
        rate = Rate(4, per=10)
        rates = (rate, Rate(50, per=100)) if two else (rate,)
        for at in (0.0, 3.0, 4.0):
            v1_decide(store, raw, rates, 1, now=at)
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        assert all(not isinstance(member, Entry) for member, _ in members(raw, log))
        memory = MemoryStorage()
        for at, cost in [(5.0, 1), (6.0, 2), (6.0, 2)]:
            got = store.decide("sliding-window", "k", rates, cost, now=at)
            assert got == memory.decide("sliding-window", "k", rates, cost, now=at), at
        found = members(raw, log)
        assert [score for _, score in found] == [5.0, 6.0]
        assert all(isinstance(member, Entry) for member, _ in found)

    def test_entries_keep_what_the_next_decision_needs(self, store, raw, prefix):
        rate = Rate(10, per=10)
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        for at, cost in [(100.0, 2), (101.0, 3), (110.5, 1)]:
            assert store.decide("sliding-window", "k", (rate,), cost, now=at).allowed
        first, second, third = (member for member, _ in members(raw, log))
        assert first == Entry(c=0, t=100.0, n=2, b=0, o=100.0, f=0, e=-1)
        assert second == Entry(c=2, t=101.0, n=3, b=0, o=100.0, f=0, e=-1)
        # At 110.5 the entry of 100.0 has left the window: the sum before the first live entry
        # (101.0) is 2; the stale entry stays (its cost, 2, is below SWEEP).
        assert third == Entry(c=5, t=110.5, n=1, b=2, o=101.0, f=0, e=-1)

    def test_the_expiry_is_refreshed_once_an_eighth_of_the_period_has_passed(
        self, store, raw, prefix
    ):
        # On the server's clock the key gets period * 9 / 8 and keeps it while admissions
        # need no more; then it gets period * 9 / 8 again.
        rate = Rate(1000, per=2.0)
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        assert store.decide("sliding-window", "k", (rate,), 1).allowed
        first = raw.pttl(log)
        assert 2200 <= first <= 2251
        time.sleep(0.1)
        assert store.decide("sliding-window", "k", (rate,), 1).allowed
        kept = raw.pttl(log)
        assert first - 200 <= kept <= first - 90  # not refreshed: it still outlives at + period
        expiry = newest_entry(raw, log).e
        seconds, microseconds = raw.time()
        assert expiry - (seconds + microseconds / 1e6) == pytest.approx(kept / 1000, abs=0.05)
        time.sleep(0.2)  # 0.3 s since the key got its expiry: more than an eighth of 2 s
        assert store.decide("sliding-window", "k", (rate,), 1).allowed
        assert 2200 <= raw.pttl(log) <= 2251

    def test_an_explicit_time_sets_the_expiry_at_every_admission(self, store, raw, prefix):
        rate = Rate(1000, per=2.0)
        (log,) = state_keys(prefix, "k", "sliding-window", rate)
        for at in (100.0, 100.5, 101.0):
            assert store.decide("sliding-window", "k", (rate,), 1, now=at).allowed
            assert 1900 < raw.pttl(log) <= 2001
            assert newest_entry(raw, log).e == -1  # no expiry kept


class TestAllOrNothing:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_rejected_by_the_first_rate_consumes_nothing_from_the_second(
        self, store, raw, prefix, algorithm
    ):
        small, large = Rate(2, per=10), Rate(10, per=100)
        assert store.decide(algorithm, "k", (small, large), 1, now=0.0).allowed
        assert store.decide(algorithm, "k", (small, large), 1, now=0.0).allowed
        before = snapshot(raw, prefix)
        rejected = store.decide(algorithm, "k", (small, large), 1, now=1.0)
        assert not rejected.allowed
        assert rejected.rate == small
        assert snapshot(raw, prefix) == before
        # Two units taken from the large rate, not three: one more leaves seven.
        assert store.decide(algorithm, "k", (large,), 1, consume=False, now=1.0).remaining == 7

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_rejected_by_the_second_rate_consumes_nothing_from_the_first(
        self, store, raw, prefix, algorithm
    ):
        small, large = Rate(5, per=10), Rate(3, per=100)
        assert store.decide(algorithm, "k", (small, large), 3, now=0.0).allowed
        before = snapshot(raw, prefix)
        rejected = store.decide(algorithm, "k", (small, large), 1, now=5.0)
        assert not rejected.allowed
        assert rejected.rate == large
        assert snapshot(raw, prefix) == before


class TestPeekAndReset:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_peek_consumes_nothing(self, store, raw, prefix, algorithm):
        memory = MemoryStorage()
        assert store.decide(algorithm, "fresh", TWO_RATES, 1, consume=False, now=0.0).allowed
        assert keys_of(raw, prefix) == []  # a peek at a fresh key writes nothing
        for at in (0.0, 0.5):
            store.decide(algorithm, "k", TWO_RATES, 1, now=at)
            memory.decide(algorithm, "k", TWO_RATES, 1, now=at)
        before = snapshot(raw, prefix)
        for cost in (1, 2, 3):
            got = store.decide(algorithm, "k", TWO_RATES, cost, consume=False, now=1.0)
            want = memory.decide(algorithm, "k", TWO_RATES, cost, consume=False, now=1.0)
            assert got == want
            assert snapshot(raw, prefix) == before

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_reset_forgets_the_key_under_those_rates(self, store, raw, prefix, algorithm):
        for _ in range(3):
            store.decide(algorithm, "k", TWO_RATES, 1, now=0.0)
        other = store.decide("gcra" if algorithm != "gcra" else "token-bucket", "k", TWO_RATES, 1)
        assert other.allowed
        kept = set(keys_of(raw, prefix))
        ours = {name for rate in TWO_RATES for name in state_keys(prefix, "k", algorithm, rate)}
        assert ours <= kept
        store.reset(algorithm, "k", TWO_RATES)
        assert set(keys_of(raw, prefix)) == kept - ours
        fresh = store.decide(algorithm, "k", TWO_RATES, 1, now=0.0)
        assert fresh.allowed
        assert fresh.remaining == 2


class TestExpiry:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_keys_expire_when_the_state_becomes_fresh(self, store, raw, prefix, algorithm):
        states: list[State] = [None, None]  # the reference's states, kept by hand
        for at, cost in ((0.0, 1), (2.5, 2)):
            store.decide(algorithm, "k", TWO_RATES, cost, now=1000.0 + at)
            decide(algorithm, states, TWO_RATES, 1000.0 + at, cost)
        expected = set()
        for rate, state in zip(TWO_RATES, states, strict=True):
            fresh_in = (expires_at(algorithm, state, rate) - 1002.5) * 1000
            for name in state_keys(prefix, "k", algorithm, rate):
                expected.add(name)
                ttl = raw.pttl(name)
                # Rounded up to the millisecond, plus one; a little real time has passed.
                assert math.ceil(fresh_in) + 1 - 100 < ttl <= math.ceil(fresh_in) + 1, name
        assert set(keys_of(raw, prefix)) == expected

    def test_keys_disappear_on_the_server_clock(self, store, raw, prefix):
        rates = (Rate(2, per=0.2),)
        for algorithm in ALGORITHMS:
            assert store.decide(algorithm, "k", rates, 1).allowed
        names = [name for a in ALGORITHMS for name in state_keys(prefix, "k", a, rates[0])]
        assert raw.exists(*names) == len(names)
        time.sleep(0.6)
        assert raw.exists(*names) == 0
        for algorithm in ALGORITHMS:
            assert store.decide(algorithm, "k", rates, 1).allowed  # fresh again

    def test_the_lease_set_expires_with_its_latest_lease(self, store, raw, prefix):
        name = f"{{{prefix}:k}}:leases"
        assert store.acquire_lease("k", 5, "a", 10, now=100.0)
        assert store.acquire_lease("k", 5, "b", 50, now=100.0)
        assert 49_000 < raw.pttl(name) <= 50_001
        assert store.renew_lease("k", "a", 100, now=100.0)
        assert 99_000 < raw.pttl(name) <= 100_001
        assert store.release_lease("k", "a", now=100.0)
        assert store.release_lease("k", "b", now=100.0)
        assert raw.exists(name) == 0


# The binary states (struct layouts) and, for each, a text state as an earlier build wrote it.
LAYOUTS = {"sliding-window-counter": ">ddd", "token-bucket": ">dd", "gcra": ">d"}
OLD_TEXT = {"sliding-window-counter": "100 3 0", "token-bucket": "0 1000", "gcra": "1e12"}


class TestBinaryStates:
    """The counter's, token bucket's and GCRA's states: big-endian doubles, bit for bit the
    memory store's."""

    @pytest.mark.parametrize("two", [False, True], ids=["one rate", "two rates"])
    def test_the_stored_doubles_are_the_reference_states(self, store, prefix, redis_url, two):
        rates = TWO_RATES if two else TWO_RATES[:1]
        binary = redis.Redis.from_url(redis_url)  # bytes, not text
        try:
            for algorithm, layout in LAYOUTS.items():
                states: list[State] = [None] * len(rates)
                for at, cost in ((1000.0, 1), (1000.1, 2), (1003.7, 1)):
                    store.decide(algorithm, "k", rates, cost, now=at)
                    decide(algorithm, states, rates, at, cost)
                for rate, state in zip(rates, states, strict=True):
                    (name,) = state_keys(prefix, "k", algorithm, rate)
                    stored = struct.unpack(layout, cast("bytes", binary.get(name)))
                    assert stored == tuple(cast("list[float]", state)), (algorithm, rate)
        finally:
            binary.close()

    @pytest.mark.parametrize("algorithm", list(LAYOUTS))
    @pytest.mark.parametrize("two", [False, True], ids=["one rate", "two rates"])
    def test_a_value_of_another_layout_is_no_state(self, store, raw, prefix, algorithm, two):
        # Text, as an earlier build wrote it (under another key name: this happens only by
        # accident): a fresh state, never a script error.
        rates = TWO_RATES if two else TWO_RATES[:1]
        for rate in rates:
            (name,) = state_keys(prefix, "k", algorithm, rate)
            raw.set(name, OLD_TEXT[algorithm], px=60_000)
        memory = MemoryStorage()
        for at, cost in ((1000.0, 1), (1000.5, 2)):
            got = store.decide(algorithm, "k", rates, cost, now=at)
            assert got == memory.decide(algorithm, "k", rates, cost, now=at), at


class TestLeases:
    def test_the_limit_is_respected(self, store):
        assert store.acquire_lease("k", 2, "a", 30, now=0.0)
        assert store.acquire_lease("k", 2, "b", 30, now=0.0)
        assert not store.acquire_lease("k", 2, "c", 30, now=1.0)
        assert store.count_leases("k", now=1.0) == 2
        # Taking a live lease again renews it in its own slot.
        assert store.acquire_lease("k", 2, "a", 30, now=2.0)
        assert store.count_leases("k", now=2.0) == 2
        assert store.release_lease("k", "a", now=2.0)
        assert not store.release_lease("k", "a", now=2.0)
        assert not store.release_lease("k", "never-held", now=2.0)
        assert store.count_leases("k", now=2.0) == 1
        assert store.acquire_lease("k", 2, "c", 30, now=3.0)
        assert not store.acquire_lease("k", 2, "d", 30, now=3.0)

    def test_leases_expire(self, store):
        assert store.acquire_lease("k", 1, "a", 5, now=100.0)
        assert store.count_leases("k", now=104.9) == 1
        assert not store.acquire_lease("k", 1, "b", 5, now=104.9)
        assert store.count_leases("k", now=105.0) == 0  # live while until > now
        assert store.acquire_lease("k", 1, "b", 5, now=105.0)

    def test_releasing_an_expired_lease_is_false(self, store):
        assert store.acquire_lease("k", 2, "a", 5, now=100.0)
        assert store.acquire_lease("k", 2, "b", 5, now=100.0)
        assert not store.release_lease("k", "a", now=105.0)  # its slot was already free
        assert store.release_lease("k", "b", now=104.0)
        # On the server's clock, a lease taken at an explicit time long past has expired.
        assert store.acquire_lease("k", 1, "old", 10, now=1000.0)
        assert not store.release_lease("k", "old")

    def test_renew_only_a_live_lease(self, store):
        assert store.acquire_lease("k", 1, "a", 5, now=100.0)
        assert store.renew_lease("k", "a", 10, now=103.0)
        assert store.count_leases("k", now=112.9) == 1
        assert not store.renew_lease("k", "a", 10, now=113.0)
        assert not store.renew_lease("k", "unknown", 10, now=100.0)
        assert store.count_leases("k", now=113.0) == 0

    def test_the_server_clock_counts_when_now_is_not_given(self, store):
        assert store.acquire_lease("k", 1, "a", 0.3)
        assert store.count_leases("k") == 1
        assert not store.acquire_lease("k", 1, "b", 0.3)
        time.sleep(0.4)
        assert store.count_leases("k") == 0
        assert not store.renew_lease("k", "a", 10)
        assert store.acquire_lease("k", 1, "b", 0.3)
        assert not store.release_lease("k", "a")
        assert store.release_lease("k", "b")

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        operations=st.lists(
            st.tuples(
                st.sampled_from(["acquire", "acquire", "renew", "release", "count"]),
                st.sampled_from(["a", "b", "c", "d"]),
                st.integers(0, 20).map(lambda quarters: quarters * 0.25),
                st.sampled_from([1.0, 2.5, 5.0]),
            ),
            max_size=30,
        ),
        limit=st.integers(1, 3),
    )
    def test_random_operations_match_the_model(self, store, operations, limit):
        # The model: the memory store's lease logic (with release honouring expiry, as the
        # Storage contract says: "False if it was not held (expired, or released before)").
        key = uuid.uuid4().hex
        model: dict[str, float] = {}

        def expect(operation: str, lease: str, ttl: float, now: float) -> object:
            if operation == "acquire":
                for held in [held for held, until in model.items() if until <= now]:
                    del model[held]
                granted = lease in model or len(model) < limit
                if granted:
                    model[lease] = now + ttl
                return granted
            if operation == "renew":
                if model.get(lease, -math.inf) <= now:
                    return False
                model[lease] = now + ttl
                return True
            if operation == "release":
                return model.pop(lease, -math.inf) > now
            return sum(1 for until in model.values() if until > now)

        def apply(operation: str, lease: str, ttl: float, now: float) -> object:
            if operation == "acquire":
                return store.acquire_lease(key, limit, lease, ttl, now=now)
            if operation == "renew":
                return store.renew_lease(key, lease, ttl, now=now)
            if operation == "release":
                return store.release_lease(key, lease, now=now)
            return store.count_leases(key, now=now)

        now = 1000.0
        for operation, lease, delay, ttl in operations:
            now += delay
            got = apply(operation, lease, ttl, now)
            assert got == expect(operation, lease, ttl, now), (operation, lease, now)


# -- scripts: one round trip, EVALSHA, NOSCRIPT ---------------------------------------------------


def every_operation(store: RedisStorage, tag: str) -> int:
    """Run each kind of store call once (on keys named after ``tag``); return how many."""
    calls = 0
    for algorithm in ALGORITHMS:
        store.decide(algorithm, tag, TWO_RATES, 1, now=10.0)
        store.decide(algorithm, tag, TWO_RATES, 1, consume=False, now=10.5)
        store.decide(algorithm, tag, TWO_RATES, 9, now=11.0)  # rejected
        store.reset(algorithm, tag, TWO_RATES)
        calls += 4
    store.acquire_lease(tag, 2, "a", 5, now=10.0)
    store.renew_lease(tag, "a", 5, now=11.0)
    store.count_leases(tag, now=11.0)
    store.release_lease(tag, "a", now=11.0)
    return calls + 4


async def aevery_operation(store: RedisStorage, tag: str) -> int:
    calls = 0
    for algorithm in ALGORITHMS:
        await store.adecide(algorithm, tag, TWO_RATES, 1, now=10.0)
        await store.adecide(algorithm, tag, TWO_RATES, 1, consume=False, now=10.5)
        await store.adecide(algorithm, tag, TWO_RATES, 9, now=11.0)
        await store.areset(algorithm, tag, TWO_RATES)
        calls += 4
    await store.aacquire_lease(tag, 2, "a", 5, now=10.0)
    await store.arenew_lease(tag, "a", 5, now=11.0)
    await store.acount_leases(tag, now=11.0)
    await store.arelease_lease(tag, "a", now=11.0)
    return calls + 4


class TestScripts:
    async def test_one_request_per_operation_asyncio(self, redis_url, prefix, monkeypatch):
        store = RedisStorage.from_url(redis_url, prefix=prefix)
        packed: list[tuple[Any, ...]] = []
        pack = buttress.storage.redis._pack

        def counting(args: tuple[Any, ...]) -> bytes:
            packed.append(args)
            return pack(args)

        try:
            await aevery_operation(store, "warm-up")  # connects and loads every script
            monkeypatch.setattr(buttress.storage.redis, "_pack", counting)
            calls = await aevery_operation(store, "k")
            assert len(packed) == calls
            assert all(args[0] == "EVALSHA" for args in packed)
        finally:
            await store.aclose()

    def test_a_decision_sends_its_keys_and_little_else(self, store, prefix, monkeypatch):
        # Limit and period travel in the key's name; a cost of 1 on the server's clock goes
        # without arguments. (What the store packs is what goes on its socket.)
        sent: list[tuple[Any, ...]] = []
        pack = buttress.storage.redis._pack

        def recording(args: tuple[Any, ...]) -> bytes:
            sent.append(args)
            return pack(args)

        one = (Rate(5, per=60),)
        store.decide("gcra", "k", one, 1)  # loads the script (NOSCRIPT, SCRIPT LOAD, again)
        monkeypatch.setattr(buttress.storage.redis, "_pack", recording)
        store.decide("gcra", "k", one, 1)
        store.decide("gcra", "k", one, 2)
        store.decide("gcra", "k", one, 2, consume=False)
        store.decide("gcra", "k", one, 1, now=1000.0)
        store.decide("gcra", "k", TWO_RATES, 1)
        assert all(args[0] == "EVALSHA" for args in sent)
        (name,) = state_keys(prefix, "k", "gcra", one[0])
        two = [name for rate in TWO_RATES for name in state_keys(prefix, "k", "gcra", rate)]
        assert [args[2:] for args in sent] == [
            (1, name),
            (1, name, 2),
            (1, name, -3),  # a peek: -1 - cost
            (1, name, 1, "1000.0"),
            (2, *two),
        ]

    @pytest.mark.parametrize("two", [False, True], ids=["one rate", "two rates"])
    async def test_a_clients_next_decision_reuses_its_packed_command(
        self, store, astore, prefix, monkeypatch, two
    ):
        # Packing a command costs more than the rest of the client's work on a decision: the
        # plan keeps each key's packed command, which its next decision sends as it is.
        rates = (Rate(100, per=60), Rate(1000, per=3600)) if two else (Rate(100, per=60),)
        store.decide("fixed-window", "warm-up", rates, 1)  # the plan is made; the script loaded
        await astore.adecide("fixed-window", "warm-up", rates, 1)
        packed: list[tuple[Any, ...]] = []
        pack = buttress.storage.redis._pack

        def counting(args: tuple[Any, ...]) -> bytes:
            packed.append(args)
            return pack(args)

        monkeypatch.setattr(buttress.storage.redis, "_pack", counting)
        first = store.decide("fixed-window", "k", rates, 1)
        second = store.decide("fixed-window", "k", rates, 1)
        third = await astore.adecide("fixed-window", "k", rates, 1)
        fourth = await astore.adecide("fixed-window", "k", rates, 1)
        assert len(packed) == 2  # once by each store: its plans are its own
        names = [name for rate in rates for name in state_keys(prefix, "k", "fixed-window", rate)]
        assert packed[0][2:] == packed[1][2:] == (len(names), *names)
        assert [d.remaining for d in (first, second, third, fourth)] == [
            first.remaining - i for i in range(4)
        ]
        # Any other decision is packed anew, and counts on the same state.
        peek = store.decide("fixed-window", "k", rates, 1, consume=False)
        costly = await astore.adecide("fixed-window", "k", rates, 2)
        assert len(packed) == 4
        assert peek.remaining == fourth.remaining - 1
        assert costly.remaining == fourth.remaining - 2

    async def test_the_packed_commands_kept_are_bounded(self, store, astore, monkeypatch):
        monkeypatch.setattr(buttress.storage.redis, "_COMMANDS_KEPT", 3)
        one = TWO_RATES[:1]
        for target in (store, astore):
            for i in range(10):
                for _ in range(2):
                    if target is store:
                        got = store.decide("gcra", f"k{i}", one, 1)
                    else:
                        got = await astore.adecide("gcra", f"a{i}", one, 1)
                    assert got.allowed
                plan = target._plan("gcra", one)
                assert 1 <= len(plan.commands) <= 3
        assert store.decide("gcra", "k9", one, 1).remaining == one[0].limit - 3

    def test_threads_sharing_the_kept_commands_count_every_decision(self, store, monkeypatch):
        # 8 threads on 12 keys, the plan's kept commands emptied every 4 keys meanwhile: each
        # key's count is exactly the decisions made on it (a command never goes to another key).
        monkeypatch.setattr(buttress.storage.redis, "_COMMANDS_KEPT", 4)
        rates = (Rate(10_000, per=3600),)
        store.decide("fixed-window", "warm-up", rates, 1)
        made: list[list[str]] = [[] for _ in range(8)]
        failures: list[BaseException] = []
        start = threading.Barrier(8)

        def work(index: int) -> None:
            try:
                start.wait()
                for i in range(60):
                    key = f"k{(index * 7 + i) % 12}"
                    assert store.decide("fixed-window", key, rates, 1).allowed
                    made[index].append(key)
            except BaseException as error:  # reported below
                failures.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not failures
        counts = {f"k{i}": 0 for i in range(12)}
        for keys in made:
            for key in keys:
                counts[key] += 1
        for key, count in counts.items():
            peek = store.decide("fixed-window", key, rates, 1, consume=False)
            assert peek.remaining == 10_000 - count - 1, key

    @pytest.mark.parametrize(
        "reply",
        [b"3 10", b"", b"\x00" * 17, "x" * 16, None, 3, b"x" * 10_000],
        ids=["text", "empty", "17 bytes", "str", "nil", "integer", "long"],
    )
    def test_a_reply_of_another_shape_is_a_storage_error(self, store, reply):
        # E.g. from a script of an earlier build that somehow answered: never a wrong decision.
        for rates in (TWO_RATES[:1], TWO_RATES):
            plan = store._plan("token-bucket", rates)
            with pytest.raises(StorageError, match="unexpected reply") as raised:
                plan.decision(reply)
            assert len(str(raised.value)) < 200  # a long reply is cut short in the message

    @pytest.mark.parametrize("index", [0.0, 3.0, -1.0, 1.5, math.nan])
    def test_a_binding_rate_out_of_range_is_a_storage_error(self, store, index):
        plan = store._plan("gcra", TWO_RATES)
        for reply in (struct.pack(">ddd", index, 2, 1.5), struct.pack(">dddd", index, 0, 1.5, 1.0)):
            with pytest.raises(StorageError, match="unexpected reply"):
                plan.decision(reply)
        assert plan.decision(struct.pack(">ddd", 2.0, 4, 1.5)).rate == TWO_RATES[1]

    def test_one_evalsha_per_operation_on_the_server(self, private_redis):
        # A private server: INFO commandstats counts our commands alone. (Commands run inside
        # a script are counted too, under their own names; EVALSHA counts the requests.)
        client = redis.Redis(unix_socket_path=str(private_redis))
        store = RedisStorage(client, prefix="count")
        try:
            every_operation(store, "warm-up")
            before = cast(dict[str, Any], client.info("commandstats"))
            calls = every_operation(store, "k")
            after = cast(dict[str, Any], client.info("commandstats"))
        finally:
            client.close()

        def delta(name: str) -> int:
            counted = int(after.get(f"cmdstat_{name}", {}).get("calls", 0))
            return counted - int(before.get(f"cmdstat_{name}", {}).get("calls", 0))

        assert delta("evalsha") == calls
        assert delta("eval") == delta("script|load") == 0
        assert delta("info") == 1  # the first INFO, counted once it had answered

    # SCRIPT FLUSH on a server of our own: on a shared one it would hit everyone's scripts.

    def test_scripts_are_reloaded_after_script_flush(self, private_redis, prefix):
        store = RedisStorage.from_url(f"unix://{private_redis}", prefix=prefix)
        raw = redis.Redis(unix_socket_path=str(private_redis))
        memory = MemoryStorage()
        try:
            for step in range(4):
                raw.script_flush()
                got = store.decide("sliding-window", "k", TWO_RATES, 1, now=float(step))
                assert got == memory.decide("sliding-window", "k", TWO_RATES, 1, now=float(step))
                raw.script_flush()
                assert store.acquire_lease("k", 5, f"lease-{step}", 10, now=0.0)
            raw.script_flush()
            assert store.count_leases("k", now=0.0) == 4
        finally:
            store.close()
            raw.close()

    async def test_scripts_are_reloaded_after_script_flush_asyncio(self, private_redis, prefix):
        store = RedisStorage.from_url(f"unix://{private_redis}", prefix=prefix)
        raw = redis.Redis(unix_socket_path=str(private_redis))
        memory = MemoryStorage()
        try:
            for step in range(4):
                raw.script_flush()
                got = await store.adecide("gcra", "k", TWO_RATES, 1, now=float(step))
                assert got == memory.decide("gcra", "k", TWO_RATES, 1, now=float(step))
            raw.script_flush()
            assert await store.aacquire_lease("k", 1, "a", 10, now=0.0)
        finally:
            await store.aclose()
            raw.close()

    def test_scripts_ship_as_package_data(self):
        from importlib import resources  # noqa: PLC0415

        lua = resources.files("buttress.storage").joinpath("lua")
        names = {entry.name for entry in lua.iterdir()}
        assert {"head.lua", "tail.lua", "common.lua", "gcra.lua", "lease_acquire.lua"} <= names


# -- the server's clock --------------------------------------------------------------------------


class TestServerClock:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_two_stores_share_state_on_the_server_clock(self, redis_url, prefix, algorithm):
        rates = (Rate(2, per=60),)
        first = RedisStorage.from_url(redis_url, prefix=prefix)
        second = RedisStorage.from_url(redis_url, prefix=prefix)
        try:
            assert first.decide(algorithm, "k", rates, 1).allowed
            assert second.decide(algorithm, "k", rates, 1).allowed
            rejected = first.decide(algorithm, "k", rates, 1)
            seen = second.decide(algorithm, "k", rates, 1, consume=False)
            assert not rejected.allowed
            assert not seen.allowed
            assert rejected.retry_after is not None
            assert seen.retry_after is not None
            # (The sliding window counter may ask for up to two periods.)
            assert 0 < rejected.retry_after <= 120
            assert seen.retry_after == pytest.approx(rejected.retry_after, abs=0.5)
        finally:
            first.close()
            second.close()

    @pytest.mark.parametrize("two", [False, True], ids=["one rate", "two rates"])
    def test_a_fixed_windows_key_ends_with_the_window(self, store, raw, prefix, two):
        # On the server's clock the window's key keeps the TTL it got when the window opened.
        rate = Rate(10, per=0.5)
        rates = (rate, Rate(100, per=60)) if two else (rate,)
        (name,) = state_keys(prefix, "k", "fixed-window", rate)
        seconds, microseconds = raw.time()
        opened = seconds + microseconds / 1e6  # just before the window opens
        for _ in range(3):
            assert store.decide("fixed-window", "k", rates, 1).allowed
            time.sleep(0.1)
        seconds, microseconds = raw.time()
        left = (opened + 0.5 - (seconds + microseconds / 1e6)) * 1000
        assert left - 10 <= raw.pttl(name) <= left + 30
        time.sleep(max(0.0, left / 1000) + 0.05)
        assert raw.exists(name) == 0
        assert store.decide("fixed-window", "k", rates, 1).remaining == 9

    def test_now_defaults_to_the_servers_time(self, store, raw):
        rates = (Rate(5, per=60),)
        seconds, microseconds = raw.time()
        server_now = seconds + microseconds / 1e6
        assert store.decide("fixed-window", "k", rates, 1).allowed
        # The window began at the server's time: an explicit time on that scale sees it...
        seen = store.decide("fixed-window", "k", rates, 1, consume=False, now=server_now + 1)
        assert seen.remaining == 3
        assert seen.reset_after == pytest.approx(59, abs=1)
        # ... and a minute later it is over.
        later = store.decide("fixed-window", "k", rates, 1, consume=False, now=server_now + 61)
        assert later.remaining == 4


# -- failures ------------------------------------------------------------------------------------


def _all_operations(store: RedisStorage) -> list[Callable[[], object]]:
    return [
        lambda: store.decide("gcra", "k", TWO_RATES, 1),
        lambda: store.reset("gcra", "k", TWO_RATES),
        lambda: store.acquire_lease("k", 1, "a", 5),
        lambda: store.renew_lease("k", "a", 5),
        lambda: store.release_lease("k", "a"),
        lambda: store.count_leases("k"),
    ]


class TestFailures:
    def test_unreachable_server(self):
        port = free_port()
        store = RedisStorage.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.2)
        try:
            for operation in _all_operations(store):
                started = time.monotonic()
                with pytest.raises(StorageError) as caught:
                    operation()
                assert time.monotonic() - started < 2
                assert isinstance(caught.value.__cause__, redis.ConnectionError)
                assert f"127.0.0.1:{port}" in str(caught.value)
        finally:
            store.close()
        message = str(caught.value)
        assert message.startswith("Redis count_leases failed on redis://127.0.0.1:")

    def test_silent_server_times_out(self):
        with silent_server() as port:
            store = RedisStorage.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.2)
            try:
                started = time.monotonic()
                with pytest.raises(StorageError, match="decide") as caught:
                    store.decide("fixed-window", "k", TWO_RATES, 1)
                assert time.monotonic() - started < 2
                assert isinstance(caught.value.__cause__, redis.TimeoutError)
            finally:
                store.close()

    @pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix socket"])
    def test_a_frozen_server_times_out_in_the_kernel(self, tmp_path, unix):
        # The store's own connections keep their timeout in the kernel (SO_RCVTIMEO and
        # SO_SNDTIMEO on a blocking socket, no poll before each call): a server that stops
        # answering after the handshake still ends the call after the timeout, as a
        # redis.TimeoutError, and the next call after it thaws works on a new connection.
        servers = private_server(tmp_path, unix=unix)
        server = next(servers)
        store = RedisStorage.from_url(server.url, timeout=0.3)
        try:
            assert store.decide("fixed-window", "k", TWO_RATES, 1).allowed
            assert store._connections is not None
            [link] = store._connections._free
            assert link.sock.gettimeout() is None  # blocking: the kernel keeps the timeout
            received = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
            seconds, microseconds = struct.unpack("@ll", received)
            assert (seconds, microseconds) == (0, pytest.approx(300_000, abs=10_000))
            server.freeze()
            started = time.monotonic()
            with pytest.raises(StorageError, match="decide") as caught:
                store.decide("fixed-window", "k", TWO_RATES, 1)
            assert 0.25 < time.monotonic() - started < 2
            assert isinstance(caught.value.__cause__, redis.TimeoutError)
            server.thaw()
            decision = store.decide("fixed-window", "k", TWO_RATES, 1)
            assert decision.allowed
            # The command that timed out was sent: the thawed server may still have run it (a
            # timeout never says a command did not run), so 1 or 0 remain.
            assert decision.remaining in (0, 1)
        finally:
            server.thaw()
            store.close()
            servers.close()

    def test_kernel_timeouts_only_on_the_standard_librarys_sockets(self):
        # A cooperative socket (gevent, eventlet) subclasses or replaces socket.socket and keeps
        # its descriptor non-blocking: a kernel timeout would never fire there, so it keeps
        # Python's timeout. So do sockets without a timeout.
        class Cooperative(socket.socket):
            pass

        for made, timeout, kept in [
            (socket.socket, 0.25, None),
            (Cooperative, 0.25, 0.25),
            (socket.socket, None, None),
        ]:
            with made(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                buttress.storage.redis._kernel_timeouts(sock)
                assert sock.gettimeout() == kept, made
                received = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
                seconds, microseconds = struct.unpack("@ll", received)
                moved = made is socket.socket and timeout is not None
                # The kernel keeps the timeout in its own ticks (4 ms at HZ=250): 0.25 s may
                # read back as 0.252 s.
                assert seconds == 0
                assert microseconds == (pytest.approx(250_000, abs=10_000) if moved else 0)

    async def test_unreachable_server_asyncio(self):
        port = free_port()
        store = RedisStorage.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.2)
        try:
            started = time.monotonic()
            with pytest.raises(
                StorageError, match=f"decide failed on redis://127.0.0.1:{port}/0"
            ) as caught:
                await store.adecide("gcra", "k", TWO_RATES, 1)
            assert time.monotonic() - started < 2
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
            with pytest.raises(StorageError):
                await store.aacquire_lease("k", 1, "a", 5)
        finally:
            await store.aclose()

    async def test_silent_server_times_out_asyncio(self):
        with silent_server() as port:
            store = RedisStorage.from_url(f"redis://127.0.0.1:{port}/0", timeout=0.2)
            try:
                started = time.monotonic()
                with pytest.raises(StorageError):
                    await store.adecide("token-bucket", "k", TWO_RATES, 1)
                assert time.monotonic() - started < 2
            finally:
                await store.aclose()

    async def test_the_whole_coroutine_call_is_bounded(self, redis_url, prefix):
        # A client without socket timeouts, stuck on a server that never answers: the store's
        # own bound (twice its timeout) still ends the call.
        with silent_server() as port:
            client = redis.asyncio.Redis(host="127.0.0.1", port=port)
            store = RedisStorage(async_client=client, prefix=prefix, timeout=0.2)
            try:
                started = time.monotonic()
                with pytest.raises(StorageError, match=r"no answer within 0\.4 s"):
                    await store.adecide("gcra", "k", TWO_RATES, 1)
                assert time.monotonic() - started < 2
            finally:
                await client.aclose()

    def test_a_redis_error_reply_becomes_storage_error(self, store, raw, prefix):
        name = state_keys(prefix, "k", "gcra", TWO_RATES[0])[0]
        raw.hset(name, "not", "a string")
        with pytest.raises(StorageError, match="WRONGTYPE") as caught:
            store.decide("gcra", "k", TWO_RATES, 1, now=0.0)
        assert isinstance(caught.value.__cause__, redis.ResponseError)
        assert raw.type(state_keys(prefix, "k", "gcra", TWO_RATES[1])[0]) == "none"

    async def test_the_common_asyncio_call_fails_as_the_others_do(self, server, prefix):
        # On an open connection a call is one await on the reply (no opening step); its error
        # reply, NOSCRIPT (the script loaded and sent again) and timeout are still reported.
        store = RedisStorage.from_url(server.url, prefix=prefix, timeout=0.3)
        raw = redis.Redis.from_url(server.url)
        one = (Rate(5, per=60),)
        [name] = state_keys(prefix, "k", "fixed-window", one[0])
        steps: list[str] = []
        opened, reload = store._opened, store._reload

        async def spied_opened(bound: float) -> Any:
            steps.append("open")
            return await opened(bound)

        def spied_reload(*arguments: Any) -> Any:
            steps.append("reload")
            return reload(*arguments)

        store._opened = spied_opened  # type: ignore[method-assign]
        store._reload = spied_reload  # type: ignore[method-assign,assignment]
        try:
            assert (await store.adecide("fixed-window", "k", one, 1)).remaining == 4
            assert steps == ["open", "reload"]  # a new connection, a new server: no script yet
            assert (await store.adecide("fixed-window", "k", one, 1)).remaining == 3
            assert steps == ["open", "reload"]
            raw.delete(name)
            raw.hset(name, "not", "a string")
            with pytest.raises(StorageError, match="WRONGTYPE") as caught:
                await store.adecide("fixed-window", "k", one, 1)
            assert isinstance(caught.value.__cause__, redis.ResponseError)
            raw.delete(name)
            raw.script_flush()
            assert (await store.adecide("fixed-window", "k", one, 1)).remaining == 4
            assert steps == ["open", "reload", "reload"]  # NOSCRIPT: loaded, sent again
            server.freeze()
            started = time.monotonic()
            with pytest.raises(StorageError, match=r"decide .* no answer within 0\.6 s") as caught:
                await store.adecide("fixed-window", "k", one, 1)
            assert time.monotonic() - started < 2
            assert isinstance(caught.value.__cause__, redis.TimeoutError)
            server.thaw()
            # A new connection; the command that timed out may have run: 3 or 2 remain.
            assert (await store.adecide("fixed-window", "k", one, 1)).remaining in (2, 3)
        finally:
            server.thaw()
            await store.aclose()
            raw.close()


# -- construction --------------------------------------------------------------------------------


class TestConstruction:
    @pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "{x}"])
    def test_bad_prefix(self, prefix):
        with pytest.raises(ValueError, match="prefix"):
            RedisStorage.from_url("redis://127.0.0.1:6379/0", prefix=prefix)

    def test_prefix_must_be_a_str(self):
        with pytest.raises(TypeError, match="prefix"):
            RedisStorage.from_url("redis://127.0.0.1:6379/0", prefix=b"x")  # type: ignore[arg-type]

    @pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
    def test_bad_timeout(self, timeout):
        with pytest.raises(ValueError, match="timeout"):
            RedisStorage.from_url("redis://127.0.0.1:6379/0", timeout=timeout)

    def test_timeout_must_be_a_number(self):
        with pytest.raises(TypeError, match="timeout"):
            RedisStorage.from_url("redis://127.0.0.1:6379/0", timeout="1")  # type: ignore[arg-type]

    @pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "memory://"])
    def test_bad_url(self, url):
        with pytest.raises(ConfigurationError, match="URL"):
            RedisStorage.from_url(url)

    async def test_clients_of_the_wrong_kind(self):
        client = redis.asyncio.Redis()
        try:
            with pytest.raises(TypeError, match="async_client="):
                RedisStorage(client)  # type: ignore[arg-type]
        finally:
            await client.aclose()
        sync = redis.Redis()
        try:
            with pytest.raises(TypeError, match="async_client must be"):
                RedisStorage(async_client=sync)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="client options"):
                RedisStorage(sync, socket_timeout=1)
        finally:
            sync.close()

    async def test_a_store_without_an_asyncio_client(self, redis_url, prefix):
        client = redis.Redis.from_url(redis_url)
        store = RedisStorage(client, prefix=prefix)
        try:
            assert store.decide("gcra", "k", TWO_RATES, 1).allowed
            with pytest.raises(ConfigurationError, match="async_client= or url="):
                await store.adecide("gcra", "k", TWO_RATES, 1)
        finally:
            store.close()
            assert client.ping()  # a client passed in stays open
            client.close()

    async def test_a_store_without_a_sync_client(self, redis_url, prefix):
        client = redis.asyncio.Redis.from_url(redis_url)
        store = RedisStorage(async_client=client, prefix=prefix)
        try:
            assert (await store.adecide("gcra", "k", TWO_RATES, 1)).allowed
            with pytest.raises(ConfigurationError, match="client= or url="):
                store.decide("gcra", "k", TWO_RATES, 1)
        finally:
            await store.aclose()
            await client.aclose()

    @pytest.mark.parametrize(
        ("call", "error", "argument"),
        [
            (lambda s: s.decide("leaky", "k", TWO_RATES, 1), ValueError, "algorithm"),
            (lambda s: s.decide("gcra", 42, TWO_RATES, 1), TypeError, "key"),
            (lambda s: s.decide("gcra", "k", (), 1), TypeError, "rates"),
            (lambda s: s.decide("gcra", "k", [Rate(1)], 1), TypeError, "rates"),
            (lambda s: s.decide("gcra", "k", TWO_RATES, -1), ValueError, "cost"),
            (lambda s: s.decide("gcra", "k", TWO_RATES, 1.5), TypeError, "cost"),
            (lambda s: s.reset("nope", "k", TWO_RATES), ValueError, "algorithm"),
            (lambda s: s.acquire_lease("k", 0, "a", 5), ValueError, "limit"),
            (lambda s: s.acquire_lease("k", 1, "a", -5), ValueError, "ttl"),
            (lambda s: s.renew_lease(None, "a", 5), TypeError, "key"),
            (lambda s: s.release_lease("k", 7), TypeError, "lease_id"),
        ],
    )
    def test_bad_arguments_write_nothing(self, store, raw, prefix, call, error, argument):
        with pytest.raises(error, match=argument):
            call(store)
        assert keys_of(raw, prefix) == []

    def test_storage_from_url(self, redis_url, prefix):
        store = storage_from_url(redis_url, prefix=prefix, timeout=0.5)
        try:
            assert isinstance(store, RedisStorage)
            assert store.decide("gcra", "k", TWO_RATES, 1).allowed
            assert repr(store) == f"RedisStorage('{redis_url}', prefix='{prefix}')"
        finally:
            store.close()

    def test_client_options_reach_the_client(self, redis_url, prefix, raw):
        store = RedisStorage.from_url(redis_url, prefix=prefix, client_name=f"{prefix}-client")
        try:
            store.count_leases("k")
            names = [client["name"] for client in raw.client_list()]
            assert f"{prefix}-client" in names
        finally:
            store.close()

    @pytest.mark.parametrize("scheme", ["unix", "redis+unix", "UNIX"])
    async def test_unix_socket_urls(self, private_redis, scheme):
        store = storage_from_url(f"{scheme}://{private_redis}?db=1", prefix="unix")
        assert isinstance(store, RedisStorage)
        try:
            assert store.decide("gcra", scheme, TWO_RATES, 1).allowed
            assert (await store.adecide("gcra", scheme, TWO_RATES, 1)).remaining == 1
            assert repr(store) == f"RedisStorage('unix://{private_redis}?db=1', prefix='unix')"
        finally:
            await store.aclose()
        client = redis.Redis(unix_socket_path=str(private_redis), db=1)
        try:
            assert client.exists(f"{{unix:{scheme}}}:tat:3:10.0") == 1
        finally:
            client.close()

    async def test_one_asyncio_client_per_event_loop(self, redis_url, prefix):
        store = RedisStorage.from_url(redis_url, prefix=prefix)

        async def use() -> Decision:
            try:
                return await store.adecide("gcra", "k", TWO_RATES, 1, now=0.0)
            finally:
                await store.aclose()

        try:
            first = await use()
            # Another event loop in another thread gets its own client.
            second = await asyncio.to_thread(asyncio.run, use())
            assert (first.remaining, second.remaining) == (2, 1)
        finally:
            store.close()


class TestOwnConnections:
    """Decisions go out on the store's own connections, made by the client's pool."""

    def test_a_connection_the_server_closed_is_replaced(self, store, raw, prefix):
        rates = (Rate(10, per=60),)
        assert store.decide("fixed-window", "k", rates, 1).remaining == 9
        connections = store._connections
        assert connections is not None
        (ours,) = connections._free  # the store's one connection: kill it, and no other
        ours.sock.sendall(buttress.storage.redis._pack(("CLIENT", "ID")))
        assert raw.client_kill_filter(_id=ours.read()) == 1
        # The next decision finds the dead socket before sending, and reconnects.
        assert store.decide("fixed-window", "k", rates, 1).remaining == 8

    async def test_an_asyncio_connection_the_server_closed_is_replaced(self, astore, raw):
        # Its waiting command fails (it is not left hanging), and the next call reconnects.
        rates = (Rate(10, per=60),)
        assert (await astore.adecide("fixed-window", "k", rates, 1)).remaining == 9
        link = astore._links[asyncio.get_running_loop()]
        ours = await link.send(buttress.storage.redis._pack(("CLIENT", "ID")), 1.0)
        blocked = link.send(buttress.storage.redis._pack(("BLPOP", f"{uuid.uuid4()}", "5")), 10.0)
        await asyncio.sleep(0.05)  # the BLPOP is waiting on the server
        assert raw.client_kill_filter(_id=ours) == 1
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError, match="closed the connection"):
            await blocked
        assert time.monotonic() - started < 1
        assert link.dead
        assert (await astore.adecide("fixed-window", "k", rates, 1)).remaining == 8
        assert astore._links[asyncio.get_running_loop()] is not link
        # redis-py's connection was told at once: dropped, it does not warn it was left open.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del link
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]

    async def test_a_garbled_reply_ends_the_asyncio_connection(self, astore):
        # Bytes that are not RESP fail every waiting command and drop the connection: a reply
        # must never be read out of step. The next call reconnects.
        rates = (Rate(10, per=60),)
        assert (await astore.adecide("fixed-window", "k", rates, 1)).remaining == 9
        link = astore._links[asyncio.get_running_loop()]
        blocked = link.send(buttress.storage.redis._pack(("BLPOP", f"{uuid.uuid4()}", "5")), 10.0)
        link.data_received(b"?not RESP\r\n")  # as if the server had sent it
        with pytest.raises(redis.ConnectionError, match="Protocol"):
            await blocked
        assert link.dead
        assert (await astore.adecide("fixed-window", "k", rates, 1)).remaining == 8
        assert astore._links[asyncio.get_running_loop()] is not link

    def test_a_connection_that_failed_mid_command_is_not_reused_as_is(self, private_redis):
        # On a private server: a busy script blocks the whole server for a second.
        store = RedisStorage.from_url(f"unix://{private_redis}", prefix="mid", timeout=0.2)
        blocker = redis.Redis(unix_socket_path=str(private_redis))
        rates = (Rate(10, per=60),)
        busy_for_a_second = (
            "local t = tonumber(redis.call('TIME')[1]) + 2 "
            "while tonumber(redis.call('TIME')[1]) < t do end return 1"
        )
        try:
            assert store.decide("fixed-window", "k", rates, 1).remaining == 9
            busy = threading.Thread(target=lambda: blocker.eval(busy_for_a_second, 0))
            busy.start()
            time.sleep(0.1)
            with pytest.raises(StorageError):  # its reply would come late on that connection
                store.decide("fixed-window", "k", rates, 1)
            busy.join(10)
            # The late reply is never read as the answer of the next decision.
            decision = store.decide("fixed-window", "k", rates, 1)
            assert decision.remaining in (7, 8)  # (the timed-out decision may have counted)
            assert store.decide("fixed-window", "k", rates, 1).remaining == decision.remaining - 1
        finally:
            store.close()
            blocker.close()

    def test_a_forked_child_does_not_use_the_parents_connections(self, store):
        rates = (Rate(10, per=60),)
        store.decide("fixed-window", "fork", rates, 1)
        connections = store._connections
        assert connections is not None
        parents = list(connections._free)
        assert parents
        connections._pid = -1  # what a forked child sees: another process's connections
        assert store.decide("fixed-window", "fork", rates, 1).remaining == 8
        assert not any(c in parents for c in connections._free)

    def test_a_resp3_client_is_served_on_resp2_connections(self, redis_url, prefix):
        client = redis.Redis.from_url(redis_url, protocol=3)
        store = RedisStorage(client, prefix=prefix)
        rates = (Rate(10, per=60),)
        try:
            assert store.decide("gcra", "resp3", rates, 1).remaining == 9
            assert store.decide("gcra", "resp3", rates, 1).remaining == 8
            assert client.ping()  # the client's own connections are untouched
        finally:
            store.close()
            client.close()


class TestOwnAsyncConnection:
    """Coroutine calls share one pipelined connection per event loop."""

    async def test_concurrent_calls_each_get_their_own_reply(self, astore):
        rates = (Rate(1000, per=60),)

        async def spend(index: int) -> tuple[int, int]:
            decision = await astore.adecide("fixed-window", f"key-{index % 7}", rates, index + 1)
            return index, decision.remaining

        results = await asyncio.gather(*(spend(i) for i in range(70)))
        # Per key, the remainders are what the costs of that key's requests left, in some order.
        for key in range(7):
            costs = [i + 1 for i in range(70) if i % 7 == key]
            left = sorted((r for i, r in results if i % 7 == key), reverse=True)
            assert left[-1] == 1000 - sum(costs)
            assert all(1000 - r in _partial_sums(costs) for r in left)
        assert len(astore._links) == 1

    async def test_a_caller_that_stops_waiting_does_not_shift_the_replies(self, astore):
        rates = (Rate(1000, per=60),)
        await astore.adecide("fixed-window", "warm", rates, 1)
        slow = asyncio.ensure_future(astore.adecide("fixed-window", "a", rates, 5))
        slow.cancel()  # its reply still comes, and is dropped
        with contextlib.suppress(asyncio.CancelledError):
            await slow
        decision = await astore.adecide("fixed-window", "b", rates, 3)
        assert decision.remaining == 997  # b's own reply, not a's


def _partial_sums(costs: list[int]) -> set[int]:
    sums = {0}
    for cost in costs:
        sums |= {total + cost for total in sums}
    return sums


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A private redis-server speaking TLS only, with a self-signed certificate: (URL, CA)."""
    from tests.conftest import _unavailable  # noqa: PLC0415 - skip or fail, as for services

    openssl = shutil.which("openssl")
    if openssl is None:
        _unavailable("the TLS test needs openssl to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)]
    request += ["-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"]
    request += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(request, check=True, capture_output=True)  # noqa: S603 - our own arguments
    servers = private_server(directory, tls=(cert, key))
    private = next(servers)
    try:
        yield private.url, cert
    finally:
        servers.close()  # stops it


class TestTls:
    """``rediss://``: the store's own connections (sync and asyncio) over TLS."""

    async def test_decisions_and_breakers_over_tls(self, tls_redis):
        url, cert = tls_redis
        store = RedisStorage.from_url(url, prefix="tls", ssl_ca_certs=str(cert))
        rates = (Rate(10, per=60),)
        try:
            assert store.decide("gcra", "k", rates, 1).remaining == 9
            assert (await store.adecide("gcra", "k", rates, 1)).remaining == 8
            rules = (
                "1",
                "0.0",
                "0.0",
                "count",
                "10",
                "10",
                "1",
                "1.0",
                "1.0",
                "1.0",
                "1",
                "1",
                "9",
            )
            assert store.breaker("b", "read", rules).state == "c"
            assert (await store.abreaker("b", "force", rules, ("o",))).state == "o"
        finally:
            await store.aclose()

    def test_a_wrong_certificate_is_a_storage_error(self, tls_redis):
        url, _ = tls_redis
        store = RedisStorage.from_url(url, prefix="tls")  # the system CAs: not ours
        try:
            with pytest.raises(StorageError, match=r"rediss://127\.0\.0\.1"):
                store.decide("gcra", "k", (Rate(10, per=60),), 1)
        finally:
            store.close()
