"""Circuit breaker benchmark: buttress against pybreaker, circuitbreaker, aiobreaker and purgatory.

Scenarios (see ``docs/benchmarks.md``):

* success path, sync: ``def f(x): return x`` called directly ("bare") and through each breaker,
  closed; ns per call, and the overhead (decorated - bare);
* success path, async: ``async def f(x): return x`` awaited inside one running event loop;
* rejection while open, sync and async: a fresh breaker per timed run, opened before the clock
  starts (by hand with ``open()`` where the library has it: buttress, pybreaker, aiobreaker; else
  by 5 failures in a row: circuitbreaker, purgatory), then called again and again; every call is
  rejected with the library's exception, caught by the timed loop. The baseline ("raise+catch")
  is a function that raises a fresh exception, caught the same way. Checked once beforehand:
  whether each rejection is a fresh exception, and how long the traceback of the 1,000th is.

buttress is measured twice: with ``fail_max=5`` only, and with ``fail_max=5`` plus a count-based
failure-rate window (``failure_rate=0.5, window_size=100``), the configuration the targets name.
Every breaker is configured to open on the 5th failure in a row and stay open 60 s; this is
checked before timing and reported (4 failures then a success: admitted; 5 failures: the next 3
calls rejected).

The peers are imported with :mod:`importlib`: one that is not installed is reported as not
measured instead of stopping the run (and mypy needs no stubs for the untyped ones).

Run ``python -m benchmarks breaker --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import inspect
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any

from benchmarks._harness import (
    AsyncTrial,
    FreshAsyncRunner,
    FreshRunner,
    Results,
    Runner,
    Target,
    Trial,
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
from buttress import CircuitBreaker, CircuitOpen

Func = Callable[..., Any]

FAIL_MAX = 5
RESET_TIMEOUT = 60  # seconds: far longer than any timed run, so a tripped breaker stays open
FAILURE_RATE = 0.5
WINDOW_SIZE = 100
TRACEBACK_PROBE = 1000  # rejections before looking at the last one's traceback

BARE = "bare"
RAISE_CATCH = "raise+catch"
BUTTRESS_FAIL_MAX = "buttress fail_max"
BUTTRESS_WINDOW = "buttress window"
BUTTRESS = BUTTRESS_WINDOW  # the configuration the targets name
PYBREAKER = "pybreaker"
CIRCUITBREAKER = "circuitbreaker"
AIOBREAKER = "aiobreaker"
PURGATORY = "purgatory"

SUCCESS_SYNC = "success path, sync"
SUCCESS_ASYNC = "success path, async"
REJECT_SYNC = "rejection while open, sync"
REJECT_ASYNC = "rejection while open, async"
SUCCESS = (SUCCESS_SYNC, SUCCESS_ASYNC)
REJECT = (REJECT_SYNC, REJECT_ASYNC)

REJECTED = "rejected"
ADMITTED = "admitted"


# --- the contenders -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A fresh breaker around one function: the protected function, and how to open it by hand."""

    protected: Func
    open_by_hand: Callable[[], object] | None = None


Build = Callable[[Func], Built]


@dataclass(frozen=True)
class Spec:
    """How to build one contender: a fresh breaker around a function, and what it raises when open.

    ``build`` and ``rejection`` receive the imported module (``None`` for buttress, imported
    statically). ``build(module)(fn)`` must make a *new* breaker each time it is called.
    """

    name: str
    module: str | None
    distribution: str
    build: Callable[[ModuleType | None], Build]
    rejection: Callable[[ModuleType | None], type[BaseException]]
    configuration: str
    sync: bool = True
    is_async: bool = True


def _buttress(**options: Any) -> Callable[[ModuleType | None], Build]:
    def build(_: ModuleType | None) -> Build:
        def wrap(fn: Func) -> Built:
            breaker = CircuitBreaker("bench", reset_timeout=RESET_TIMEOUT, registry=None, **options)
            return Built(breaker(fn), breaker.open)

        return wrap

    return build


def _buttress_rejection(_: ModuleType | None) -> type[BaseException]:
    return CircuitOpen


