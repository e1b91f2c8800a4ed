"""Retry benchmark: buttress against tenacity, stamina, backoff and retrying, in one run.

Scenarios (each contender decorates its own fresh copy of the function):

* success path, sync: ``def f(x): return x`` called directly ("bare") and through each library;
* success path, async: ``async def f(x): return x`` awaited inside one running event loop;
* fail, fail, succeed, sync and async: a function that raises on its first and second call and
  returns on the third (then starts over), with 3 attempts and zero wait. The baseline is a
  hand-written ``for`` loop with ``try``/``except``.

Every library is configured for 3 attempts, zero wait and no jitter, and keeps its default
behaviour otherwise (its default logging included; see ``_harness.silence_log_output``). The same
decorator configuration is used for the success path and for fail, fail, succeed.

Run ``python -m benchmarks retry --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import backoff
import retrying
import stamina
import tenacity

from benchmarks._harness import (
    Results,
    Runner,
    Target,
    add_standard_arguments,
    async_runner,
    count_sleeps,
    format_table,
    make_async_identity,
    make_identity,
    measurements_json,
    run_micro,
    sync_runner,
)
from buttress import retry

Func = Callable[..., Any]
Decorate = Callable[[Func], Func]

ATTEMPTS = 3
BUTTRESS = "buttress"
SYNC_PEERS = ("tenacity", "stamina", "backoff", "retrying")
ASYNC_PEERS = ("tenacity", "stamina", "backoff")  # retrying has no asyncio support
BARE = "bare"
PLAIN_LOOP = "plain loop"

SUCCESS_SYNC = "success path, sync"
SUCCESS_ASYNC = "success path, async"
FFS_SYNC = "fail, fail, succeed, sync"
FFS_ASYNC = "fail, fail, succeed, async"

# Which libraries log during a retry with their default configuration (documented in the output).
DEFAULT_LOGGING = {
    "buttress": "INFO per retry on 'buttress.retry'; below the default WARNING level the event"
    " is not even built",
    "tenacity": "nothing",
    "stamina": "WARNING per retry to logger 'stamina' (stdlib logging, structlog being absent)",
    "backoff": "INFO per retry, ERROR on give-up, to logger 'backoff' (own NullHandler)",
    "retrying": "WARNING per failed attempt to logger 'retrying' (own NullHandler, no propagation)",
}


# --- the contenders -------------------------------------------------------------------------------


def _buttress() -> Decorate:
    return retry(attempts=ATTEMPTS, wait=0)


def _tenacity() -> Decorate:
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(ATTEMPTS), wait=tenacity.wait_none(), reraise=True
    )


def _stamina() -> Decorate:
    stamina.set_testing(False)
    stamina.set_active(True)
    return stamina.retry(on=Exception, attempts=ATTEMPTS, wait_initial=0, wait_max=0, wait_jitter=0)


def _backoff() -> Decorate:
    decorate: Decorate = backoff.on_exception(
        backoff.constant, Exception, max_tries=ATTEMPTS, interval=0, jitter=None
    )
    return decorate


def _retrying() -> Decorate:
    decorate: Decorate = retrying.retry(stop_max_attempt_number=ATTEMPTS, wait_fixed=0)
    return decorate


DECORATORS: dict[str, Callable[[], Decorate]] = {
    "buttress": _buttress,
    "tenacity": _tenacity,
    "stamina": _stamina,
    "backoff": _backoff,
    "retrying": _retrying,
}


# --- the measured functions -----------------------------------------------------------------------


class TransientError(Exception):
    """Raised by the flaky functions."""


def make_flaky() -> Callable[[int], int]:
    """Raise on the 1st and 2nd call, return on the 3rd, then start over."""
    failures_left = ATTEMPTS - 1

    def flaky(x: int) -> int:
        nonlocal failures_left
        if failures_left:
            failures_left -= 1
            raise TransientError(x)
        failures_left = ATTEMPTS - 1
        return x

    return flaky


def make_async_flaky() -> Callable[[int], Awaitable[int]]:
    """Async twin of `make_flaky`."""
    failures_left = ATTEMPTS - 1

    async def flaky(x: int) -> int:
        nonlocal failures_left
        if failures_left:
            failures_left -= 1
            raise TransientError(x)
        failures_left = ATTEMPTS - 1
        return x

    return flaky


def plain_loop(func: Callable[[int], int]) -> Callable[[int], int]:
    """The hand-written baseline: a for loop with try/except, no library."""

    def call(x: int) -> int:
        for attempt in range(ATTEMPTS):
            try:
                return func(x)
            except Exception:  # noqa: PERF203 (the try in a loop is the baseline measured)
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    return call


def async_plain_loop(func: Callable[[int], Awaitable[int]]) -> Callable[[int], Awaitable[int]]:
    """Async twin of `plain_loop`."""

    async def call(x: int) -> int:
        for attempt in range(ATTEMPTS):
            try:
                return await func(x)
            except Exception:  # noqa: PERF203 (the try in a loop is the baseline measured)
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    return call


# --- building and checking the scenarios ----------------------------------------------------------


@dataclass
class Setup:
    """Runners per scenario, plus what was learnt while checking each contender."""

    scenarios: dict[str, dict[str, Runner]]
    sleeps: dict[str, dict[str, int]]  # sleep calls made by one fail, fail, succeed call
    skipped: dict[str, str]  # peer name -> why it is not measured
    versions: dict[str, str]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(importlib.import_module(name), "__version__", "unknown"))


def _check(scenario: str, name: str, call: Callable[[], object]) -> None:
    result = call()
    if result != 1:
        raise RuntimeError(f"{name} returned {result!r} instead of 1 in {scenario!r}")


def build(loop: asyncio.AbstractEventLoop) -> Setup:
    """Decorate fresh functions for every contender and check each one answers correctly."""
    setup = Setup(
        scenarios={
            SUCCESS_SYNC: {BARE: sync_runner(make_identity())},
            SUCCESS_ASYNC: {BARE: async_runner(make_async_identity(), loop)},
            FFS_SYNC: {PLAIN_LOOP: sync_runner(plain_loop(make_flaky()))},
            FFS_ASYNC: {PLAIN_LOOP: async_runner(async_plain_loop(make_async_flaky()), loop)},
        },
        sleeps={FFS_SYNC: {}, FFS_ASYNC: {}},
        skipped={},
        versions={},
    )
    for name, factory in DECORATORS.items():
        try:
            runners, sleeps = _contender(name, factory, loop)
        except Exception as error:
            if name == BUTTRESS:
                raise
            setup.skipped[name] = f"{type(error).__name__}: {error}"
            continue
        setup.versions[name] = _version(name)
        for scenario, run in runners.items():
            setup.scenarios[scenario][name] = run
        for scenario, count in sleeps.items():
            setup.sleeps[scenario][name] = count
    return setup


def _contender(
    name: str, factory: Callable[[], Decorate], loop: asyncio.AbstractEventLoop
) -> tuple[dict[str, Runner], dict[str, int]]:
    """Decorate and check one library's functions; count the sleeps of fail, fail, succeed."""
    sync_f = factory()(make_identity())
    sync_flaky = factory()(make_flaky())
    _check(SUCCESS_SYNC, name, lambda: sync_f(1))
    runners = {SUCCESS_SYNC: sync_runner(sync_f), FFS_SYNC: sync_runner(sync_flaky)}
    sleeps = {FFS_SYNC: count_sleeps(lambda: _check(FFS_SYNC, name, lambda: sync_flaky(1)))}
    if name == BUTTRESS or name in ASYNC_PEERS:
        async_f = factory()(make_async_identity())
        async_flaky = factory()(make_async_flaky())
        _check(SUCCESS_ASYNC, name, lambda: loop.run_until_complete(async_f(1)))
        runners[SUCCESS_ASYNC] = async_runner(async_f, loop)
        runners[FFS_ASYNC] = async_runner(async_flaky, loop)
        sleeps[FFS_ASYNC] = count_sleeps(
            lambda: _check(FFS_ASYNC, name, lambda: loop.run_until_complete(async_flaky(1)))
        )
    return runners, sleeps


