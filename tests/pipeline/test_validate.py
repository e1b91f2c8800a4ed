"""The order check: each rule fires on its order, not on the fixed one, and can be silenced."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import pytest

from buttress import CircuitBreaker, Limiter, Rejected, Retry, RetryBudget, Timeout
from buttress.adaptive import AdaptiveConcurrency
from buttress.bulkhead import Bulkhead
from buttress.chaos import ChaosPolicy
from buttress.fallback import Fallback
from buttress.pipeline import (
    RULES,
    Pipeline,
    PipelineOrderWarning,
    check_order,
    limited,
    pipeline,
)
from buttress.timeout import TimeLimit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"


def breaker(name: str = "b", **options) -> CircuitBreaker:
    return CircuitBreaker(name, registry=None, **options)


def budgeted(**options) -> Retry:
    return Retry(budget=RetryBudget(), **options)


def rules(*policies: object) -> list[str]:
    return [problem.rule for problem in check_order(policies)]


def recommended() -> list[object]:
    return [
        Fallback(None, on=(Rejected, Timeout)),
        TimeLimit(10, mode="cooperative"),
        budgeted(attempts=3),
        limited(Limiter("100/second"), key="api"),
        Bulkhead(10, max_waiting=10, max_wait=0.5),
        breaker(),
        TimeLimit(2),
    ]


class TestRules:
    def test_the_recommended_order_is_clean(self):
        assert rules(*recommended()) == []

    def test_retry_outside_limit(self):
        assert rules(Retry(), Bulkhead(2)) == ["retry-outside-limit"]
        assert rules(Retry(), limited(Limiter("1/second"))) == ["retry-outside-limit"]
        assert rules(Retry(), AdaptiveConcurrency()) == ["retry-outside-limit"]
        assert rules(budgeted(), Bulkhead(2)) == []
        assert rules(Bulkhead(2), Retry()) == []

    def test_fallback_inside(self):
        assert rules(Retry(), Fallback(1)) == ["fallback-inside"]
        assert rules(breaker(), Fallback(1)) == ["fallback-inside"]
        assert rules(Fallback(1), Retry(), breaker()) == []

    def test_attempt_timeout_too_long(self):
        assert rules(TimeLimit(5), Retry(), TimeLimit(5)) == ["attempt-timeout-too-long"]
        assert rules(Retry(timeout=3), TimeLimit(4)) == ["attempt-timeout-too-long"]
        assert rules(TimeLimit(5), Retry(), TimeLimit(1)) == []
        assert rules(Retry(), TimeLimit(30)) == []  # no total to compare with

    def test_two_breakers(self):
        found = check_order([breaker("x"), Retry(), breaker("y")])
        assert [p.rule for p in found] == ["two-breakers"]
        assert found[0].positions == (0, 2)
        assert "'x'" in found[0].message
        assert "'y'" in found[0].message

    def test_unbounded_wait(self):
        waits = Bulkhead(2, max_waiting=5)
        assert rules(waits) == ["unbounded-wait"]
        assert rules(TimeLimit(1), Bulkhead(2, max_waiting=5)) == []
        assert rules(Bulkhead(2, max_waiting=5, max_wait=1)) == []
        assert rules(Bulkhead(2)) == []  # refuses at once: never waits
        assert rules(limited(Limiter("1/second"), max_wait=None)) == ["unbounded-wait"]
        assert rules(AdaptiveConcurrency(max_wait=None)) == ["unbounded-wait"]

    def test_breaker_counts_rejections(self):
        assert rules(breaker(), Bulkhead(2)) == ["breaker-counts-rejections"]
        assert rules(breaker(), limited(Limiter("1/second"))) == ["breaker-counts-rejections"]
        assert rules(breaker(ignore=Rejected), Bulkhead(2)) == []
        assert rules(breaker(record=ConnectionError), Bulkhead(2)) == []
        assert rules(breaker(ignore=lambda error: isinstance(error, Rejected)), Bulkhead(2)) == []
        assert rules(Bulkhead(2), breaker()) == []

    def test_chaos_outside(self):
        chaos = ChaosPolicy(error=ConnectionError, name="drill")
        slow = ChaosPolicy(latency=0.5, name="slow")
        assert rules(*recommended(), chaos) == []  # innermost: every policy meets its faults
        assert rules(chaos, slow) == []  # two chaos policies in a row
        assert rules(chaos, budgeted(), breaker()) == ["chaos-outside"]
        (problem,) = check_order([Fallback(1), chaos, budgeted(), slow])
        assert problem.positions == (1, 2)
        assert "policies[1] (ChaosPolicy 'drill') is outside policies[2] (Retry" in problem.message
        assert "innermost" in problem.message

    def test_a_predicate_that_cannot_judge_the_probe_gives_no_verdict(self):
        def picky(error: BaseException) -> bool:
            raise RuntimeError("only my errors")

        assert rules(breaker(ignore=picky), Bulkhead(2)) == []

    def test_messages_say_where_why_and_what_to_do(self):
        (problem,) = check_order([Retry(name="reads"), Bulkhead(2, name="pool")])
        assert problem.positions == (0, 1)
        assert "policies[0] (Retry 'reads')" in problem.message
        assert "policies[1] (Bulkhead 'pool')" in problem.message
        assert "RetryBudget" in problem.message
        assert RULES["retry-outside-limit"] in problem.message

    def test_every_rule_is_documented(self):
        text = DOCS.read_text(encoding="utf-8")
        for rule in RULES:
            assert re.search(rf"^### `{re.escape(rule)}`", text, re.MULTILINE), rule


class TestWarnings:
    def test_warns_at_construction_pointing_at_the_caller(self):
        with pytest.warns(PipelineOrderWarning, match=r"\[fallback-inside\]") as record:
            Pipeline(Retry(), Fallback(1))
        assert record[0].filename == __file__
        with pytest.warns(PipelineOrderWarning) as record:
            pipeline(Retry(), Fallback(1))
        assert record[0].filename == __file__
        assert isinstance(record[0].message, PipelineOrderWarning)
        assert record[0].message.rule == "fallback-inside"

    def test_is_a_user_warning_that_pickles(self):
        warning = PipelineOrderWarning("text", "two-breakers")
        assert isinstance(warning, UserWarning)
        copy = pickle.loads(pickle.dumps(warning))
        assert (str(copy), copy.rule) == ("text", "two-breakers")

    def test_one_warning_per_problem(self):
        with pytest.warns(PipelineOrderWarning) as record:
            Pipeline(breaker("x"), Retry(), Fallback(1), breaker("y"))
        assert sorted(w.message.rule for w in record) == [  # type: ignore[union-attr]
            "fallback-inside",
            "fallback-inside",
            "two-breakers",
        ]

    def test_allow_silences_one_rule(self):
        with pytest.warns(PipelineOrderWarning, match="two-breakers"):
            Pipeline(breaker("x"), Retry(), Fallback(1), breaker("y"), allow=["fallback-inside"])
        Pipeline(Retry(), Fallback(1), allow=["fallback-inside"])  # no warning: would raise

    def test_validate_false_silences_every_rule(self):
        Pipeline(breaker("x"), Retry(), Fallback(1), breaker("y"), validate=False)

    def test_the_warnings_filters_silence_them(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PipelineOrderWarning)
            Pipeline(Retry(), Fallback(1))
