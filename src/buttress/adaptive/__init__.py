"""Adaptive concurrency limits: a bulkhead whose size follows the downstream's latency.

::

    limiter = AdaptiveConcurrency("inventory", algorithm=Vegas(max_limit=200))

    @limiter
    def fetch(item): ...

    fetch(item)               # raises BulkheadFull at once when the limit is reached

The limit algorithms (:class:`AIMD`, :class:`Vegas`, :class:`Gradient2`) are pure state machines
fed with samples (``on_sample(start, rtt, inflight, dropped)``); :class:`AdaptiveConcurrency`
measures the samples and admits calls. See ``docs/adaptive.md`` for how to choose.
"""

from buttress.adaptive._algorithms import (
    AIMD,
    Gradient2,
    LimitAlgorithm,
    Vegas,
    Windowed,
    log10_root,
)
from buttress.adaptive._events import AdaptiveEvent, AdaptiveLimitChanged, AdaptiveRejected
from buttress.adaptive._limiter import (
    DEFAULT_DROP_ON,
    AdaptiveConcurrency,
    AdaptivePermit,
    AdaptiveStats,
)

__all__ = [
    "AIMD",
    "DEFAULT_DROP_ON",
    "AdaptiveConcurrency",
    "AdaptiveEvent",
    "AdaptiveLimitChanged",
    "AdaptivePermit",
    "AdaptiveRejected",
    "AdaptiveStats",
    "Gradient2",
    "LimitAlgorithm",
    "Vegas",
    "Windowed",
    "log10_root",
]
