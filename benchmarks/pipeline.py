"""Pipeline benchmark: timeout + bulkhead + retry + breaker, as a pipeline, as parts, and as peers.

The stack, outermost first: a time limit of 10 s on the whole call, a bulkhead of 10 slots that
refuses at once when full, a retry of 3 attempts with zero wait, a circuit breaker opening on the
5th failure in a row. Only the success path is measured: ``f(x) = x`` (or ``async def``), so what
is timed is each contender's own cost. Every contender decorates its own fresh function.

Scenarios:

* sync, cooperative timeout: buttress's ``TimeLimit(mode="cooperative")`` sets the deadline that
  the retry and the bulkhead read, and interrupts nothing. The peer stack gets the same thing
  written by hand (a ``contextvars`` deadline set and reset around the call), since tenacity and
  pybreaker have no timeout of their own;
* sync, thread timeout (reported, not a target): buttress's default ``mode="thread"`` runs the
  call on a pool thread and stops waiting at the deadline; the peers get the standard-library
  equivalent, ``ThreadPoolExecutor.submit(...).result(timeout=10)``. A thread hop costs tens of
  microseconds on both sides and dominates this scenario;
* async: buttress's ``TimeLimit`` cancels the task at the deadline; the peers use
  ``asyncio.timeout`` (Python 3.11+, ``asyncio.wait_for`` before), the cheapest standard one.

Contenders: ``bare`` (the function itself); each buttress policy alone (the "parts"); the
pipeline used as a decorator and through ``call()``/``acall()``; the same policies stacked by
hand as decorators; and the peer stack: tenacity (``stop_after_attempt(3)``, ``wait_none()``,
``reraise=True``) + pybreaker (``fail_max=5``; its async support needs Tornado, so aiobreaker
stands in for async) + a ``threading.Semaphore``/``asyncio.Semaphore`` of 10 that refuses when
full + the timeout above.

Targets (issue 6): the pipeline's overhead at most 1.1x the sum of its parts' overheads, and at
most 1/10 of the peer stack's, sync (cooperative timeout) and async.

Run ``python -m benchmarks pipeline --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextvars
import functools
import importlib
import importlib.metadata
import platform
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pybreaker
import tenacity

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
from buttress import CircuitBreaker, Retry
from buttress.bulkhead import Bulkhead
from buttress.pipeline import Pipeline
from buttress.timeout import TimeLimit, TimeoutMode

Func = Callable[..., Any]

TIMEOUT = 10.0
SLOTS = 10
ATTEMPTS = 3
FAIL_MAX = 5

SYNC = "success path, sync, cooperative timeout"
THREAD = "success path, sync, thread timeout"
ASYNC = "success path, async"
SCENARIOS = (SYNC, THREAD, ASYNC)

BARE = "bare"
PARTS = ("timeout alone", "bulkhead alone", "retry alone", "breaker alone")
PIPELINE = "pipeline (decorator)"
PIPELINE_CALL = "pipeline (call/acall)"
BY_HAND = "stacked by hand"
PEERS = "tenacity + pybreaker stack"
ASYNC_PEERS = "tenacity + aiobreaker stack"


# --- buttress -------------------------------------------------------------------------------------


def _policies(mode: TimeoutMode) -> list[object]:
    """Fresh policies, outermost first (the order of the recommended pipeline)."""
    return [
        TimeLimit(TIMEOUT, mode=mode),
        Bulkhead(SLOTS),
        Retry(attempts=ATTEMPTS, wait=0),
        CircuitBreaker("bench", fail_max=FAIL_MAX, registry=None),
    ]


def _by_hand(policies: list[object], fn: Func) -> Func:
    for policy in reversed(policies):
        fn = policy(fn)  # type: ignore[operator]
    return fn


# --- the peer stack -------------------------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("peer", default=None)


class PeerFull(Exception):
    """The semaphore of the peer stack had no free slot."""


def _peer_deadline(fn: Func) -> Func:
    """A cooperative deadline written by hand: what the peers need to match TimeLimit's."""

    @functools.wraps(fn)
    def limited(*args: Any, **kwargs: Any) -> Any:
        token = _deadline.set(time.monotonic() + TIMEOUT)
        try:
            return fn(*args, **kwargs)
        finally:
            _deadline.reset(token)

    return limited


_executor = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="peer-timeout")


