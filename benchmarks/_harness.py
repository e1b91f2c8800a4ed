"""Timing helpers shared by the benchmarks.

A *runner* executes one contender ``n`` times in a tight loop and returns the elapsed time in
nanoseconds (``time.perf_counter_ns``). Every contender of a scenario, including the undecorated
baseline, is timed by the same loop, so differences between them are the cost of what differs and
the loop's own cost cancels out.

Measurements are interleaved: each round times every contender once, in an order that rotates from
round to round, and the median over rounds is reported. On a shared, noisy machine this keeps a
burst of noise from landing on one contender only.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

Runner = Callable[[int], int]
"""Runs a contender ``n`` times and returns the elapsed nanoseconds."""


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


def run_interleaved(
    scenarios: dict[str, dict[str, Runner]],
    rounds: int,
    target_ns: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, Measurement]]:
    """Calibrate every runner, then time them all once per round in rotating order."""
    results: dict[str, dict[str, Measurement]] = {}
    for scenario, runners in scenarios.items():
        progress(f"calibrating {scenario}")
        results[scenario] = {
            name: Measurement(calibrate(run, target_ns)) for name, run in runners.items()
        }
    for index in range(rounds):
        progress(f"round {index + 1}/{rounds}")
        for scenario, runners in scenarios.items():
            names = list(runners)
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                measurement = results[scenario][name]
                elapsed = time_once(runners[name], measurement.iterations)
                measurement.samples.append(elapsed / measurement.iterations)
    return results


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
