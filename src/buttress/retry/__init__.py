"""Retry: run a call again when it fails, with backoff, limits, a shared budget and events.

Three ways to use one policy::

    @retry(attempts=3, on=ConnectionError)          # decorator (sync or async def)
    def connect(): ...

    policy = Retry(attempts=5, timeout=10)
    policy.call(connect)                              # direct call
    await policy.acall(fetch, url)

    for attempt in retrying(attempts=3):              # block (or `async for`)
        with attempt:
            connect()

Events (:class:`RetryScheduled`, :class:`RetrySucceeded`, :class:`RetryGaveUp`,
:class:`RetryFailed`) go to the policy's listeners, global listeners and the ``buttress.retry``
logger.
"""

from buttress._types import NO_FALLBACK
from buttress.retry._budget import RetryBudget
from buttress.retry._events import (
    RetryEvent,
    RetryFailed,
    RetryGaveUp,
    RetryScheduled,
    RetrySucceeded,
)
from buttress.retry._policy import Attempt, Attempts, Retry, retry, retrying
from buttress.retry._wait import (
    Jitter,
    Wait,
    WaitExponential,
    WaitFixed,
    WaitLinear,
    WaitRandom,
    WaitSum,
)

__all__ = [
    "NO_FALLBACK",
    "Attempt",
    "Attempts",
    "Jitter",
    "Retry",
    "RetryBudget",
    "RetryEvent",
    "RetryFailed",
    "RetryGaveUp",
    "RetryScheduled",
    "RetrySucceeded",
    "Wait",
    "WaitExponential",
    "WaitFixed",
    "WaitLinear",
    "WaitRandom",
    "WaitSum",
    "retry",
    "retrying",
]
