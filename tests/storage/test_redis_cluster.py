"""The Redis store on a Redis Cluster: a private cluster of three masters, started for the session.

The cluster (``redis_cluster``, see ``tests/_redis_server.py``) is this run's own, on loopback:
tests may move its slots and freeze its nodes. The rate-limit conformance suite runs here again
on the cluster (its classes are imported below; the fixtures of this module replace its stores),
then come what only a cluster has: keys spread over the masters, ``MOVED`` and ``ASK``,
``NOSCRIPT`` per node, failed nodes, and exactness under threads.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import pytest

pytest.importorskip("redis")

import redis
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot

from buttress import StorageError
from buttress.ratelimit import ALGORITHMS, ConcurrencyLimit, Limiter, Rate
from buttress.storage import storage_from_url
from buttress.storage.redis import RedisStorage, _cluster_url
from tests._redis_server import PrivateCluster, free_port
from tests._threads import run_in_threads

# The conformance suite, collected again in this module: on the cluster's store below.
from tests.ratelimit.test_conformance import (
    TestDecisions as TestConformanceDecisions,
)
from tests.ratelimit.test_conformance import (
    TestLeases as TestConformanceLeases,
)
from tests.ratelimit.test_conformance import (
    TestRandomHistories as TestConformanceRandomHistories,
)

__all__ = [
    "TestConformanceDecisions",
    "TestConformanceLeases",
    "TestConformanceRandomHistories",
]

PREFIX = f"cluster-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def store(redis_cluster: PrivateCluster) -> Iterator[RedisStorage]:
    """A store on the private cluster, made from its URL (the conformance suite's ``store``)."""
    made = RedisStorage.from_url(redis_cluster.url, prefix=PREFIX)
    yield made
    made.close()


@pytest.fixture
async def astore(store: RedisStorage) -> AsyncIterator[RedisStorage]:
    yield store
    await store.aclose()


@pytest.fixture
def store_time(redis_cluster: PrivateCluster) -> Iterator[Callable[[], float]]:
    """The cluster's clock (every node runs on this machine's)."""
    client = redis_cluster.client(redis_cluster.ports[0])

    def server_time() -> float:
        seconds, micros = cast("tuple[int, int]", client.time())
        return seconds + micros / 1e6

    yield server_time
    client.close()


def fresh(label: str = "k") -> str:
    return f"{label}:{uuid.uuid4().hex}"


def state_key(key: str, rate: Rate, short: str = "fw") -> str:
    return f"{{{PREFIX}:{key}}}:{short}:{rate.limit}:{rate.period!r}"


def keys_on(cluster: PrivateCluster, port: int, count: int = 1) -> list[str]:
    """Limiter keys whose hash slot the master on ``port`` serves (under PREFIX)."""
    found: list[str] = []
    while len(found) < count:
        key = fresh()
        if cluster.node_of(f"{{{PREFIX}:{key}}}") == port:
            found.append(key)
    return found


def exists_on(cluster: PrivateCluster, port: int, name: str) -> bool:
    """Whether the node on ``port`` holds the key ``name`` (whatever state its slot is in)."""
    client = cluster.client(port)
    try:
        held = client.execute_command("CLUSTER", "GETKEYSINSLOT", key_slot(name.encode()), 1000)
    finally:
        client.close()
    return name.encode() in held


class Migration:
    """Moves an empty hash slot between masters the way ``redis-cli --cluster reshard`` does."""

    def __init__(self, cluster: PrivateCluster, slot: int, source: int, target: int) -> None:
        self.cluster, self.slot, self.source, self.target = cluster, slot, source, target
        self.ids = {port: self._call(port, "CLUSTER", "MYID") for port in cluster.ports}

    def _call(self, port: int, *command: object) -> str:
        client = self.cluster.client(port)
        try:
            reply = client.execute_command(*command)
        finally:
            client.close()
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def begin(self) -> None:
        """The slot is being migrated: the source answers ``ASK`` for keys it does not hold."""
        source_id, target_id = self.ids[self.source], self.ids[self.target]
        self._call(self.target, "CLUSTER", "SETSLOT", self.slot, "IMPORTING", source_id)
        self._call(self.source, "CLUSTER", "SETSLOT", self.slot, "MIGRATING", target_id)

    def finish(self) -> None:
        """Move the source's keys of the slot to the target, then give the target the slot."""
        client = self.cluster.client(self.source)
        try:
            keys = client.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
            if keys:
                client.execute_command(
                    "MIGRATE", "127.0.0.1", self.target, "", 0, 5000, "KEYS", *keys
                )
        finally:
            client.close()
        order = [self.target, self.source] + [
            port for port in self.cluster.ports if port not in (self.source, self.target)
        ]
        for port in order:
            self._call(port, "CLUSTER", "SETSLOT", self.slot, "NODE", self.ids[self.target])
        deadline = time.monotonic() + 10
        while any(self._owner(port) != self.target for port in self.cluster.ports):
            assert time.monotonic() < deadline, "the nodes never agreed on the moved slot"
            time.sleep(0.05)

    def _owner(self, port: int) -> int | None:
        client = self.cluster.client(port)
        try:
            for start, end, master, *_ in PrivateCluster.slots(client):
                if int(start) <= self.slot <= int(end):
                    return int(master[1])
        finally:
            client.close()
        return None


def flush_scripts(cluster: PrivateCluster) -> None:
    for port in cluster.ports:
        client = cluster.client(port)
        client.script_flush()
        client.close()


def other_port(cluster: PrivateCluster, port: int) -> int:
    return next(each for each in cluster.ports if each != port)


class TestUrls:
    def test_a_cluster_url_makes_a_cluster_store_without_connecting(self):
        store = storage_from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2", prefix="p")
        assert isinstance(store, RedisStorage)
        assert repr(store) == "RedisStorage('redis+cluster://127.0.0.1:1,127.0.0.1:2', prefix='p')"
        store.close()

    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("redis+cluster://", "no host"),
            ("redis+cluster://user:pw@", "no host"),
            ("redis+cluster://127.0.0.1:7000,,127.0.0.1:7001", "no host"),
            ("redis+cluster://127.0.0.1:seven", "port 'seven'"),
            ("redis+cluster://127.0.0.1:70000", "port 70000"),
            ("redis+cluster://127.0.0.1:7000/2", "database '2'"),
        ],
    )
    def test_bad_urls_are_refused_naming_the_url(self, url, words):
        with pytest.raises(ValueError, match=words) as raised:
            storage_from_url(url)
        assert repr(url) in str(raised.value)

    def test_url_parts(self):
        first, seeds = _cluster_url("rediss+cluster://u:p@[::1]:7000,10.0.0.2/0?ssl_cert_reqs=none")
        assert first == "rediss://u:p@[::1]:7000/0?ssl_cert_reqs=none"
        assert seeds == [("::1", 7000), ("10.0.0.2", 6379)]
        first, seeds = _cluster_url("redis+cluster://h:7001?socket_keepalive=true")
        assert (first, seeds) == ("redis://h:7001/0?socket_keepalive=true", [("h", 7001)])

    def test_cluster_and_single_server_do_not_mix(self):
        client = redis.Redis(host="127.0.0.1", port=1)
        with pytest.raises(ValueError, match="not a mix"):
            RedisStorage(client, url="redis+cluster://127.0.0.1:7000")
        client.close()

    def test_an_asyncio_cluster_client_as_client_is_refused_with_a_hint(self):
        client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=1)
        with pytest.raises(TypeError, match="async_client="):
            RedisStorage(cast("Any", client))


