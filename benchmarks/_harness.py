"""Timing helpers shared by the benchmarks.

A *runner* executes one contender ``n`` times in a tight loop and returns the elapsed time in
nanoseconds (``time.perf_counter_ns``). Every contender of a scenario, including the undecorated
baseline, is timed by the same loop, so differences between them are the cost of what differs and
the loop's own cost cancels out.

Measurements are interleaved: each round times every contender once, in an order that rotates from
round to round, and the median over rounds is reported. On a shared, noisy machine this keeps a
burst of noise from landing on one contender only.

Contenders whose cost depends on state left by earlier calls (rate limiters) use `FreshRunner`:
each timed run starts from fresh state and is checked after the clock stops.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import itertools
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

Runner = Callable[[int], int]
"""Runs a contender ``n`` times and returns the elapsed nanoseconds."""

Scenarios = dict[str, dict[str, Runner]]
"""scenario -> contender -> runner: what :func:`run_interleaved` times."""

SetupT = TypeVar("SetupT")


def sync_runner(func: Callable[[int], object]) -> Runner:
    """Time ``func(1)`` called ``n`` times in a loop."""

    def run(n: int) -> int:
        loop_items = itertools.repeat(None, n)
        clock = time.perf_counter_ns
        start = clock()
        for _ in loop_items:
            func(1)
        return clock() - start

    return run


def async_runner(
    func: Callable[[int], Awaitable[object]], loop: asyncio.AbstractEventLoop
) -> Runner:
    """Time ``await func(1)`` done ``n`` times inside one running event loop."""

    async def body(n: int) -> int:
        loop_items = itertools.repeat(None, n)
        clock = time.perf_counter_ns
        start = clock()
        for _ in loop_items:
            await func(1)
        return clock() - start

    def run(n: int) -> int:
        return loop.run_until_complete(body(n))

    return run


class SampleLost(Exception):
    """Raised by a runner whose timed run went wrong: `run_interleaved` drops that sample."""


def _nothing() -> None:
    return None


@dataclass
class Trial:
    """Fresh state for one timed run of a `FreshRunner`.

    Attributes:
        call: What is timed, called with no argument (bind arguments with ``functools.partial``).
        cleanup: Run after the clock stops (e.g. delete the key the run used).
        check: Given the run's last result, after the clock stops and before ``cleanup``: a
            description of what went wrong (e.g. "admitted, expected a rejection"), or ``None``.
    """

    call: Callable[[], object]
    cleanup: Callable[[], object] = _nothing
    check: Callable[[object], str | None] | None = None


@dataclass
class AsyncTrial:
    """The coroutine twin of `Trial`: ``call()`` returns an awaitable, awaited in the loop."""

    call: Callable[[], Awaitable[object]]
    cleanup: Callable[[], object] = _nothing
    check: Callable[[object], str | None] | None = None


class _Checked:
    """What both fresh runners share: a trial's check and cleanup, and the problems seen."""

    def __init__(self) -> None:
        self.problems: collections.Counter[str] = collections.Counter()

    def _after(
        self,
        trial: Trial | AsyncTrial,
        result: object,
        error: Exception | None,
    ) -> None:
        """Check the run and clean up; raise `SampleLost` if the run went wrong."""
        try:
            if error is not None:
                problem: str | None = f"raised {type(error).__name__}: {error}"
            else:
                problem = None if trial.check is None else trial.check(result)
        finally:
            trial.cleanup()
        if problem is not None:
            self.problems[problem] += 1
            raise SampleLost(problem) from error


class FreshRunner(_Checked):
    """Time ``trial.call()`` ``n`` times, on state made fresh for this run by ``fresh()``.

    For contenders whose cost depends on what earlier calls left behind (a rate limiter's key
    fills up): every timed run gets its own `Trial` from ``fresh()``, made before the clock
    starts, cleaned up after it stops. A run that raises, or whose check reports a problem,
    raises `SampleLost` (so its time is not used); ``problems`` counts what went wrong.
    """

    def __init__(self, fresh: Callable[[], Trial]) -> None:
        super().__init__()
        self.fresh = fresh

    def __call__(self, n: int) -> int:
        trial = self.fresh()
        call = trial.call
        loop_items = itertools.repeat(None, n)
        clock = time.perf_counter_ns
        result: object = None
        error: Exception | None = None
        start = clock()
        try:
            for _ in loop_items:
                result = call()
        except Exception as failure:
            error = failure
        elapsed = clock() - start
        self._after(trial, result, error)
        return elapsed


