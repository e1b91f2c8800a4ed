"""Rate limiting benchmark: buttress against limits, pyrate-limiter and aiolimiter, in one run.

Scenarios (µs per decision, medians of interleaved rounds; see ``docs/benchmarks.md``):

* memory, admitted: ``Limiter("1000000/hour")`` with each buttress algorithm on ``MemoryStorage``;
  limits' fixed, moving and sliding-window-counter strategies on its ``MemoryStorage``;
  pyrate-limiter's ``InMemoryBucket``; aiolimiter's ``AsyncLimiter`` (async, one bucket, no key);
  buttress's ``ahit`` for comparison with aiolimiter. Every decision is an admission.
* memory, rejected: the same limiters with a limit of 1/hour, already used up.
* memory, two limits: ``"1000000/second; 100000000/hour"`` decided together (admitted), each
  buttress algorithm; limits' fixed window with one ``hit`` per limit (as Flask-Limiter does).
* Redis, one decision: a redis-py ``PING`` (the unit), an ``EVALSHA`` of a script that does
  nothing (the floor of any one-round-trip Lua decision), each buttress algorithm on its Redis
  store, limits' three strategies on its ``RedisStorage``, pyrate-limiter's ``RedisBucket``.
* Redis, two limits: ``"1000000/second; 100000000/hour"`` decided together (admitted): one call
  for buttress and pyrate-limiter, one ``hit`` per limit for limits (as Flask-Limiter does).
* Redis, rejected flood: a key over its limit (1/hour), hit again and again; buttress with its
  local rejection cache, buttress without it and limits for reference.
* 8 processes on one key (Redis): aggregate decisions/s over a fixed duration.

Every timed run starts on a fresh key (made before the clock starts, deleted after it stops), so
a run's cost does not depend on what earlier runs left behind. All keys written to Redis carry
this run's unique id and are deleted at the end (buttress's own prefix, limits' ``LIMITS:`` keys
with the id in their name, pyrate-limiter's bucket key); no other key is touched (the Lua
scripts stay in the server's script cache, as they do for any client).

Run ``python -m benchmarks ratelimit --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import importlib.metadata
import itertools
import json
import multiprocessing
import multiprocessing.synchronize
import os
import platform
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import aiolimiter
import limits
import limits.storage
import limits.strategies
import pyrate_limiter
import pyrate_limiter.buckets.redis_bucket
import redis

from benchmarks._harness import (
    AsyncTrial,
    FreshAsyncRunner,
    FreshRunner,
    Measurement,
    Runner,
    Target,
    Trial,
    format_table,
    measurements_json,
    run_interleaved,
    silence_log_output,
)
from buttress.ratelimit import ALGORITHMS as _ALGORITHM_NAMES
from buttress.ratelimit import Algorithm, Limiter
from buttress.storage import MemoryStorage

if TYPE_CHECKING:
    from buttress.storage import Storage

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ALLOWED_REDIS_HOST = "127.0.0.1"

ADMIT = "1000000/hour"  # more than any run makes: every decision is an admission
REJECT = "1/hour"  # used up by one hit before the clock starts
TWO_LIMITS = "1000000/second; 100000000/hour"  # the two-limit decision, huge so it admits
HAMMER = "1000000000/hour"  # the 8-process runs: admits everything

PROCESSES = 8
ALGORITHMS = cast("tuple[Algorithm, ...]", _ALGORITHM_NAMES)

MEM_ADMIT = "memory, admitted"
MEM_REJECT = "memory, rejected (limit 1/hour, used up)"
MEM_TWO = f"memory, two limits '{TWO_LIMITS}', admitted"
REDIS_ONE = "Redis, one limit, admitted"
REDIS_TWO = "Redis, two limits '1000000/second; 100000000/hour', admitted"
REDIS_FLOOD = "Redis, rejected flood on one key (limit 1/hour, used up)"
MULTI = f"Redis, {PROCESSES} processes on one key, admitted"

PING = "PING (redis-py)"
NOOP = "EVALSHA no-op, 1 key + 5 args"
LIMITS_FIXED = "limits fixed"
LIMITS_STRATEGIES: dict[str, type[limits.strategies.RateLimiter]] = {
    LIMITS_FIXED: limits.strategies.FixedWindowRateLimiter,
    "limits moving": limits.strategies.MovingWindowRateLimiter,
    "limits sliding-counter": limits.strategies.SlidingWindowCounterRateLimiter,
}
PYRATE = "pyrate-limiter"
AIOLIMITER = "aiolimiter (async, no key)"
BUTTRESS_ASYNC = "buttress fixed-window, ahit (async)"
LIMITS_TWO = "limits fixed, 2 hits"
PYRATE_TWO = "pyrate-limiter, 2 rates"
NO_CACHE = "buttress fixed-window, no cache"

PYRATE_SCRIPT = pyrate_limiter.buckets.redis_bucket.LuaScript.PUT_ITEM

MULTI_CONTENDERS = ("buttress fixed-window", LIMITS_FIXED, "buttress gcra")


def buttress_name(algorithm: str, suffix: str = "") -> str:
    return f"buttress {algorithm}{suffix}"


def two_name(algorithm: str) -> str:
    return buttress_name(algorithm, ", 2 limits")


def cache_name(algorithm: str) -> str:
    return buttress_name(algorithm, ", rejection cache")


# --- the run's identity and the Redis keys it writes ----------------------------------------------


@dataclass(frozen=True)
class RunIds:
    """Names that make this run's Redis keys unique, and the patterns that find them."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def buttress_prefix(self) -> str:
        return f"buttress-bench-{self.run}"

    @property
    def limits_id(self) -> str:
        return f"limits-bench-{self.run}"

    @property
    def pyrate_key(self) -> str:
        return f"pyrate-bench-{self.run}"

    def patterns(self) -> list[str]:
        """SCAN MATCH patterns for every key this run may have written, and nothing else."""
        return [
            f"{{{self.buttress_prefix}:*",  # buttress keys: "{<prefix>:..." (hash tag)
            # limits: "LIMITS:LIMITER/<id>..." and, sliding window, "LIMITS:{LIMITER/<id>..."
            f"LIMITS:*{self.limits_id}*",
            f"{self.pyrate_key}*",
        ]