class TestHashTags:
    @pytest.mark.parametrize("key", ["user:1", "we{ird}", "a}b", "{x}", ""])
    def test_every_key_of_one_call_is_in_one_slot(self, key):
        store = RedisStorage(url="redis+cluster://127.0.0.1:1", prefix="p")
        rates = (Rate(2, per=1), Rate(3, per=60), Rate(4, per=60, scope="s"))
        for algorithm in ALGORITHMS:
            _, arguments = store._decide_arguments(algorithm, key, rates, 1, True, None)
            assert arguments is not None  # on a cluster, never a kept command
            names = arguments[1 : 1 + cast("int", arguments[0])]
            names += tuple(store._reset_keys(algorithm, key, rates))
            names += (store._leases(key),)
            assert len({key_slot(str(name).encode()) for name in names}) == 1
        breaker = store._breaker_args(key or "b", "read", ("0",) * 13, (), None)
        assert len({key_slot(str(name).encode()) for name in breaker[1:4]}) == 1
        store.close()

    def test_a_multi_limit_decision_with_braces_in_the_key_runs(self, store):
        rates = (Rate(2, per=1), Rate(3, per=60))
        for key in ("we{ird}" + fresh(), fresh() + "}{", "{" + fresh() + "}"):
            assert store.decide("gcra", key, rates, 2).allowed
            assert not store.decide("gcra", key, rates, 1).allowed