def _pybreaker(module: ModuleType | None) -> Build:
    def wrap(fn: Func) -> Built:
        breaker = _loaded(module).CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT)
        return Built(breaker(fn), breaker.open)

    return wrap


def _circuitbreaker(module: ModuleType | None) -> Build:
    def wrap(fn: Func) -> Built:
        breaker = _loaded(module).CircuitBreaker(
            failure_threshold=FAIL_MAX, recovery_timeout=RESET_TIMEOUT, name="bench"
        )
        return Built(breaker(fn))  # no public way to open it: tripped by failures

    return wrap


def _aiobreaker(module: ModuleType | None) -> Build:
    def wrap(fn: Func) -> Built:
        breaker = _loaded(module).CircuitBreaker(
            fail_max=FAIL_MAX, timeout_duration=timedelta(seconds=RESET_TIMEOUT)
        )
        return Built(breaker(fn), breaker.open)

    return wrap


def _purgatory(module: ModuleType | None) -> Build:
    def wrap(fn: Func) -> Built:
        purgatory = _loaded(module)
        factory_type = (
            purgatory.AsyncCircuitBreakerFactory
            if inspect.iscoroutinefunction(fn)
            else purgatory.SyncCircuitBreakerFactory
        )
        factory = factory_type(default_threshold=FAIL_MAX, default_ttl=RESET_TIMEOUT)
        # No public way to open it: tripped by failures.
        return Built(factory("bench", threshold=FAIL_MAX, ttl=RESET_TIMEOUT)(fn))

    return wrap


def _error_named(attribute: str) -> Callable[[ModuleType | None], type[BaseException]]:
    def rejection(module: ModuleType | None) -> type[BaseException]:
        error: type[BaseException] = getattr(_loaded(module), attribute)
        return error

    return rejection


def _purgatory_rejection(_: ModuleType | None) -> type[BaseException]:
    # purgatory raises its OpenedState object itself (a state that is also an exception).
    error: type[BaseException] = importlib.import_module("purgatory.domain.model").OpenedState
    return error


def _loaded(module: ModuleType | None) -> ModuleType:
    if module is None:
        raise RuntimeError("a peer's contender was built without its module")
    return module


SPECS: tuple[Spec, ...] = (
    Spec(
        BUTTRESS_FAIL_MAX,
        None,
        "buttress",
        _buttress(fail_max=FAIL_MAX),
        _buttress_rejection,
        f'CircuitBreaker("bench", fail_max={FAIL_MAX}, reset_timeout={RESET_TIMEOUT},'
        " registry=None)",
    ),
    Spec(
        BUTTRESS_WINDOW,
        None,
        "buttress",
        _buttress(
            fail_max=FAIL_MAX,
            failure_rate=FAILURE_RATE,
            window_size=WINDOW_SIZE,
            window_type="count",
        ),
        _buttress_rejection,
        f'CircuitBreaker("bench", fail_max={FAIL_MAX}, failure_rate={FAILURE_RATE},'
        f' window_size={WINDOW_SIZE}, window_type="count", reset_timeout={RESET_TIMEOUT},'
        " registry=None) (min_calls defaults to 10)",
    ),
    Spec(
        PYBREAKER,
        "pybreaker",
        "pybreaker",
        _pybreaker,
        _error_named("CircuitBreakerError"),
        f"pybreaker.CircuitBreaker(fail_max={FAIL_MAX}, reset_timeout={RESET_TIMEOUT})"
        " (memory storage; its async support needs Tornado, so sync only)",
        is_async=False,
    ),
    Spec(
        CIRCUITBREAKER,
        "circuitbreaker",
        "circuitbreaker",
        _circuitbreaker,
        _error_named("CircuitBreakerError"),
        f"circuitbreaker.CircuitBreaker(failure_threshold={FAIL_MAX},"
        f' recovery_timeout={RESET_TIMEOUT}, name="bench") (expected_exception=Exception)',
    ),
    Spec(
        AIOBREAKER,
        "aiobreaker",
        "aiobreaker",
        _aiobreaker,
        _error_named("CircuitBreakerError"),
        f"aiobreaker.CircuitBreaker(fail_max={FAIL_MAX},"
        f" timeout_duration=timedelta(seconds={RESET_TIMEOUT})) (measured async only)",
        sync=False,
    ),
    Spec(
        PURGATORY,
        "purgatory",
        "purgatory",
        _purgatory,
        _purgatory_rejection,
        f"purgatory.SyncCircuitBreakerFactory / AsyncCircuitBreakerFactory(default_threshold="
        f'{FAIL_MAX}, default_ttl={RESET_TIMEOUT}), decorator factory("bench",'
        f" threshold={FAIL_MAX}, ttl={RESET_TIMEOUT}) (in-memory unit of work)",
    ),
)


