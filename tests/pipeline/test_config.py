"""Pipelines from dicts and TOML: building by name, and clear errors for bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from buttress import (
    BulkheadFull,
    CircuitBreaker,
    CircuitOpen,
    ConfigurationError,
    RateLimited,
    Rejected,
    Retry,
    Timeout,
)
from buttress.bulkhead import Bulkhead
from buttress.fallback import Fallback
from buttress.pipeline import (
    RECOMMENDED_ORDER,
    Pipeline,
    PipelineOrderWarning,
    Pipelines,
    RateLimitPolicy,
)
from buttress.retry import WaitExponential
from buttress.testing import FakeClock
from buttress.timeout import TimeLimit
from tests.pipeline._script import Script

PAYMENTS = """
[policies.payments]
timeout = {seconds = 10, mode = "cooperative"}
retry = {attempts = 3, wait = {initial = 0.5, max = 2, jitter = "none"}, budget = {ratio = 0.5}}
limiter = {limits = "2/second", key = "payments"}
bulkhead = {max_concurrent = 4, max_wait = 0.5}
breaker = {fail_max = 2, reset_timeout = 30, ignore = ["Rejected"]}
attempt_timeout = {seconds = 2, mode = "cooperative"}
fallback = {value = "unavailable", on = ["CircuitOpen", "Timeout"]}