class TestSpread:
    def test_keys_on_every_master_all_work(self, store, redis_cluster):
        rate = Rate(2, per=60)
        for port in redis_cluster.ports:
            for key in keys_on(redis_cluster, port, 2):
                assert store.decide("fixed-window", key, (rate,), 1).remaining == 1
                assert store.decide("fixed-window", key, (rate,), 1).remaining == 0
                assert not store.decide("fixed-window", key, (rate,), 1).allowed
                assert exists_on(redis_cluster, port, state_key(key, rate))
                assert store.acquire_lease(key, 1, "a", 30.0)
                assert store.count_leases(key) == 1
        assert len(set(store._cluster.slots)) == 3

    async def test_async_keys_on_every_master_all_work(self, astore, redis_cluster):
        rate = Rate(2, per=60)
        for port in redis_cluster.ports:
            (key,) = keys_on(redis_cluster, port)
            results = await asyncio.gather(
                *[astore.adecide("fixed-window", key, (rate,), 1) for _ in range(3)]
            )
            assert [result.allowed for result in results] == [True, True, False]
            assert exists_on(redis_cluster, port, state_key(key, rate))
            assert await astore.aacquire_lease(key, 1, "a", 30.0)
            assert await astore.acount_leases(key) == 1

    def test_a_cluster_limiter_with_two_limits(self, store, redis_cluster):
        limiter = Limiter("2/second; 3/hour", storage=store, algorithm="sliding-window")
        key = fresh()
        assert [limiter.hit(key).allowed for _ in range(3)] == [True, True, False]


class TestRedirections:
    def test_a_wrong_map_is_corrected_by_moved(self, store, redis_cluster):
        rate = Rate(5, per=60)
        keys = {port: keys_on(redis_cluster, port)[0] for port in redis_cluster.ports}
        for key in keys.values():
            store.decide("fixed-window", key, (rate,), 1)  # (and the map is learned)
        cluster = store._cluster
        right = list(cluster.slots)
        # Every slot on one (wrong, for two thirds) master, and no reading of the map for now.
        cluster.slots = [cluster.node("127.0.0.1", redis_cluster.ports[0])] * 16384
        cluster.refresh_at = float("inf")
        for port, key in keys.items():
            assert store.decide("fixed-window", key, (rate,), 1).remaining == 3
            slot = key_slot(f"{{{PREFIX}:{key}}}".encode())
            assert cluster.slots[slot] == ("127.0.0.1", port)
        # After the first MOVED, the next call read the whole map again.
        assert cluster.slots == right

    async def test_async_wrong_map_is_corrected_by_moved(self, astore, redis_cluster):
        rate = Rate(5, per=60)
        keys = {port: keys_on(redis_cluster, port)[0] for port in redis_cluster.ports}
        for key in keys.values():
            await astore.adecide("fixed-window", key, (rate,), 1)
        cluster = astore._cluster
        cluster.slots = [cluster.node("127.0.0.1", redis_cluster.ports[1])] * 16384
        cluster.refresh_at = float("inf")
        for key in keys.values():
            assert (await astore.adecide("fixed-window", key, (rate,), 1)).remaining == 3

    @pytest.mark.parametrize("form", ["sync", "async"])
    async def test_a_migrated_slot_is_followed(self, store, redis_cluster, form):
        rate = Rate(5, per=60)
        source = redis_cluster.ports[0]
        key = keys_on(redis_cluster, source)[0]
        slot = key_slot(f"{{{PREFIX}:{key}}}".encode())
        target = other_port(redis_cluster, source)
        two = (rate, Rate(9, per=3600))
        store.decide("gcra", key, two, 1)  # on the source, before the migration (and the map)

        async def decide(algorithm: str, rates: tuple[Rate, ...], cost: int) -> Any:
            if form == "sync":
                return store.decide(algorithm, key, rates, cost)
            return await store.adecide(algorithm, key, rates, cost)

        migration = Migration(redis_cluster, slot, source, target)
        migration.begin()
        flush_scripts(redis_cluster)  # the target's NOSCRIPT comes after an ASK: ASKING again
        try:
            # The source does not hold the key: it answers ASK, the target takes it (ASKING).
            assert (await decide("fixed-window", (rate,), 2)).remaining == 3
            assert exists_on(redis_cluster, target, state_key(key, rate))
            assert not exists_on(redis_cluster, source, state_key(key, rate))
            assert store._cluster.slots[slot] == ("127.0.0.1", source)  # ASK changes no map
            # Keys the source holds, it serves.
            assert (await decide("gcra", two, 1)).remaining == 3
            # Several keys that neither holds yet: Redis answers TRYAGAIN until the slot has
            # moved; the store tries a few times, then it is a StorageError (no hang).
            began = time.monotonic()
            with pytest.raises(StorageError, match="TRYAGAIN"):
                await decide("sliding-window", two, 1)
            assert time.monotonic() - began < 1
        finally:
            migration.finish()
        # The slot is the target's now: the source answers MOVED, the map follows, and the
        # state migrated with the slot goes on.
        assert (await decide("fixed-window", (rate,), 1)).remaining == 2
        assert store._cluster.slots[slot] == ("127.0.0.1", target)
        assert (await decide("gcra", two, 1)).remaining == 2
        assert exists_on(redis_cluster, target, state_key(key, rate, "tat"))
        await store.aclose()

    async def test_noscript_loads_the_script_on_each_node(self, store, redis_cluster):
        rate = Rate(3, per=60)
        keys = [keys_on(redis_cluster, port)[0] for port in redis_cluster.ports]
        for key in keys:
            store.decide("gcra", key, (rate,), 1)
        flush_scripts(redis_cluster)
        for key in keys:
            assert store.decide("gcra", key, (rate,), 1).remaining == 1
        flush_scripts(redis_cluster)
        for key in keys:
            assert (await store.adecide("gcra", key, (rate,), 1)).remaining == 0
        await store.aclose()