# --- analysis -------------------------------------------------------------------------------------


def _overhead(results: Results, scenario: str, name: str) -> float:
    return results[scenario][name].median - results[scenario][BARE].median


def _cost(results: Results, scenario: str, name: str) -> float:
    """What the ratios compare: overhead on the success path, whole call for fail, fail, succeed."""
    if scenario in (SUCCESS_SYNC, SUCCESS_ASYNC):
        return _overhead(results, scenario, name)
    return results[scenario][name].median


def _ratio(results: Results, scenario: str, peer: str) -> float | None:
    """peer / buttress; None when not measured or buttress's cost is within noise (<= 0)."""
    if peer not in results[scenario]:
        return None
    ours = _cost(results, scenario, BUTTRESS)
    return _cost(results, scenario, peer) / ours if ours > 0 else None


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}x"


def _target(
    results: Results, scenario: str, peers: tuple[str, ...], factor: int, *, required: bool = True
) -> Target:
    """Buttress's cost (see `_cost`) times ``factor`` must not exceed each peer's cost."""
    what = "overhead" if scenario in (SUCCESS_SYNC, SUCCESS_ASYNC) else "time per call"
    if len(peers) == 1:
        label = f"{scenario}: buttress {what} <= 1/{factor} of {peers[0]}'s"
    else:
        label = f"{scenario}: buttress at least {factor}x faster than every peer"
    ours = _cost(results, scenario, BUTTRESS)
    unit, scale = ("ns", 1.0) if what == "overhead" else ("us", 1e-3)
    parts = [f"buttress {ours * scale:,.2f} {unit}"]

    verdicts: list[bool] = []
    for peer in peers:
        if peer not in results[scenario]:
            parts.append(f"{peer} not measured")
            continue
        theirs = _cost(results, scenario, peer)
        verdicts.append(ours * factor <= theirs)
        ratio = _fmt_ratio(_ratio(results, scenario, peer))
        parts.append(f"{peer} {theirs * scale:,.2f} {unit} (ratio {ratio})")
    passed = all(verdicts) if len(verdicts) == len(peers) else None
    parts.append(f"needed: ratio >= {factor}x" + ("" if len(peers) == 1 else " for every peer"))
    return Target(label, passed, parts, required)