# --- the measured functions -----------------------------------------------------------------------


class DependencyDown(Exception):
    """Raised by the switchable functions while their switch is on."""


class BareOpen(Exception):
    """What the raise+catch baseline raises: a fresh exception with a message, like a rejection."""


@dataclass
class Switch:
    """Makes a switchable function fail while ``failing`` is set (used to trip the breakers)."""

    failing: bool = False


def make_switchable(switch: Switch) -> Callable[[int], int]:
    def f(x: int) -> int:
        if switch.failing:
            raise DependencyDown(x)
        return x

    return f


def make_async_switchable(switch: Switch) -> Callable[[int], Awaitable[int]]:
    async def f(x: int) -> int:
        if switch.failing:
            raise DependencyDown(x)
        return x

    return f


def refuse(x: int) -> int:
    raise BareOpen(f"circuit {x} is open")


async def async_refuse(x: int) -> int:
    raise BareOpen(f"circuit {x} is open")


# --- calling a contender, outside the timed loops -------------------------------------------------


@dataclass
class Caller:
    """Calls a protected function once, sync or async, outside any running loop."""

    loop: asyncio.AbstractEventLoop
    is_async: bool

    def __call__(self, protected: Func) -> Any:
        if self.is_async:
            return self.loop.run_until_complete(protected(1))
        return protected(1)

    def outcome(self, protected: Func, rejection: type[BaseException]) -> tuple[str, Any]:
        """``(ADMITTED, result)`` or ``(REJECTED, the rejection)``; other exceptions propagate."""
        try:
            return ADMITTED, self(protected)
        except rejection as error:
            return REJECTED, error


def _fail(call: Caller, protected: Func, switch: Switch, times: int) -> None:
    """Make ``times`` failing calls (the breaker may turn the last one into its own error)."""
    switch.failing = True
    try:
        for _ in range(times):
            with contextlib.suppress(Exception):  # each failure is expected
                call(protected)
    finally:
        switch.failing = False


def _switchable(build: Build, is_async: bool) -> tuple[Built, Switch]:
    switch = Switch()
    return build(make_async_switchable(switch) if is_async else make_switchable(switch)), switch


def tripped(build: Build, call: Caller) -> Func:
    """A fresh breaker around a switchable function, opened by ``FAIL_MAX`` failures in a row."""
    built, switch = _switchable(build, call.is_async)
    _fail(call, built.protected, switch, FAIL_MAX)
    return built.protected


def opened(build: Build, call: Caller) -> Func:
    """A fresh breaker, opened by hand where the library can, else tripped by failures."""
    built, _ = _switchable(build, call.is_async)
    if built.open_by_hand is None:
        return tripped(build, call)
    built.open_by_hand()
    return built.protected


def check_threshold(build: Build, rejection: type[BaseException], call: Caller) -> str | None:
    """Check the breaker opens on the 5th failure in a row, not before, and stays open.

    Returns what went wrong, or ``None``.
    """
    built, switch = _switchable(build, call.is_async)
    _fail(call, built.protected, switch, FAIL_MAX - 1)
    outcome, value = call.outcome(built.protected, rejection)
    if outcome != ADMITTED or value != 1:
        return f"after {FAIL_MAX - 1} failures in a row the next call was {outcome}"
    protected = tripped(build, call)
    for index in range(3):
        outcome, _ = call.outcome(protected, rejection)
        if outcome != REJECTED:
            return (
                f"after {FAIL_MAX} failures in a row, call {index + 1} was {outcome}"
                f" (expected a rejection for {RESET_TIMEOUT} s)"
            )
    return None


