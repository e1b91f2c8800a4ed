"""The order check: warn, when a pipeline is built, about orders that are almost always wrong.

Each rule has an id (the ``rule`` of the warning and of :class:`OrderProblem`), a condition on
the positions of the policies (outermost first) and a reason. Keep the list short: a rule is
here only if the order it flags is wrong in nearly every real configuration. ``docs/pipeline.md``
documents each rule; a test checks that every rule has its section there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from buttress._errors import BulkheadFull, RateLimited, Rejected
from buttress.adaptive import AdaptiveConcurrency
from buttress.breaker import CircuitBreaker
from buttress.bulkhead import Bulkhead, DistributedBulkhead, ThreadPoolBulkhead
from buttress.chaos import ChaosPolicy
from buttress.fallback import Fallback
from buttress.pipeline._adapters import KeyedBulkheadPolicy, RateLimitPolicy
from buttress.retry import Retry
from buttress.timeout import TimeLimit

__all__ = ["RULES", "OrderProblem", "PipelineOrderWarning", "check_order", "describe", "warn"]

RULES: dict[str, str] = {
    "retry-outside-limit": (
        "a retry without a retry budget outside a rate limiter or bulkhead: every retry takes "
        "another permit or slot, so under overload retries crowd out first attempts, and the "
        "limiter's own rejections get retried"
    ),
    "fallback-inside": (
        "a fallback inside a retry or a circuit breaker: it answers the failures it handles, "
        "so the retry never retries them and the breaker never counts them"
    ),
    "attempt-timeout-too-long": (
        "a timeout inside a retry limits each attempt; one not shorter than the total "
        "(a timeout outside the retry, or the retry's own timeout) can never fire first"
    ),
    "two-breakers": (
        "two circuit breakers in one pipeline: the outer one counts the inner one's "
        "CircuitOpen rejections as failures and opens whenever it does"
    ),
    "unbounded-wait": (
        "a bulkhead or limiter that lets callers wait without a max_wait, with no timeout "
        "outside it: a caller can wait for a slot forever, and the timeouts inside it do not "
        "count the wait"
    ),
    "breaker-counts-rejections": (
        "a circuit breaker outside a bulkhead or rate limiter whose rejections it records as "
        "failures: local overload opens the circuit of a healthy dependency"
    ),
    "chaos-outside": (
        "a chaos policy outside other policies: the faults it injects never reach them (the "
        "retry does not retry them, the breaker does not count them, the timeout does not "
        "bound the injected latency), so the drill tests none of them"
    ),
}
"""Every rule of the order check: id -> what it flags and why."""

_LIMITS = (
    RateLimitPolicy,
    Bulkhead,
    ThreadPoolBulkhead,
    KeyedBulkheadPolicy,
    DistributedBulkhead,
    AdaptiveConcurrency,
)


class PipelineOrderWarning(UserWarning):
    """A pipeline's policies are in an order that is almost always wrong.

    Raised (as a warning) when the pipeline is built. Silence one rule with
    ``Pipeline(..., allow=["rule-id"])``, every rule with ``validate=False``, or with the
    :mod:`warnings` filters (``category=PipelineOrderWarning``).

    Attributes:
        rule: The id of the rule (a key of :data:`RULES`).
    """

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.rule))


@dataclass(frozen=True, slots=True)
class OrderProblem:
    """One finding of :func:`check_order`.

    Attributes:
        rule: The rule's id (a key of :data:`RULES`).
        message: What is wrong, where, why, and what to do instead.
        positions: The positions (0 = outermost) of the policies involved.
    """

    rule: str
    message: str
    positions: tuple[int, ...]


def describe(policies: Sequence[object], index: int) -> str:
    """Name a policy by its position, type and name: ``policies[2] (Retry 'payments')``."""
    policy = policies[index]
    name = getattr(policy, "name", None)
    named = f" {name!r}" if isinstance(name, str) else ""
    return f"policies[{index}] ({type(policy).__name__}{named})"


def _records(breaker: CircuitBreaker, error: BaseException) -> bool:
    """Whether ``breaker`` would count ``error`` as a failure (unknown: ``False``)."""
    try:
        return breaker._classify(error) is True  # noqa: SLF001 - the breaker's own verdict
    except Exception:  # noqa: BLE001 - a user predicate that cannot judge a probe: no verdict
        return False


def _probe(policy: object) -> Rejected:
    if isinstance(policy, RateLimitPolicy):
        return RateLimited("probe", name="probe")
    return BulkheadFull("probe", name="probe")


def _waits_forever(policy: object) -> bool:
    """Whether a caller may wait for a slot (or the rate) with no bound of the policy's own."""
    if isinstance(policy, RateLimitPolicy):
        return policy.max_wait is None
    if isinstance(policy, KeyedBulkheadPolicy):
        policy = policy.bulkhead
    if isinstance(policy, AdaptiveConcurrency):
        return policy.max_wait is None and policy.max_waiting != 0
    if isinstance(policy, ThreadPoolBulkhead):
        return False  # its waits end with the call; the queue is bounded by max_queue
    max_waiting = getattr(policy, "max_waiting", 0)
    return bool(max_waiting) and getattr(policy, "max_wait", 0) is None


