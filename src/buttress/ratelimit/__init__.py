"""Rate limiting: N units per period per key, and N calls in flight, in memory or on Redis.

::

    limiter = Limiter("10/second; 1000/hour", algorithm="gcra", storage="redis://127.0.0.1:6379/0")
    decision = limiter.hit(f"user:{user_id}")
    if not decision.allowed:
        return 429, {"Retry-After": str(math.ceil(decision.retry_after))}

Choosing an algorithm:

- ``fixed-window``: a counter per window that starts at the first hit (what Flask-Limiter does).
  Cheapest; a client may send up to twice the limit around a window boundary.
- ``sliding-window``: an exact log of admitted requests: never more than the limit in *any*
  period-long window. Memory grows with the limit (one entry per admitted request).
- ``sliding-window-counter``: two counters weighted by time (Cloudflare's method): constant memory,
  nearly exact; worst case twice the limit in some period-long window, never more.
- ``token-bucket``: a bucket of ``limit`` tokens refilled steadily: bursts up to ``limit``, then a
  smooth rate.
- ``gcra``: the same admissions as the token bucket with one timestamp of state; smooth, exact.

Several limits on one key are decided in one atomic operation, all or nothing. On Redis that is
one round trip per decision, on the server's clock. ``ConcurrencyLimit`` caps calls in flight
with leased slots. See :mod:`buttress.ratelimit._limiter` for the store fault policies.
"""

from buttress.ratelimit._algorithms import ALGORITHMS, Algorithm
from buttress.ratelimit._decision import Decision
from buttress.ratelimit._events import (
    LimiterEvent,
    RateLimitDecided,
    StoreDegraded,
    StoreRecovered,
)
from buttress.ratelimit._limiter import ConcurrencyLimit, Limiter, OnStoreError, Permit
from buttress.ratelimit._rate import Rate, parse_rates

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ConcurrencyLimit",
    "Decision",
    "Limiter",
    "LimiterEvent",
    "OnStoreError",
    "Permit",
    "Rate",
    "RateLimitDecided",
    "StoreDegraded",
    "StoreRecovered",
    "parse_rates",
]