class TestFaults:
    def test_a_dead_node_is_a_storage_error_then_the_map_is_read_again(self, store, redis_cluster):
        rate, key = Rate(3, per=60), fresh()
        store.decide("fixed-window", key, (rate,), 1)
        cluster = store._cluster
        slot = key_slot(f"{{{PREFIX}:{key}}}".encode())
        dead = ("127.0.0.1", free_port())
        cluster.slots[slot] = dead
        cluster.refresh_at = float("inf")
        began = time.monotonic()
        with pytest.raises(StorageError, match=f"127.0.0.1:{dead[1]}"):
            store.decide("fixed-window", key, (rate,), 1)
        assert time.monotonic() - began < 1
        assert store.decide("fixed-window", key, (rate,), 1).remaining == 1
        assert cluster.slots[slot] != dead

    async def test_async_dead_node(self, astore, redis_cluster):
        rate, key = Rate(3, per=60), fresh()
        await astore.adecide("fixed-window", key, (rate,), 1)
        cluster = astore._cluster
        slot = key_slot(f"{{{PREFIX}:{key}}}".encode())
        cluster.slots[slot] = ("127.0.0.1", free_port())
        cluster.refresh_at = float("inf")
        with pytest.raises(StorageError, match="ConnectionError"):
            await astore.adecide("fixed-window", key, (rate,), 1)
        assert (await astore.adecide("fixed-window", key, (rate,), 1)).remaining == 1

    async def test_no_node_at_all_fails_fast(self):
        store = cast(
            "RedisStorage",
            storage_from_url(f"redis+cluster://127.0.0.1:{free_port()}", timeout=0.2),
        )
        began = time.monotonic()
        with pytest.raises(StorageError, match="CLUSTER SLOTS"):
            store.decide("gcra", "k", (Rate(1, per=1),), 1)
        with pytest.raises(StorageError, match="CLUSTER SLOTS"):
            await store.adecide("gcra", "k", (Rate(1, per=1),), 1)
        with pytest.raises(StorageError, match="CLUSTER SLOTS"):
            store.breaker("b", "read", ("0",) * 13)
        assert time.monotonic() - began < 2
        await store.aclose()

    def test_the_limiters_fault_policy_answers(self):
        url = f"redis+cluster://127.0.0.1:{free_port()}"
        opened = Limiter("1/hour", storage=url, on_store_error="fail-open")
        assert opened.hit("k").allowed
        assert opened.hit("k").degraded
        closed = Limiter("1/hour", storage=url, on_store_error="fail-closed")
        assert not closed.hit("k").allowed
        opened.storage.close()
        closed.storage.close()

    @pytest.mark.parametrize("form", ["sync", "async"])
    async def test_a_frozen_node_is_a_storage_error_not_a_hang(self, redis_cluster, form):
        store = RedisStorage.from_url(redis_cluster.url, prefix=PREFIX, timeout=0.2)
        port = redis_cluster.ports[2]
        key, rate = keys_on(redis_cluster, port)[0], Rate(3, per=60)
        store.decide("fixed-window", key, (rate,), 1)
        await store.adecide("fixed-window", key, (rate,), 1)
        process = redis_cluster.processes[redis_cluster.ports.index(port)]

        async def decide() -> object:
            if form == "sync":
                return store.decide("fixed-window", key, (rate,), 1)
            return await store.adecide("fixed-window", key, (rate,), 1)

        process.send_signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(StorageError):
                await decide()
            assert time.monotonic() - began < 2
        finally:
            process.send_signal(signal.SIGCONT)
        if form == "sync":
            assert store.decide("fixed-window", key, (rate,), 1).remaining == 0
        else:
            assert (await store.adecide("fixed-window", key, (rate,), 1)).remaining == 0
        await store.aclose()


