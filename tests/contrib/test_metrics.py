"""The metrics of both exporters after scripted scenarios, one class per policy family.

Every test runs twice: against a real ``prometheus_client.CollectorRegistry`` (read with
``get_sample_value``) and against OpenTelemetry's ``InMemoryMetricReader``. The listener is
installed globally for the test only (the subscription is removed at teardown).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any, cast

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

import buttress
from buttress import CircuitBreaker, CircuitOpen, Retry, RetryBudget, StorageError
from buttress._events import global_listeners
from buttress.adaptive import AIMD, AdaptiveConcurrency
from buttress.breaker import BreakerRegistry
from buttress.bulkhead import Bulkhead, KeyedBulkhead, ThreadPoolBulkhead
from buttress.chaos import ChaosPolicy
from buttress.contrib._metrics import METRICS, MetricsListener, span_event_name, spec
from buttress.contrib.otel import OpenTelemetryListener
from buttress.contrib.prometheus import PrometheusListener
from buttress.fallback import Fallback
from buttress.hedge import Hedge
from buttress.ratelimit import Limiter, RateLimitDecided
from buttress.retry import RetryScheduled, RetrySucceeded, WaitFixed
from buttress.storage import Storage
from buttress.storage.memory import MemoryStorage
from buttress.testing import FakeClock
from buttress.timeout import TimeLimit


class Harness:
    """An installed exporter, and a way to read one series of a metric."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.kind = kind
        self.listener: MetricsListener
        if kind == "prometheus":
            self.registry = CollectorRegistry()
            self.listener = PrometheusListener(self.registry, **options)
        else:
            self.reader = InMemoryMetricReader()
            self.provider = MeterProvider(metric_readers=[self.reader])
            self.listener = OpenTelemetryListener(self.provider, span_events=False, **options)

    def value(self, key: str, **labels: str) -> float | None:
        """The value of metric ``key`` for exactly ``labels``; ``None`` when there is no series."""
        metric = spec(key)
        assert set(labels) == set(metric.labels), f"{key} has labels {metric.labels}"
        if self.kind == "prometheus":
            name = metric.prometheus_name("buttress")
            if metric.kind == "counter":
                name += "_total"
            return self.registry.get_sample_value(name, labels)
        wanted = {f"buttress.{name}": value for name, value in labels.items()}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for found in scope.metrics:
                    if found.name != metric.otel_name("buttress"):
                        continue
                    for point in found.data.data_points:
                        if dict(point.attributes or {}) == wanted:
                            return float(point.value)  # type: ignore[union-attr]
        return None

    def series(self, key: str) -> dict[tuple[str, ...], float]:
        """Every series of ``key``: label values (in the spec's order) -> value."""
        metric = spec(key)
        result: dict[tuple[str, ...], float] = {}
        if self.kind == "prometheus":
            name = metric.prometheus_name("buttress")
            sample_name = f"{name}_total" if metric.kind == "counter" else name
            for family in self.registry.collect():
                for sample in family.samples:
                    if sample.name == sample_name:
                        result[tuple(sample.labels[n] for n in metric.labels)] = sample.value
            return result
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for found in scope.metrics:
                    if found.name == metric.otel_name("buttress"):
                        for point in found.data.data_points:
                            attributes = dict(point.attributes or {})
                            labels = tuple(str(attributes[f"buttress.{n}"]) for n in metric.labels)
                            result[labels] = float(point.value)  # type: ignore[union-attr]
        return result


