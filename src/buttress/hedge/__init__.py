"""Hedged requests: when an answer is late, ask again, take the first good answer.

::

    hedge = Hedge(delay="p95", max_hedges=1)    # ask again after the observed 95th percentile

    @hedge
    async def fetch(key): ...                   # idempotent work only: it may run twice

    @hedge
    def lookup(key): ...                        # threads too: attempts run on the hedge's threads

A hedge is sent only when the budget allows it (by default at most 10% more calls, plus one a
second), so a slow dependency never gets twice its load. Asynchronous losers are cancelled;
synchronous ones cannot be interrupted, so they are abandoned (at most ``max_threads`` attempts run
on the hedge's threads, losers included) and their answers discarded when they come. Events
(:class:`HedgeSent`, :class:`HedgeWon`, :class:`HedgeRefused`) go to listeners and the
``buttress.hedge`` logger. :class:`~buttress.contrib.httpx.ResilientTransport` and
:class:`~buttress.contrib.requests.ResilientAdapter` take a hedge as ``hedge=`` for idempotent
requests. gRPC, Finagle and Polly have the same policy; "The Tail at Scale" (Dean and Barroso) is
the reasoning.
"""

from buttress.hedge._events import HedgeEvent, HedgeRefused, HedgeSent, HedgeWon
from buttress.hedge._hedge import Hedge, LatencyWindow

__all__ = ["Hedge", "HedgeEvent", "HedgeRefused", "HedgeSent", "HedgeWon", "LatencyWindow"]