@dataclass(frozen=True)
class RejectionShape:
    """What one contender's rejections look like (checked once, outside the timed loops)."""

    fresh: bool  # a new exception object per rejection
    traceback_entries: int  # in the traceback of the last of TRACEBACK_PROBE rejections


def _traceback_entries(error: BaseException) -> int:
    count, tb = 0, error.__traceback__
    while tb is not None:
        count += 1
        tb = tb.tb_next
    return count


def rejection_shape(
    protected: Func, rejection: type[BaseException], call: Caller
) -> RejectionShape:
    errors: list[BaseException] = []
    for index in range(TRACEBACK_PROBE):
        outcome, value = call.outcome(protected, rejection)
        if outcome != REJECTED:
            raise RuntimeError(f"rejection {index + 1} of {TRACEBACK_PROBE}: {outcome} {value!r}")
        if index in (0, TRACEBACK_PROBE - 1):
            errors.append(value)
    first, last = errors
    return RejectionShape(fresh=first is not last, traceback_entries=_traceback_entries(last))


# --- timed runs of rejections ---------------------------------------------------------------------


def _expect_rejected(result: object) -> str | None:
    return None if result == REJECTED else f"{result}, expected a rejection"


def rejection_runner(
    make: Callable[[], Func], rejection: type[BaseException], call: Caller
) -> FreshRunner | FreshAsyncRunner:
    """Time calls to an open breaker, each rejection caught; a fresh open breaker per timed run.

    Fresh per run because a library that re-raises one exception object (purgatory) grows its
    traceback with every rejection: each run then starts from the same state.
    """
    if call.is_async:

        def fresh_async() -> AsyncTrial:
            protected = make()

            async def call() -> str:
                try:
                    await protected(1)
                except rejection:
                    return REJECTED
                return ADMITTED

            return AsyncTrial(call, check=_expect_rejected)

        return FreshAsyncRunner(fresh_async, call.loop)

    def fresh() -> Trial:
        protected = make()

        def call() -> str:
            try:
                protected(1)
            except rejection:
                return REJECTED
            return ADMITTED

        return Trial(call, check=_expect_rejected)

    return FreshRunner(fresh)


# --- building and checking the scenarios ----------------------------------------------------------


