"""Rate limit decisions on Redis from asyncio: several tasks at once, as an ASGI server makes them.

Scenario: 8 tasks on one event loop, each awaiting one call after another; the figure is the
wall time per call (the loop's whole time over the calls made), so it counts the client's CPU
and whatever of Redis's time the loop spends waiting. Contenders:

* ``PING`` on the store's own connection (the floor: the transport a decision uses, without its
  script);
* ``PING`` through ``redis.asyncio`` (redis-py's pooled client, for scale);
* buttress ``Limiter.ahit`` with one limit (fixed window, and GCRA) and with two limits.

Not a target of an issue: it shows where an asyncio decision's time goes (see docs/benchmarks.md).
Keys live under a per-run prefix, deleted at the end. ``--tasks N`` changes the concurrency.

Run ``python -m benchmarks ratelimit-async --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio

from benchmarks._harness import (
    Results,
    Runner,
    add_standard_arguments,
    delete_run_keys,
    format_table,
    measurements_json,
    run_micro,
)
from benchmarks.ratelimit import redis_url
from benchmarks.web_apps import PING
from buttress.ratelimit import Limiter
from buttress.storage.redis import RedisStorage

SCENARIO = "Redis from asyncio, {tasks} tasks at once"
OWN_PING = "PING on the store's connection (floor)"
CLIENT_PING = "PING through redis.asyncio"
ONE_FIXED = "buttress ahit, fixed-window, one limit"
ONE_GCRA = "buttress ahit, gcra, one limit"
TWO_FIXED = "buttress ahit, fixed-window, two limits"
ADMIT = "1000000000/hour"
TWO = "1000000000/second; 1000000000/hour"


def concurrent_runner(
    call: Callable[[], Awaitable[object]], loop: asyncio.AbstractEventLoop, tasks: int
) -> Runner:
    """Time about ``n`` awaited calls made by ``tasks`` tasks at once; return ns for ``n``."""

    async def worker(count: int) -> None:
        for _ in itertools.repeat(None, count):
            await call()

    async def body(n: int) -> int:
        each = max(1, n // tasks)
        clock = time.perf_counter_ns
        start = clock()
        await asyncio.gather(*(worker(each) for _ in range(tasks)))
        elapsed = clock() - start
        return elapsed * n // (each * tasks)  # scaled to n calls

    def run(n: int) -> int:
        return loop.run_until_complete(body(n))

    return run


@dataclass
class Setup:
    loop: asyncio.AbstractEventLoop
    tasks: int
    url: str
    prefix: str
    store: RedisStorage
    client: Any  # redis.asyncio.Redis
    calls: dict[str, Callable[[], Awaitable[object]]]


def build(loop: asyncio.AbstractEventLoop, tasks: int) -> Setup:
    url = redis_url()
    prefix = f"bench-rl-async-{uuid.uuid4().hex[:8]}"
    store = RedisStorage.from_url(url, prefix=prefix)
    client = redis.asyncio.Redis.from_url(url, max_connections=tasks)
    one = Limiter(ADMIT, storage=store)
    gcra = Limiter(ADMIT, algorithm="gcra", storage=store)
    two = Limiter(TWO, storage=store)

    async def own_ping() -> object:
        link = await store._opened(2.0)  # noqa: SLF001 - the decisions' own connection
        return await link.send(PING, 2.0)

    def checked(limiter: Limiter) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            decision = await limiter.ahit("client")
            if not decision.allowed or decision.degraded:
                raise RuntimeError(f"{limiter!r}: not a plain admission: {decision}")
            return decision

        return call

    async def client_ping() -> object:
        return await cast("Awaitable[object]", client.ping())

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        OWN_PING: own_ping,
        CLIENT_PING: client_ping,
        ONE_FIXED: checked(one),
        ONE_GCRA: checked(gcra),
        TWO_FIXED: checked(two),
    }
    return Setup(loop, tasks, url, prefix, store, client, calls)


def scenarios(setup: Setup) -> dict[str, dict[str, Runner]]:
    name = SCENARIO.format(tasks=setup.tasks)
    return {
        name: {
            contender: concurrent_runner(call, setup.loop, setup.tasks)
            for contender, call in setup.calls.items()
        }
    }


def close(setup: Setup) -> None:
    """Close the connections (on the setup's loop) and delete the run's keys."""

    async def closing() -> None:
        await setup.store.aclose()
        await setup.client.aclose()

    setup.loop.run_until_complete(closing())
    delete_run_keys(setup.url, setup.prefix)


def report(setup: Setup, results: Results, rounds: int, target_s: float) -> str:
    name = SCENARIO.format(tasks=setup.tasks)
    measured = results.get(name, {})
    floor = measured.get(OWN_PING)
    rows = [
        [
            contender,
            f"{m.median / 1000:.1f}",
            f"{m.median / floor.median:.2f}" if floor else "-",
            f"{m.spread:.0%}",
        ]
        for contender, m in measured.items()
    ]
    return "\n".join(
        [
            f"{name}: wall µs per call, median of {rounds} rounds of ~{target_s:g} s",
            "",
            format_table(["contender", "µs/call", "x floor", "spread"], rows),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks ratelimit-async``."""
    add_standard_arguments(parser)
    parser.add_argument("--tasks", type=int, default=8, help="tasks at once (default 8)")


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    if args.tasks < 1:
        print("--tasks must be at least 1")
        return 2
    return run_micro(
        args,
        lambda loop: build(loop, args.tasks),
        scenarios,
        report,
        lambda _setup, results, _rounds, _target: measurements_json(results),
        finish=close,
    )