@pytest.fixture(params=["prometheus", "otel"])
def exporter(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(request.param)
    before = global_listeners()
    with buttress.add_listener(harness.listener):
        yield harness
    assert global_listeners() == before


class Flaky:
    """A function failing with ``error`` on its first ``failures`` calls, then returning 1."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("down")
        return 1


class TestRetry:
    def test_calls_retries_waits_and_give_ups(self, exporter: Harness) -> None:
        clock = FakeClock()
        policy = Retry(attempts=3, wait=WaitFixed(1.5), on=ConnectionError, name="db", clock=clock)
        assert policy.call(Flaky(2)) == 1  # success after 2 retries
        assert policy.call(Flaky(0)) == 1  # success at once
        with pytest.raises(ConnectionError):
            policy.call(Flaky(5))  # gives up after 3 attempts
        with pytest.raises(ValueError, match="down"):
            policy.call(Flaky(1, ValueError))  # not retried

        v = exporter.value
        assert v("retry.calls", policy="db", outcome="success_after_retry") == 1
        assert v("retry.calls", policy="db", outcome="success") == 1
        assert v("retry.calls", policy="db", outcome="gave_up") == 1
        assert v("retry.calls", policy="db", outcome="not_retried") == 1
        assert v("retry.retries", policy="db") == 4
        assert v("retry.wait", policy="db") == pytest.approx(6.0)
        assert v("retry.gave_up", policy="db", reason="attempts") == 1
        assert clock.sleeps == [1.5] * 4

    def test_an_exhausted_budget_is_a_give_up_with_reason_budget(self, exporter: Harness) -> None:
        clock = FakeClock()
        budget = RetryBudget(0.0, 0.0, clock=clock)  # no retry is ever allowed
        policy = Retry(attempts=5, wait=0, budget=budget, name="budgeted", clock=clock)
        with pytest.raises(ConnectionError):
            policy.call(Flaky(1))
        assert exporter.value("retry.gave_up", policy="budgeted", reason="budget") == 1
        assert exporter.value("retry.calls", policy="budgeted", outcome="gave_up") == 1
        assert exporter.value("retry.retries", policy="budgeted") is None

    async def test_async_calls_are_counted_alike(self, exporter: Harness) -> None:
        clock = FakeClock()
        policy = Retry(attempts=2, wait=0.5, name="async", clock=clock)
        flaky = Flaky(1)

        async def call() -> int:
            return flaky()

        assert await policy.acall(call) == 1
        assert exporter.value("retry.calls", policy="async", outcome="success_after_retry") == 1
        assert exporter.value("retry.wait", policy="async") == pytest.approx(0.5)


def breaker_scenario(clock: FakeClock) -> CircuitBreaker:
    """Two successes, two failures (opens), a rejection, a trial success (closes)."""
    breaker = CircuitBreaker("pay", fail_max=2, reset_timeout=10, clock=clock, registry=None)
    breaker.call(lambda: 1)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(Flaky(1))
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: 1)
    clock.advance(10)
    breaker.call(lambda: 1)
    return breaker


class TestBreaker:
    def test_calls_transitions_and_state(self, exporter: Harness) -> None:
        clock = FakeClock()
        breaker_scenario(clock)
        v = exporter.value
        assert v("breaker.calls", policy="pay", outcome="success") == 2
        assert v("breaker.calls", policy="pay", outcome="failure") == 2
        assert v("breaker.calls", policy="pay", outcome="rejected") == 1
        assert exporter.series("breaker.transitions") == {
            ("pay", "closed", "open"): 1,
            ("pay", "open", "half_open"): 1,
            ("pay", "half_open", "closed"): 1,
        }
        assert exporter.series("breaker.state") == {
            ("pay", "closed"): 1,
            ("pay", "open"): 0,
            ("pay", "half_open"): 0,
            ("pay", "forced_open"): 0,
            ("pay", "disabled"): 0,
        }

    def test_the_state_follows_each_transition(self, exporter: Harness) -> None:
        breaker = CircuitBreaker("manual", clock=FakeClock(), registry=None)
        breaker.force_open()
        assert exporter.value("breaker.state", policy="manual", state="forced_open") == 1
        assert exporter.value("breaker.state", policy="manual", state="closed") == 0
        breaker.close()
        assert exporter.value("breaker.state", policy="manual", state="closed") == 1

    def test_a_watched_breaker_shows_its_state_before_any_event(self, exporter: Harness) -> None:
        quiet = CircuitBreaker("quiet", clock=FakeClock(), registry=None)
        assert exporter.series("breaker.state") == {}
        exporter.listener.watch(quiet)
        assert exporter.value("breaker.state", policy="quiet", state="closed") == 1
        exporter.listener.unwatch(quiet)
        assert exporter.series("breaker.state") == {}

    def test_a_watched_registry_shows_every_live_breaker(self, exporter: Harness) -> None:
        registry = BreakerRegistry()
        first = CircuitBreaker("a", clock=FakeClock(), registry=registry)
        second = CircuitBreaker("b", clock=FakeClock(), registry=registry)
        second.force_open()
        exporter.listener.watch(registry)
        assert exporter.value("breaker.state", policy="a", state="closed") == 1
        assert exporter.value("breaker.state", policy="b", state="forced_open") == 1
        del first


class FlakyStore:
    """A memory store that raises ``StorageError`` from ``decide`` while ``down``."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.down = False

    def decide(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise StorageError("store unreachable")
        return self.inner.decide(*args, **kwargs)


def _delegate(name: str) -> Any:
    def method(self: FlakyStore, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    return method


# Real methods, not __getattr__: since Python 3.12 a runtime protocol check sees only what the
# class itself defines.
for _name in (
    "aacquire_lease",
    "acount_leases",
    "acquire_lease",
    "adecide",
    "arelease_lease",
    "arenew_lease",
    "areset",
    "close",
    "count_leases",
    "release_lease",
    "renew_lease",
    "reset",
):
    setattr(FlakyStore, _name, _delegate(_name))


class TestRateLimit:
    def test_allowed_and_rejected(self, exporter: Harness) -> None:
        limiter = Limiter("2/minute", name="api", clock=FakeClock())
        for _ in range(3):
            limiter.hit("client-1")
        v = exporter.value
        assert v("ratelimit.decisions", policy="api", decision="allowed", source="store") == 2
        assert v("ratelimit.decisions", policy="api", decision="rejected", source="store") == 1

    def test_cached_degraded_and_recovered(self, exporter: Harness) -> None:
        store = FlakyStore()
        limiter = Limiter(
            "1/minute",
            storage=cast("Storage", store),  # mypy cannot see the methods set on the class
            name="shared",
            on_store_error="fail-open",
            rejection_cache=True,
            clock=FakeClock(),
        )
        limiter.hit("k")  # allowed by the store
        limiter.hit("k")  # rejected by the store, remembered
        limiter.hit("k")  # rejected by the cache
        store.down = True
        assert limiter.hit("other").allowed  # the store fails: fail-open answers
        v = exporter.value
        assert v("ratelimit.decisions", policy="shared", decision="allowed", source="store") == 1
        assert v("ratelimit.decisions", policy="shared", decision="rejected", source="store") == 1
        assert v("ratelimit.decisions", policy="shared", decision="rejected", source="cache") == 1
        assert (
            v("ratelimit.decisions", policy="shared", decision="allowed", source="fail-open") == 1
        )
        assert v("ratelimit.store_degraded", policy="shared") == 1
        store.down = False
        limiter.hit("third")
        assert v("ratelimit.store_degraded", policy="shared") == 0

    def test_the_key_is_never_a_label(self, exporter: Harness) -> None:
        limiter = Limiter("5/minute", name="keys", clock=FakeClock())
        for n in range(20):
            limiter.hit(f"user-{n}")
        series = exporter.series("ratelimit.decisions")
        assert series == {("keys", "allowed", "store"): 20}


class TestBulkhead:
    def test_rejections_and_the_watched_numbers(self, exporter: Harness) -> None:
        pool = Bulkhead(2, name="pool")
        exporter.listener.watch(pool)
        held = [pool.try_acquire(), pool.try_acquire()]
        assert pool.try_acquire() is None
        v = exporter.value
        assert v("bulkhead.rejected", policy="pool", reason="full") == 1
        assert v("bulkhead.in_use", policy="pool") == 2
        assert v("bulkhead.waiting", policy="pool") == 0
        assert v("bulkhead.limit", policy="pool") == 2
        for permit in held:
            assert permit is not None
            permit.release()
        assert v("bulkhead.in_use", policy="pool") == 0

    def test_a_thread_pool_and_a_keyed_bulkhead(self, exporter: Harness) -> None:
        threads = ThreadPoolBulkhead(3, name="threads")
        keyed = KeyedBulkhead(1, name="tenants")
        exporter.listener.watch(threads, keyed)
        held = [keyed.try_acquire("a"), keyed.try_acquire("b")]
        try:
            assert threads.call(lambda: 7) == 7
            v = exporter.value
            assert v("bulkhead.limit", policy="threads") == 3
            assert v("bulkhead.in_use", policy="threads") == 0
            assert v("bulkhead.in_use", policy="tenants") == 2  # keys summed, never a label
            assert v("bulkhead.limit", policy="tenants") == 2
        finally:
            for permit in held:
                assert permit is not None
                permit.release()
            threads.shutdown()

    def test_watching_something_else_is_refused(self, exporter: Harness) -> None:
        with pytest.raises(TypeError, match=r"policies must be one of .*got Retry"):
            exporter.listener.watch(Retry())


class TestAdaptive:
    def test_limit_inflight_and_rejections(self, exporter: Harness) -> None:
        clock = FakeClock()
        limiter = AdaptiveConcurrency(
            "ac", algorithm=AIMD(initial_limit=2, backoff_ratio=0.5), clock=clock
        )
        first, second = limiter.try_acquire(), limiter.try_acquire()
        assert limiter.try_acquire() is None
        v = exporter.value
        assert v("adaptive.rejected", policy="ac") == 1
        assert v("adaptive.limit", policy="ac") == 2  # learned from the rejection
        assert v("adaptive.inflight", policy="ac") is None  # only from a watched limiter
        assert first is not None
        assert second is not None
        first.dropped()
        assert v("adaptive.limit", policy="ac") == 1  # from AdaptiveLimitChanged
        exporter.listener.watch(limiter)
        assert v("adaptive.inflight", policy="ac") == 1
        second.success()


class TestTimeoutFallbackChaos:
    async def test_a_time_out(self, exporter: Harness) -> None:
        async def slow() -> None:
            await asyncio.sleep(10)

        with pytest.raises(buttress.Timeout):
            await TimeLimit(0.01, name="deadline").acall(slow)
        assert exporter.value("timeout.timeouts", policy="deadline", how="cancelled") == 1

    def test_a_fallback(self, exporter: Harness) -> None:
        fallback = Fallback(0, name="cached", on_result=lambda result: result is None)
        assert fallback.call(Flaky(1)) == 0
        assert fallback.call(lambda: None) == 0
        assert exporter.value("fallback.used", policy="cached", cause="error") == 1
        assert exporter.value("fallback.used", policy="cached", cause="result") == 1

    def test_an_injected_fault(self, exporter: Harness) -> None:
        chaos = ChaosPolicy(rate=1.0, error=ConnectionError, enabled=True, seed=1, name="monkey")
        with pytest.raises(ConnectionError):
            chaos.call(lambda: 1)
        assert exporter.value("chaos.injected", policy="monkey", fault="error") == 1


class TestHedge:
    async def test_the_watched_counters(self, exporter: Harness) -> None:
        hedge = Hedge(delay=0.001, budget=None, name="search")
        exporter.listener.watch(hedge)

        async def attempt(number: int) -> int:
            if number == 1:
                await asyncio.sleep(5)  # slow: the hedge answers first, this one is cancelled
            return number

        assert await hedge.run(attempt) == 2
        v = exporter.value
        assert v("hedge.calls", policy="search") == 1
        assert v("hedge.sent", policy="search") == 1
        assert v("hedge.won", policy="search") == 1
        assert v("hedge.refused", policy="search") == 0


class TestCardinality:
    def test_policies_beyond_the_maximum_share_one_label(self) -> None:
        harness = Harness("prometheus", max_policies=2)
        for name in ("a", "b", "c", "d"):
            harness.listener(RetrySucceeded(name, "f", 1, 0.0, 0.0))
        assert harness.series("retry.calls") == {
            ("a", "success"): 1,
            ("b", "success"): 1,
            ("_other", "success"): 2,
        }

    @pytest.mark.parametrize("bad", [0, -1])
    def test_max_policies_must_be_positive(self, bad: int) -> None:
        with pytest.raises(ValueError, match="max_policies must be >= 1"):
            Harness("prometheus", max_policies=bad)

    def test_max_policies_must_be_an_int(self) -> None:
        with pytest.raises(TypeError, match="max_policies must be an int"):
            Harness("prometheus", max_policies=1.5)


class TestMapping:
    def test_every_metric_has_a_policy_label_and_a_unit(self) -> None:
        keys = [metric.key for metric in METRICS]
        assert len(keys) == len(set(keys))
        for metric in METRICS:
            assert metric.labels[0] == "policy"
            assert metric.unit
            assert metric.description.endswith(".")

    def test_prometheus_names(self) -> None:
        assert spec("retry.calls").prometheus_name("buttress") == "buttress_retry_calls"
        assert spec("retry.wait").prometheus_name("buttress") == "buttress_retry_wait_seconds"
        assert spec("retry.wait").prometheus_name("") == "retry_wait_seconds"
        assert spec("breaker.state").otel_name("buttress") == "buttress.breaker.state"

    def test_span_events_only_for_what_is_worth_a_line(self) -> None:
        assert span_event_name(RetrySucceeded("r", "f", 1, 0.0, 0.0)) is None
        scheduled = RetryScheduled("r", "f", 1, 0.0, 0.0, 1.0, None)
        assert span_event_name(scheduled) == "buttress.retry.scheduled"
        limiter = Limiter("1/minute", clock=FakeClock())
        allowed = RateLimitDecided("l", "k", 1, limiter.hit("k"))
        rejected = RateLimitDecided("l", "k", 1, limiter.hit("k"))
        assert span_event_name(allowed) is None
        assert span_event_name(rejected) == "buttress.ratelimit.rejected"

    def test_an_unknown_event_is_ignored(self, exporter: Harness) -> None:
        exporter.listener(buttress.Event("nothing"))
        assert exporter.series("retry.calls") == {}

    def test_a_subclass_of_a_known_event_is_counted_as_its_base(self, exporter: Harness) -> None:
        class Mine(RetrySucceeded):
            pass

        exporter.listener(Mine("sub", "f", 2, 0.0, 0.0))
        assert exporter.value("retry.calls", policy="sub", outcome="success_after_retry") == 1


def test_buttress_imports_no_exporter_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        import buttress, buttress.retry, buttress.breaker, buttress.ratelimit, buttress.bulkhead
        import buttress.adaptive, buttress.timeout, buttress.fallback, buttress.pipeline
        import buttress.contrib._metrics
        loaded = [m for m in sys.modules if m.startswith(("prometheus_client", "opentelemetry"))]
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603 - a literal script
