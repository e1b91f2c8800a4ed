"""What the exporters share: the table of metrics, and how events and policies feed it.

:data:`METRICS` is the one list of every metric, read by both exporters and by the docs:
Prometheus and OpenTelemetry names are made from the same key (``retry.calls`` is
``buttress_retry_calls_total`` in Prometheus and ``buttress.retry.calls`` in OpenTelemetry, so
that OpenTelemetry's own Prometheus exporter gives the Prometheus names back).

:class:`MetricsListener` turns events into counter increments (``_count``, which an exporter
implements) and keeps the latest state the gauges report (breaker states, adaptive limits,
stores that are down); :meth:`MetricsListener.watch` adds policies whose numbers no event carries
(a bulkhead's slots in use, a hedge's counters), read each time the metrics are collected.

This module imports no exporter library; :mod:`buttress.contrib.prometheus` and
:mod:`buttress.contrib.otel` do.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from buttress._events import Event
from buttress.adaptive import (
    AdaptiveConcurrency,
    AdaptiveLimitChanged,
    AdaptiveRejected,
    AdaptiveStats,
)
from buttress.breaker import (
    BreakerCall,
    BreakerRegistry,
    BreakerStateChanged,
    BreakerStoreDegraded,
    BreakerStoreRecovered,
    CircuitBreaker,
    State,
)
from buttress.bulkhead import (
    Bulkhead,
    BulkheadCallAbandoned,
    BulkheadRejected,
    DistributedBulkhead,
    KeyedBulkhead,
    ThreadPoolBulkhead,
)
from buttress.chaos import ChaosInjected
from buttress.fallback import FallbackUsed
from buttress.hedge import Hedge
from buttress.ratelimit import RateLimitDecided, StoreDegraded, StoreRecovered
from buttress.retry import RetryFailed, RetryGaveUp, RetryScheduled, RetrySucceeded
from buttress.timeout import TimedOut

__all__ = [
    "BREAKER_STATES",
    "METRICS",
    "OTHER_POLICIES",
    "Labels",
    "MetricSpec",
    "MetricsListener",
    "Sample",
    "check_max_policies",
    "check_namespace",
    "span_event_name",
    "spec",
]

_log = logging.getLogger("buttress.events")

BREAKER_STATES: tuple[str, ...] = tuple(state.value for state in State)
"""Every breaker state, in the order of :class:`~buttress.breaker.State`."""

OTHER_POLICIES = "_other"
"""The ``policy`` label of the policies beyond ``max_policies`` (see :class:`MetricsListener`)."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric, described once for every exporter.

    Attributes:
        key: The dotted name under the namespace (``retry.calls``).
        kind: ``counter`` (only goes up) or ``gauge`` (a current value).
        unit: The UCUM unit of OpenTelemetry (``s``, ``1``, ``{call}``); ``s`` also adds
            ``_seconds`` to the Prometheus name.
        labels: The label (attribute) names, ``policy`` first.
        description: What it counts or shows.
        observed: ``True`` when the value is read from the policy at collection time (from
            :meth:`MetricsListener.watch`) rather than counted from events.
    """

    key: str
    kind: Literal["counter", "gauge"]
    unit: str
    labels: tuple[str, ...]
    description: str
    observed: bool = False

    def prometheus_name(self, namespace: str) -> str:
        """The Prometheus name, without the ``_total`` a counter's samples add."""
        base = self.key.replace(".", "_")
        if self.unit == "s":
            base += "_seconds"
        return f"{namespace}_{base}" if namespace else base

    def otel_name(self, namespace: str) -> str:
        """The OpenTelemetry instrument name."""
        return f"{namespace}.{self.key}" if namespace else self.key


_P = ("policy",)