@dataclass
class Setup:
    """Runners per scenario, plus what was learnt while checking each contender."""

    scenarios: dict[str, dict[str, Runner]]
    checked: dict[str, FreshRunner | FreshAsyncRunner] = field(default_factory=dict)
    shapes: dict[str, dict[str, RejectionShape]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # contender (or contender, mode) -> why
    thresholds: dict[str, str | None] = field(default_factory=dict)  # "name (mode)" -> problem
    opened_by: dict[str, str] = field(default_factory=dict)  # name -> how its rejections open it
    versions: dict[str, str] = field(default_factory=dict)
    configurations: dict[str, str] = field(default_factory=dict)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build(loop: asyncio.AbstractEventLoop) -> Setup:
    """Build every contender, check its configuration and answers, and make its runners."""
    sync_call, async_call = Caller(loop, is_async=False), Caller(loop, is_async=True)
    setup = Setup(
        scenarios={
            SUCCESS_SYNC: {BARE: sync_runner(make_identity())},
            SUCCESS_ASYNC: {BARE: async_runner(make_async_identity(), loop)},
            REJECT_SYNC: {RAISE_CATCH: rejection_runner(lambda: refuse, BareOpen, sync_call)},
            REJECT_ASYNC: {
                RAISE_CATCH: rejection_runner(lambda: async_refuse, BareOpen, async_call),
            },
        },
        shapes={REJECT_SYNC: {}, REJECT_ASYNC: {}},
    )
    setup.shapes[REJECT_SYNC][RAISE_CATCH] = rejection_shape(refuse, BareOpen, sync_call)
    setup.shapes[REJECT_ASYNC][RAISE_CATCH] = rejection_shape(async_refuse, BareOpen, async_call)
    for spec in SPECS:
        try:
            module = None if spec.module is None else importlib.import_module(spec.module)
        except ImportError as error:
            setup.skipped[spec.name] = f"cannot import {spec.module}: {error}"
            continue
        build_one, rejection = spec.build(module), spec.rejection(module)
        setup.versions.setdefault(spec.distribution, _version(spec.distribution))
        setup.configurations[spec.name] = spec.configuration
        modes = [
            (call, success, reject)
            for call, success, reject, wanted in (
                (sync_call, SUCCESS_SYNC, REJECT_SYNC, spec.sync),
                (async_call, SUCCESS_ASYNC, REJECT_ASYNC, spec.is_async),
            )
            if wanted
        ]
        for call, success, reject in modes:
            _add_or_skip(setup, spec, build_one, rejection, call, (success, reject))
    return setup


def _add_or_skip(
    setup: Setup,
    spec: Spec,
    build: Build,
    rejection: type[BaseException],
    call: Caller,
    scenarios: tuple[str, str],
) -> None:
    """`_add`, except that a peer that fails its checks is reported instead of stopping the run."""
    try:
        _add(setup, spec.name, build, rejection, call, scenarios)
    except Exception as error:
        if spec.module is None:
            raise
        mode = "async" if call.is_async else "sync"
        setup.skipped[f"{spec.name} ({mode})"] = f"{type(error).__name__}: {error}"


def _add(
    setup: Setup,
    name: str,
    build: Build,
    rejection: type[BaseException],
    call: Caller,
    scenarios: tuple[str, str],
) -> None:
    """Check one contender in one mode (sync or async) and add its two runners."""
    success, reject = scenarios
    built = build(make_async_identity() if call.is_async else make_identity())
    result = call(built.protected)
    if result != 1:
        raise RuntimeError(f"returned {result!r} instead of 1")
    mode = "async" if call.is_async else "sync"
    setup.thresholds[f"{name} ({mode})"] = check_threshold(build, rejection, call)
    setup.opened_by[name] = (
        "opened by hand" if built.open_by_hand is not None else f"tripped by {FAIL_MAX} failures"
    )
    shape = rejection_shape(opened(build, call), rejection, call)
    runner = rejection_runner(lambda: opened(build, call), rejection, call)
    setup.scenarios[success][name] = (
        async_runner(built.protected, call.loop) if call.is_async else sync_runner(built.protected)
    )
    setup.scenarios[reject][name] = runner
    setup.shapes[reject][name] = shape
    setup.checked[f"{reject}: {name}"] = runner


def check_window() -> str:
    """Say whether buttress's window records successes (so the window really is measured)."""
    breaker = CircuitBreaker(
        "bench-check",
        fail_max=FAIL_MAX,
        failure_rate=FAILURE_RATE,
        window_size=WINDOW_SIZE,
        window_type="count",
        registry=None,
    )
    protected = breaker(make_identity())
    for _ in range(3):
        protected(1)
    calls = breaker.metrics().calls
    return f"buttress window: {calls} of 3 successful calls recorded in the window"


# --- analysis -------------------------------------------------------------------------------------


def _baseline(scenario: str) -> str:
    return BARE if scenario in SUCCESS else RAISE_CATCH


def _cost(results: Results, scenario: str, name: str) -> float:
    """What the ratios compare: overhead over bare on the success path, the whole rejection."""
    if scenario in SUCCESS:
        return results[scenario][name].median - results[scenario][BARE].median
    return results[scenario][name].median


def _ratio(results: Results, scenario: str, peer: str, ours: str = BUTTRESS) -> float | None:
    """peer / buttress; None when either is missing or buttress's cost is within noise (<= 0)."""
    measured = results[scenario]
    if peer not in measured or ours not in measured or _baseline(scenario) not in measured:
        return None
    mine = _cost(results, scenario, ours)
    return _cost(results, scenario, peer) / mine if mine > 0 else None


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}x"


