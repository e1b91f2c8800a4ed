"""Circuit breaker: stop calling a failing dependency, then let trial calls through.

::

    breaker = CircuitBreaker("payments", failure_rate=0.5, window_size=20, reset_timeout=10)

    @breaker
    def charge(order): ...

    charge(order)             # raises CircuitOpen at once while the breaker is open

States CLOSED, OPEN, HALF_OPEN (and FORCED_OPEN, DISABLED by hand); trips on failures in a row,
a failure rate or a slow-call rate over a count or time window; an open period that can grow on
repeated trips; at most ``half_open_max_calls`` trial calls at a time. See
:mod:`buttress.breaker._machine` for the exact rules.
"""

from buttress.breaker._breaker import (
    BreakerMetrics,
    BreakerRegistry,
    CircuitBreaker,
    Guard,
    WindowType,
    breaker_registry,
)
from buttress.breaker._events import (
    BreakerCall,
    BreakerEvent,
    BreakerStateChanged,
    BreakerStoreDegraded,
    BreakerStoreRecovered,
    CallOutcome,
)
from buttress.breaker._machine import State

__all__ = [
    "BreakerCall",
    "BreakerEvent",
    "BreakerMetrics",
    "BreakerRegistry",
    "BreakerStateChanged",
    "BreakerStoreDegraded",
    "BreakerStoreRecovered",
    "CallOutcome",
    "CircuitBreaker",
    "Guard",
    "State",
    "WindowType",
    "breaker_registry",
]
