"""Shared circuit breakers on Redis: buttress against pybreaker's ``CircuitRedisStorage``.

Every figure is a per-call time in one run, next to a redis-py ``PING`` (one round trip, the unit)
measured in the same interleaved rounds:

* **closed, success path**: ``def f(x): return x`` through a breaker closed on shared state.
  buttress with its default ``sync_interval`` (0.2 s: successes are written once per interval,
  failures at once) is the target's configuration; buttress with ``sync_interval=0`` writes every
  call (one round trip each) and pybreaker reads and writes its state on Redis around each call.
* **closed, failure path**: a call that raises (the breaker never trips: ``fail_max`` is huge);
  buttress writes every failure at once, in one round trip that also answers the state.
* **open, rejection**: a breaker opened by hand for an hour; every call is rejected.

The keys live under a prefix unique to the run and are deleted at the end (never FLUSHDB).
``BUTTRESS_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) must point at 127.0.0.1.

Run ``python -m benchmarks breaker-redis --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pybreaker
import redis

from benchmarks._harness import (
    Measurement,
    Runner,
    Target,
    format_table,
    format_targets,
    print_progress,
    run_interleaved,
    silence_log_output,
    sync_runner,
)
from benchmarks.ratelimit import redis_url
from buttress import CircuitBreaker, CircuitOpen
from buttress.storage.redis import RedisStorage

PING = "PING (redis-py)"
OURS = "buttress, shared (sync_interval=0.2)"
OURS_EVERY = "buttress, shared, sync_interval=0"
PYBREAKER = "pybreaker + CircuitRedisStorage"
CLOSED, FAILING, OPEN = "closed, success path", "closed, failure path", "open, rejection"


class Boom(Exception):
    """The failure of the failure path."""


def identity(x: int) -> int:
    return x


def boom(x: int) -> int:
    raise Boom(x)


def _catching(func: Callable[[int], int], *errors: type[BaseException]) -> Callable[[int], Any]:
    def call(x: int) -> Any:
        try:
            return func(x)
        except errors as error:
            return error

    return call


class Setup:
    """The contenders, their clients and keys."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"bench-breaker-{uuid.uuid4().hex[:8]}"
        self.client = redis.Redis.from_url(url)
        self.store = RedisStorage.from_url(url, prefix=self.prefix)
        self.scenarios: dict[str, dict[str, Runner]] = {CLOSED: {}, FAILING: {}, OPEN: {}}
        for scenario in self.scenarios.values():
            scenario[PING] = sync_runner(lambda _: self.client.ping())
        self.expected: list[tuple[str, Callable[[int], Any], type]] = []

    def ours(self, name: str, **options: Any) -> CircuitBreaker:
        return CircuitBreaker(name, storage=self.store, registry=None, **options)

    def pybreaker(self, name: str, **options: Any) -> Any:
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, self.client, namespace=f"{self.prefix}:{name}"
        )
        return pybreaker.CircuitBreaker(state_storage=storage, name=name, **options)

    def _add(self, scenario: str, name: str, call: Callable[[int], Any], expect: type) -> None:
        self.scenarios[scenario][name] = sync_runner(call)
        self.expected.append((f"{scenario} / {name}", call, expect))

    def build(self) -> None:
        window = {"failure_rate": 0.5, "window_size": 100}
        self._add(CLOSED, OURS, self.ours("closed", **window)(identity), int)
        every = self.ours("closed-every", sync_interval=0, **window)(identity)
        self._add(CLOSED, OURS_EVERY, every, int)
        self._add(CLOSED, PYBREAKER, self.pybreaker("closed", fail_max=5)(identity), int)

        many = 10**9  # never trips
        ours_failing = self.ours("failing", fail_max=many)(boom)
        self._add(FAILING, OURS, _catching(ours_failing, Boom), Boom)
        theirs_failing = self.pybreaker("failing", fail_max=many)(boom)
        self._add(FAILING, PYBREAKER, _catching(theirs_failing, Boom), Boom)

        ours = self.ours("open", fail_max=5, reset_timeout=3600)
        ours.open()
        self._add(OPEN, OURS, _catching(ours(identity), CircuitOpen), CircuitOpen)
        theirs = self.pybreaker("open", fail_max=5, reset_timeout=3600)
        theirs.open()
        rejection = pybreaker.CircuitBreakerError
        self._add(OPEN, PYBREAKER, _catching(theirs(identity), rejection), rejection)

    def check(self) -> list[str]:
        """Problems with the configurations: each contender does what it is measured for."""
        problems = []
        for label, call, expect in self.expected:
            for _ in range(3):
                result = call(1)
                if not isinstance(result, expect):
                    problems.append(f"{label}: got {result!r}, expected a {expect.__name__}")
                    break
        return problems

    def cleanup(self) -> int:
        deleted = 0
        for pattern in (f"{{{self.prefix}*", f"{self.prefix}*", f"*{self.prefix}*"):
            keys = list(self.client.scan_iter(match=pattern, count=1000))
            if keys:
                deleted += cast(int, self.client.delete(*keys))
        self.store.close()
        self.client.close()
        return deleted