METRICS: tuple[MetricSpec, ...] = (
    # retry
    MetricSpec(
        "retry.calls",
        "counter",
        "{call}",
        (*_P, "outcome"),
        "Calls through a retry policy, by how they ended: success (first attempt), "
        "success_after_retry, gave_up, not_retried (an exception the policy does not retry).",
    ),
    MetricSpec(
        "retry.retries", "counter", "{retry}", _P, "Retries scheduled (attempts after the first)."
    ),
    MetricSpec("retry.wait", "counter", "s", _P, "Seconds of backoff scheduled between attempts."),
    MetricSpec(
        "retry.gave_up",
        "counter",
        "{call}",
        (*_P, "reason"),
        "Calls a retry policy gave up on, by reason: attempts, timeout, budget (the retry "
        "budget is exhausted).",
    ),
    # circuit breaker
    MetricSpec(
        "breaker.state",
        "gauge",
        "1",
        (*_P, "state"),
        "1 for the breaker's current state, 0 for the others (one series per state).",
    ),
    MetricSpec(
        "breaker.transitions",
        "counter",
        "{transition}",
        (*_P, "from_state", "to_state"),
        "State changes of a circuit breaker.",
    ),
    MetricSpec(
        "breaker.calls",
        "counter",
        "{call}",
        (*_P, "outcome"),
        "Calls through a circuit breaker, by outcome: success, failure, ignored, rejected.",
    ),
    MetricSpec(
        "breaker.store_degraded",
        "gauge",
        "1",
        _P,
        "1 while a shared breaker's store is down (it runs on local state), else 0.",
    ),
    # rate limiting
    MetricSpec(
        "ratelimit.decisions",
        "counter",
        "{request}",
        (*_P, "decision", "source"),
        "Rate limiter decisions: allowed or rejected, by source: store, cache (the local "
        "rejection cache), or while the store is down fail-open, fail-closed, local.",
    ),
    MetricSpec(
        "ratelimit.store_degraded",
        "gauge",
        "1",
        _P,
        "1 while a limiter's store is down (on_store_error answers), else 0.",
    ),
    # bulkhead
    MetricSpec(
        "bulkhead.rejected",
        "counter",
        "{call}",
        (*_P, "reason"),
        "Calls a bulkhead refused, by reason: full, wait-timeout, deadline, too-many-keys.",
    ),
    MetricSpec(
        "bulkhead.abandoned",
        "counter",
        "{call}",
        (*_P, "state"),
        "Thread-pool calls whose caller stopped waiting: running (still holding a slot) or "
        "queued (dropped).",
    ),
    MetricSpec(
        "bulkhead.in_use",
        "gauge",
        "{call}",
        _P,
        "Slots held now (a thread pool: calls running).",
        observed=True,
    ),
    MetricSpec(
        "bulkhead.waiting",
        "gauge",
        "{call}",
        _P,
        "Callers waiting for a slot now (a thread pool: calls queued).",
        observed=True,
    ),
    MetricSpec(
        "bulkhead.limit",
        "gauge",
        "{call}",
        _P,
        "The most calls a bulkhead runs at once.",
        observed=True,
    ),
    # adaptive concurrency
    MetricSpec(
        "adaptive.limit",
        "gauge",
        "{call}",
        _P,
        "The current adaptive concurrency limit.",
    ),
    MetricSpec(
        "adaptive.inflight",
        "gauge",
        "{call}",
        _P,
        "Permits held now under an adaptive limit.",
        observed=True,
    ),
    MetricSpec("adaptive.rejected", "counter", "{call}", _P, "Calls an adaptive limit refused."),
    # time limits, fallbacks, fault injection
    MetricSpec(
        "timeout.timeouts",
        "counter",
        "{call}",
        (*_P, "how"),
        "Calls that ran out of time, by what became of them: cancelled, abandoned, not started.",
    ),
    MetricSpec(
        "fallback.used",
        "counter",
        "{call}",
        (*_P, "cause"),
        "Calls answered by a fallback, by cause: error (an exception) or result.",
    ),
    MetricSpec(
        "chaos.injected",
        "counter",
        "{fault}",
        (*_P, "fault"),
        "Faults injected, by kind: error, result, latency.",
    ),
    # hedging (read from the watched policy: its HedgeSent/HedgeWon/HedgeRefused events carry
    # no count of the calls, so all four come from the policy's counters)
    MetricSpec("hedge.calls", "counter", "{call}", _P, "Calls run through a hedge.", observed=True),
    MetricSpec(
        "hedge.sent", "counter", "{hedge}", _P, "Hedges sent (extra attempts).", observed=True
    ),
    MetricSpec(
        "hedge.won",
        "counter",
        "{hedge}",
        _P,
        "Hedges whose answer was the one returned.",
        observed=True,
    ),
    MetricSpec(
        "hedge.refused", "counter", "{hedge}", _P, "Hedges the retry budget refused.", observed=True
    ),
)

