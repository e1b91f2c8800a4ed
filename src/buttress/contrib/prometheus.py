"""Prometheus metrics from buttress events (``pip install 'buttress[prometheus]'``).

::

    import buttress
    from buttress.contrib.prometheus import PrometheusListener

    metrics = PrometheusListener()           # registers on prometheus_client's default registry
    buttress.add_listener(metrics)           # every policy's events (or listeners=[metrics])
    metrics.watch(pool, adaptive, hedge)     # numbers no event carries: slots in use, hedges

Counters (``buttress_retry_calls_total``, ``buttress_breaker_calls_total``, ...) count events;
gauges (``buttress_breaker_state``, ``buttress_bulkhead_in_use``, ...) are computed when the
registry is collected, from the last events and from the watched policies. Every name and label
is listed in ``docs/metrics.md``; labels are bounded (the policy's name and a closed set of
outcomes, never a rate limit's key).

Nothing here is imported by buttress itself: with no listener installed, events are not even
built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "buttress.contrib.prometheus needs prometheus_client: pip install 'buttress[prometheus]'"
    ) from error

from buttress.contrib._metrics import METRICS, Labels, MetricsListener, MetricSpec, check_namespace

__all__ = ["PrometheusListener"]

_EVENT_COUNTERS = tuple(s for s in METRICS if s.kind == "counter" and not s.observed)
_OBSERVED_COUNTERS = tuple(s for s in METRICS if s.kind == "counter" and s.observed)
_GAUGES = tuple(s for s in METRICS if s.kind == "gauge")

_Samples: TypeAlias = Callable[[MetricSpec], list[tuple[Labels, float]]]


class PrometheusListener(MetricsListener):
    """A listener that keeps buttress's metrics in a ``prometheus_client`` registry.

    Install it for every policy with :func:`buttress.add_listener`, or on chosen policies with
    ``listeners=[...]`` (not both: events would be counted twice). Thread-safe. One instance per
    registry and namespace: a second one on the same registry is refused by ``prometheus_client``
    (duplicated time series); :meth:`unregister` removes one.

    Args:
        registry: The registry to register on (default: ``prometheus_client.REGISTRY``).
        namespace: The prefix of every name (``buttress``: ``buttress_retry_calls_total``);
            ``""`` for none.
        max_policies: The most policy names given their own ``policy`` label; further ones
            are counted as ``policy="_other"`` (policies made per key cannot grow the series
            without bound).

    Raises:
        TypeError, ValueError: For a bad argument, naming it.
        ValueError: From ``prometheus_client``, if the names are already registered.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "buttress",
        max_policies: int = 1000,
    ) -> None:
        super().__init__(max_policies=max_policies)
        if registry is None:
            registry = REGISTRY
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, "
                f"got {type(registry).__name__}"
            )
        self.registry = registry
        self.namespace = check_namespace(namespace, dots=False)
        self._counters: dict[str, Counter] = {}
        self._children: dict[tuple[str, Labels], Counter] = {}
        self._collector = _Collector(self)
        try:
            for spec in _EVENT_COUNTERS:
                self._counters[spec.key] = Counter(
                    spec.prometheus_name(self.namespace),
                    spec.description,
                    spec.labels,
                    registry=registry,
                )
            registry.register(self._collector)
        except BaseException:
            self.unregister()
            raise

    def __repr__(self) -> str:
        return f"PrometheusListener(namespace={self.namespace!r})"

    def _count(self, key: str, labels: Labels, amount: float = 1.0) -> None:
        child = self._children.get((key, labels))
        if child is None:
            child = self._children.setdefault((key, labels), self._counters[key].labels(*labels))
        child.inc(amount)

    def unregister(self) -> None:
        """Remove this listener's metrics from its registry (it counts nothing visible after)."""
        for collector in (*self._counters.values(), self._collector):
            with contextlib.suppress(KeyError):  # never registered (a failed __init__)
                self.registry.unregister(collector)


class _Collector(Collector):
    """The gauges and the observed counters, computed at each collection."""

    def __init__(self, owner: PrometheusListener) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        """The families without samples (so that registering does not collect)."""
        return list(self._families(lambda _spec: []))

    def collect(self) -> Iterable[Metric]:
        """The families with their samples now."""
        owner = self._owner
        gauges = owner.snapshot()

        def samples(spec: MetricSpec) -> list[tuple[Labels, float]]:
            if spec.kind == "gauge":
                return gauges[spec.key]
            return owner.observed_samples(spec.key)

        return list(self._families(samples))

    def _families(self, samples: _Samples) -> Iterator[Metric]:
        namespace = self._owner.namespace
        for spec in _GAUGES:
            gauge = GaugeMetricFamily(
                spec.prometheus_name(namespace), spec.description, labels=spec.labels
            )
            for labels, value in samples(spec):
                gauge.add_metric(labels, value)
            yield gauge
        for spec in _OBSERVED_COUNTERS:
            counter = CounterMetricFamily(
                spec.prometheus_name(namespace), spec.description, labels=spec.labels
            )
            for labels, value in samples(spec):
                counter.add_metric(labels, value)
            yield counter