[policies.search]
retry = {attempts = 2, wait = 0}
attempt_timeout = 1
"""


def load(text: str = PAYMENTS) -> Pipelines:
    return Pipelines.from_toml(text)


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as info:
        Pipelines.from_dict(data)
    return str(info.value)


class TestLoading:
    def test_builds_every_pipeline_in_the_recommended_order(self):
        pipelines = load()
        assert pipelines.names() == ["payments", "search"]
        assert "payments" in pipelines
        assert len(pipelines) == 2
        payments = pipelines.get("payments")
        kinds = [type(policy) for policy in payments.policies]
        assert kinds == [
            Fallback,
            TimeLimit,
            Retry,
            RateLimitPolicy,
            Bulkhead,
            CircuitBreaker,
            TimeLimit,
        ]
        assert RECOMMENDED_ORDER[0] == "fallback"
        total, attempt = payments.policies[1], payments.policies[6]
        assert isinstance(total, TimeLimit)
        assert isinstance(attempt, TimeLimit)
        assert (total.timeout, total.mode, attempt.timeout) == (10.0, "cooperative", 2.0)
        retry = payments.policies[2]
        assert isinstance(retry, Retry)
        assert retry.attempts == 3
        assert retry.wait == WaitExponential(initial=0.5, max=2, jitter="none")
        assert retry.budget is not None
        assert retry.budget.ratio == 0.5
        assert retry.name == "payments.retry"
        limiter = payments.policies[3]
        assert isinstance(limiter, RateLimitPolicy)
        assert limiter.key == "payments"
        assert payments.name == "payments"

    def test_short_forms(self):
        search = load().get("search")
        (retry, attempt) = search.policies
        assert isinstance(attempt, TimeLimit)
        assert attempt.timeout == 1.0
        assert isinstance(retry, Retry)
        assert retry.wait == 0

    def test_get_returns_the_same_pipeline_build_makes_a_new_one(self):
        pipelines = load()
        assert pipelines.get("payments") is pipelines.get("payments")
        fresh = pipelines.build("payments")
        assert isinstance(fresh, Pipeline)
        assert fresh is not pipelines.get("payments")
        assert fresh.policies[5] is not pipelines.get("payments").policies[5]

    def test_from_a_file_bytes_and_a_dict(self, tmp_path: Path):
        path = tmp_path / "pipelines.toml"
        path.write_text(PAYMENTS, encoding="utf-8")
        assert Pipelines.from_toml(path).names() == ["payments", "search"]
        assert Pipelines.from_toml(PAYMENTS.encode()).names() == ["payments", "search"]
        data = {"policies": {"reads": {"retry": {"attempts": 2}, "attempt_timeout": 0.5}}}
        reads = Pipelines.from_dict(data).get("reads")
        assert [type(p) for p in reads.policies] == [Retry, TimeLimit]

    def test_an_explicit_order(self):
        text = """
        [policies.odd]
        order = ["bulkhead", "retry"]
        retry = {attempts = 2, budget = true}
        bulkhead = {max_concurrent = 1}
        """
        odd = load(text).get("odd")
        assert [type(p) for p in odd.policies] == [Bulkhead, Retry]

    def test_the_order_is_checked_when_loading_and_allow_silences_it(self):
        text = """
        [policies.risky]
        retry = {attempts = 2}
        bulkhead = {max_concurrent = 1}
        """
        with pytest.warns(PipelineOrderWarning, match="retry-outside-limit"):
            load(text)
        load(text.replace("[policies.risky]", '[policies.risky]\nallow = ["retry-outside-limit"]'))

    def test_empty(self):
        assert Pipelines.from_dict({}).names() == []
        assert len(Pipelines.from_dict({"policies": {"nothing": {}}}).get("nothing")) == 0


class TestBehaviour:
    def test_a_configured_pipeline_works_step_by_step(self):
        clock = FakeClock()
        payments = load().build("payments", clock=clock)
        dependency = Script(ConnectionError("1"), ConnectionError("2"), "unused", clock=clock)

        # attempt 1 fails (breaker 1/2), wait 0.5; attempt 2 fails: the breaker opens;
        # attempt 3 is refused (CircuitOpen) and the fallback answers
        assert payments.call(dependency) == "unavailable"
        assert dependency.calls == 2
        assert clock.sleeps == [0.5, 1.0]
        breaker = payments.policies[5]
        assert isinstance(breaker, CircuitBreaker)
        assert str(breaker.state) == "open"

    def test_the_limiter_refuses_with_retry_after(self):
        clock = FakeClock()
        text = """
        [policies.api]
        limiter = {limits = "1/minute", key = "api"}
        """
        api = load(text).build("api", clock=clock)
        assert api.call(lambda: 1) == 1
        with pytest.raises(RateLimited) as info:
            api.call(lambda: 2)
        assert info.value.retry_after == pytest.approx(60.0)
        clock.advance(60)
        assert api.call(lambda: 3) == 3

    def test_overrides_add_code_only_settings(self):
        pipelines = load()
        clock = FakeClock()
        seen: list[BaseException] = []

        def cached(error: BaseException) -> str:
            seen.append(error)
            return "from cache"

        payments = pipelines.build(
            "payments",
            clock=clock,
            overrides={"fallback": {"handler": cached}, "breaker": {"fail_max": 1}},
        )
        breaker = payments.policies[5]
        assert isinstance(breaker, CircuitBreaker)
        breaker.open()
        assert payments.call(lambda: "fresh") == "from cache"
        assert isinstance(seen[0], CircuitOpen)
        assert clock.sleeps == [0.5, 1.0]  # the retry retried the refusals, on the fake clock

    def test_bulkhead_full_is_not_in_the_fallback(self):
        clock = FakeClock()
        payments = load().build("payments", clock=clock, overrides={"bulkhead": {"max_wait": 0}})
        bulkhead = payments.policies[4]
        assert isinstance(bulkhead, Bulkhead)
        permits = [bulkhead.try_acquire() for _ in range(4)]
        with pytest.raises(BulkheadFull):
            payments.call(lambda: "fresh")
        assert clock.sleeps == [0.5, 1.0]
        for permit in permits:
            assert permit is not None
            permit.release()


class TestErrors:
    def test_unknown_top_level_key(self):
        assert "unknown top-level keys ['pipelines']" in error_of({"pipelines": {}})

    def test_unknown_policy(self):
        message = error_of({"policies": {"payments": {"retri": {}}}})
        assert "pipeline 'payments'" in message
        assert "unknown key 'retri'" in message

    def test_unknown_key_names_pipeline_policy_and_key(self):
        message = error_of({"policies": {"payments": {"retry": {"attempt": 3}}}})
        assert message.startswith("pipeline 'payments', policy 'retry', key 'attempt'")
        assert "attempts" in message  # the accepted keys are listed

    @pytest.mark.parametrize(
        ("policy", "settings", "key", "says"),
        [
            ("retry", {"attempts": "3"}, "attempts", "must be an integer"),
            ("retry", {"attempts": True}, "attempts", "must be an integer"),
            ("retry", {"wait": "1s"}, "wait", "must be a number of seconds"),
            ("retry", {"wait": {"initial": 1, "grow": 2}}, "wait", "unknown key 'grow'"),
            ("retry", {"wait": {"initial": -1}}, "wait", "initial"),
            ("retry", {"budget": 0.2}, "budget", "must be true or a table"),
            ("retry", {"budget": {"ratio": "high"}}, "budget", "budget.ratio must be a number"),
            ("retry", {"on": ["NoSuchError"]}, "on", "'NoSuchError' is not an exception type"),
            ("retry", {"on": []}, "on", "non-empty list"),
            ("breaker", {"ignore": [3]}, "ignore", "exception names must be str"),
            ("bulkhead", {"max_concurrent": 2.5}, "max_concurrent", "must be an integer"),
            ("limiter", {"limits": 10}, "limits", "must be a string"),
            ("timeout", {"seconds": "10"}, "seconds", "must be a number of seconds"),
            ("timeout", {}, "seconds", "is required"),
            ("bulkhead", {"max_wait": 1}, "max_concurrent", "is required"),
            ("fallback", {"on": ["Timeout"]}, "value", "is required"),
        ],
    )
    def test_bad_values_name_the_key(self, policy, settings, key, says):
        message = error_of({"policies": {"p": {policy: settings}}})
        assert message.startswith(f"pipeline 'p', policy '{policy}', key '{key}'"), message
        assert says in message

    @pytest.mark.parametrize(
        ("policy", "settings", "says"),
        [
            ("retry", {"attempts": 0}, "attempts must be >= 1"),
            ("breaker", {"failure_rate": 2.0}, "failure_rate"),
            ("bulkhead", {"max_concurrent": 0}, "max_concurrent must be >= 1"),
            ("limiter", {"limits": "lots"}, "lots"),
            ("limiter", {"limits": "1/second", "algorithm": "magic"}, "algorithm"),
            ("timeout", {"seconds": 0}, "timeout must be > 0"),
            ("timeout", {"seconds": 1, "mode": "eager"}, "mode"),
        ],
    )
    def test_values_a_policy_refuses_name_the_argument(self, policy, settings, says):
        message = error_of({"policies": {"p": {policy: settings}}})
        assert message.startswith(f"pipeline 'p', policy '{policy}'"), message
        assert says in message

    def test_bad_tables(self):
        assert "must be a table" in error_of({"policies": []})
        assert "pipeline 'p': must be a table" in error_of({"policies": {"p": 3}})
        assert "policy 'retry': must be a table" in error_of({"policies": {"p": {"retry": 3}}})
        assert "non-empty strings" in error_of({"policies": {"": {}}})
        with pytest.raises(ConfigurationError, match="must be a mapping"):
            Pipelines.from_dict([])  # type: ignore[arg-type]

    def test_bad_order(self):
        base = {"retry": {}, "bulkhead": {"max_concurrent": 1}}
        assert "leaves out configured policies ['bulkhead']" in error_of(
            {"policies": {"p": {**base, "order": ["retry"]}}}
        )
        assert "'breaker' is not configured" in error_of(
            {"policies": {"p": {**base, "order": ["retry", "bulkhead", "breaker"]}}}
        )
        assert "names a policy twice" in error_of(
            {"policies": {"p": {**base, "order": ["retry", "bulkhead", "retry"]}}}
        )
        assert "key 'order': must be a list" in error_of({"policies": {"p": {"order": "retry"}}})

    def test_bad_allow(self):
        assert "unknown rules ['nope']" in error_of({"policies": {"p": {"allow": ["nope"]}}})
        assert "key 'allow': must be a list" in error_of({"policies": {"p": {"allow": 1}}})

    def test_bad_toml(self):
        with pytest.raises(ConfigurationError, match="does not parse"):
            Pipelines.from_toml("[policies.p\nretry = ")
        with pytest.raises(ConfigurationError, match=r"pass a pathlib\.Path"):
            Pipelines.from_toml("pipelines.toml")
        with pytest.raises(TypeError, match="source"):
            Pipelines.from_toml(3)  # type: ignore[arg-type]

    def test_toml_without_tomllib_or_tomli(self, monkeypatch):
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *args: None if name in ("tomllib", "tomli") else real(name, *args),
        )
        with pytest.raises(ConfigurationError, match=r"tomli.*Pipelines.from_dict"):
            Pipelines.from_toml(PAYMENTS)
        assert Pipelines.from_dict({"policies": {}}).names() == []  # dicts need neither

    def test_unknown_names_and_overrides(self):
        pipelines = load()
        with pytest.raises(KeyError, match="no pipeline named 'nope'"):
            pipelines.get("nope")
        with pytest.raises(KeyError, match="configured"):
            pipelines.build("nope")
        with pytest.raises(ConfigurationError, match="overrides name 'bulkhead'"):
            pipelines.build("search", overrides={"bulkhead": {"max_concurrent": 1}})
        with pytest.raises(ConfigurationError, match=r"policy 'retry'.*attempts"):
            pipelines.build("search", overrides={"retry": {"attempts": 0}})

    def test_rejections_are_named_by_their_buttress_names(self):
        data = {"policies": {"p": {"fallback": {"value": 0, "on": ["Rejected", "Timeout"]}}}}
        (fallback,) = Pipelines.from_dict(data).get("p").policies
        assert isinstance(fallback, Fallback)
        assert fallback.on == (Rejected, Timeout)
        data = {"policies": {"p": {"fallback": {"value": 0, "on": "ConnectionError"}}}}
        (fallback,) = Pipelines.from_dict(data).get("p").policies
        assert isinstance(fallback, Fallback)
        assert fallback.on == (ConnectionError,)