def _peer_thread_timeout(fn: Func) -> Func:
    @functools.wraps(fn)
    def limited(*args: Any, **kwargs: Any) -> Any:
        return _executor.submit(fn, *args, **kwargs).result(timeout=TIMEOUT)

    return limited


def _peer_semaphore(fn: Func) -> Func:
    semaphore = threading.Semaphore(SLOTS)

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not semaphore.acquire(blocking=False):
            raise PeerFull
        try:
            return fn(*args, **kwargs)
        finally:
            semaphore.release()

    return guarded


def _peer_retry() -> Callable[[Func], Func]:
    decorate: Callable[[Func], Func] = tenacity.retry(
        stop=tenacity.stop_after_attempt(ATTEMPTS), wait=tenacity.wait_none(), reraise=True
    )
    return decorate


def _peer_stack(fn: Func, timeout: Callable[[Func], Func]) -> Func:
    breaker = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=60)
    return timeout(_peer_semaphore(_peer_retry()(breaker(fn))))


def _peer_async_timeout(fn: Callable[..., Awaitable[Any]]) -> Func:
    @functools.wraps(fn)
    async def limited(*args: Any, **kwargs: Any) -> Any:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(TIMEOUT):
                return await fn(*args, **kwargs)
        return await asyncio.wait_for(fn(*args, **kwargs), TIMEOUT)  # pragma: no cover

    return limited


def _peer_async_semaphore(fn: Callable[..., Awaitable[Any]]) -> Func:
    semaphore = asyncio.Semaphore(SLOTS)

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if semaphore.locked():
            raise PeerFull
        async with semaphore:
            return await fn(*args, **kwargs)

    return guarded


