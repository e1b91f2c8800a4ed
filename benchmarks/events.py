"""Events benchmark: what observing costs on the success path, with and without an exporter.

Scenarios (sync, each contender decorating its own fresh ``def f(x): return x``):

* retry success path: ``Retry(attempts=3, wait=0)``;
* breaker success path: ``CircuitBreaker(fail_max=5)``, closed.

Contenders, timed interleaved by the same loop:

* ``bare``: the function called directly;
* ``no listener``: the policy as shipped, nothing installed (the default: no event is built);
* ``no-op listener``: a global listener that does nothing (the cost of building and delivering
  the event itself);
* ``prometheus``: :class:`~buttress.contrib.prometheus.PrometheusListener` installed globally,
  on its own ``CollectorRegistry``;
* ``otel``: :class:`~buttress.contrib.otel.OpenTelemetryListener` installed globally, on an SDK
  ``MeterProvider`` with an in-memory reader (metrics and span events; no span is current).

A global listener is installed only while its contender is timed (the others never see it);
installing and removing it is outside the timed loop. Logging stays at its defaults (a
``NullHandler`` on the root logger keeps it off the terminal), so the logging listener is in the
chain for every contender, as in production.

Run ``python -m benchmarks events --help`` for the options.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import buttress
from benchmarks._harness import (
    Results,
    Runner,
    Target,
    add_standard_arguments,
    format_table,
    format_targets,
    make_identity,
    measurements_json,
    run_micro,
    sync_runner,
)
from buttress import CircuitBreaker, Retry
from buttress._events import Event, Listener

RETRY = "retry success path, sync"
BREAKER = "breaker success path, sync"
BARE = "bare"
NONE = "no listener"
NOOP = "no-op listener"
PROMETHEUS = "prometheus"
OTEL = "otel"


def _noop(event: Event) -> None:
    return None


def _exporters() -> tuple[dict[str, Listener], dict[str, str], dict[str, str]]:
    """The listeners to measure, their versions, and why any is missing."""
    listeners: dict[str, Listener] = {NOOP: _noop}
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    try:
        from prometheus_client import CollectorRegistry  # noqa: PLC0415 - an optional extra

        from buttress.contrib.prometheus import PrometheusListener  # noqa: PLC0415

        listeners[PROMETHEUS] = PrometheusListener(CollectorRegistry())
        versions["prometheus_client"] = importlib.metadata.version("prometheus_client")
    except ImportError as error:
        skipped[PROMETHEUS] = f"not installed ({error.name})"
    try:
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - an optional extra
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

        from buttress.contrib.otel import OpenTelemetryListener  # noqa: PLC0415

        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        listeners[OTEL] = OpenTelemetryListener(provider)
        versions["opentelemetry-sdk"] = importlib.metadata.version("opentelemetry-sdk")
    except ImportError as error:
        skipped[OTEL] = f"not installed ({error.name})"
    return listeners, versions, skipped


def _installed(listener: Listener, run: Runner) -> Runner:
    """``run`` with ``listener`` installed globally around it (outside its timed loop)."""

    def timed(n: int) -> int:
        with buttress.add_listener(listener):
            return run(n)

    return timed


def _check(name: str, func: Callable[[int], object]) -> None:
    if func(1) != 1:
        raise RuntimeError(f"{name} did not return 1")


@dataclass
class Setup:
    scenarios: dict[str, dict[str, Runner]]
    versions: dict[str, str]
    skipped: dict[str, str]


def build() -> Setup:
    """Decorate fresh functions for every contender and check each one answers."""
    listeners, versions, skipped = _exporters()
    policies: dict[str, Callable[[], Callable[[Any], Any]]] = {
        RETRY: lambda: Retry(attempts=3, wait=0, name="bench"),
        BREAKER: lambda: CircuitBreaker("bench", fail_max=5, registry=None),
    }
    scenarios: dict[str, dict[str, Runner]] = {}
    for scenario, make in policies.items():
        runners: dict[str, Runner] = {BARE: sync_runner(make_identity())}
        plain = make()(make_identity())
        _check(f"{scenario}: {NONE}", plain)
        runners[NONE] = sync_runner(plain)
        for name, listener in listeners.items():
            func = make()(make_identity())
            with buttress.add_listener(listener):
                _check(f"{scenario}: {name}", func)
            runners[name] = _installed(listener, sync_runner(func))
        scenarios[scenario] = runners
    return Setup(scenarios, versions, skipped)


def _overhead(results: Results, scenario: str, name: str) -> float:
    return results[scenario][name].median - results[scenario][BARE].median


def _table(results: Results, scenario: str) -> str:
    measured = results[scenario]
    rows = []
    for name, m in measured.items():
        overhead = "-" if name == BARE else f"{_overhead(results, scenario, name):,.0f}"
        extra = (
            f"{m.median - measured[NONE].median:,.0f}"
            if name not in (BARE, NONE) and NONE in measured
            else "-"
        )
        rows.append(
            [name, f"{m.median:,.0f}", overhead, extra, f"{m.spread:.0%}", f"{m.iterations:,}"]
        )
    headers = ["contender", "ns/call", "overhead ns", "vs no listener", "spread", "iterations"]
    return format_table(headers, rows)


def targets(results: Results) -> list[Target]:
    """What the issue asks: with nothing installed, events cost close to nothing.

    Judged as: the policy with no listener costs no more than with a no-op listener (events
    are not built when nobody listens), and an exporter adds at most a few microseconds.
    """
    found: list[Target] = []
    for scenario in (RETRY, BREAKER):
        measured = results.get(scenario, {})
        if NONE not in measured or NOOP not in measured:
            found.append(Target(f"{scenario}: no listener <= no-op listener", None, []))
            continue
        none, noop = measured[NONE].median, measured[NOOP].median
        found.append(
            Target(
                f"{scenario}: no listener installed builds no event (<= no-op listener)",
                none <= noop,
                [f"no listener {none:,.0f} ns, no-op listener {noop:,.0f} ns"],
            )
        )
        for name in (PROMETHEUS, OTEL):
            if name in measured:
                added = measured[name].median - none
                found.append(
                    Target(
                        f"{scenario}: {name} installed adds at most 5 us per call",
                        added <= 5000,
                        [f"{added:,.0f} ns per call"],
                        required=False,
                    )
                )
    return found


def report(setup: Setup, results: Results, rounds: int, target_s: float) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in setup.versions.items())
    lines = [
        f"Events benchmark: Python {platform.python_version()} ({platform.python_implementation()})"
        f" on {platform.machine()}, {platform.system()}",
        f"Exporters: {versions or 'none installed'}",
        f"Median of {rounds} interleaved rounds, about {target_s:g} s per measurement;"
        " spread = (max - min) / median over the rounds.",
        "overhead = contender - bare; vs no listener = contender - the policy with nothing"
        " installed (what the listener adds).",
        "",
    ]
    for name, why in setup.skipped.items():
        lines.append(f"NOT MEASURED: {name} ({why})")
    for scenario in (RETRY, BREAKER):
        if scenario in results:
            lines += [f"{scenario} (ns per call)", _table(results, scenario), ""]
    lines += ["Targets", *format_targets(targets(results))]
    return "\n".join(lines)


def to_json(setup: Setup, results: Results, rounds: int, target_s: float) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": setup.versions,
        "skipped": setup.skipped,
        "rounds": rounds,
        "seconds_per_measurement": target_s,
        "scenarios": measurements_json(
            results,
            lambda scenario, name: (
                {} if name == BARE else {"overhead_ns": _overhead(results, scenario, name)}
            ),
        ),
        "targets": [t.as_json() for t in targets(results)],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks events``."""
    add_standard_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    return run_micro(args, lambda _: build(), lambda setup: setup.scenarios, report, to_json)