Indexed = list[tuple[int, object]]
Add = Callable[[str, tuple[int, ...], str], None]


def _retry_outside_limit(indexed: Indexed, add: Add, name: Callable[[int], str]) -> None:
    for i, outer in indexed:
        if not isinstance(outer, Retry) or outer.budget is not None:
            continue
        inner = next((j for j, p in indexed[i + 1 :] if isinstance(p, _LIMITS)), None)
        if inner is not None:
            add(
                "retry-outside-limit",
                (i, inner),
                f"{name(i)} is outside {name(inner)}; give the retry a RetryBudget or move the "
                "limit outside the retry",
            )


def _fallback_inside(indexed: Indexed, add: Add, name: Callable[[int], str]) -> None:
    for i, outer in indexed:
        if not isinstance(outer, (Retry, CircuitBreaker)):
            continue
        for j, inner in indexed[i + 1 :]:
            if isinstance(inner, Fallback):
                add("fallback-inside", (i, j), f"{name(j)} is inside {name(i)}; put it outermost")


def _attempt_timeout_too_long(indexed: Indexed, add: Add, name: Callable[[int], str]) -> None:
    for i, outer in indexed:
        if not isinstance(outer, Retry):
            continue
        totals = [p.timeout for _, p in indexed[:i] if isinstance(p, TimeLimit)]
        if isinstance(outer.timeout, float):
            totals.append(outer.timeout)
        if not totals:
            continue
        total = min(totals)
        for j, inner in indexed[i + 1 :]:
            if isinstance(inner, TimeLimit) and inner.timeout >= total:
                add(
                    "attempt-timeout-too-long",
                    (i, j),
                    f"{name(j)} ({inner.timeout:g} s) is inside {name(i)} with a total of "
                    f"{total:g} s; make it shorter, or move it outside the retry if it is the "
                    "total",
                )


def _two_breakers(indexed: Indexed, add: Add, name: Callable[[int], str]) -> None:
    breakers = tuple(i for i, p in indexed if isinstance(p, CircuitBreaker))
    if len(breakers) > 1:
        described = " and ".join(name(i) for i in breakers)
        add("two-breakers", breakers, f"{described}; use one breaker per dependency")


def _unbounded_wait(indexed: Indexed, add: Add, name: Callable[[int], str]) -> None:
    for j, policy in indexed:
        if not isinstance(policy, _LIMITS) or not _waits_forever(policy):
            continue
        if not any(isinstance(p, TimeLimit) for _, p in indexed[:j]):
            add(
                "unbounded-wait",
                (j,),
                f"{name(j)} has no timeout outside it; set its max_wait or put a timeout "
                "outside it",
            )


def _breaker_counts_rejections(indexed: Indexed, add: Add, name: Callable[[int], str]) -> None:
    for i, outer in indexed:
        if not isinstance(outer, CircuitBreaker):
            continue
        for j, inner in indexed[i + 1 :]:
            if isinstance(inner, _LIMITS) and _records(outer, _probe(inner)):
                add(
                    "breaker-counts-rejections",
                    (i, j),
                    f"{name(i)} is outside {name(j)}; move the limit outside the breaker, or "
                    "give the breaker ignore=Rejected",
                )


def _chaos_outside(indexed: Indexed, add: Add, name: Callable[[int], str]) -> None:
    for i, outer in indexed:
        if not isinstance(outer, ChaosPolicy):
            continue
        inside = tuple(j for j, p in indexed[i + 1 :] if not isinstance(p, ChaosPolicy))
        if inside:
            described = ", ".join(name(j) for j in inside)
            add(
                "chaos-outside",
                (i, *inside),
                f"{name(i)} is outside {described}; put it innermost, next to the call",
            )


_CHECKS = (
    _retry_outside_limit,
    _fallback_inside,
    _attempt_timeout_too_long,
    _two_breakers,
    _unbounded_wait,
    _breaker_counts_rejections,
    _chaos_outside,
)


def check_order(policies: Sequence[object]) -> list[OrderProblem]:
    """Check the order of ``policies`` (outermost first) against :data:`RULES`.

    Never warns; :class:`~buttress.pipeline.Pipeline` calls it and warns for each problem.

    Args:
        policies: The policies, outermost first.

    Returns:
        The problems found, in the order of :data:`RULES` (empty for a sound order).
    """
    problems: list[OrderProblem] = []

    def add(rule: str, positions: tuple[int, ...], detail: str) -> None:
        problems.append(OrderProblem(rule, f"{detail}: {RULES[rule]} [{rule}]", positions))

    def name(index: int) -> str:
        return describe(policies, index)

    indexed = list(enumerate(policies))
    for check in _CHECKS:
        check(indexed, add, name)
    return problems


def warn(problems: Sequence[OrderProblem], allow: frozenset[str], stacklevel: int) -> None:
    """Warn once per problem whose rule is not in ``allow``."""
    for problem in problems:
        if problem.rule not in allow:
            warnings.warn(
                PipelineOrderWarning(problem.message, problem.rule),
                stacklevel=stacklevel + 1,
            )