def _peer_async_stack(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Func:
    # aiobreaker ships no type information: imported as a plain module.
    breaker = importlib.import_module("aiobreaker").CircuitBreaker(
        fail_max=FAIL_MAX, timeout_duration=timedelta(seconds=60)
    )
    return _peer_async_timeout(_peer_async_semaphore(_peer_retry()(breaker(fn))))


# --- building the scenarios -----------------------------------------------------------------------


@dataclass
class Setup:
    """Runners per scenario and the library versions."""

    scenarios: dict[str, dict[str, Runner]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _check(name: str, call: Callable[[], object]) -> None:
    result = call()
    if result != 1:
        raise RuntimeError(f"{name} returned {result!r} instead of 1")


def _sync_scenario(mode: TimeoutMode, peer_timeout: Callable[[Func], Func]) -> dict[str, Runner]:
    runners: dict[str, Runner] = {BARE: sync_runner(make_identity())}
    for name, policy in zip(PARTS, _policies(mode), strict=True):
        runners[name] = sync_runner(policy(make_identity()))  # type: ignore[operator]
    runners[PIPELINE] = sync_runner(Pipeline(*_policies(mode))(make_identity()))
    piped, function = Pipeline(*_policies(mode)), make_identity()
    runners[PIPELINE_CALL] = sync_runner(lambda x: piped.call(function, x))
    runners[BY_HAND] = sync_runner(_by_hand(_policies(mode), make_identity()))
    runners[PEERS] = sync_runner(_peer_stack(make_identity(), peer_timeout))
    return runners


def _async_scenario(loop: asyncio.AbstractEventLoop) -> dict[str, Runner]:
    runners: dict[str, Runner] = {BARE: async_runner(make_async_identity(), loop)}
    for name, policy in zip(PARTS, _policies("thread"), strict=True):
        runners[name] = async_runner(policy(make_async_identity()), loop)  # type: ignore[operator]
    runners[PIPELINE] = async_runner(Pipeline(*_policies("thread"))(make_async_identity()), loop)
    piped, function = Pipeline(*_policies("thread")), make_async_identity()
    runners[PIPELINE_CALL] = async_runner(lambda x: piped.acall(function, x), loop)
    runners[BY_HAND] = async_runner(_by_hand(_policies("thread"), make_async_identity()), loop)
    runners[ASYNC_PEERS] = async_runner(_peer_async_stack(make_async_identity()), loop)  # type: ignore[arg-type]
    return runners


def build(loop: asyncio.AbstractEventLoop) -> Setup:
    """Make every contender and check that each answers 1 to 1."""
    setup = Setup()
    setup.scenarios[SYNC] = _sync_scenario("cooperative", _peer_deadline)
    setup.scenarios[THREAD] = _sync_scenario("thread", _peer_thread_timeout)
    setup.scenarios[ASYNC] = _async_scenario(loop)
    for scenario, runners in setup.scenarios.items():
        for name, run in runners.items():
            _check(f"{name} ({scenario})", lambda run=run: 1 if run(1) >= 0 else 0)  # type: ignore[misc]
    for name in ("buttress", "tenacity", "pybreaker", "aiobreaker"):
        setup.versions[name] = importlib.metadata.version(name)
    return setup


# --- analysis -------------------------------------------------------------------------------------


def _overhead(results: Results, scenario: str, name: str) -> float | None:
    measured = results[scenario]
    if name not in measured or BARE not in measured:
        return None
    return measured[name].median - measured[BARE].median


def _sum_of_parts(results: Results, scenario: str) -> float | None:
    parts = [_overhead(results, scenario, name) for name in PARTS]
    return None if any(part is None for part in parts) else sum(p for p in parts if p is not None)


def _peer(scenario: str) -> str:
    return ASYNC_PEERS if scenario == ASYNC else PEERS


def targets(results: Results) -> list[Target]:
    """The issue's targets, per scenario (the thread-timeout lines are reported only)."""
    out: list[Target] = []
    for scenario in SCENARIOS:
        required = scenario != THREAD
        ours = _overhead(results, scenario, PIPELINE)
        parts = _sum_of_parts(results, scenario)
        passed = None if ours is None or parts is None else ours <= 1.1 * parts
        details = (
            [f"pipeline {ours:,.0f} ns, sum of parts {parts:,.0f} ns, ratio {ours / parts:.2f}x"]
            if ours is not None and parts is not None and parts > 0
            else ["not measured"]
        )
        out.append(
            Target(f"{scenario}: pipeline <= 1.1x the sum of its parts", passed, details, required)
        )
        theirs = _overhead(results, scenario, _peer(scenario))
        passed = None if ours is None or theirs is None else ours * 10 <= theirs
        details = (
            [
                f"pipeline {ours:,.0f} ns, {_peer(scenario)} {theirs:,.0f} ns,"
                f" pipeline / peers = 1/{theirs / ours:.1f}"
            ]
            if ours is not None and theirs is not None and ours > 0
            else ["not measured"]
        )
        out.append(
            Target(f"{scenario}: pipeline <= 1/10 of {_peer(scenario)}", passed, details, required)
        )
    return out


def _table(results: Results, scenario: str) -> str:
    rows = []
    for name, m in results[scenario].items():
        overhead = _overhead(results, scenario, name)
        rows.append(
            [
                name,
                f"{m.median:,.0f}",
                "-" if name == BARE or overhead is None else f"{overhead:,.0f}",
                f"{m.spread:.0%}",
                f"{m.iterations:,}",
            ]
        )
    parts = _sum_of_parts(results, scenario)
    if parts is not None:
        rows.append(["(sum of the parts)", "", f"{parts:,.0f}", "", ""])
    return format_table(["contender", "ns/call", "overhead ns", "spread", "iterations"], rows)


def report(setup: Setup, results: Results, rounds: int, target_s: float) -> str:
    """The printed report."""
    versions = ", ".join(f"{name} {version}" for name, version in setup.versions.items())
    lines = [
        f"Pipeline benchmark: Python {platform.python_version()}"
        f" ({platform.python_implementation()}) on {platform.machine()}, {platform.system()}",
        f"Libraries: {versions}",
        f"Median of {rounds} interleaved rounds, about {target_s:g} s per measurement;"
        " overhead = contender - bare.",
        f"Stack, outermost first: timeout {TIMEOUT:g} s, bulkhead {SLOTS} (refuse when full),"
        f" retry {ATTEMPTS} attempts zero wait, breaker fail_max={FAIL_MAX}.",
        "",
    ]
    for scenario in SCENARIOS:
        lines += [f"{scenario} (ns per call)", _table(results, scenario), ""]
    lines += ["Targets", *format_targets(targets(results))]
    return "\n".join(lines)


def to_json(setup: Setup, results: Results, rounds: int, target_s: float) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": setup.versions,
        "rounds": rounds,
        "seconds_per_measurement": target_s,
        "scenarios": measurements_json(
            results, lambda scenario, name: {"overhead_ns": _overhead(results, scenario, name)}
        ),
        "targets": [t.as_json() for t in targets(results)],
    }


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks pipeline``."""
    add_standard_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    return run_micro(args, build, lambda setup: setup.scenarios, report, to_json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