def targets(results: Results) -> list[Target]:
    """The issue's targets, in order."""
    sync_peers = tuple(p for p in SYNC_PEERS if p in results[FFS_SYNC])
    async_peers = tuple(p for p in ASYNC_PEERS if p in results[FFS_ASYNC])
    return [
        _target(results, SUCCESS_SYNC, ("tenacity",), 20),
        _target(results, SUCCESS_SYNC, ("backoff",), 3),
        _target(results, SUCCESS_ASYNC, ("tenacity",), 20),
        _target(results, SUCCESS_ASYNC, ("backoff",), 3),
        _target(results, FFS_SYNC, sync_peers or SYNC_PEERS, 10),
        _target(results, FFS_ASYNC, async_peers or ASYNC_PEERS, 10, required=False),
    ]


# --- output ---------------------------------------------------------------------------------------


def _success_table(results: Results, scenario: str) -> str:
    rows = []
    for name, m in results[scenario].items():
        overhead = "-" if name == BARE else f"{_overhead(results, scenario, name):,.0f}"
        rows.append([name, f"{m.median:,.0f}", overhead, f"{m.spread:.0%}", f"{m.iterations:,}"])
    headers = ["contender", "ns/call", "overhead ns", "spread", "iterations"]
    return format_table(headers, rows)