def _target(
    results: Results, scenario: str, peer: str, factor: int, *, required: bool = True
) -> Target:
    """Buttress's cost (see `_cost`) times ``factor`` must not exceed the peer's cost."""
    what = "overhead" if scenario in SUCCESS else "time per rejection"
    bound = f"1/{factor} of {peer}'s" if factor > 1 else f"{peer}'s"
    label = f"{scenario}: {BUTTRESS} {what} <= {bound}"
    measured = results[scenario]
    if any(name not in measured for name in (BUTTRESS, peer, _baseline(scenario))):
        missing = [n for n in (BUTTRESS, peer, _baseline(scenario)) if n not in measured]
        return Target(label, None, [f"not measured: {', '.join(missing)}"], required)
    ours, theirs = _cost(results, scenario, BUTTRESS), _cost(results, scenario, peer)
    return Target(
        label,
        ours * factor <= theirs,
        [
            f"{BUTTRESS} {ours:,.0f} ns, {peer} {theirs:,.0f} ns:"
            f" ratio {_fmt_ratio(_ratio(results, scenario, peer))} (needed: >= {factor}x)"
        ],
        required,
    )


def targets(results: Results) -> list[Target]:
    """The issue's targets, then lines reported alongside them."""
    return [
        _target(results, SUCCESS_SYNC, PYBREAKER, 4),
        _target(results, SUCCESS_SYNC, CIRCUITBREAKER, 1),
        _target(results, SUCCESS_ASYNC, AIOBREAKER, 4),
        _target(results, REJECT_SYNC, PYBREAKER, 2),
        _target(results, SUCCESS_ASYNC, CIRCUITBREAKER, 1, required=False),
        _target(results, REJECT_ASYNC, AIOBREAKER, 2, required=False),
    ]


# --- output ---------------------------------------------------------------------------------------


def _success_table(results: Results, scenario: str) -> str:
    rows = []
    for name, m in results[scenario].items():
        overhead = "-" if name == BARE else f"{_cost(results, scenario, name):,.0f}"
        rows.append([name, f"{m.median:,.0f}", overhead, f"{m.spread:.0%}", f"{m.iterations:,}"])
    return format_table(["contender", "ns/call", "overhead ns", "spread", "iterations"], rows)


def _reject_table(results: Results, scenario: str, shapes: dict[str, RejectionShape]) -> str:
    measured = results[scenario]
    floor = measured[RAISE_CATCH].median if RAISE_CATCH in measured else None
    rows = []
    for name, m in measured.items():
        over = "-" if name == RAISE_CATCH or floor is None else f"{m.median - floor:,.0f}"
        shape = shapes.get(name)
        rows.append(
            [
                name,
                f"{m.median:,.0f}",
                over,
                "-" if shape is None else ("yes" if shape.fresh else "NO, one object"),
                "-" if shape is None else f"{shape.traceback_entries:,}",
                f"{m.spread:.0%}",
                f"{m.iterations:,}",
            ]
        )
    headers = [
        "contender",
        "ns/rejection",
        "over raise+catch ns",
        "fresh exception",
        f"traceback entries after {TRACEBACK_PROBE:,}",
        "spread",
        "iterations",
    ]
    return format_table(headers, rows)


def _ratio_table(results: Results) -> str:
    scenarios = (*SUCCESS, *REJECT)
    peers = (BUTTRESS_FAIL_MAX, PYBREAKER, CIRCUITBREAKER, AIOBREAKER, PURGATORY)
    rows = [
        [peer, *(_fmt_ratio(_ratio(results, s, peer)) for s in scenarios)]
        for peer in peers
        if any(peer in results[s] for s in scenarios)
    ]
    headers = ["contender", "overhead sync", "overhead async", "reject sync", "reject async"]
    return format_table(headers, rows)


def _problems(setup: Setup) -> list[str]:
    return [
        f"WARNING: {where}: {count} timed run(s) not used: {problem}"
        for where, runner in setup.checked.items()
        for problem, count in runner.problems.items()
    ]