def redis_url() -> str:
    """``BUTTRESS_REDIS_URL`` or the local default; only 127.0.0.1 is accepted."""
    url = os.environ.get("BUTTRESS_REDIS_URL") or DEFAULT_REDIS_URL
    host = urlsplit(url).hostname
    if host != ALLOWED_REDIS_HOST:
        raise ValueError(
            f"BUTTRESS_REDIS_URL must point at {ALLOWED_REDIS_HOST} (this benchmark writes keys);"
            f" got host {host!r}"
        )
    return url


def delete_run_keys(client: redis.Redis, ids: RunIds) -> int:
    """Delete this run's keys (SCAN MATCH on its own patterns; never FLUSHDB). Returns the count."""
    deleted = 0
    for pattern in ids.patterns():
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += cast(int, client.delete(*batch))
                batch = []
        if batch:
            deleted += cast(int, client.delete(*batch))
    return deleted


# --- the contenders -------------------------------------------------------------------------------


@dataclass
class Setup:
    """Runners per scenario, plus what was learnt while building them."""

    ids: RunIds
    scenarios: dict[str, dict[str, Runner]] = field(default_factory=dict)
    checked: dict[str, FreshRunner | FreshAsyncRunner] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # "scenario: contender" -> why
    versions: dict[str, str] = field(default_factory=dict)
    redis_url: str | None = None
    redis_skipped: str | None = None  # why nothing was measured on Redis
    buttress_redis: str | None = None  # why buttress's Redis store was not measured
    closers: list[Callable[[], object]] = field(default_factory=list)