def _ffs_table(results: Results, scenario: str, sleeps: dict[str, int]) -> str:
    baseline = results[scenario][PLAIN_LOOP].median
    rows = []
    for name, m in results[scenario].items():
        slept = "-" if name == PLAIN_LOOP else str(sleeps[name])
        rows.append(
            [
                name,
                f"{m.median / 1000:,.2f}",
                f"{m.median / baseline:,.1f}",
                slept,
                f"{m.spread:.0%}",
                f"{m.iterations:,}",
            ]
        )
    headers = ["contender", "us/call", "x plain loop", "sleep calls", "spread", "iterations"]
    return format_table(headers, rows)


def _ratio_table(results: Results) -> str:
    scenarios = (SUCCESS_SYNC, SUCCESS_ASYNC, FFS_SYNC, FFS_ASYNC)
    rows = [
        [peer, *(_fmt_ratio(_ratio(results, s, peer)) for s in scenarios)]
        for peer in SYNC_PEERS
        if peer in results[SUCCESS_SYNC]
    ]
    headers = ["peer", "overhead sync", "overhead async", "ffs sync", "ffs async"]
    return format_table(headers, rows)


def report(setup: Setup, results: Results, rounds: int, target_s: float) -> str:
    """The full printed report."""
    versions = ", ".join(f"{name} {version}" for name, version in setup.versions.items())
    lines = [
        f"Retry benchmark: Python {platform.python_version()} ({platform.python_implementation()})"
        f" on {platform.machine()}, {platform.system()}",
        f"Libraries: {versions}",
        f"Median of {rounds} interleaved rounds, about {target_s:g} s per measurement;"
        " spread = (max - min) / median over the rounds.",
        f"All retries: {ATTEMPTS} attempts, zero wait, no jitter; overhead = decorated - bare.",
        "",
    ]
    for name, why in setup.skipped.items():
        lines.append(f"NOT MEASURED: {name} ({why})")
    for scenario in (SUCCESS_SYNC, SUCCESS_ASYNC):
        lines += [f"{scenario} (ns per call)", _success_table(results, scenario), ""]
    for scenario in (FFS_SYNC, FFS_ASYNC):
        title = f"{scenario} (us per call; sleep calls = sleeps made by one call)"
        lines += [title, _ffs_table(results, scenario, setup.sleeps[scenario]), ""]
    lines += [
        "Ratios, peer / buttress (success path: overhead; ffs: time per call;"
        " > 1 means buttress is cheaper)",
        _ratio_table(results),
        "",
        "Default logging kept (a NullHandler on the root logger keeps it off the terminal):",
        *(f"  {name}: {what}" for name, what in DEFAULT_LOGGING.items()),
        "",
        "Targets",
    ]
    for target in targets(results):
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[target.passed]
        note = "" if target.required else " [reported, not a target]"
        lines.append(f"{verdict}  {target.label}{note}")
        lines += [f"      {detail}" for detail in target.details]
    return "\n".join(lines)


def _extra(setup: Setup, results: Results, scenario: str, name: str) -> dict[str, Any]:
    """What ``--json`` adds to a measurement: its overhead, and the sleeps it made."""
    found: dict[str, Any] = {}
    if scenario in (SUCCESS_SYNC, SUCCESS_ASYNC) and name != BARE:
        found["overhead_ns"] = _overhead(results, scenario, name)
    if name in setup.sleeps.get(scenario, {}):
        found["sleep_calls"] = setup.sleeps[scenario][name]
    return found


def to_json(setup: Setup, results: Results, rounds: int, target_s: float) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": setup.versions,
        "rounds": rounds,
        "seconds_per_measurement": target_s,
        "skipped": setup.skipped,
        "scenarios": measurements_json(
            results, lambda scenario, name: _extra(setup, results, scenario, name)
        ),
        "ratios_peer_over_buttress": {
            scenario: {
                peer: _ratio(results, scenario, peer) for peer in SYNC_PEERS if peer in measured
            }
            for scenario, measured in results.items()
        },
        "targets": [t.as_json() for t in targets(results)],
        "default_logging": DEFAULT_LOGGING,
    }


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks retry``."""
    add_standard_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    return run_micro(args, build, lambda setup: setup.scenarios, report, to_json)
