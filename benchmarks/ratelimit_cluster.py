"""Rate limiting on a Redis Cluster: µs per decision against a PING of the key's own master.

Each buttress algorithm decides through a ``Limiter`` on a ``RedisStorage`` made from a
``redis+cluster://`` URL, on keys whose hash slot one master serves; the unit is a redis-py
``PING`` of that same master. Medians of interleaved rounds (``benchmarks/_harness.py``). Every
timed run starts on fresh keys.

Without ``--url``, a private cluster of three masters is started on free loopback ports (the test
suite's ``PrivateCluster``, so run this from the repository root) and killed at the end; with
``--url``, keys are written under a prefix unique to the run and deleted afterwards.

    python -m benchmarks.ratelimit_cluster [--url redis+cluster://127.0.0.1:7000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from redis.crc import key_slot

from benchmarks._harness import Runner, format_table, run_interleaved, silence_log_output
from buttress.ratelimit import ALGORITHMS, Algorithm, Limiter
from buttress.storage.redis import RedisStorage

ADMIT = "1000000/hour"
TWO_LIMITS = "1000000/second; 100000000/hour"
PING = "PING (redis-py, the key's master)"


def keys_served_by(store: RedisStorage, prefix: str, node: tuple[str, int]) -> Iterator[str]:
    """Fresh limiter keys whose hash slot ``node`` serves."""
    slots = store._cluster.slots if store._cluster is not None else []  # noqa: SLF001
    for number in itertools.count():
        key = f"bench:{number}"
        if slots[key_slot(f"{{{prefix}:{key}}}".encode())] == node:
            yield key


def limiter_runner(limiter: Limiter, keys: Iterator[str]) -> Runner:
    """Time ``limiter.hit`` on a fresh key (made before the clock starts), checking admissions."""
    import time  # noqa: PLC0415 - local: the runner's clock

    def run(n: int) -> int:
        key, hit, clock = next(keys), limiter.hit, time.perf_counter_ns
        start = clock()
        for _ in itertools.repeat(None, n):
            hit(key)
        elapsed = clock() - start
        if not hit(key).allowed or hit(key).degraded:
            raise RuntimeError(f"{limiter!r} did not admit: the run is not valid")
        return elapsed

    return run


def ping_runner(client: redis.Redis) -> Runner:
    import time  # noqa: PLC0415 - local: the runner's clock

    def run(n: int) -> int:
        ping, clock = client.ping, time.perf_counter_ns
        start = clock()
        for _ in itertools.repeat(None, n):
            ping()
        return clock() - start

    return run


def measure(url: str, rounds: int, target_ms: float) -> str:
    prefix = f"bench-cluster-{uuid.uuid4().hex[:8]}"
    store = RedisStorage.from_url(url, prefix=prefix)
    store.decide("gcra", "warm-up", Limiter("1/second").rates, 1)  # learns the slot map
    assert store._cluster is not None  # noqa: S101, SLF001 - a cluster URL
    node = cast("tuple[str, int]", store._cluster.slots[0])  # noqa: SLF001 - the first master
    keys = keys_served_by(store, prefix, node)
    client = redis.Redis(host=node[0], port=node[1])
    runners: dict[str, Runner] = {PING: ping_runner(client)}
    for algorithm in cast("tuple[Algorithm, ...]", ALGORITHMS):
        limiter = Limiter(ADMIT, algorithm=algorithm, storage=store)
        runners[f"buttress {algorithm}"] = limiter_runner(limiter, keys)
    two: tuple[Algorithm, ...] = ("fixed-window", "gcra")
    for algorithm in two:
        limiter = Limiter(TWO_LIMITS, algorithm=algorithm, storage=store)
        runners[f"buttress {algorithm}, two limits"] = limiter_runner(limiter, keys)
    try:
        results = run_interleaved(
            {"cluster": runners},
            rounds,
            int(target_ms * 1e6),
            progress=lambda what: print(what, file=sys.stderr),
        )["cluster"]
    finally:
        for port in {each for each in store._cluster.slots if each is not None}:  # noqa: SLF001
            node_client = redis.Redis(host=port[0], port=port[1])
            for name in list(node_client.scan_iter(match=f"{{{prefix}*", count=1000)):
                node_client.delete(name)  # one by one: a node's keys span many slots
            node_client.close()
        client.close()
        store.close()
    unit = results[PING].median
    rows = [
        [name, f"{m.median / 1000:.2f}", f"{m.median / unit:.2f}x", f"{m.spread:.0%}"]
        for name, m in results.items()
    ]
    title = f"Redis Cluster {url}, keys on {node[0]}:{node[1]}, {rounds} rounds"
    return title + "\n" + format_table(["contender", "µs/decision", "vs PING", "spread"], rows)


def private_cluster() -> tuple[str, Callable[[], None]]:
    from tests._redis_server import PrivateCluster  # noqa: PLC0415 - only without --url

    directory = Path(tempfile.mkdtemp(prefix="buttress-bench-"))
    cluster = PrivateCluster(directory)

    def stop() -> None:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)

    try:
        cluster.start()
    except BaseException:
        stop()
        raise
    return cluster.url, stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--url", help="a redis+cluster:// URL on loopback (default: start one)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target-ms", type=float, default=40.0, help="per timed run")
    options = parser.parse_args(argv)
    silence_log_output()
    stop: Callable[[], None] = lambda: None  # noqa: E731 - nothing to stop for --url
    url: Any = options.url
    if url is None:
        url, stop = private_cluster()
    else:
        hosts = urlsplit(url).netloc.rpartition("@")[2].split(",")
        if any(not host.startswith(("127.0.0.1", "[::1]", "localhost")) for host in hosts):
            parser.error("--url must name loopback nodes only")
    try:
        print(measure(url, options.rounds, options.target_ms))
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