def report(setup: Setup, results: Results, rounds: int, target_s: float, window: str) -> str:
    """The full printed report."""
    versions = ", ".join(f"{name} {version}" for name, version in setup.versions.items())
    lines = [
        f"Circuit breaker benchmark: Python {platform.python_version()}"
        f" ({platform.python_implementation()}) on {platform.machine()}, {platform.system()}",
        f"Libraries: {versions}",
        f"Median of {rounds} interleaved rounds, about {target_s:g} s per measurement;"
        " spread = (max - min) / median over the rounds.",
        f"Every breaker is configured to open on the {FAIL_MAX}th failure in a row and stay open"
        f" {RESET_TIMEOUT} s (checked below); {window}.",
        "",
    ]
    for name, why in setup.skipped.items():
        lines.append(f"NOT MEASURED: {name} ({why})")
    problems = _problems(setup)
    lines += problems
    if setup.skipped or problems:
        lines.append("")
    lines += [
        f"Threshold check ({FAIL_MAX - 1} failures in a row, then a success: admitted;"
        f" {FAIL_MAX} failures in a row: the next 3 calls rejected):",
        *(
            f"  {'ok  ' if problem is None else 'FAIL'} {where}"
            + ("" if problem is None else f": {problem}")
            for where, problem in setup.thresholds.items()
        ),
        "Rejections are timed on breakers "
        + ", ".join(f"{name} {how}" for name, how in setup.opened_by.items())
        + ".",
        "",
    ]
    for scenario in SUCCESS:
        lines += [
            f"{scenario} (ns per call; overhead = contender - bare)",
            _success_table(results, scenario),
            "",
        ]
    for scenario in REJECT:
        lines += [
            f"{scenario} (ns per rejection, caught by the timed loop; a fresh open breaker"
            " per timed run)",
            _reject_table(results, scenario, setup.shapes[scenario]),
            "",
        ]
    lines += [
        f"Ratios, contender / {BUTTRESS} (success path: overhead; rejection: time per rejection;"
        " > 1 means buttress is cheaper)",
        _ratio_table(results),
        "",
        "Configurations:",
        *(f"  {name}: {what}" for name, what in setup.configurations.items() if what),
        "",
        "Targets",
        *format_targets(targets(results)),
    ]
    return "\n".join(lines)


def _extra(setup: Setup, results: Results, scenario: str, name: str) -> dict[str, Any]:
    """What ``--json`` adds to a measurement: its overhead, and the shape of its exception."""
    found: dict[str, Any] = {}
    if scenario in SUCCESS and name != BARE and BARE in results[scenario]:
        found["overhead_ns"] = _cost(results, scenario, name)
    shape = setup.shapes.get(scenario, {}).get(name)
    if shape is not None:
        found["fresh_exception"] = shape.fresh
        found[f"traceback_entries_after_{TRACEBACK_PROBE}"] = shape.traceback_entries
    return found


def to_json(
    setup: Setup, results: Results, rounds: int, target_s: float, window: str
) -> dict[str, Any]:
    """Everything measured, for ``--json``."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": setup.versions,
        "configurations": setup.configurations,
        "window_check": window,
        "threshold_problems": setup.thresholds,
        "opened_by": setup.opened_by,
        "rounds": rounds,
        "seconds_per_measurement": target_s,
        "skipped": setup.skipped,
        "scenarios": measurements_json(
            results, lambda scenario, name: _extra(setup, results, scenario, name)
        ),
        "ratios_over_buttress": {
            scenario: {
                name: _ratio(results, scenario, name)
                for name in measured
                if name not in (BARE, RAISE_CATCH, BUTTRESS)
            }
            for scenario, measured in results.items()
        },
        "problems": {
            where: dict(runner.problems)
            for where, runner in setup.checked.items()
            if runner.problems
        },
        "targets": [t.as_json() for t in targets(results)],
    }


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks breaker``."""
    add_standard_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    began = time.perf_counter()

    def full_report(setup: tuple[Setup, str], results: Results, rounds: int, target: float) -> str:
        took = f"The whole run took {time.perf_counter() - began:.0f} s."
        return report(setup[0], results, rounds, target, setup[1]) + "\n" + took

    return run_micro(
        args,
        lambda loop: (build(loop), check_window()),
        lambda setup: setup[0].scenarios,
        full_report,
        lambda setup, results, rounds, target: to_json(setup[0], results, rounds, target, setup[1]),
    )
