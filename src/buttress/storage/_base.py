"""The storage contract every limiter store implements (memory, Redis).

A store answers *decisions*: it runs one algorithm over the per-rate state of one key, all rates
at once, atomically, and returns a :class:`~buttress.ratelimit.Decision`. It also keeps
*leases* for concurrency limits: at most ``limit`` live lease ids per key, each expiring after its
TTL unless renewed, so a crashed holder cannot keep a slot forever.

Every method has an ``a``-prefixed coroutine twin for asyncio. ``now`` is for tests: it replaces
the store's own clock (the memory store's ``clock``, the Redis server's ``TIME``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from buttress.ratelimit._decision import Decision
from buttress.ratelimit._rate import Rate

__all__ = ["Storage"]


@runtime_checkable
class Storage(Protocol):
    """What a limiter needs of a store. See the module docstring."""

    def decide(
        self,
        algorithm: str,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        *,
        consume: bool = True,
        now: float | None = None,
    ) -> Decision:
        """Decide a request of ``cost`` on ``key`` against every rate, all or nothing."""
        ...

    async def adecide(
        self,
        algorithm: str,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        *,
        consume: bool = True,
        now: float | None = None,
    ) -> Decision:
        """The coroutine form of :meth:`decide`."""
        ...

    def reset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """Forget everything recorded for ``key`` under these rates."""
        ...

    async def areset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """The coroutine form of :meth:`reset`."""
        ...

    def acquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """Take a slot for ``lease_id`` if fewer than ``limit`` live leases exist on ``key``."""
        ...

    async def aacquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`acquire_lease`."""
        ...

    def renew_lease(self, key: str, lease_id: str, ttl: float, *, now: float | None = None) -> bool:
        """Extend a live lease to ``ttl`` from now; ``False`` if it had already expired."""
        ...

    async def arenew_lease(
        self, key: str, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`renew_lease`."""
        ...

    def release_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        """Free a lease's slot; ``False`` if it was not held (expired, or released before)."""
        ...

    async def arelease_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        """The coroutine form of :meth:`release_lease`."""
        ...

    def count_leases(self, key: str, *, now: float | None = None) -> int:
        """Return how many live leases ``key`` has."""
        ...

    async def acount_leases(self, key: str, *, now: float | None = None) -> int:
        """The coroutine form of :meth:`count_leases`."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...
