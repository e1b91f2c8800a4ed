"""Hedged requests: when an answer is late, ask again, take the first good answer, cancel the rest.

::

    hedge = Hedge(delay="p95", max_hedges=1)    # ask again after the observed 95th percentile

    @hedge
    async def fetch(key): ...                   # idempotent work only: it may run twice

A hedge is sent only when the budget allows it (by default at most 10% more calls, plus one a
second), so a slow dependency never gets twice its load. :class:`~buttress.contrib.httpx.
ResilientTransport` takes a hedge as ``hedge=`` for idempotent requests. gRPC, Finagle and Polly
have the same policy; "The Tail at Scale" (Dean and Barroso) is the reasoning.
"""

from buttress.hedge._hedge import Hedge, LatencyWindow

__all__ = ["Hedge", "LatencyWindow"]
