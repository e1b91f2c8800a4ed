"""The Prometheus exporter: names, exposition, registration and its arguments.

The values after each policy family's scenarios are checked for both exporters in
``test_metrics.py``; this file holds what only Prometheus has.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

import buttress
from buttress import CircuitBreaker, StorageError
from buttress.bulkhead import Bulkhead
from buttress.contrib._metrics import METRICS
from buttress.contrib.prometheus import PrometheusListener
from buttress.retry import RetrySucceeded
from buttress.testing import FakeClock


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def listener(registry: CollectorRegistry) -> Iterator[PrometheusListener]:
    metrics = PrometheusListener(registry)
    with buttress.add_listener(metrics):
        yield metrics


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


class TestNames:
    def test_every_metric_is_exposed_with_its_type_and_help(
        self, registry: CollectorRegistry, listener: PrometheusListener
    ) -> None:
        text = exposition(registry)
        for spec in METRICS:
            name = spec.prometheus_name("buttress")
            if spec.kind == "counter":
                name += "_total"  # the text format names counter families by their samples
            assert f"# TYPE {name} {spec.kind}\n" in text, name
            assert f"# HELP {name} " in text, name

    def test_counters_end_in_total_and_durations_in_seconds(
        self, registry: CollectorRegistry, listener: PrometheusListener
    ) -> None:
        clock = FakeClock()
        policy = buttress.Retry(attempts=2, wait=0.25, name="db", clock=clock)
        flaky = iter([ConnectionError("down"), None])

        def call() -> int:
            error = next(flaky)
            if error is not None:
                raise error
            return 1

        policy.call(call)
        text = exposition(registry)
        assert 'buttress_retry_calls_total{outcome="success_after_retry",policy="db"} 1.0' in text
        assert 'buttress_retry_wait_seconds_total{policy="db"} 0.25' in text

    def test_a_namespace(self, registry: CollectorRegistry) -> None:
        metrics = PrometheusListener(registry, namespace="edge")
        metrics(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        assert (
            registry.get_sample_value(
                "edge_retry_calls_total", {"policy": "r", "outcome": "success"}
            )
            == 1
        )

    def test_no_namespace(self, registry: CollectorRegistry) -> None:
        metrics = PrometheusListener(registry, namespace="")
        metrics(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        assert (
            registry.get_sample_value("retry_calls_total", {"policy": "r", "outcome": "success"})
            == 1
        )


class TestRegistration:
    def test_the_default_registry(self) -> None:
        metrics = PrometheusListener()
        try:
            assert metrics.registry is REGISTRY
            metrics(RetrySucceeded("default-registry", "f", 1, 0.0, 0.0))
            labels = {"policy": "default-registry", "outcome": "success"}
            assert REGISTRY.get_sample_value("buttress_retry_calls_total", labels) == 1
        finally:
            metrics.unregister()
        assert REGISTRY.get_sample_value("buttress_retry_calls_total", labels) is None

    def test_a_second_listener_on_one_registry_is_refused_and_the_first_kept(
        self, registry: CollectorRegistry, listener: PrometheusListener
    ) -> None:
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            PrometheusListener(registry)
        listener(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        labels = {"policy": "r", "outcome": "success"}
        assert registry.get_sample_value("buttress_retry_calls_total", labels) == 1
        assert "buttress_breaker_state" in exposition(registry)

    def test_unregister_removes_everything_and_events_after_are_harmless(
        self, registry: CollectorRegistry
    ) -> None:
        metrics = PrometheusListener(registry)
        metrics.unregister()
        metrics.unregister()  # twice is fine
        metrics(RetrySucceeded("r", "f", 1, 0.0, 0.0))
        assert "buttress" not in exposition(registry)
        PrometheusListener(registry)  # the names are free again

    def test_per_policy_installation(self, registry: CollectorRegistry) -> None:
        metrics = PrometheusListener(registry)
        breaker = CircuitBreaker("own", listeners=[metrics], clock=FakeClock(), registry=None)
        breaker.call(lambda: 1)
        labels = {"policy": "own", "outcome": "success"}
        assert registry.get_sample_value("buttress_breaker_calls_total", labels) == 1


class TestArguments:
    def test_a_bad_registry(self) -> None:
        with pytest.raises(
            TypeError, match="registry must be a prometheus_client CollectorRegistry"
        ):
            PrometheusListener("default")  # type: ignore[arg-type]

    @pytest.mark.parametrize("namespace", ["buttress.x", "1st", "a-b", " "])
    def test_a_bad_namespace(self, registry: CollectorRegistry, namespace: str) -> None:
        with pytest.raises(ValueError, match="namespace must be"):
            PrometheusListener(registry, namespace=namespace)

    def test_a_namespace_that_is_not_a_str(self, registry: CollectorRegistry) -> None:
        with pytest.raises(TypeError, match="namespace must be a str"):
            PrometheusListener(registry, namespace=None)  # type: ignore[arg-type]


class TestCollection:
    def test_a_failing_read_skips_that_policy_and_logs(
        self,
        registry: CollectorRegistry,
        listener: PrometheusListener,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        good, bad = Bulkhead(1, name="good"), Bulkhead(1, name="bad")
        listener.watch(good, bad)
        real = Bulkhead.stats

        def stats(self: Bulkhead) -> object:
            if self.name == "bad":
                raise StorageError("store down")
            return real(self)

        monkeypatch.setattr(Bulkhead, "stats", stats)
        with caplog.at_level(logging.WARNING, "buttress.events"):
            assert registry.get_sample_value("buttress_bulkhead_limit", {"policy": "good"}) == 1
        assert registry.get_sample_value("buttress_bulkhead_limit", {"policy": "bad"}) is None
        assert "cannot read the statistics" in caplog.text

    def test_watching_twice_reports_once(
        self, registry: CollectorRegistry, listener: PrometheusListener
    ) -> None:
        pool = Bulkhead(3, name="twice")
        listener.watch(pool)
        listener.watch(pool)
        assert registry.get_sample_value("buttress_bulkhead_limit", {"policy": "twice"}) == 3

    def test_counts_from_many_threads_are_exact(
        self, registry: CollectorRegistry, listener: PrometheusListener
    ) -> None:
        def work(n: int) -> None:
            for _ in range(2000):
                listener(RetrySucceeded(f"p{n % 2}", "f", 1, 0.0, 0.0))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for policy in ("p0", "p1"):
            labels = {"policy": policy, "outcome": "success"}
            assert registry.get_sample_value("buttress_retry_calls_total", labels) == 8000
