"""Bulkhead benchmark: the cost of taking and giving back a slot, against bare semaphores.

Scenarios (one uncontended slot taken and given back per operation, nothing done inside):

* sync, ``with``: ``with threading.Semaphore(n):`` against ``with bulkhead.acquire():``;
* sync, try/release: ``sem.acquire(blocking=False); sem.release()`` against
  ``bulkhead.try_acquire().release()``;
* async, ``async with``: ``async with asyncio.Semaphore(n):`` against
  ``async with bulkhead.aacquire():``, awaited inside one running event loop;
* decorated call, sync and async (reported, not a target): a function decorated with
  ``@bulkhead`` against the bare function, to show the whole cost of a protected call.

Target (issue 6): each buttress operation at most 3x its bare semaphore. The bulkhead does more
than a semaphore (a permit object released exactly once, refusal counting, one object for threads
and tasks), so 1x is not the aim; 3x is the bound.

Run ``python -m benchmarks bulkhead --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._harness import (
    Results,
    Runner,
    Target,
    add_standard_arguments,
    async_runner,
    format_table,
    format_targets,
    make_async_identity,
    make_identity,
    measurements_json,
    run_micro,
    sync_runner,
)
from buttress.bulkhead import Bulkhead

SLOTS = 10
FACTOR = 3.0
BARE = "bare semaphore"
BUTTRESS = "buttress"
BARE_CALL = "bare call"

SYNC_WITH = "sync, with block"
SYNC_TRY = "sync, try/release"
ASYNC_WITH = "async, async with"
DECORATED_SYNC = "decorated call, sync"
DECORATED_ASYNC = "decorated call, async"

TARGETED = (SYNC_WITH, SYNC_TRY, ASYNC_WITH)


def _sync_with_bare() -> Callable[[int], object]:
    sem = threading.Semaphore(SLOTS)

    def op(_: int) -> None:
        with sem:
            pass

    return op


def _sync_with_buttress() -> Callable[[int], object]:
    acquire = Bulkhead(SLOTS).acquire

    def op(_: int) -> None:
        with acquire():
            pass

    return op


def _sync_try_bare() -> Callable[[int], object]:
    sem = threading.Semaphore(SLOTS)
    acquire, release = sem.acquire, sem.release

    def op(_: int) -> None:
        acquire(blocking=False)
        release()

    return op


def _sync_try_buttress() -> Callable[[int], object]:
    try_acquire = Bulkhead(SLOTS).try_acquire

    def op(_: int) -> None:
        permit = try_acquire()
        assert permit is not None  # noqa: S101 - never full: one slot at a time
        permit.release()

    return op


def _async_with_bare() -> Callable[[int], Awaitable[object]]:
    sem = asyncio.Semaphore(SLOTS)

    async def op(_: int) -> None:
        async with sem:
            pass

    return op


def _async_with_buttress() -> Callable[[int], Awaitable[object]]:
    aacquire = Bulkhead(SLOTS).aacquire

    async def op(_: int) -> None:
        async with aacquire():
            pass

    return op


def build(loop: asyncio.AbstractEventLoop) -> dict[str, dict[str, Runner]]:
    """Every contender, checked once to leave its bulkhead empty."""
    scenarios: dict[str, dict[str, Runner]] = {
        SYNC_WITH: {
            BARE: sync_runner(_sync_with_bare()),
            BUTTRESS: sync_runner(_sync_with_buttress()),
        },
        SYNC_TRY: {
            BARE: sync_runner(_sync_try_bare()),
            BUTTRESS: sync_runner(_sync_try_buttress()),
        },
        ASYNC_WITH: {
            BARE: async_runner(_async_with_bare(), loop),
            BUTTRESS: async_runner(_async_with_buttress(), loop),
        },
    }
    sync_guarded = Bulkhead(SLOTS)
    async_guarded = Bulkhead(SLOTS)
    sync_f = sync_guarded(make_identity())
    async_f = async_guarded(make_async_identity())
    if sync_f(1) != 1 or loop.run_until_complete(async_f(1)) != 1:
        raise RuntimeError("a decorated function answered wrongly")
    if sync_guarded.in_use or async_guarded.in_use:
        raise RuntimeError("a decorated call kept its slot")
    scenarios[DECORATED_SYNC] = {
        BARE_CALL: sync_runner(make_identity()),
        BUTTRESS: sync_runner(sync_f),
    }
    scenarios[DECORATED_ASYNC] = {
        BARE_CALL: async_runner(make_async_identity(), loop),
        BUTTRESS: async_runner(async_f, loop),
    }
    return scenarios


def _ratio(results: Results, scenario: str) -> float | None:
    measured = results.get(scenario, {})
    baseline = BARE if scenario in TARGETED else BARE_CALL
    if BUTTRESS not in measured or baseline not in measured:
        return None
    return measured[BUTTRESS].median / measured[baseline].median


def targets(results: Results) -> list[Target]:
    """One target per acquire/release scenario: buttress <= 3x the bare semaphore."""
    found: list[Target] = []
    for scenario in TARGETED:
        ratio = _ratio(results, scenario)
        if ratio is None:
            found.append(
                Target(f"{scenario}: buttress <= {FACTOR:g}x bare", None, ["not measured"])
            )
            continue
        ours, bare = results[scenario][BUTTRESS].median, results[scenario][BARE].median
        found.append(
            Target(
                f"{scenario}: buttress <= {FACTOR:g}x the bare semaphore",
                ratio <= FACTOR,
                [f"buttress {ours:,.0f} ns, bare {bare:,.0f} ns: ratio {ratio:.2f}x"],
            )
        )
    return found


def report(results: Results, rounds: int, target_s: float) -> str:
    """The printed report."""
    lines = [
        f"Bulkhead benchmark: Python {platform.python_version()} "
        f"({platform.python_implementation()}) on {platform.machine()}, {platform.system()}",
        f"Median of {rounds} interleaved rounds, about {target_s:g} s per measurement;"
        " spread = (max - min) / median over the rounds.",
        f"Each operation takes one of {SLOTS} free slots and gives it back (no contention).",
        "",
    ]
    for scenario, measured in results.items():
        ratio = _ratio(results, scenario)
        rows = [
            [
                name,
                f"{m.median:,.0f}",
                "-" if name != BUTTRESS or ratio is None else f"{ratio:.2f}x",
                f"{m.spread:.0%}",
                f"{m.iterations:,}",
            ]
            for name, m in measured.items()
        ]
        headers = ["contender", "ns/op", "ratio", "spread", "iterations"]
        lines += [scenario, format_table(headers, rows), ""]
    lines += ["Targets", *format_targets(targets(results))]
    return "\n".join(lines)


def to_json(results: Results, rounds: int, target_s: float) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rounds": rounds,
        "seconds_per_measurement": target_s,
        "scenarios": measurements_json(results),
        "ratios": {scenario: _ratio(results, scenario) for scenario in results},
        "targets": [t.as_json() for t in targets(results)],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks bulkhead``."""
    add_standard_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    return run_micro(
        args,
        build,
        lambda scenarios: scenarios,
        lambda _, results, rounds, target_s: report(results, rounds, target_s),
        lambda _, results, rounds, target_s: to_json(results, rounds, target_s),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bulkhead")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
