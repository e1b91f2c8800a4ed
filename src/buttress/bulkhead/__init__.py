"""Bulkheads: partition concurrency so that one slow or failing part cannot sink the rest.

::

    pool = Bulkhead(10, max_waiting=20, max_wait=0.5, name="payments")

    @pool                                   # sync or async def
    def charge(order): ...

    with pool.acquire(timeout=1):           # or by hand (``async with pool.aacquire():``)
        ...

Four kinds, one face (decorator, ``call``/``acall``, permits, ``stats()``, events):

- :class:`Bulkhead`: a semaphore for threads and asyncio tasks together;
- :class:`ThreadPoolBulkhead`: synchronous calls on a bounded pool with a bounded queue, usable
  from asyncio; calls whose caller gave up but that still run keep their slot;
- :class:`KeyedBulkhead`: one bulkhead per downstream or tenant, made on first use, bounded;
- :class:`DistributedBulkhead`: one limit across processes, on a
  :class:`~buttress.ratelimit.ConcurrencyLimit` in Redis.

A refused call raises :class:`~buttress.BulkheadFull` at once; events
(:class:`BulkheadRejected`, :class:`BulkheadCallAbandoned`) go to listeners and the
``buttress.bulkhead`` logger.
"""

from buttress.bulkhead._distributed import DistributedBulkhead
from buttress.bulkhead._events import BulkheadCallAbandoned, BulkheadEvent, BulkheadRejected
from buttress.bulkhead._keyed import KeyedBulkhead
from buttress.bulkhead._pool import ThreadPoolBulkhead, ThreadPoolStats
from buttress.bulkhead._semaphore import Bulkhead, BulkheadPermit, BulkheadStats, bulkhead

__all__ = [
    "Bulkhead",
    "BulkheadCallAbandoned",
    "BulkheadEvent",
    "BulkheadPermit",
    "BulkheadRejected",
    "BulkheadStats",
    "DistributedBulkhead",
    "KeyedBulkhead",
    "ThreadPoolBulkhead",
    "ThreadPoolStats",
    "bulkhead",
]
