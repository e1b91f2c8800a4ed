"""Tests of buttress.ratelimit; the helpers below are shared by its test modules."""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeVar

from buttress import Event, StorageError
from buttress.ratelimit import Decision, Rate
from buttress.storage import Storage

E = TypeVar("E", bound=Event)


class Recorder:
    """A listener keeping every event it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]


class CountingStorage:
    """A store delegating to another one, counting the calls; ``failing`` makes every call fail.

    Not a ``MemoryStorage`` itself, so a limiter treats it as a shared store (calls it through
    the fault guard, with the rejection cache on by default).
    """

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.failing = False

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if self.failing:
            raise StorageError(f"{name}: the store is down")

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
        self._enter("decide")
        return self.inner.decide(algorithm, key, rates, cost, consume=consume, now=now)

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
        self._enter("adecide")
        return await self.inner.adecide(algorithm, key, rates, cost, consume=consume, now=now)

    def reset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        self._enter("reset")
        self.inner.reset(algorithm, key, rates)

    async def areset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        self._enter("areset")
        await self.inner.areset(algorithm, key, rates)

    def acquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        self._enter("acquire_lease")
        return self.inner.acquire_lease(key, limit, lease_id, ttl, now=now)

    async def aacquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        self._enter("aacquire_lease")
        return await self.inner.aacquire_lease(key, limit, lease_id, ttl, now=now)

    def renew_lease(self, key: str, lease_id: str, ttl: float, *, now: float | None = None) -> bool:
        self._enter("renew_lease")
        return self.inner.renew_lease(key, lease_id, ttl, now=now)

    async def arenew_lease(
        self, key: str, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        self._enter("arenew_lease")
        return await self.inner.arenew_lease(key, lease_id, ttl, now=now)

    def release_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        self._enter("release_lease")
        return self.inner.release_lease(key, lease_id, now=now)

    async def arelease_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        self._enter("arelease_lease")
        return await self.inner.arelease_lease(key, lease_id, now=now)

    def count_leases(self, key: str, *, now: float | None = None) -> int:
        self._enter("count_leases")
        return self.inner.count_leases(key, now=now)

    async def acount_leases(self, key: str, *, now: float | None = None) -> int:
        self._enter("acount_leases")
        return await self.inner.acount_leases(key, now=now)

    def close(self) -> None:
        self.inner.close()

    def __len__(self) -> int:
        inner: Any = self.inner
        return len(inner)