def _us(results: dict[str, dict[str, Measurement]], scenario: str, name: str) -> float | None:
    found = results.get(scenario, {}).get(name)
    return None if found is None else found.median / 1000


def targets(results: dict[str, dict[str, Measurement]]) -> list[Target]:
    """The issue's Redis targets, and the ratios reported beside them."""

    def ratio(scenario: str, name: str) -> tuple[float | None, str]:
        ours, ping = _us(results, scenario, name), _us(results, scenario, PING)
        if ours is None or not ping:
            return None, f"{name}: not measured"
        return ours / ping, f"{name}: {ours:,.2f} us = {ours / ping:.3f}x PING ({ping:,.1f} us)"

    closed, closed_line = ratio(CLOSED, OURS)
    opened, open_line = ratio(OPEN, OURS)
    every_line = ratio(CLOSED, OURS_EVERY)[1]
    failing_line = ratio(FAILING, OURS)[1]
    peer_line = ratio(CLOSED, PYBREAKER)[1]
    return [
        Target(
            "Redis, closed: at most 1.1x one PING per call",
            None if closed is None else closed <= 1.1,
            [closed_line, peer_line],
        ),
        Target(
            "Redis, open: at most 1/20 of a PING per rejection",
            None if opened is None else opened <= 0.05,
            [open_line, ratio(OPEN, PYBREAKER)[1]],
        ),
        Target(
            "Redis, closed, every call written (sync_interval=0) and the failure path: one "
            "round trip each",
            None,
            [every_line, failing_line, ratio(FAILING, PYBREAKER)[1]],
            required=False,
        ),
        Target(
            "pybreaker's closed success path, in PINGs",
            None,
            [peer_line],
            required=False,
        ),
    ]


def report(results: dict[str, dict[str, Measurement]], rounds: int, url: str) -> str:
    rows = []
    for scenario, measured in results.items():
        ping = _us(results, scenario, PING) or float("nan")
        for name, measurement in measured.items():
            us = measurement.median / 1000
            rows.append(
                [
                    scenario,
                    name,
                    f"{us:,.2f}",
                    f"{us / ping:.3f}",
                    f"{measurement.spread:.0%}",
                ]
            )
    lines = [
        f"Shared circuit breakers on Redis ({url}), medians of {rounds} interleaved rounds",
        "",
        format_table(["scenario", "contender", "us/call", "x PING", "spread"], rows),
        "",
        *format_targets(targets(results)),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks breaker-redis``."""
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--quick", action="store_true", help="about 0.02 s per measurement: a smoke run"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    silence_log_output()
    url = redis_url()
    setup = Setup(url)
    began = time.perf_counter()
    try:
        setup.client.ping()
        setup.build()
        problems = setup.check()
        target_ns = round((0.02 if args.quick else 0.3) * 1e9)
        results = run_interleaved(setup.scenarios, args.rounds, target_ns, print_progress)
    finally:
        deleted = setup.cleanup()
    text = report(results, args.rounds, url)
    print(text)
    for problem in problems:
        print(f"problem: {problem}")
    print(f"({deleted} keys of this run deleted; {time.perf_counter() - began:.0f} s)")
    if args.json is not None:
        data = {
            scenario: {name: m.median for name, m in measured.items()}
            for scenario, measured in results.items()
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
    failed = [t for t in targets(results) if t.required and t.passed is False]
    return 1 if failed or problems else 0
