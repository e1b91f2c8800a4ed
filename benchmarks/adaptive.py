"""Adaptive concurrency simulation: fixed limits against AIMD, Vegas and Gradient2, load step.

Not a timing benchmark: a discrete-event simulation on a fake clock, deterministic for a seed.

The server has ``--capacity`` workers (default 20) taking 10 ms per request on average (a gamma
distribution, coefficient of variation 0.25), first come first served, with a queue of 100; a
request that finds the queue full is rejected at once, and a client gives up on a request after
100 ms (a timeout, while its worker still spends the time on it, as a real server would). Requests
arrive at random (Poisson) at 50% of what the server can complete, then 200% for one phase, then
50% again. Each contender stands between the clients and the server as an
:class:`~buttress.AdaptiveConcurrency`: a request refused a permit fails at once (it is shed).
Vegas is shown alone and behind :class:`~buttress.adaptive.Windowed` (one averaged sample per
10 requests), the limiter's default.

Reported per phase: goodput (requests completed in time per second), the share shed by the
limiter and the share dropped by the server (queue full or timeout), latency percentiles of the
requests that succeeded, and the mean limit.

Run ``python -m benchmarks adaptive --help`` for the options.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._harness import format_table
from buttress.adaptive import (
    AIMD,
    AdaptiveConcurrency,
    AdaptivePermit,
    Gradient2,
    LimitAlgorithm,
    Vegas,
    Windowed,
)
from buttress.testing import FakeClock

LATENCY = 0.010  # mean service time, seconds
SHAPE = 16.0  # gamma shape: coefficient of variation 1/sqrt(16) = 0.25
QUEUE = 100
TIMEOUT = 0.100
LOADS = (("50%", 0.5), ("200%", 2.0), ("50% again", 0.5))


class FixedLimit:
    """A limit that never moves: the usual bulkhead, for comparison."""

    def __init__(self, limit: int) -> None:
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        return self._limit


def contenders(capacity: int, seed: int) -> dict[str, Callable[[], LimitAlgorithm]]:
    """Each contender's algorithm, made fresh for every run."""
    return {
        f"fixed {capacity // 4} (too low)": lambda: FixedLimit(max(1, capacity // 4)),
        f"fixed {capacity * 10} (too high)": lambda: FixedLimit(capacity * 10),
        "AIMD (timeout 20 ms)": lambda: AIMD(initial_limit=10, timeout=2 * LATENCY),
        "Vegas": lambda: Vegas(initial_limit=10, rng=random.Random(seed)),
        "Vegas, windowed (10)": lambda: Windowed(
            Vegas(initial_limit=10, rng=random.Random(seed)), size=10
        ),
        "Gradient2": lambda: Gradient2(initial_limit=10),
    }


@dataclass
class Phase:
    """What one contender did in one phase."""

    offered: int = 0
    shed: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)


class Simulation:
    """One run: Poisson arrivals through a limiter to a FIFO server, on a fake clock."""

    def __init__(self, algorithm: LimitAlgorithm, capacity: int, seconds: float, seed: int) -> None:
        self.clock = FakeClock()
        self.limiter = AdaptiveConcurrency("sim", algorithm=algorithm, clock=self.clock)
        self.capacity = capacity
        self.seconds = seconds
        self.arrivals = random.Random(seed)
        self.service = random.Random(seed + 1)
        self.workers = [0.0] * capacity  # a heap of the times each worker is next free
        self.waiting: list[float] = []  # start times of the requests still queued
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.phases = [Phase() for _ in LOADS]

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (when, next(self.order), action))

    def phase_of(self, when: float) -> Phase:
        return self.phases[min(int(when // self.seconds), len(LOADS) - 1)]

    def run(self) -> list[Phase]:
        self.at(0.0, self.arrive)
        self.at(0.0, self.sample_limit)
        end = self.seconds * len(LOADS)
        clock = self.clock
        while self.events:
            when, _, action = heapq.heappop(self.events)
            if when >= end + TIMEOUT:
                break
            clock.advance(max(0.0, when - clock.now()))
            action()
        return self.phases

    def sample_limit(self) -> None:
        now = self.clock.now()
        if now < self.seconds * len(LOADS):
            self.phase_of(now).limits.append(self.limiter.limit)
            self.at(now + 0.01, self.sample_limit)

    def arrive(self) -> None:
        now = self.clock.now()
        end = self.seconds * len(LOADS)
        if now >= end:
            return
        load = LOADS[min(int(now // self.seconds), len(LOADS) - 1)][1]
        rate = load * self.capacity / LATENCY
        self.at(now + self.arrivals.expovariate(rate), self.arrive)
        phase = self.phase_of(now)
        phase.offered += 1
        permit = self.limiter.try_acquire()
        if permit is None:
            phase.shed += 1
            return
        delay, dropped = self.submit(now)
        self.at(now + delay, lambda: self.complete(permit, phase, dropped))

    def submit(self, now: float) -> tuple[float, bool]:
        waiting = self.waiting
        while waiting and waiting[0] <= now:
            heapq.heappop(waiting)
        if self.workers[0] > now and len(waiting) >= QUEUE:
            return 0.0001, True  # rejected at once: the queue is full
        start = max(now, heapq.heappop(self.workers))
        finish = start + self.service.gammavariate(SHAPE, LATENCY / SHAPE)
        heapq.heappush(self.workers, finish)
        if start > now:
            heapq.heappush(waiting, start)
        if finish - now > TIMEOUT:
            return TIMEOUT, True
        return finish - now, False

    def complete(self, permit: AdaptivePermit, phase: Phase, dropped: bool) -> None:
        if dropped:
            permit.dropped()
            phase.dropped += 1
        else:
            phase.latencies.append(self.clock.now() - permit.start)
            permit.success()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def simulate(capacity: int, seconds: float, seeds: list[int]) -> dict[str, list[Phase]]:
    """Run every contender once per seed; pool the phases over the seeds."""
    results: dict[str, list[Phase]] = {}
    for seed in seeds:
        for name, make in contenders(capacity, seed).items():
            phases = Simulation(make(), capacity, seconds, seed).run()
            pooled = results.setdefault(name, [Phase() for _ in LOADS])
            for total, phase in zip(pooled, phases, strict=True):
                total.offered += phase.offered
                total.shed += phase.shed
                total.dropped += phase.dropped
                total.latencies += phase.latencies
                total.limits += phase.limits
    return results


def rows(results: dict[str, list[Phase]], seconds: float, rounds: int) -> list[dict[str, Any]]:
    """One row per contender and phase, as numbers."""
    table = []
    for name, phases in results.items():
        for (label, _), phase in zip(LOADS, phases, strict=True):
            offered = max(phase.offered, 1)
            table.append(
                {
                    "contender": name,
                    "phase": label,
                    "goodput_rps": len(phase.latencies) / (seconds * rounds),
                    "shed": phase.shed / offered,
                    "dropped": phase.dropped / offered,
                    "p50_ms": _percentile(phase.latencies, 0.50) * 1000,
                    "p99_ms": _percentile(phase.latencies, 0.99) * 1000,
                    "mean_limit": statistics.fmean(phase.limits) if phase.limits else 0.0,
                }
            )
    return table


def report(table: list[dict[str, Any]], capacity: int, seconds: float, seeds: list[int]) -> str:
    """The printed report."""
    headers = ["contender", "phase", "goodput/s", "shed", "dropped", "p50 ms", "p99 ms", "limit"]
    body = [
        [
            row["contender"],
            row["phase"],
            f"{row['goodput_rps']:,.0f}",
            f"{row['shed']:.1%}",
            f"{row['dropped']:.1%}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['mean_limit']:.1f}",
        ]
        for row in table
    ]
    full = capacity / LATENCY
    return "\n".join(
        [
            f"Adaptive concurrency simulation: {capacity} workers x {LATENCY * 1000:g} ms"
            f" (at most {full:,.0f} requests/s), queue {QUEUE}, client timeout"
            f" {TIMEOUT * 1000:g} ms;",
            f"Poisson arrivals at 50% -> 200% -> 50% of capacity, {seconds:g} s per phase,"
            f" seed(s) {', '.join(map(str, seeds))}. Latency of successful requests only.",
            "",
            format_table(headers, body),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks adaptive``."""
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs with seeds seed, seed+1, ... pooled (default 1)"
    )
    parser.add_argument("--quick", action="store_true", help="3 s phases instead of 10 s")
    parser.add_argument("--seed", type=int, default=1, help="the first random seed (default 1)")
    parser.add_argument(
        "--capacity", type=int, default=20, help="the server's workers (default 20)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def run(args: argparse.Namespace) -> int:
    """Simulate, print the table, optionally write JSON. Returns the exit code."""
    if args.rounds < 1 or args.capacity < 4:
        print("--rounds must be at least 1 and --capacity at least 4", file=sys.stderr)
        return 2
    seconds = 3.0 if args.quick else 10.0
    seeds = [args.seed + index for index in range(args.rounds)]
    table = rows(simulate(args.capacity, seconds, seeds), seconds, args.rounds)
    print(report(table, args.capacity, seconds, seeds))
    if args.json:
        data = {"capacity": args.capacity, "seconds": seconds, "seeds": seeds, "rows": table}
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"\nResults written to {args.json}")
    return 0
