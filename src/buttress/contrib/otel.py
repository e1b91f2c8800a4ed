"""OpenTelemetry metrics and span events from buttress events (``pip install 'buttress[otel]'``).

::

    import buttress
    from buttress.contrib.otel import OpenTelemetryListener

    telemetry = OpenTelemetryListener()      # the global MeterProvider, or meter_provider=...
    buttress.add_listener(telemetry)         # every policy's events (or listeners=[telemetry])
    telemetry.watch(pool, adaptive, hedge)   # numbers no event carries: slots in use, hedges

Metrics: the same as :mod:`buttress.contrib.prometheus`, as OpenTelemetry instruments of the
meter ``buttress`` (``buttress.retry.calls``, ``buttress.breaker.state``, ...; attributes
``buttress.policy``, ``buttress.outcome``, ...). OpenTelemetry's semantic conventions define no
metrics for retries, breakers or limiters, so the names are namespaced under ``buttress.``; units
are UCUM (``s``, ``{call}``), and an OpenTelemetry-to-Prometheus export gives back the names of
the Prometheus exporter. Current values (a breaker's state, slots in use) are observable
up-down counters with one series per state, the shape of the conventions' ``hw.status`` and
``db.client.connection.count``.

Counts are totalled here and reported through *observable* counters at each collection: the
Python SDK's synchronous ``Counter.add`` costs about 4 us, a tally here about 0.2 us. The totals
are cumulative, as an SDK counter's would be; what is lost is exemplars (a trace id attached to a
measurement), which the span events make up for.

Span events: retries, give-ups, rejections (breaker, limiter, bulkhead, adaptive limit), state
changes, time-outs, fallbacks and injected faults are added to the *current* span (the request
they happened in), named ``buttress.retry.scheduled``, ``buttress.breaker.rejected``, ... with the
event's fields as ``buttress.*`` attributes and the exception's class as ``error.type``. No span is
created.

This needs only ``opentelemetry-api``; configure the SDK (providers, exporters) as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "buttress.contrib.otel needs opentelemetry-api: pip install 'buttress[otel]'"
    ) from error

from buttress._events import Event, event_fields
from buttress._version import __version__
from buttress.contrib._metrics import (
    METRICS,
    Labels,
    MetricsListener,
    MetricSpec,
    check_namespace,
    span_event_name,
)

__all__ = ["OpenTelemetryListener"]

_Attributes = dict[str, str]


class OpenTelemetryListener(MetricsListener):
    """A listener that records buttress's metrics on a Meter and its events on the current span.

    Install it for every policy with :func:`buttress.add_listener`, or on chosen policies with
    ``listeners=[...]`` (not both: events would be counted twice). Thread-safe. Make one per
    :class:`~opentelemetry.metrics.MeterProvider`: instruments cannot be removed from a provider,
    and a second listener on one would report every gauge twice.

    Args:
        meter_provider: Where the instruments are made (default: the global provider,
            ``opentelemetry.metrics.get_meter_provider()``).
        namespace: The prefix of every instrument name and attribute (``buttress``:
            ``buttress.retry.calls``, ``buttress.policy``); ``""`` for none.
        metrics: Record metrics.
        span_events: Add span events to the current span (when it is recording).
        max_policies: The most policy names given their own ``buttress.policy`` attribute;
            further ones are recorded as ``_other``.

    Raises:
        TypeError, ValueError: For a bad argument, naming it.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        namespace: str = "buttress",
        metrics: bool = True,
        span_events: bool = True,
        max_policies: int = 1000,
    ) -> None:
        super().__init__(max_policies=max_policies)
        if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
            raise TypeError(
                f"meter_provider must be an opentelemetry MeterProvider, "
                f"got {type(meter_provider).__name__}"
            )
        for name, value in (("metrics", metrics), ("span_events", span_events)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        self.namespace = check_namespace(namespace, dots=True)
        self.metrics = metrics
        self.span_events = span_events
        self._prefix = f"{namespace}." if namespace else ""
        self._attributes: dict[tuple[str, Labels], _Attributes] = {}
        if metrics:
            provider = meter_provider or otel_metrics.get_meter_provider()
            meter = provider.get_meter("buttress", __version__)
            for spec in METRICS:
                name = spec.otel_name(namespace)
                if spec.kind == "counter":
                    meter.create_observable_counter(
                        name, [self._observer(spec)], unit=spec.unit, description=spec.description
                    )
                else:
                    meter.create_observable_up_down_counter(
                        name, [self._observer(spec)], unit=spec.unit, description=spec.description
                    )

    def __repr__(self) -> str:
        return (
            f"OpenTelemetryListener(namespace={self.namespace!r}, metrics={self.metrics}, "
            f"span_events={self.span_events})"
        )

    def __call__(self, event: Event) -> None:
        """Record ``event``: its metrics, and a span event on the current span if it makes one."""
        if self.metrics:
            super().__call__(event)
        if self.span_events:
            name = span_event_name(event)
            if name is not None:
                span = trace.get_current_span()
                if span.is_recording():
                    span.add_event(name, self._span_attributes(event))

    def _span_attributes(self, event: Event) -> dict[str, str | bool | int | float]:
        fields = event_fields(event, self._prefix, ".")
        attributes: dict[str, str | bool | int | float] = {
            key: value
            for key, value in fields.items()
            if isinstance(value, (str, bool, int, float))  # always, by event_fields' contract
        }
        error_type = attributes.pop(f"{self._prefix}error.type", None)
        if error_type is not None:
            attributes["error.type"] = error_type  # the semantic conventions' attribute
        return attributes

    def _labels(self, spec: MetricSpec, labels: Labels) -> _Attributes:
        key = (spec.key, labels)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = {
                f"{self._prefix}{name}": value
                for name, value in zip(spec.labels, labels, strict=True)
            }
            self._attributes[key] = attributes
        return attributes

    def _observer(self, spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        if spec.kind == "gauge":
            read = self.gauge_samples
        elif spec.observed:
            read = self.observed_samples
        else:
            read = self.counter_samples

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, self._labels(spec, labels)) for labels, value in read(spec.key)
            ]

        return observe