class KeyMaker:
    """Fresh, run-unique key names: ``k1``, ``k2``... (with an optional prefix)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}k{next(self._counter)}"


def _verdict(result: object, admitted: bool) -> str | None:
    """What is wrong with a run whose last answer was ``result`` (``None``: nothing)."""
    if bool(result) is not admitted:
        return "rejected, expected an admission" if admitted else "admitted, expected a rejection"
    return None


def fell_back(limiter: Limiter) -> bool:
    """Whether ``limiter`` ever decided without its store (its store failed at least once).

    buttress has no public flag for this; the local fallback store of the default
    ``on_store_error="local"`` policy is made on the first decision taken without the store.
    """
    guard = getattr(limiter, "_guard", None)
    return getattr(guard, "local", None) is not None


def _buttress_check(limiter: Limiter, admitted: bool) -> Callable[[object], str | None]:
    def check(result: object) -> str | None:
        if getattr(result, "degraded", False) or fell_back(limiter):
            return "the store failed: decisions were made without it (degraded)"
        return _verdict(result, admitted)

    return check


def _buttress_trials(
    make: Callable[[], Limiter], keys: KeyMaker, used_up: int, admitted: bool
) -> Callable[[], Trial]:
    """A new limiter (so a store failure shows per run) and a fresh key for every run.

    ``used_up`` hits are made before the clock starts; the key is reset after it stops.
    """

    def fresh() -> Trial:
        limiter, key = make(), keys()
        for _ in range(used_up):
            limiter.hit(key)
        return Trial(
            functools.partial(limiter.hit, key),
            functools.partial(limiter.reset, key),
            _buttress_check(limiter, admitted),
        )

    return fresh


def _buttress_runner(
    make: Callable[[], Limiter], keys: KeyMaker, used_up: int, admitted: bool
) -> FreshRunner:
    return FreshRunner(_buttress_trials(make, keys, used_up, admitted))


def _limits_trials(
    strategy: limits.strategies.RateLimiter,
    items: list[limits.RateLimitItem],
    keys: KeyMaker,
    used_up: int,
    admitted: bool,
) -> Callable[[], Trial]:
    """One ``hit`` per item, in order, stopping at the first rejection (Flask-Limiter's way)."""

    def fresh() -> Trial:
        key = keys()
        hit = strategy.hit
        if len(items) == 1:
            call: Callable[[], object] = functools.partial(hit, items[0], key)
        else:

            def call() -> bool:
                return all(hit(item, key) for item in items)

        for _ in range(used_up):
            call()

        def cleanup() -> None:
            for item in items:
                strategy.clear(item, key)

        return Trial(call, cleanup, functools.partial(_verdict, admitted=admitted))

    return fresh


def _pyrate_trials(
    limiter: pyrate_limiter.Limiter,
    bucket: pyrate_limiter.AbstractBucket,
    used_up: int,
    admitted: bool,
) -> Callable[[], Trial]:
    """pyrate-limiter's single-bucket limiter: every name shares the bucket, so flush it per run."""

    def fresh() -> Trial:
        call: Callable[[], object] = functools.partial(limiter.try_acquire, "key", blocking=False)
        for _ in range(used_up):
            call()

        def cleanup() -> None:
            bucket.flush()

        return Trial(call, cleanup, functools.partial(_verdict, admitted=admitted))

    return fresh


def _aiolimiter_trial() -> AsyncTrial:
    """A fresh ``AsyncLimiter`` per run, with a rate so large that ``acquire`` never waits.

    ``acquire()`` returns ``None``: had it waited, its time would show it.
    """
    limiter = aiolimiter.AsyncLimiter(1e12, 1)
    return AsyncTrial(limiter.acquire)


def _add(
    setup: Setup,
    scenario: str,
    name: str,
    build: Callable[[], FreshRunner | FreshAsyncRunner],
    *,
    ours: bool,
) -> None:
    """Build one contender and check it answers as the scenario expects, or skip it (a peer)."""
    try:
        runner = build()
        runner(3)  # also connects, loads scripts, warms caches; raises SampleLost if wrong
    except Exception as error:
        if ours:
            raise
        setup.skipped[f"{scenario}: {name}"] = f"{type(error).__name__}: {error}"
        return
    runner.problems.clear()
    setup.scenarios.setdefault(scenario, {})[name] = runner
    setup.checked[f"{scenario}: {name}"] = runner


def _limits_memory_runner(
    cls: type[limits.strategies.RateLimiter], limit: str, used_up: int, admitted: bool
) -> FreshRunner:
    strategy = cls(limits.storage.MemoryStorage())
    fresh = _limits_trials(strategy, limits.parse_many(limit), KeyMaker(), used_up, admitted)
    return FreshRunner(fresh)


def _pyrate_memory_runner(limit: int, used_up: int, admitted: bool) -> FreshRunner:
    bucket = pyrate_limiter.InMemoryBucket(
        [pyrate_limiter.Rate(limit, pyrate_limiter.Duration.HOUR)]
    )
    limiter = pyrate_limiter.Limiter(bucket)
    return FreshRunner(_pyrate_trials(limiter, bucket, used_up, admitted))


def build_memory(setup: Setup, loop: asyncio.AbstractEventLoop) -> None:
    keys = KeyMaker()
    for algorithm in ALGORITHMS:
        store = MemoryStorage()
        admit = functools.partial(Limiter, ADMIT, algorithm=algorithm, storage=store)
        reject = functools.partial(Limiter, REJECT, algorithm=algorithm, storage=store)
        name = buttress_name(algorithm)
        runner = functools.partial(_buttress_runner, admit, keys, 0, True)
        _add(setup, MEM_ADMIT, name, runner, ours=True)
        runner = functools.partial(_buttress_runner, reject, keys, 1, False)
        _add(setup, MEM_REJECT, name, runner, ours=True)
        two = functools.partial(Limiter, TWO_LIMITS, algorithm=algorithm, storage=store)
        runner = functools.partial(_buttress_runner, two, keys, 0, True)
        _add(setup, MEM_TWO, two_name(algorithm), runner, ours=True)

    async_store = MemoryStorage()

    def async_trial() -> AsyncTrial:
        limiter, key = Limiter(ADMIT, storage=async_store), keys()
        return AsyncTrial(
            functools.partial(limiter.ahit, key),
            functools.partial(limiter.reset, key),
            _buttress_check(limiter, admitted=True),
        )

    build_async = functools.partial(FreshAsyncRunner, async_trial, loop)
    _add(setup, MEM_ADMIT, BUTTRESS_ASYNC, build_async, ours=True)

    for name, cls in LIMITS_STRATEGIES.items():
        runner = functools.partial(_limits_memory_runner, cls, ADMIT, 0, True)
        _add(setup, MEM_ADMIT, name, runner, ours=False)
        runner = functools.partial(_limits_memory_runner, cls, REJECT, 1, False)
        _add(setup, MEM_REJECT, name, runner, ours=False)
    runner = functools.partial(
        _limits_memory_runner, limits.strategies.FixedWindowRateLimiter, TWO_LIMITS, 0, True
    )
    _add(setup, MEM_TWO, LIMITS_TWO, runner, ours=False)

    runner = functools.partial(_pyrate_memory_runner, 1_000_000, 0, True)
    _add(setup, MEM_ADMIT, PYRATE, runner, ours=False)
    runner = functools.partial(_pyrate_memory_runner, 1, 1, False)
    _add(setup, MEM_REJECT, PYRATE, runner, ours=False)
    build_aiolimiter = functools.partial(FreshAsyncRunner, _aiolimiter_trial, loop)
    _add(setup, MEM_ADMIT, AIOLIMITER, build_aiolimiter, ours=False)


def _redis_store(url: str, ids: RunIds) -> Storage:
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - measured only when importable

    store: Storage = RedisStorage.from_url(url, prefix=ids.buttress_prefix)
    return store


class _RedisPeers:
    """Builds the peers' Redis contenders; limits' store is made on first use."""

    def __init__(self, setup: Setup, url: str) -> None:
        self.setup = setup
        self.url = url
        self.keys = KeyMaker(f"{setup.ids.limits_id}-")  # limits adds "LIMITS:LIMITER/" before it
        self._limits_store: limits.storage.RedisStorage | None = None

    def limits_runner(
        self, cls: type[limits.strategies.RateLimiter], limit: str, used_up: int, admitted: bool
    ) -> FreshRunner:
        if self._limits_store is None:
            self._limits_store = limits.storage.RedisStorage(self.url)
        strategy = cls(self._limits_store)
        items = limits.parse_many(limit)
        return FreshRunner(_limits_trials(strategy, items, self.keys, used_up, admitted))

    def pyrate_runner(self, rates: list[pyrate_limiter.Rate], suffix: str) -> FreshRunner:
        client = redis.Redis.from_url(self.url)
        self.setup.closers.append(client.close)
        key = f"{self.setup.ids.pyrate_key}-{suffix}"
        bucket = pyrate_limiter.RedisBucket.init(rates, client, key)
        if not isinstance(bucket, pyrate_limiter.RedisBucket):  # the async client's coroutine
            raise TypeError("expected a sync RedisBucket")
        limiter = pyrate_limiter.Limiter(bucket)
        self.setup.closers.insert(0, limiter.close)
        trials = _pyrate_trials(limiter, bucket, 0, admitted=True)

        def fresh() -> Trial:
            # RedisBucket loads its script once and never again: after a SCRIPT FLUSH on the
            # server (someone else's tests), every call fails with NOSCRIPT. Load it again
            # before each run, outside the clock; the server answers with the same hash.
            bucket.script_hash = cast(str, client.script_load(PYRATE_SCRIPT))
            return trials()

        return FreshRunner(fresh)


def build_redis(setup: Setup, client: redis.Redis, url: str) -> None:
    def ping() -> Trial:
        return Trial(client.ping, check=functools.partial(_verdict, admitted=True))

    for scenario in (REDIS_ONE, REDIS_TWO, REDIS_FLOOD):
        _add(setup, scenario, PING, functools.partial(FreshRunner, ping), ours=True)

    # The floor of any one-round-trip Lua decision through redis-py: a script that does nothing,
    # called with one key and the five arguments of a buttress single-limit decision.
    noop = client.register_script("return 1")  # reloaded by redis-py after a SCRIPT FLUSH
    noop_keys, noop_args = [f"{{{setup.ids.buttress_prefix}:noop}}"], ["", "1", "1", "1", "1.0"]

    def evalsha_noop() -> Trial:
        call = functools.partial(noop, noop_keys, noop_args)
        return Trial(call, check=functools.partial(_verdict, admitted=True))

    _add(setup, REDIS_ONE, NOOP, functools.partial(FreshRunner, evalsha_noop), ours=True)

    keys = KeyMaker()
    try:
        store = _redis_store(url, setup.ids)
    except Exception as error:
        setup.buttress_redis = f"{type(error).__name__}: {error}"
    else:
        setup.closers.append(store.close)
        for algorithm in ALGORITHMS:
            one = functools.partial(Limiter, ADMIT, algorithm=algorithm, storage=store)
            two = functools.partial(Limiter, TWO_LIMITS, algorithm=algorithm, storage=store)
            cached = functools.partial(
                Limiter, REJECT, algorithm=algorithm, storage=store, rejection_cache=True
            )
            for scenario, name, make, used_up, admitted in (
                (REDIS_ONE, buttress_name(algorithm), one, 0, True),
                (REDIS_TWO, two_name(algorithm), two, 0, True),
                # Two hits: the first admitted, the second rejected and remembered by the cache.
                (REDIS_FLOOD, cache_name(algorithm), cached, 2, False),
            ):
                runner = functools.partial(_buttress_runner, make, keys, used_up, admitted)
                _add(setup, scenario, name, runner, ours=True)
        uncached = functools.partial(
            Limiter, REJECT, algorithm="fixed-window", storage=store, rejection_cache=False
        )
        runner = functools.partial(_buttress_runner, uncached, keys, 1, False)
        _add(setup, REDIS_FLOOD, NO_CACHE, runner, ours=True)

    peers = _RedisPeers(setup, url)
    for name, cls in LIMITS_STRATEGIES.items():
        runner = functools.partial(peers.limits_runner, cls, ADMIT, 0, True)
        _add(setup, REDIS_ONE, name, runner, ours=False)
    fixed = limits.strategies.FixedWindowRateLimiter
    runner = functools.partial(peers.limits_runner, fixed, TWO_LIMITS, 0, True)
    _add(setup, REDIS_TWO, LIMITS_TWO, runner, ours=False)
    runner = functools.partial(peers.limits_runner, fixed, REJECT, 1, False)
    _add(setup, REDIS_FLOOD, LIMITS_FIXED, runner, ours=False)

    rate = pyrate_limiter.Rate
    hour, second = pyrate_limiter.Duration.HOUR, pyrate_limiter.Duration.SECOND
    runner = functools.partial(peers.pyrate_runner, [rate(1_000_000, hour)], "one")
    _add(setup, REDIS_ONE, PYRATE, runner, ours=False)
    two_rates = [rate(1_000_000, second), rate(100_000_000, hour)]
    runner = functools.partial(peers.pyrate_runner, two_rates, "two")
    _add(setup, REDIS_TWO, PYRATE_TWO, runner, ours=False)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build(setup: Setup, loop: asyncio.AbstractEventLoop) -> redis.Redis | None:
    """Build and check every contender; return the Redis client, ``None`` if Redis is not reached.

    What is built is recorded in ``setup`` as it goes, so that it can be closed, and its keys
    deleted, even if a later step fails.
    """
    for package in ("buttress", "limits", "pyrate-limiter", "aiolimiter", "redis"):
        setup.versions[package] = _version(package)
    build_memory(setup, loop)
    try:
        url = redis_url()
        client = redis.Redis.from_url(url)
        client.ping()
    except Exception as error:
        setup.redis_skipped = f"{type(error).__name__}: {error}"
        return None
    setup.redis_url = url
    server = cast("dict[str, Any]", client.info("server"))
    setup.versions["Redis server"] = str(server.get("redis_version", "unknown"))
    try:
        build_redis(setup, client, url)
    except BaseException:
        delete_run_keys(client, setup.ids)
        raise
    return client


# --- 8 processes on one key ----------------------------------------------------------------------

_WORKER_STORES: dict[str, Any] = {}  # per worker process: one store per library, reused

Answer = tuple[int, float, str | None]  # decisions, seconds, what went wrong


def _multi_call(name: str, url: str, prefix: str, key: str) -> tuple[Callable[[], object], Any]:
    """Build, in a worker process, the call that ``name`` makes for one decision on ``key``.

    Returns the call and the buttress limiter (``None`` for limits), to check it afterwards.
    """
    if name == LIMITS_FIXED:
        if "limits" not in _WORKER_STORES:
            _WORKER_STORES["limits"] = limits.storage.RedisStorage(url)
        strategy = limits.strategies.FixedWindowRateLimiter(_WORKER_STORES["limits"])
        return functools.partial(strategy.hit, limits.parse(HAMMER), key), None
    if "buttress" not in _WORKER_STORES:
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - only when importable

        _WORKER_STORES["buttress"] = RedisStorage.from_url(url, prefix=prefix)
    algorithm = cast(Algorithm, name.removeprefix("buttress "))
    limiter = Limiter(HAMMER, algorithm=algorithm, storage=_WORKER_STORES["buttress"])
    return functools.partial(limiter.hit, key), limiter


def _hammer_once(name: str, url: str, prefix: str, key: str, duration: float, start: Any) -> Answer:
    """Prepare, wait at ``start`` (a barrier) with the others, then hit ``key`` for ``duration``."""
    try:
        call, limiter = _multi_call(name, url, prefix, key)
        call()  # connect and load the scripts before the start
    except Exception as error:
        start.wait(timeout=120)
        return 0, 0.0, f"{type(error).__name__}: {error}"
    start.wait(timeout=120)
    count = 0
    result: object = None
    clock = time.perf_counter
    begun = clock()
    deadline = begun + duration
    try:
        while clock() < deadline:
            result = call()
            count += 1
    except Exception as error:
        return count, clock() - begun, f"{type(error).__name__}: {error}"
    elapsed = clock() - begun
    if limiter is not None and (getattr(result, "degraded", False) or fell_back(limiter)):
        return count, elapsed, "the store failed: decisions were made without it (degraded)"
    return count, elapsed, _verdict(result, admitted=True)


def _hammer(
    url: str,
    prefix: str,
    commands: multiprocessing.Queue[tuple[str, str, float] | None],
    answers: multiprocessing.Queue[Answer],
    start: multiprocessing.synchronize.Barrier,
) -> None:
    """Worker process: for each command, hit one key as fast as possible for a duration."""
    silence_log_output()
    while True:
        command = commands.get()
        if command is None:
            return
        name, key, duration = command
        answers.put(_hammer_once(name, url, prefix, key, duration, start))


@dataclass
class MultiResult:
    """Aggregate decisions/s per contender (one sample per round), and what went wrong."""

    duration: float
    measurements: dict[str, Measurement] = field(default_factory=dict)
    problems: collections.Counter[str] = field(default_factory=collections.Counter)


class _Workers:
    """``PROCESSES`` spawned worker processes that hammer one key together on command."""

    def __init__(self, url: str, prefix: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands: multiprocessing.Queue[tuple[str, str, float] | None] = context.Queue()
        self.answers: multiprocessing.Queue[Answer] = context.Queue()
        self.start = context.Barrier(PROCESSES + 1)
        self.processes = [
            context.Process(
                target=_hammer,
                args=(url, prefix, self.commands, self.answers, self.start),
                daemon=True,
            )
            for _ in range(PROCESSES)
        ]
        for process in self.processes:
            process.start()

    def measure(self, name: str, key: str, duration: float) -> tuple[float, list[str]]:
        """Aggregate decisions/s of one run, and the problems the workers reported."""
        for _ in self.processes:
            self.commands.put((name, key, duration))
        self.start.wait(timeout=180)  # the workers have connected: go
        answers = [self.answers.get(timeout=duration + 60) for _ in self.processes]
        rate = sum(count / elapsed for count, elapsed, _ in answers if elapsed > 0)
        return rate, [problem for _, _, problem in answers if problem]

    def stop(self) -> None:
        for _ in self.processes:
            self.commands.put(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)


def run_processes(
    url: str,
    ids: RunIds,
    rounds: int,
    duration: float,
    names: tuple[str, ...],
    progress: Callable[[str], None],
) -> MultiResult:
    """``PROCESSES`` spawned workers hammer one key together, per contender, interleaved rounds.

    A run that goes wrong in any process (an error, a rejection, a store failure) gives no
    sample; if the workers stop answering, the measurement ends there.
    """
    outcome = MultiResult(duration)
    workers = _Workers(url, ids.buttress_prefix)
    keys = KeyMaker(f"{ids.limits_id}-multi-")  # limits adds "LIMITS:LIMITER/" before it
    try:
        for index in range(rounds):
            progress(f"{PROCESSES} processes, round {index + 1}/{rounds}")
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                rate, problems = workers.measure(name, keys(), duration)
                if problems:  # this run's sample is not used
                    outcome.problems[f"{name}: {problems[0]}"] += 1
                    continue
                outcome.measurements.setdefault(name, Measurement(PROCESSES)).samples.append(rate)
    except (queue.Empty, threading.BrokenBarrierError) as error:
        outcome.problems[f"the workers stopped answering ({type(error).__name__})"] += 1
    finally:
        workers.stop()
    return outcome


# --- analysis -------------------------------------------------------------------------------------

Results = dict[str, dict[str, Measurement]]


def _us(results: Results, scenario: str, name: str) -> float | None:
    measured = results.get(scenario, {}).get(name)
    return None if measured is None else measured.median / 1000


def _combine(verdicts: list[bool | None]) -> bool | None:
    """FAIL if any check failed, else N/A if any could not be made, else PASS."""
    if False in verdicts:
        return False
    return None if None in verdicts or not verdicts else True


def _memory_target(results: Results) -> Target:
    label = "memory: every buttress algorithm costs at most 1/2 of limits' fixed window"
    reference = _us(results, MEM_ADMIT, LIMITS_FIXED)
    if reference is None:
        return Target(label, None, ["limits fixed not measured"])
    details = [f"limits fixed {reference:,.2f} us (needed: ratio <= 0.50)"]
    verdicts: list[bool | None] = []
    for algorithm in ALGORITHMS:
        ours = _us(results, MEM_ADMIT, buttress_name(algorithm))
        if ours is None:
            verdicts.append(None)
            details.append(f"n/a  {algorithm}: not measured")
            continue
        verdicts.append(ours * 2 <= reference)
        mark = "ok  " if verdicts[-1] else "MISS"
        details.append(
            f"{mark} {algorithm}: {ours:,.2f} us, {ours / reference:.2f} of limits fixed"
        )
    return Target(label, _combine(verdicts), details)


def _not_on_redis(setup: Setup) -> str | None:
    why = setup.redis_skipped or setup.buttress_redis
    return None if why is None else f"not measured: {why}"


def _redis_target(results: Results, setup: Setup) -> Target:
    label = "Redis: every algorithm costs at most 1.05x one PING per decision, two limits included"
    if (why := _not_on_redis(setup)) is not None:
        return Target(label, None, [why])
    details = ["(each against the PING measured in its own scenario; needed: <= 1.05)"]
    verdicts: list[bool | None] = []
    for scenario, name_of in ((REDIS_ONE, buttress_name), (REDIS_TWO, two_name)):
        ping = _us(results, scenario, PING)
        details.append(f"PING {ping or float('nan'):,.1f} us in '{scenario}'")
        for algorithm in ALGORITHMS:
            name = name_of(algorithm)
            ours = _us(results, scenario, name)
            if ours is None or not ping:
                verdicts.append(None)
                details.append(f"n/a  {name}: not measured")
                continue
            ratio = ours / ping
            verdicts.append(ratio <= 1.05)
            mark = "ok  " if verdicts[-1] else "MISS"
            details.append(f"{mark} {name}: {ours:,.1f} us = {ratio:.3f}x PING")
    return Target(label, _combine(verdicts), details)


def _flood_target(results: Results, setup: Setup) -> Target:
    label = "rejection cache: a flood of rejected hits on one key costs at most 1/20 of a PING each"
    if (why := _not_on_redis(setup)) is not None:
        return Target(label, None, [why])
    ping = _us(results, REDIS_FLOOD, PING)
    details = [f"PING {ping or float('nan'):,.1f} us (needed: ratio <= 0.050)"]
    verdicts: list[bool | None] = []
    for algorithm in ALGORITHMS:
        ours = _us(results, REDIS_FLOOD, cache_name(algorithm))
        if ours is None or not ping:
            verdicts.append(None)
            details.append(f"n/a  {algorithm}: not measured")
            continue
        ratio = ours / ping
        verdicts.append(ratio <= 0.05)
        mark = "ok  " if verdicts[-1] else "MISS"
        details.append(
            f"{mark} {algorithm}: {ours:,.2f} us = {ratio:.4f} of a PING (1/{1 / ratio:,.0f})"
        )
    return Target(label, _combine(verdicts), details)


def _multi_targets(multi: MultiResult | None, setup: Setup) -> list[Target]:
    names = {
        "buttress fixed-window": True,  # required
        "buttress gcra": False,  # reported
    }
    targets = []
    for name, required in names.items():
        label = (
            f"{PROCESSES} processes on one key: {name} aggregate decisions/s at least equal to"
            " limits' fixed window"
        )
        if multi is None or setup.buttress_redis:
            why = setup.redis_skipped or setup.buttress_redis or "not run"
            targets.append(Target(label, None, [f"not measured: {why}"], required))
            continue
        ours, theirs = multi.measurements.get(name), multi.measurements.get(LIMITS_FIXED)
        if ours is None or theirs is None:
            problems = "; ".join(multi.problems) or "no result"
            targets.append(Target(label, None, [f"not measured: {problems}"], required))
            continue
        ratio = ours.median / theirs.median
        details = [
            f"{name} {ours.median:,.0f}/s, limits fixed {theirs.median:,.0f}/s:"
            f" ratio {ratio:.2f} (needed: >= 1.00)"
        ]
        targets.append(Target(label, ratio >= 1.0, details, required))
    return targets


def targets(results: Results, setup: Setup, multi: MultiResult | None) -> list[Target]:
    """The issue's targets, in order."""
    return [
        _memory_target(results),
        _redis_target(results, setup),
        _flood_target(results, setup),
        *_multi_targets(multi, setup),
    ]


# --- output ---------------------------------------------------------------------------------------


def _table(
    results: Results,
    scenario: str,
    reference: str,
    ratio_header: str,
    *,
    digits: int = 2,
    over: bool = False,
) -> str:
    """One scenario's table; ``over`` adds each contender's µs above the reference (a PING)."""
    measured = results.get(scenario, {})
    base = measured[reference].median if reference in measured else None
    rows = []
    for name, m in measured.items():
        ratio = "n/a" if not base else f"{m.median / base:,.{3 if digits > 1 else 2}f}"
        extra = [] if not over else ["n/a" if not base else f"{(m.median - base) / 1000:+,.1f}"]
        rows.append(
            [
                name,
                f"{m.median / 1000:,.{digits}f}",
                ratio,
                *extra,
                f"{m.spread:.0%}",
                str(len(m.samples)),
                f"{m.iterations:,}",
            ]
        )
    headers = [
        "contender",
        "us/decision",
        ratio_header,
        *(["us over PING"] if over else []),
        "spread",
        "runs",
        "iterations",
    ]
    return format_table(headers, rows)


def _multi_table(multi: MultiResult) -> str:
    reference = multi.measurements.get(LIMITS_FIXED)
    rows = []
    for name in MULTI_CONTENDERS:
        m = multi.measurements.get(name)
        if m is None:
            continue
        ratio = "n/a" if reference is None else f"{m.median / reference.median:.2f}"
        per_decision = PROCESSES / m.median * 1e6  # us of wall time per decision, per process
        rows.append(
            [
                name,
                f"{m.median:,.0f}",
                ratio,
                f"{per_decision:,.0f}",
                f"{m.spread:.0%}",
                str(len(m.samples)),
            ]
        )
    headers = [
        "contender",
        f"decisions/s (sum of {PROCESSES})",
        "x limits fixed",
        "us/decision in each process",
        "spread",
        "runs",
    ]
    return format_table(headers, rows)


def _problems(setup: Setup) -> list[str]:
    return [
        f"WARNING: {where}: {count} timed run(s): {problem}"
        for where, runner in setup.checked.items()
        for problem, count in runner.problems.items()
    ]


def report(
    setup: Setup,
    results: Results,
    multi: MultiResult | None,
    rounds: int,
    target_s: float,
    deleted: int | None,
) -> str:
    """The full printed report."""
    versions = ", ".join(f"{name} {version}" for name, version in setup.versions.items())
    lines = [
        f"Rate limiting benchmark: Python {platform.python_version()}"
        f" ({platform.python_implementation()}) on {platform.machine()}, {platform.system()},"
        f" {os.cpu_count()} CPUs",
        f"Libraries: {versions}",
        f"Median of {rounds} interleaved rounds, about {target_s:g} s per measurement;"
        " spread = (max - min) / median over the rounds; runs = rounds that gave a sample."
        " Each timed run uses a fresh key.",
        f"Redis: {setup.redis_url or 'not measured (' + str(setup.redis_skipped) + ')'}",
        "",
    ]
    if setup.buttress_redis:
        lines.append(f"NOT MEASURED: buttress on Redis ({setup.buttress_redis})")
    for where, why in setup.skipped.items():
        lines.append(f"NOT MEASURED: {where} ({why})")
    lines += _problems(setup)
    if len(lines) > 5:
        lines.append("")

    lines += [
        f"{MEM_ADMIT}: limit {ADMIT} (us per decision; ratio = / limits fixed)",
        _table(results, MEM_ADMIT, LIMITS_FIXED, "x limits fixed"),
        "",
        f"{MEM_REJECT} (us per decision; ratio = / limits fixed)",
        _table(results, MEM_REJECT, LIMITS_FIXED, "x limits fixed"),
        "",
        f"{MEM_TWO} (us per decision; ratio = / limits' two hits; reported, not a target)",
        _table(results, MEM_TWO, LIMITS_TWO, "x limits 2 hits"),
        "",
    ]
    if REDIS_ONE in results:
        lines += [
            f"{REDIS_ONE}: limit {ADMIT} (us per decision; ratio = / one PING)",
            _table(results, REDIS_ONE, PING, "x PING", digits=1, over=True),
            "",
            f"{REDIS_TWO} (us per decision; ratio = / one PING)",
            _table(results, REDIS_TWO, PING, "x PING", digits=1, over=True),
            "",
            f"{REDIS_FLOOD} (us per decision; ratio = / one PING)",
            _table(results, REDIS_FLOOD, PING, "x PING", digits=2),
            "",
        ]
    if multi is not None:
        lines += [
            f"{MULTI}: limit {HAMMER}, {multi.duration:g} s per run, spawned processes",
            _multi_table(multi),
            "",
        ]
        lines += [
            f"WARNING: {PROCESSES} processes: {count} run(s) not used: {problem}"
            for problem, count in multi.problems.items()
        ]
    lines.append("Targets")
    for target in targets(results, setup, multi):
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[target.passed]
        note = "" if target.required else " [reported, not a target]"
        lines.append(f"{verdict}  {target.label}{note}")
        lines += [f"      {detail}" for detail in target.details]
    if deleted is not None:
        lines += [
            "",
            f"Deleted this run's {deleted} Redis key(s) (SCAN MATCH on its own prefixes).",
        ]
    return "\n".join(lines)


def to_json(
    setup: Setup,
    results: Results,
    multi: MultiResult | None,
    rounds: int,
    target_s: float,
) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    scenarios = measurements_json(results)
    if multi is not None:
        scenarios[MULTI] = {
            name: {
                "median_decisions_per_s": m.median,
                "samples_decisions_per_s": m.samples,
                "processes": PROCESSES,
                "seconds_per_run": multi.duration,
                "spread": m.spread,
            }
            for name, m in multi.measurements.items()
        }
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": setup.versions,
        "redis_url": setup.redis_url,
        "rounds": rounds,
        "seconds_per_measurement": target_s,
        "skipped": {
            **setup.skipped,
            **({"buttress on Redis": setup.buttress_redis} if setup.buttress_redis else {}),
            **({"Redis": setup.redis_skipped} if setup.redis_skipped else {}),
        },
        "scenarios": scenarios,
        "problems": {
            **{
                where: dict(runner.problems)
                for where, runner in setup.checked.items()
                if runner.problems
            },
            **({MULTI: dict(multi.problems)} if multi is not None and multi.problems else {}),
        },
        "targets": [t.as_json() for t in targets(results, setup, multi)],
    }


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks ratelimit``."""
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about 0.01 s per measurement and 0.25 s per multi-process run: a smoke run",
    )
    parser.add_argument(
        "--no-processes",
        action="store_true",
        help=f"skip the {PROCESSES}-process measurement",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def _progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def _close(close: Callable[[], object]) -> None:
    try:
        close()
    except Exception as error:
        print(f"warning: closing a store failed: {type(error).__name__}: {error}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    target_s, duration = (0.01, 0.25) if args.quick else (0.2, 2.0)
    began = time.perf_counter()
    silence_log_output()
    ids = RunIds()
    setup = Setup(ids)
    loop = asyncio.new_event_loop()
    client: redis.Redis | None = None
    multi: MultiResult | None = None
    deleted: int | None = None
    try:
        client = build(setup, loop)
        results = run_interleaved(setup.scenarios, args.rounds, round(target_s * 1e9), _progress)
        if setup.redis_url and not setup.buttress_redis and not args.no_processes:
            multi = run_processes(
                setup.redis_url, ids, args.rounds, duration, MULTI_CONTENDERS, _progress
            )
    finally:
        loop.close()
        for close in setup.closers:
            _close(close)
        if client is not None:
            deleted = delete_run_keys(client, ids)
            client.close()
    print(report(setup, results, multi, args.rounds, target_s, deleted))
    print(f"The whole run took {time.perf_counter() - began:.0f} s.")
    if args.json:
        data = to_json(setup, results, multi, args.rounds, target_s)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"\nResults written to {args.json}")
    return 0