_BY_KEY = {spec.key: spec for spec in METRICS}

Labels = tuple[str, ...]
Sample = tuple[Labels, float]
"""One series of a gauge or observed counter: its label values and its value."""

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def check_namespace(value: object, *, dots: bool) -> str:
    """Validate an exporter's ``namespace`` (``""`` for none).

    Raises:
        TypeError, ValueError: Naming the argument.
    """
    if not isinstance(value, str):
        raise TypeError(f"namespace must be a str, got {type(value).__name__}")
    parts = value.split(".") if dots else [value]
    if value and not all(_NAME.fullmatch(part) for part in parts):
        what = "letters, digits, '_' and '.'" if dots else "letters, digits and '_'"
        raise ValueError(
            f"namespace must be {what}, not starting with a digit (or empty), got {value!r}"
        )
    return value


def check_max_policies(value: object) -> int:
    """Validate ``max_policies``: an ``int >= 1``.

    Raises:
        TypeError, ValueError: Naming the argument.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_policies must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_policies must be >= 1, got {value!r}")
    return value


# Span events: which events are worth a line in a trace (retries, rejections, state changes).
_SPAN_EVENTS: dict[type[Event], str] = {
    RetryScheduled: "buttress.retry.scheduled",
    RetryGaveUp: "buttress.retry.gave_up",
    BreakerStateChanged: "buttress.breaker.state_changed",
    BreakerStoreDegraded: "buttress.breaker.store_degraded",
    BreakerStoreRecovered: "buttress.breaker.store_recovered",
    StoreDegraded: "buttress.ratelimit.store_degraded",
    StoreRecovered: "buttress.ratelimit.store_recovered",
    BulkheadRejected: "buttress.bulkhead.rejected",
    BulkheadCallAbandoned: "buttress.bulkhead.abandoned",
    AdaptiveRejected: "buttress.adaptive.rejected",
    TimedOut: "buttress.timeout.timed_out",
    FallbackUsed: "buttress.fallback.used",
    ChaosInjected: "buttress.chaos.injected",
}


_DEPENDS = "?"  # the name depends on the event's fields, not only its class
_span_names: dict[type[Event], str | None] = {BreakerCall: _DEPENDS, RateLimitDecided: _DEPENDS}


def span_event_name(event: Event) -> str | None:
    """The name of the span event for ``event``, or ``None`` when it makes none.

    Successes and admissions make none (a trace would drown in them); rejections, retries,
    give-ups, state changes, time-outs, fallbacks and injected faults do.
    """
    cls = type(event)
    try:
        name = _span_names[cls]
    except KeyError:
        name = _span_name_of_class(cls)
    if name is not _DEPENDS:
        return name
    if isinstance(event, BreakerCall):
        return "buttress.breaker.rejected" if event.outcome == "rejected" else None
    if isinstance(event, RateLimitDecided):
        return None if event.decision.allowed else "buttress.ratelimit.rejected"
    return None  # pragma: no cover - only those two depend on their fields


def _span_name_of_class(cls: type[Event]) -> str | None:
    """Find (and remember) the span event name of an event class from its bases."""
    name: str | None = None
    for klass in cls.__mro__:
        if klass in _span_names:
            name = _span_names[klass]
            break
        if klass in _SPAN_EVENTS:
            name = _SPAN_EVENTS[klass]
            break
    _span_names[cls] = name  # a benign race: every thread computes the same value
    return name


Handler = Callable[[Any], None]  # each takes its own event class


class MetricsListener:
    """The base of the exporters' listeners: events to counters, and the gauges' state.

    Subclasses report :meth:`counter_samples` (or count in their library by overriding
    :meth:`_count`), :meth:`gauge_samples` and :meth:`observed_samples` when their library
    collects.

    Args:
        max_policies: The most distinct policy names given their own ``policy`` label; events
            of further policies are counted under ``policy="_other"``, so that policies made
            per key (one breaker per host) cannot grow the series without bound.
    """

    def __init__(self, *, max_policies: int = 1000) -> None:
        self.max_policies = check_max_policies(max_policies)
        self._lock = threading.Lock()
        self._policies: dict[str, str] = {}
        # Latest states from events: policy label -> value.
        self._breaker_states: dict[str, str] = {}
        self._breaker_store_down: dict[str, float] = {}
        self._limiter_store_down: dict[str, float] = {}
        self._limiter_modes: dict[str, str] = {}
        self._adaptive_limits: dict[str, float] = {}
        self._watched: list[object] = []
        self._totals: dict[tuple[str, Labels], float] = {}
        self._totals_lock = threading.Lock()
        handlers: dict[type[Event], Handler] = {
            RetrySucceeded: self._retry_succeeded,
            RetryScheduled: self._retry_scheduled,
            RetryGaveUp: self._retry_gave_up,
            RetryFailed: self._retry_failed,
            BreakerCall: self._breaker_call,
            BreakerStateChanged: self._breaker_state_changed,
            BreakerStoreDegraded: self._breaker_store_degraded,
            BreakerStoreRecovered: self._breaker_store_recovered,
            RateLimitDecided: self._rate_limit_decided,
            StoreDegraded: self._limiter_store_degraded,
            StoreRecovered: self._limiter_store_recovered,
            BulkheadRejected: self._bulkhead_rejected,
            BulkheadCallAbandoned: self._bulkhead_abandoned,
            AdaptiveLimitChanged: self._adaptive_limit_changed,
            AdaptiveRejected: self._adaptive_rejected,
            TimedOut: self._timed_out,
            FallbackUsed: self._fallback_used,
            ChaosInjected: self._chaos_injected,
        }
        self._handlers = handlers

    # -- counting --------------------------------------------------------------------------------

    def _count(self, key: str, labels: Labels, amount: float = 1.0) -> None:
        """Add ``amount`` to the counter ``key`` (a key of :data:`METRICS`) for ``labels``.

        This implementation keeps the totals here, read by :meth:`counter_samples`; an exporter
        may count in its library instead.
        """
        cell = (key, labels)
        with self._totals_lock:
            self._totals[cell] = self._totals.get(cell, 0.0) + amount

    def counter_samples(self, key: str) -> list[Sample]:
        """The totals :meth:`_count` kept for the counter ``key``, one per label set."""
        with self._totals_lock:
            items = list(self._totals.items())
        return [(labels, value) for (counter, labels), value in items if counter == key]

    # -- events ----------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Count ``event`` (a listener: install with :func:`buttress.add_listener`)."""
        handler = self._handlers.get(type(event))
        if handler is None:
            handler = self._resolve(type(event))
        handler(event)

    def _resolve(self, cls: type[Event]) -> Handler:
        """The handler of a subclass of a known event (or one that ignores unknown events)."""
        found: Handler = _ignore
        for klass in cls.__mro__[1:]:
            handler = self._handlers.get(klass)
            if handler is not None:
                found = handler
                break
        self._handlers = {**self._handlers, cls: found}  # replaced, never mutated: no lock read
        return found

    def _policy(self, name: str) -> str:
        """The ``policy`` label of ``name`` (``_other`` beyond ``max_policies``)."""
        label = self._policies.get(name)
        if label is not None:
            return label
        with self._lock:
            label = self._policies.get(name)
            if label is None:
                label = name if len(self._policies) < self.max_policies else OTHER_POLICIES
                if label != OTHER_POLICIES:
                    self._policies[name] = label
        return label

    def _retry_succeeded(self, event: RetrySucceeded) -> None:
        outcome = "success" if event.attempt <= 1 else "success_after_retry"
        self._count("retry.calls", (self._policy(event.policy), outcome))

    def _retry_scheduled(self, event: RetryScheduled) -> None:
        policy = (self._policy(event.policy),)
        self._count("retry.retries", policy)
        if event.delay > 0:
            self._count("retry.wait", policy, event.delay)

    def _retry_gave_up(self, event: RetryGaveUp) -> None:
        policy = self._policy(event.policy)
        self._count("retry.calls", (policy, "gave_up"))
        self._count("retry.gave_up", (policy, event.reason))

    def _retry_failed(self, event: RetryFailed) -> None:
        self._count("retry.calls", (self._policy(event.policy), "not_retried"))

    def _breaker_call(self, event: BreakerCall) -> None:
        policy = self._policy(event.policy)
        self._count("breaker.calls", (policy, event.outcome))
        if policy not in self._breaker_states:  # learn the state of a breaker not yet seen
            self._breaker_states.setdefault(policy, event.state.value)

    def _breaker_state_changed(self, event: BreakerStateChanged) -> None:
        policy = self._policy(event.policy)
        self._count("breaker.transitions", (policy, event.old.value, event.new.value))
        self._breaker_states[policy] = event.new.value

    def _breaker_store_degraded(self, event: BreakerStoreDegraded) -> None:
        self._breaker_store_down[self._policy(event.policy)] = 1.0

    def _breaker_store_recovered(self, event: BreakerStoreRecovered) -> None:
        self._breaker_store_down[self._policy(event.policy)] = 0.0

    def _rate_limit_decided(self, event: RateLimitDecided) -> None:
        policy = self._policy(event.policy)
        decision = event.decision
        if event.cached:
            source = "cache"
        elif decision.degraded:
            source = self._limiter_modes.get(policy, "degraded")
        else:
            source = "store"
        self._count(
            "ratelimit.decisions", (policy, "allowed" if decision.allowed else "rejected", source)
        )

    def _limiter_store_degraded(self, event: StoreDegraded) -> None:
        policy = self._policy(event.policy)
        self._limiter_modes[policy] = event.mode
        self._limiter_store_down[policy] = 1.0

    def _limiter_store_recovered(self, event: StoreRecovered) -> None:
        self._limiter_store_down[self._policy(event.policy)] = 0.0

    def _bulkhead_rejected(self, event: BulkheadRejected) -> None:
        self._count("bulkhead.rejected", (self._policy(event.policy), event.reason))

    def _bulkhead_abandoned(self, event: BulkheadCallAbandoned) -> None:
        state = "running" if event.running else "queued"
        self._count("bulkhead.abandoned", (self._policy(event.policy), state))

    def _adaptive_limit_changed(self, event: AdaptiveLimitChanged) -> None:
        self._adaptive_limits[self._policy(event.policy)] = float(event.new)

    def _adaptive_rejected(self, event: AdaptiveRejected) -> None:
        policy = self._policy(event.policy)
        self._count("adaptive.rejected", (policy,))
        self._adaptive_limits.setdefault(policy, float(event.limit))

    def _timed_out(self, event: TimedOut) -> None:
        self._count("timeout.timeouts", (self._policy(event.policy), event.how))

    def _fallback_used(self, event: FallbackUsed) -> None:
        cause = "error" if event.error is not None else "result"
        self._count("fallback.used", (self._policy(event.policy), cause))

    def _chaos_injected(self, event: ChaosInjected) -> None:
        self._count("chaos.injected", (self._policy(event.policy), event.fault))

    # -- watched policies ------------------------------------------------------------------------

    def watch(self, *policies: object) -> None:
        """Report numbers that no event carries, read from ``policies`` at each collection.

        Accepted: :class:`~buttress.bulkhead.Bulkhead`, :class:`~buttress.bulkhead.
        ThreadPoolBulkhead`, :class:`~buttress.bulkhead.KeyedBulkhead` (its keys summed, never a
        label), :class:`~buttress.bulkhead.DistributedBulkhead` (one store round trip per
        collection), :class:`~buttress.AdaptiveConcurrency`, :class:`~buttress.CircuitBreaker`
        (its state before any event), a :class:`~buttress.breaker.BreakerRegistry` (every live
        breaker in it) and :class:`~buttress.hedge.Hedge`. Watched policies are held until
        :meth:`unwatch`.

        Raises:
            TypeError: For anything else, naming it.
        """
        for policy in policies:
            if not isinstance(policy, _WATCHABLE):
                names = ", ".join(cls.__name__ for cls in _WATCHABLE)
                raise TypeError(f"policies must be one of {names}; got {type(policy).__name__}")
        with self._lock:
            self._watched = [
                *self._watched,
                *(p for p in policies if not any(p is w for w in self._watched)),
            ]

    def unwatch(self, *policies: object) -> None:
        """Stop reading ``policies`` (those not watched are ignored)."""
        with self._lock:
            self._watched = [w for w in self._watched if not any(w is p for p in policies)]

    def gauge_samples(self, key: str) -> list[Sample]:
        """The series of the gauge ``key`` now: from the last events, then watched policies.

        A watched policy's reading replaces what events said of the same policy.

        Raises:
            KeyError: If ``key`` is not a gauge of :data:`METRICS`.
        """
        if key in _BULKHEAD_GAUGES:
            return self._bulkhead_samples(self._bulkhead_numbers())[key]
        method: Callable[[MetricsListener], dict[Labels, float]] = _GAUGE_READERS[key]
        return list(method(self).items())

    def snapshot(self) -> dict[str, list[Sample]]:
        """Every gauge's series now (a bulkhead's statistics are read once for its three)."""
        result = {key: list(method(self).items()) for key, method in _GAUGE_READERS.items()}
        result.update(self._bulkhead_samples(self._bulkhead_numbers()))
        return result

    def _breaker_state_values(self) -> dict[Labels, float]:
        states = dict(self._breaker_states)
        for breaker in self._watched_breakers():
            states[self._policy(breaker.name)] = breaker.state.value
        return {
            (policy, state): 1.0 if state == current else 0.0
            for policy, current in states.items()
            for state in BREAKER_STATES
        }

    def _breaker_store_values(self) -> dict[Labels, float]:
        return {(policy,): value for policy, value in list(self._breaker_store_down.items())}

    def _limiter_store_values(self) -> dict[Labels, float]:
        return {(policy,): value for policy, value in list(self._limiter_store_down.items())}

    def _adaptive_limit_values(self) -> dict[Labels, float]:
        values: dict[Labels, float] = {
            (policy,): value for policy, value in list(self._adaptive_limits.items())
        }
        for policy, stats in self._adaptive_stats():
            values[(policy,)] = float(stats.limit)
        return values

    def _adaptive_inflight_values(self) -> dict[Labels, float]:
        return {(policy,): float(stats.inflight) for policy, stats in self._adaptive_stats()}

    @staticmethod
    def _bulkhead_samples(
        numbers: list[tuple[str, tuple[float, float, float]]],
    ) -> dict[str, list[Sample]]:
        result: dict[str, list[Sample]] = {}
        for index, key in enumerate(_BULKHEAD_GAUGES):
            values: dict[Labels, float] = {}
            for policy, row in numbers:  # two bulkheads of one name add up
                values[(policy,)] = values.get((policy,), 0.0) + row[index]
            result[key] = list(values.items())
        return result

    def observed_samples(self, key: str) -> list[Sample]:
        """The series of the observed counter ``key`` (the hedge counters) now."""
        attribute = {
            "hedge.calls": "calls",
            "hedge.sent": "hedges",
            "hedge.won": "hedges_won",
            "hedge.refused": "hedges_refused",
        }[key]
        values: dict[Labels, float] = {}
        for hedge in self._watched:
            if isinstance(hedge, Hedge):
                labels = (self._policy(hedge.name),)
                values[labels] = values.get(labels, 0.0) + float(getattr(hedge, attribute, 0))
        return list(values.items())

    def _watched_breakers(self) -> Iterable[CircuitBreaker]:
        for item in self._watched:
            if isinstance(item, CircuitBreaker):
                yield item
            elif isinstance(item, BreakerRegistry):
                for name in item.names():
                    breaker = item.get(name)
                    if breaker is not None:
                        yield breaker

    def _adaptive_stats(self) -> Iterable[tuple[str, AdaptiveStats]]:
        for item in self._watched:
            if isinstance(item, AdaptiveConcurrency):
                yield self._policy(item.name), item.stats()

    def _bulkhead_numbers(self) -> list[tuple[str, tuple[float, float, float]]]:
        """``(policy, (in use, waiting, limit))`` of every watched bulkhead that answers."""
        rows = []
        for item in self._watched:
            read = _read_bulkhead(item)
            if read is not None:
                rows.append((self._policy(read[0]), read[1]))
        return rows