class TestClients:
    async def test_redis_py_cluster_clients(self, redis_cluster):
        port = redis_cluster.ports[0]
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
        async_client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=port)
        store = RedisStorage(client, async_client=async_client, prefix=PREFIX)
        rate = Rate(4, per=60)
        try:
            for each in redis_cluster.ports:
                (key,) = keys_on(redis_cluster, each)
                assert store.decide("token-bucket", key, (rate,), 1).remaining == 3
                assert (await store.adecide("token-bucket", key, (rate,), 2)).remaining == 1
            assert store.breaker("b-" + fresh(), "read", ("0",) * 13).state in "cd"
            await store.aclose()
            assert client.ping()  # clients passed in stay open
            assert await cast("Any", async_client).ping()
        finally:
            client.close()
            await async_client.aclose()

    def test_a_sync_only_cluster_store_refuses_coroutines(self, redis_cluster):
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[1])
        store = RedisStorage(client, prefix=PREFIX)
        with pytest.raises(ValueError, match="async_client"):
            asyncio.run(store.adecide("gcra", "k", (Rate(1, per=1),), 1))
        client.close()


class TestExactness:
    @pytest.mark.parametrize(
        "algorithm", ["fixed-window", "sliding-window", "token-bucket", "gcra"]
    )
    def test_threads_admit_exactly_the_limit(self, store, algorithm):
        key, limit, threads, hits = fresh("exact"), 100, 8, 40
        rates = (Rate(limit, per=3600),)

        def work(_: int) -> int:
            return sum(store.decide(algorithm, key, rates, 1).allowed for _ in range(hits))

        assert sum(run_in_threads(threads, work)) == limit

    def test_threads_never_hold_more_than_the_concurrency_limit(self, store):
        limit, key = ConcurrencyLimit(3, storage=store), fresh("slots")
        holding, most, lock = [0], [0], threading.Lock()

        def work(_: int) -> int:
            held = 0
            for _ in range(20):
                permit = limit.try_acquire(key)
                if permit is None:
                    continue
                with permit:
                    with lock:
                        holding[0] += 1
                        most[0] = max(most[0], holding[0])
                    time.sleep(0.001)
                    with lock:
                        holding[0] -= 1
                held += 1
            return held

        assert sum(run_in_threads(8, work)) > 0
        assert 1 <= most[0] <= 3
        assert limit.in_flight(key) == 0

    async def test_tasks_admit_exactly_the_limit(self, astore):
        key, rates = fresh("exact"), (Rate(50, per=3600),)
        results = await asyncio.gather(*[astore.adecide("gcra", key, rates, 1) for _ in range(200)])
        assert sum(result.allowed for result in results) == 50
