"""The OpenTelemetry exporter: instruments, span events on the current span, and arguments.

The values after each policy family's scenarios are checked for both exporters in
``test_metrics.py``; this file holds what only OpenTelemetry has.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import buttress
from buttress import CircuitBreaker, CircuitOpen, Retry
from buttress.bulkhead import Bulkhead
from buttress.contrib._metrics import METRICS
from buttress.contrib.otel import OpenTelemetryListener
from buttress.ratelimit import Limiter
from buttress.retry import RetrySucceeded, WaitFixed
from buttress.testing import FakeClock


class Tracing:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def span(self) -> ReadableSpan:
        (span,) = self.exporter.get_finished_spans()
        return span

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(event.name, dict(event.attributes or {})) for event in self.span().events]


@pytest.fixture
def tracing() -> Tracing:
    return Tracing()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def listener(reader: InMemoryMetricReader) -> Iterator[OpenTelemetryListener]:
    telemetry = OpenTelemetryListener(MeterProvider(metric_readers=[reader]))
    with buttress.add_listener(telemetry):
        yield telemetry


def instruments(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: (metric, scope.scope)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


class TestInstruments:
    def test_names_units_and_the_meter(
        self, reader: InMemoryMetricReader, listener: OpenTelemetryListener
    ) -> None:
        listener(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        listener.watch(Bulkhead(2, name="pool"))
        found = instruments(reader)
        metric, scope = found["buttress.retry.calls"]
        assert metric.unit == "{call}"
        assert metric.data.is_monotonic
        assert scope.name == "buttress"
        assert scope.version == buttress.__version__
        metric, _ = found["buttress.bulkhead.limit"]
        assert not metric.data.is_monotonic  # an up-down counter: a current value
        assert {point.attributes["buttress.policy"] for point in metric.data.data_points} == {
            "pool"
        }

    def test_every_gauge_is_an_observable_up_down_counter(
        self, reader: InMemoryMetricReader, listener: OpenTelemetryListener
    ) -> None:
        breaker = CircuitBreaker("b", clock=FakeClock(), registry=None)
        listener.watch(breaker)
        metric, _ = instruments(reader)["buttress.breaker.state"]
        assert metric.unit == "1"
        assert not metric.data.is_monotonic
        points = {p.attributes["buttress.state"]: p.value for p in metric.data.data_points}
        assert points == {
            "closed": 1,
            "open": 0,
            "half_open": 0,
            "forced_open": 0,
            "disabled": 0,
        }

    def test_the_wait_is_in_seconds(
        self, reader: InMemoryMetricReader, listener: OpenTelemetryListener
    ) -> None:
        policy = Retry(attempts=2, wait=0.5, name="w", clock=FakeClock())
        flaky = iter([True, False])

        def call() -> int:
            if next(flaky):
                raise ConnectionError("down")
            return 1

        policy.call(call)
        metric, _ = instruments(reader)["buttress.retry.wait"]
        assert metric.unit == "s"
        (point,) = metric.data.data_points
        assert point.value == pytest.approx(0.5)

    def test_metrics_off(self, reader: InMemoryMetricReader) -> None:
        telemetry = OpenTelemetryListener(MeterProvider(metric_readers=[reader]), metrics=False)
        telemetry(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        data = reader.get_metrics_data()
        assert data is None or not any(
            scope.metrics for resource in data.resource_metrics for scope in resource.scope_metrics
        )

    def test_the_global_provider_by_default(self) -> None:
        telemetry = OpenTelemetryListener()  # the API's no-op provider here: nothing fails
        telemetry(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        telemetry.watch(Bulkhead(1))

    def test_every_spec_becomes_an_instrument(
        self, reader: InMemoryMetricReader, listener: OpenTelemetryListener
    ) -> None:
        for spec in METRICS:
            assert spec.otel_name("buttress").startswith("buttress.")
        listener(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        assert "buttress.retry.calls" in instruments(reader)


class TestSpanEvents:
    def test_retries_and_a_give_up(self, tracing: Tracing, listener: OpenTelemetryListener) -> None:
        policy = Retry(attempts=3, wait=WaitFixed(2), name="db", clock=FakeClock())

        def down() -> None:
            raise ConnectionError("refused")

        with tracing.tracer.start_as_current_span("request"), pytest.raises(ConnectionError):
            policy.call(down)
        events = tracing.events()
        assert [name for name, _ in events] == [
            "buttress.retry.scheduled",
            "buttress.retry.scheduled",
            "buttress.retry.gave_up",
        ]
        first = events[0][1]
        assert first["buttress.policy"] == "db"
        assert first["buttress.attempt"] == 1
        assert first["buttress.delay"] == 2.0
        assert first["error.type"] == "ConnectionError"
        assert first["buttress.error.message"] == "refused"
        assert "buttress.result" not in first  # None fields are left out
        assert events[2][1]["buttress.reason"] == "attempts"
        assert events[2][1]["buttress.attempt"] == 3

    def test_breaker_state_changes_and_rejections(
        self, tracing: Tracing, listener: OpenTelemetryListener
    ) -> None:
        clock = FakeClock()
        breaker = CircuitBreaker("pay", fail_max=1, reset_timeout=5, clock=clock, registry=None)

        def down() -> None:
            raise ConnectionError("refused")

        with tracing.tracer.start_as_current_span("request"):
            with pytest.raises(ConnectionError):
                breaker.call(down)
            with pytest.raises(CircuitOpen):
                breaker.call(lambda: 1)
            clock.advance(5)
            breaker.call(lambda: 1)  # the trial call closes it; a success makes no span event
        events = tracing.events()
        assert [name for name, _ in events] == [
            "buttress.breaker.state_changed",
            "buttress.breaker.rejected",
            "buttress.breaker.state_changed",
            "buttress.breaker.state_changed",
        ]
        assert [(e["buttress.old"], e["buttress.new"]) for _, e in events[2:]] == [
            ("open", "half_open"),
            ("half_open", "closed"),
        ]
        changed, rejected = events[0][1], events[1][1]
        assert changed["buttress.old"] == "closed"
        assert changed["buttress.new"] == "open"
        assert changed["buttress.open_for"] == 5.0
        assert rejected["buttress.outcome"] == "rejected"
        assert rejected["buttress.state"] == "open"
        assert rejected["error.type"] == "buttress._errors.CircuitOpen"

    def test_a_rate_limit_rejection_carries_the_decision(
        self, tracing: Tracing, listener: OpenTelemetryListener
    ) -> None:
        limiter = Limiter("1/minute", name="api", clock=FakeClock())
        with tracing.tracer.start_as_current_span("request"):
            limiter.hit("client-7")
            limiter.hit("client-7")
        ((name, attributes),) = tracing.events()
        assert name == "buttress.ratelimit.rejected"
        assert attributes["buttress.key"] == "client-7"  # in a trace, not a metric label
        assert attributes["buttress.decision.allowed"] is False
        assert 59 < attributes["buttress.decision.retry_after"] <= 60  # the store's own clock
        assert attributes["buttress.decision.rate"] == "1/minute"

    def test_a_bulkhead_rejection(self, tracing: Tracing, listener: OpenTelemetryListener) -> None:
        pool = Bulkhead(1, name="pool")
        with tracing.tracer.start_as_current_span("request"):
            permit = pool.try_acquire()
            assert pool.try_acquire() is None
        assert permit is not None
        permit.release()
        ((name, attributes),) = tracing.events()
        assert name == "buttress.bulkhead.rejected"
        assert attributes["buttress.reason"] == "full"
        assert attributes["buttress.in_use"] == 1

    def test_no_current_span_is_no_problem(self, listener: OpenTelemetryListener) -> None:
        breaker = CircuitBreaker("alone", fail_max=1, clock=FakeClock(), registry=None)
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)

    def test_span_events_off(self, tracing: Tracing, reader: InMemoryMetricReader) -> None:
        telemetry = OpenTelemetryListener(MeterProvider(metric_readers=[reader]), span_events=False)
        breaker = CircuitBreaker("quiet", fail_max=1, listeners=[telemetry], registry=None)
        with tracing.tracer.start_as_current_span("request"), pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
        assert tracing.events() == []
        assert "buttress.breaker.transitions" in instruments(reader)

    def test_another_namespace_prefixes_attributes(self, tracing: Tracing) -> None:
        telemetry = OpenTelemetryListener(MeterProvider(), namespace="acme.resilience")
        policy = Retry(attempts=2, wait=0, name="x", listeners=[telemetry], clock=FakeClock())
        flaky = iter([True, False])

        def call() -> int:
            if next(flaky):
                raise ConnectionError("down")
            return 1

        with tracing.tracer.start_as_current_span("request"):
            policy.call(call)
        ((name, attributes),) = tracing.events()
        assert name == "buttress.retry.scheduled"  # event names keep buttress's
        assert attributes["acme.resilience.policy"] == "x"
        assert attributes["error.type"] == "ConnectionError"


class TestArguments:
    def test_a_bad_meter_provider(self) -> None:
        with pytest.raises(
            TypeError, match="meter_provider must be an opentelemetry MeterProvider"
        ):
            OpenTelemetryListener("global")  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["metrics", "span_events"])
    def test_switches_must_be_bools(self, name: str) -> None:
        options: dict[str, Any] = {name: 1}
        with pytest.raises(TypeError, match=f"{name} must be a bool"):
            OpenTelemetryListener(MeterProvider(), **options)

    @pytest.mark.parametrize("namespace", ["1st", "a..b", "a-b", "."])
    def test_a_bad_namespace(self, namespace: str) -> None:
        with pytest.raises(ValueError, match="namespace must be"):
            OpenTelemetryListener(MeterProvider(), namespace=namespace)

    def test_no_namespace(self, reader: InMemoryMetricReader) -> None:
        telemetry = OpenTelemetryListener(MeterProvider(metric_readers=[reader]), namespace="")
        telemetry(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        metric, _ = instruments(reader)["retry.calls"]
        (point,) = metric.data.data_points
        assert dict(point.attributes) == {"policy": "r", "outcome": "success"}
