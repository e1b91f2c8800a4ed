"""Fallback: answer with a substitute when a call fails in a way you choose.

::

    @fallback([], on=(CircuitOpen, BulkheadFull))      # a value, for rejections
    def recommendations(user): ...

    @fallback(handler=lambda error: cached(user), on=TimeoutError)
    async def profile(user): ...

    @fallback(None, on=None, on_result=lambda r: r.status >= 500)
    def fetch(url): ...

Everything not selected is re-raised untouched. :class:`FallbackUsed` events go to listeners
and the ``buttress.fallback`` logger.
"""

from buttress.fallback._events import FallbackUsed
from buttress.fallback._fallback import Fallback, fallback

__all__ = ["Fallback", "FallbackUsed", "fallback"]
