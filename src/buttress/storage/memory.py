"""The in-process store: the reference implementation of the storage contract.

Thread-safe (one lock, held only for the arithmetic) and asyncio-safe (the coroutine methods never
wait). Memory stays bounded: keys whose state has become the same as a fresh one are swept a few
at a time, as operations go by (see ``sweep_every``).
"""

from __future__ import annotations

import math
import threading

from buttress._clock import Clock, system_clock
from buttress._types import check_int
from buttress.ratelimit._algorithms import State, decide, expires_at
from buttress.ratelimit._decision import Decision
from buttress.ratelimit._rate import Rate

__all__ = ["MemoryStorage"]

_Entry = tuple[str, str, Rate]  # (algorithm, key, rate)


class MemoryStorage:
    """Limiter state in this process's memory.

    Args:
        clock: The time source (:class:`buttress.testing.FakeClock` in tests).
        sweep_every: Every this many operations, twice as many keys are checked and dropped if
            their state has become fresh again; so expired keys never pile up, at a cost spread
            evenly over the operations.
    """

    def __init__(self, *, clock: Clock = system_clock, sweep_every: int = 64) -> None:
        self._clock = clock
        self._now = clock.now
        self._sweep_every = check_int(sweep_every, "sweep_every", minimum=1)
        self._lock = threading.Lock()
        self._states: dict[_Entry, State] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._operations = 0
        self._pending: list[_Entry] = []  # keys still to check in the current sweep pass
        self._pending_leases: list[str] = []

    def __len__(self) -> int:
        """The number of keys held (limiter states and lease sets)."""
        return len(self._states) + len(self._leases)

    def _sweep_step(self, now: float) -> None:
        """Check the next batch of keys of the current pass; start a new pass when done."""
        self._operations = 0
        batch = 2 * self._sweep_every
        pending, states = self._pending, self._states
        if not pending:
            pending.extend(states)
        for _ in range(min(batch, len(pending))):
            entry = pending.pop()
            if entry in states and expires_at(entry[0], states[entry], entry[2]) <= now:
                del states[entry]
        pending_leases, leases = self._pending_leases, self._leases
        if not pending_leases:
            pending_leases.extend(leases)
        for _ in range(min(batch, len(pending_leases))):
            key = pending_leases.pop()
            held = leases.get(key)
            if held is not None and all(until <= now for until in held.values()):
                del leases[key]

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
        """Decide a request of ``cost`` on ``key`` against every rate, all or nothing.

        State is kept per (algorithm, key, rate), as on Redis: two limiters sharing a key and a
        rate share that rate's count. ``rates`` must not repeat a rate.
        """
        states = self._states
        with self._lock:
            at = self._now() if now is None else now
            if len(rates) == 1:
                entry = (algorithm, key, rates[0])
                found = [states.get(entry)]
                decision = decide(algorithm, found, rates, at, cost, consume=consume)
                if consume and decision.allowed:
                    states[entry] = found[0]
            else:
                if len(set(rates)) < len(rates):  # a rate given twice is one limit
                    rates = tuple(dict.fromkeys(rates))
                entries = [(algorithm, key, rate) for rate in rates]
                found = [states.get(entry) for entry in entries]
                decision = decide(algorithm, found, rates, at, cost, consume=consume)
                if consume and decision.allowed:
                    for entry, state in zip(entries, found, strict=True):
                        states[entry] = state
            self._operations += 1
            if self._operations >= self._sweep_every:
                self._sweep_step(at)
        return decision

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
        """The coroutine form of :meth:`decide` (it never waits)."""
        return self.decide(algorithm, key, rates, cost, consume=consume, now=now)

    def reset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """Forget everything recorded for ``key`` under these rates."""
        with self._lock:
            for rate in rates:
                self._states.pop((algorithm, key, rate), None)

    async def areset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """The coroutine form of :meth:`reset`."""
        self.reset(algorithm, key, rates)

    def acquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """Take a slot for ``lease_id`` if fewer than ``limit`` live leases exist on ``key``."""
        with self._lock:
            at = self._clock.now() if now is None else now
            leases = self._leases.setdefault(key, {})
            for lease in [lease for lease, until in leases.items() if until <= at]:
                del leases[lease]
            granted = lease_id in leases or len(leases) < limit
            if granted:
                leases[lease_id] = at + ttl
            elif not leases:
                del self._leases[key]
            self._operations += 1
            if self._operations >= self._sweep_every:
                self._sweep_step(at)
        return granted

    async def aacquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`acquire_lease`."""
        return self.acquire_lease(key, limit, lease_id, ttl, now=now)

    def renew_lease(self, key: str, lease_id: str, ttl: float, *, now: float | None = None) -> bool:
        """Extend a live lease to ``ttl`` from now; ``False`` if it had already expired."""
        with self._lock:
            at = self._clock.now() if now is None else now
            leases = self._leases.get(key, {})
            if leases.get(lease_id, -math.inf) <= at:
                return False
            leases[lease_id] = at + ttl
            return True

    async def arenew_lease(
        self, key: str, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`renew_lease`."""
        return self.renew_lease(key, lease_id, ttl, now=now)

    def release_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        """Free a lease's slot; ``False`` if it was not held (expired, or released before)."""
        with self._lock:
            at = self._clock.now() if now is None else now
            leases = self._leases.get(key)
            until = leases.pop(lease_id, None) if leases else None
            if leases is not None and not leases:
                del self._leases[key]
            return until is not None and until > at

    async def arelease_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        """The coroutine form of :meth:`release_lease`."""
        return self.release_lease(key, lease_id, now=now)

    def count_leases(self, key: str, *, now: float | None = None) -> int:
        """Return how many live leases ``key`` has."""
        with self._lock:
            at = self._clock.now() if now is None else now
            return sum(1 for until in self._leases.get(key, {}).values() if until > at)

    async def acount_leases(self, key: str, *, now: float | None = None) -> int:
        """The coroutine form of :meth:`count_leases`."""
        return self.count_leases(key, now=now)

    def close(self) -> None:
        """Drop all state."""
        with self._lock:
            self._states.clear()
            self._leases.clear()
            self._pending.clear()
            self._pending_leases.clear()

    def __repr__(self) -> str:
        return f"MemoryStorage(keys={len(self)})"