def _read_bulkhead(item: object) -> tuple[str, tuple[float, float, float]] | None:
    """A bulkhead's name and ``(in use, waiting, limit)``; ``None`` if not one, or unreadable."""
    try:
        if isinstance(item, (Bulkhead, DistributedBulkhead)):
            s = item.stats()
            return item.name, (s.in_use, s.waiting, s.limit)
        if isinstance(item, ThreadPoolBulkhead):
            p = item.stats()
            return item.name, (p.active, p.queued, p.max_threads)
        if isinstance(item, KeyedBulkhead):
            every = list(item.stats().values())
            return item.name, (
                sum(s.in_use for s in every),
                sum(s.waiting for s in every),
                sum(s.limit for s in every),
            )
    except Exception:  # noqa: BLE001 - a store that is down must not break a collection
        _log.warning("cannot read the statistics of %r", item, exc_info=True)
    return None


_BULKHEAD_GAUGES = ("bulkhead.in_use", "bulkhead.waiting", "bulkhead.limit")

_GAUGE_READERS: dict[str, Callable[[MetricsListener], dict[Labels, float]]] = {
    "breaker.state": MetricsListener._breaker_state_values,  # noqa: SLF001 - its own class
    "breaker.store_degraded": MetricsListener._breaker_store_values,  # noqa: SLF001
    "ratelimit.store_degraded": MetricsListener._limiter_store_values,  # noqa: SLF001
    "adaptive.limit": MetricsListener._adaptive_limit_values,  # noqa: SLF001
    "adaptive.inflight": MetricsListener._adaptive_inflight_values,  # noqa: SLF001
}

_WATCHABLE = (
    Bulkhead,
    ThreadPoolBulkhead,
    KeyedBulkhead,
    DistributedBulkhead,
    AdaptiveConcurrency,
    CircuitBreaker,
    BreakerRegistry,
    Hedge,
)


def _ignore(event: Event) -> None:
    """The handler of events no metric counts."""


def spec(key: str) -> MetricSpec:
    """The :class:`MetricSpec` of ``key``."""
    return _BY_KEY[key]
