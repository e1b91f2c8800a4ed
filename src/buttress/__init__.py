"""buttress: resilience patterns for Python services, for threads and asyncio.

The public API is re-exported here; see :mod:`buttress.retry` for the retry policy,
:mod:`buttress._errors` (re-exported here) for the exception tree and :mod:`buttress.testing` for
test helpers.
"""

import logging as _logging

from buttress._clock import Clock, SystemClock, system_clock
from buttress._errors import (
    BulkheadFull,
    ButtressError,
    CircuitOpen,
    ConfigurationError,
    RateLimited,
    Rejected,
    RetryBudgetExhausted,
    RetryExhausted,
    StopReason,
    StorageError,
    Timeout,
)
from buttress._events import (
    Event,
    Listener,
    LoggingListener,
    Subscription,
    add_listener,
    remove_listener,
)
from buttress._version import __version__
from buttress.ratelimit import (
    ALGORITHMS,
    Algorithm,
    ConcurrencyLimit,
    Decision,
    Limiter,
    LimiterEvent,
    OnStoreError,
    Permit,
    Rate,
    RateLimitDecided,
    StoreDegraded,
    StoreRecovered,
    parse_rates,
)
from buttress.retry import (
    Attempt,
    Attempts,
    Jitter,
    Retry,
    RetryBudget,
    RetryEvent,
    RetryFailed,
    RetryGaveUp,
    RetryScheduled,
    RetrySucceeded,
    Wait,
    WaitExponential,
    WaitFixed,
    WaitLinear,
    WaitRandom,
    WaitSum,
    retry,
    retrying,
)
from buttress.storage import MemoryStorage, Storage, storage_from_url

# The library convention: nothing is printed unless the application configures logging.
_logging.getLogger("buttress").addHandler(_logging.NullHandler())

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Attempt",
    "Attempts",
    "BulkheadFull",
    "ButtressError",
    "CircuitOpen",
    "Clock",
    "ConcurrencyLimit",
    "ConfigurationError",
    "Decision",
    "Event",
    "Jitter",
    "Limiter",
    "LimiterEvent",
    "Listener",
    "LoggingListener",
    "MemoryStorage",
    "OnStoreError",
    "Permit",
    "Rate",
    "RateLimitDecided",
    "RateLimited",
    "Rejected",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryEvent",
    "RetryExhausted",
    "RetryFailed",
    "RetryGaveUp",
    "RetryScheduled",
    "RetrySucceeded",
    "StopReason",
    "Storage",
    "StorageError",
    "StoreDegraded",
    "StoreRecovered",
    "Subscription",
    "SystemClock",
    "Timeout",
    "Wait",
    "WaitExponential",
    "WaitFixed",
    "WaitLinear",
    "WaitRandom",
    "WaitSum",
    "__version__",
    "add_listener",
    "parse_rates",
    "remove_listener",
    "retry",
    "retrying",
    "storage_from_url",
    "system_clock",
]