class FreshAsyncRunner(_Checked):
    """Time ``await trial.call()`` done ``n`` times inside one running event loop."""

    def __init__(self, fresh: Callable[[], AsyncTrial], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.fresh = fresh
        self.loop = loop

    @staticmethod
    async def _body(
        call: Callable[[], Awaitable[object]], n: int
    ) -> tuple[int, object, Exception | None]:
        loop_items = itertools.repeat(None, n)
        clock = time.perf_counter_ns
        result: object = None
        start = clock()
        try:
            for _ in loop_items:
                result = await call()
        except Exception as error:
            return clock() - start, result, error
        return clock() - start, result, None

    def __call__(self, n: int) -> int:
        trial = self.fresh()
        elapsed, result, error = self.loop.run_until_complete(self._body(trial.call, n))
        self._after(trial, result, error)
        return elapsed


def time_once(run: Runner, n: int) -> int:
    """Run ``n`` iterations with the garbage collector off; return elapsed nanoseconds."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return run(n)
    finally:
        if was_enabled:
            gc.enable()


def calibrate(run: Runner, target_ns: int) -> int:
    """Find how many iterations take about ``target_ns`` (timeit's autorange, then scaled)."""
    n = 1
    elapsed = time_once(run, n)
    while elapsed < target_ns // 10:
        n *= 10 if elapsed < target_ns // 100 else 2
        elapsed = time_once(run, n)
    return max(1, round(n * target_ns / max(elapsed, 1)))


@dataclass
class Measurement:
    """Per-call times (ns) of one contender in one scenario, one sample per round."""

    iterations: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median over the rounds: a rough noise indicator."""
        return (max(self.samples) - min(self.samples)) / self.median if self.median else 0.0


Results = dict[str, dict[str, Measurement]]
"""scenario -> contender -> measurement: what :func:`run_interleaved` returns."""


def run_interleaved(
    scenarios: Scenarios,
    rounds: int,
    target_ns: int,
    progress: Callable[[str], None] = lambda _: None,
) -> Results:
    """Calibrate every runner, then time them all once per round in rotating order.

    A run that raises `SampleLost` gives no sample; a runner that cannot be calibrated (three
    tries) is left out, as is one left with no sample at all.
    """
    results: dict[str, dict[str, Measurement]] = {}
    for scenario, runners in scenarios.items():
        progress(f"calibrating {scenario}")
        results[scenario] = {}
        for name, run in runners.items():
            for _ in range(3):
                try:
                    results[scenario][name] = Measurement(calibrate(run, target_ns))
                    break
                except SampleLost:
                    continue
    for index in range(rounds):
        progress(f"round {index + 1}/{rounds}")
        for scenario, runners in scenarios.items():
            names = [name for name in runners if name in results[scenario]]
            shift = index % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                measurement = results[scenario][name]
                try:
                    elapsed = time_once(runners[name], measurement.iterations)
                except SampleLost:
                    continue
                measurement.samples.append(elapsed / measurement.iterations)
    return {
        scenario: {name: m for name, m in measured.items() if m.samples}
        for scenario, measured in results.items()
    }


def count_sleeps(call: Callable[[], object]) -> int:
    """Run ``call()`` once and count the calls to ``time.sleep`` and ``asyncio.sleep`` it made.

    A profile hook sees the calls however the function was imported (``from time import sleep``
    included). Only used to check configurations, never while timing.
    """
    sleep_code = asyncio.sleep.__code__
    started: list[FrameType] = []
    count = 0

    def hook(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event == "c_call" and arg is time.sleep:
            count += 1
        # A coroutine's frame reports "call" again each time it resumes: count it once.
        elif (
            event == "call"
            and frame.f_code is sleep_code
            and not any(frame is seen for seen in started)
        ):
            started.append(frame)
            count += 1

    sys.setprofile(hook)
    try:
        call()
    finally:
        sys.setprofile(None)
    return count


def silence_log_output() -> None:
    """Keep every library's default logging calls, but let nothing reach the terminal.

    A ``NullHandler`` on the root logger means records a library emits are still created and
    dispatched as by default, but Python's last-resort handler no longer writes them to stderr.
    """
    logging.getLogger().addHandler(logging.NullHandler())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


@dataclass
class Target:
    """One of an issue's targets with its verdict (``None``: a contender was not measured).

    Attributes:
        label: The target in words.
        passed: The verdict, or ``None`` when it could not be judged.
        details: Lines with the figures behind the verdict.
        required: ``False`` for a line reported alongside the targets but not one of them.
    """

    label: str
    passed: bool | None
    details: list[str]
    required: bool = True

    def as_json(self) -> dict[str, Any]:
        """The target as the benchmarks' ``--json`` output writes it."""
        return {
            "target": self.label,
            "passed": self.passed,
            "details": self.details,
            "required": self.required,
        }


def format_targets(targets: Sequence[Target]) -> list[str]:
    """Render targets as ``PASS``/``FAIL``/``N/A`` lines, each followed by its details."""
    lines: list[str] = []
    for target in targets:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[target.passed]
        note = "" if target.required else " [reported, not a target]"
        lines.append(f"{verdict}  {target.label}{note}")
        lines += [f"      {detail}" for detail in target.details]
    return lines


def delete_run_keys(url: str, prefix: str) -> None:
    """Delete the Redis keys holding ``prefix`` (a run's own, unique prefix) at ``url``."""
    import redis  # noqa: PLC0415 - only the benchmarks on Redis need it

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def print_progress(text: str) -> None:
    """The benchmarks' progress lines, on stderr so that stdout holds only the report."""
    print(f"... {text}", file=sys.stderr, flush=True)


def make_identity() -> Callable[[int], int]:
    """A fresh trivial function, for the success-path measurements (one per contender)."""

    def f(x: int) -> int:
        return x

    return f


def make_async_identity() -> Callable[[int], Awaitable[int]]:
    """A fresh trivial coroutine function, for the async success-path measurements."""

    async def f(x: int) -> int:
        return x

    return f


def add_standard_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every micro-benchmark takes: ``--rounds``, ``--quick`` and ``--json``."""
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="about 0.01 s per measurement: a smoke run"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def measurement_seconds(args: argparse.Namespace) -> float | None:
    """Seconds per measurement for ``args`` (``--quick``: 0.01, else 0.2); ``None`` when
    ``--rounds`` is below 1 (the message is printed)."""
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return None
    return 0.01 if args.quick else 0.2


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` (``--json``), if given, and say so."""
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"\nResults written to {path}")


def measurements_json(
    results: Results, extra: Callable[[str, str], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Every measurement for ``--json``: median, samples, iterations and spread (ns), plus what
    ``extra(scenario, contender)`` adds."""
    return {
        scenario: {
            name: {
                "median_ns": m.median,
                "samples_ns": m.samples,
                "iterations": m.iterations,
                "spread": m.spread,
                **(extra(scenario, name) if extra is not None else {}),
            }
            for name, m in measured.items()
        }
        for scenario, measured in results.items()
    }


def run_micro(
    args: argparse.Namespace,
    build: Callable[[asyncio.AbstractEventLoop], SetupT],
    scenarios: Callable[[SetupT], Scenarios],
    report: Callable[[SetupT, Results, int, float], str],
    to_json: Callable[[SetupT, Results, int, float], dict[str, Any]],
    finish: Callable[[SetupT], None] | None = None,
) -> int:
    """The command of a micro-benchmark: build its setup on a new event loop, time its
    scenarios in interleaved rounds, print the report and write ``--json``. ``finish(setup)``
    runs before the loop closes (to close connections made on it). Returns the exit code (2
    for bad options)."""
    target_s = measurement_seconds(args)
    if target_s is None:
        return 2
    silence_log_output()
    loop = asyncio.new_event_loop()
    try:
        setup = build(loop)
        try:
            results = run_interleaved(
                scenarios(setup), args.rounds, round(target_s * 1e9), progress=print_progress
            )
        finally:
            if finish is not None:
                finish(setup)
    finally:
        loop.close()
    print(report(setup, results, args.rounds, target_s))
    write_json(args.json, to_json(setup, results, args.rounds, target_s))
    return 0
