"""Fault injection: latency, exceptions and synthetic results on purpose, at a chosen rate.

::

    chaos = ChaosPolicy(rate=0.1, latency=(0.05, 0.5), error=ConnectionError, seed=7)
    chaos.enable()                        # off unless enabled

    @chaos                                # sync or async def
    def fetch(url): ...

    with flagged("game-day"):             # with ChaosPolicy(flag="game-day"): only in this block
        fetch(url)

The HTTP integrations (:mod:`buttress.contrib.httpx`, :mod:`buttress.contrib.requests`) take a
policy as ``chaos=`` and inject per attempt, inside the host's circuit breaker, so that injected
faults exercise the retries and breakers the way real ones would; a
:class:`SyntheticResponse` result becomes a real response of the client library. Polly's Simmy and
Envoy's fault filter are the models.
"""

from buttress.chaos._events import ChaosInjected
from buttress.chaos._policy import (
    ChaosPolicy,
    Injection,
    SyntheticResponse,
    active_flags,
    flagged,
)

__all__ = [
    "ChaosInjected",
    "ChaosPolicy",
    "Injection",
    "SyntheticResponse",
    "active_flags",
    "flagged",
]
