"""Pipelines: compose timeout, retry, breaker, bulkhead, rate limit and fallback into one policy.

::

    resilient = pipeline(
        fallback(None, on=(Rejected, Timeout)),        # outermost: answers what is left
        timeout(10, mode="cooperative"),               # the whole call, waits included
        Retry(attempts=3, budget=RetryBudget()),       # each retry withdraws from a budget
        limited(Limiter("100/second"), key="payments"),
        Bulkhead(20, max_wait=0.5),
        CircuitBreaker("payments", ignore=Rejected),   # one outcome per attempt
        timeout(2),                                    # each attempt
    )

    @resilient                                         # sync or async def
    def charge(order): ...

    resilient.call(charge_raw, order)                  # or await resilient.acall(...)

Policies are listed outermost first. The order matters; ``docs/pipeline.md`` explains the
recommended one, and the pipeline warns (:class:`PipelineOrderWarning`) about orders that are
almost always wrong (:data:`RULES`). :class:`Pipelines` builds named pipelines from a dict or
a TOML file, so that operators can tune them without code changes.
"""

from buttress.pipeline._adapters import KeyedBulkheadPolicy, RateLimitPolicy, keyed, limited
from buttress.pipeline._config import RECOMMENDED_ORDER, Pipelines
from buttress.pipeline._pipeline import Pipeline, Policy, pipeline
from buttress.pipeline._validate import RULES, OrderProblem, PipelineOrderWarning, check_order

__all__ = [
    "RECOMMENDED_ORDER",
    "RULES",
    "KeyedBulkheadPolicy",
    "OrderProblem",
    "Pipeline",
    "PipelineOrderWarning",
    "Pipelines",
    "Policy",
    "RateLimitPolicy",
    "check_order",
    "keyed",
    "limited",
    "pipeline",
]
