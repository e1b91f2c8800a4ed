"""The in-process store: the reference implementation of the storage contract.

Thread-safe (one lock, held only for the arithmetic) and asyncio-safe (the coroutine methods never
wait). Memory stays bounded: keys whose state has become the same as a fresh one are swept a few
at a time, as operations go by (see ``sweep_every``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from buttress._clock import Clock, system_clock
from buttress._types import check_int
from buttress.ratelimit._algorithms import STEPS, State, decide, expires_at
from buttress.ratelimit._decision import Decision
from buttress.ratelimit._rate import Rate

__all__ = ["MemoryStorage"]

_Table = dict[str, State]  # key -> state, for one (algorithm, rate)


def _check_algorithm(algorithm: object) -> None:
    """Refuse an unknown algorithm before any table is made for it."""
    if not isinstance(algorithm, str) or algorithm not in STEPS:
        raise ValueError(f"algorithm must be one of {', '.join(STEPS)}; got {algorithm!r}")


class MemoryStorage:
    """Limiter state in this process's memory.

    State is kept per (algorithm, key, rate), as on Redis: two limiters sharing a key and a rate
    share that rate's count.

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
        # One table per (algorithm, rate); tables are never dropped (decision functions made by
        # single() and several() hold them), only emptied.
        self._tables: dict[tuple[str, Rate], _Table] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._operations = 0
        # Keys still to check in the current sweep pass: (table, key, algorithm, rate).
        self._pending: list[tuple[_Table, str, str, Rate]] = []
        self._pending_leases: list[str] = []

    def __len__(self) -> int:
        """The number of keys held (limiter states and lease sets)."""
        return sum(len(table) for table in self._tables.values()) + len(self._leases)

    def _table(self, algorithm: str, rate: Rate) -> _Table:
        table = self._tables.get((algorithm, rate))
        if table is None:
            table = self._tables.setdefault((algorithm, rate), {})
        return table

    def _sweep_step(self, now: float) -> None:
        """Check the next batch of keys of the current pass; start a new pass when done."""
        self._operations = 0
        batch = 2 * self._sweep_every
        pending = self._pending
        if not pending:
            for (algorithm, rate), table in self._tables.items():
                pending.extend((table, key, algorithm, rate) for key in table)
        for _ in range(min(batch, len(pending))):
            table, key, algorithm, rate = pending.pop()
            if key in table and expires_at(algorithm, table[key], rate) <= now:
                del table[key]
        pending_leases, leases = self._pending_leases, self._leases
        if not pending_leases:
            pending_leases.extend(leases)
        for _ in range(min(batch, len(pending_leases))):
            lease_key = pending_leases.pop()
            held = leases.get(lease_key)
            if held is not None and all(until <= now for until in held.values()):
                del leases[lease_key]

    def single(self, algorithm: str, rate: Rate) -> Callable[[str, int], Decision]:
        """Return a function deciding ``(key, cost)`` under one rate: the fast path of limiters.

        The same decisions as :meth:`decide` with ``rates=(rate,)``, minus the generic
        bookkeeping (a memory limiter's whole decision costs about a microsecond).

        Raises:
            ValueError: For an unknown ``algorithm``.
            TypeError: For a ``rate`` that is not a :class:`Rate`.
        """
        _check_algorithm(algorithm)
        if not isinstance(rate, Rate):
            raise TypeError(f"rate must be a Rate, got {rate!r}")
        step, take = STEPS[algorithm]
        table = self._table(algorithm, rate)
        now, limit, sweep_every = self._now, rate.limit, self._sweep_every
        # The lock's bound methods, not ``with``: entering and leaving a with-block costs about
        # a thousand instructions more, a tenth of the whole decision.
        acquire, release = self._lock.acquire, self._lock.release
        operations = 0  # this function's own count towards the next sweep step

        def decide_one(key: str, cost: int) -> Decision:
            nonlocal operations
            acquire()
            try:
                at = now()
                state = table.get(key)
                fits, remaining, reset, retry, after = step(state, rate, at, cost)
                if fits:
                    table[key] = after if take is None else take(state, rate, at, cost)
                operations += 1
                if operations >= sweep_every:
                    operations = 0
                    self._sweep_step(at)
            finally:
                release()
            return Decision(
                fits,
                limit,
                remaining if remaining > 0 else 0,
                reset if reset > 0.0 else 0.0,
                None if fits else (retry if retry > 0.0 else 0.0),
                rate,
            )

        return decide_one

    def several(self, algorithm: str, rates: tuple[Rate, ...]) -> Callable[[str, int], Decision]:
        """Return a function deciding ``(key, cost)`` under several rates, all or nothing.

        The same decisions as :meth:`decide` with these ``rates``, with the work that does not
        depend on the request done once here: the rates made distinct and their tables found
        (each look-up hashes a rate). The fast path of limiters with several limits, such as
        the chapter's ``"100 per day; 10 per hour"``.

        Raises:
            ValueError: For an unknown ``algorithm``, or no rates.
            TypeError: For ``rates`` that are not a tuple of :class:`Rate`.
        """
        _check_algorithm(algorithm)
        if not isinstance(rates, tuple) or not all(isinstance(rate, Rate) for rate in rates):
            raise TypeError(f"rates must be a tuple of Rate, got {rates!r}")
        if not rates:
            raise ValueError("rates must hold at least one Rate")
        rates = tuple(dict.fromkeys(rates))  # a rate given twice is one limit
        tables = [self._table(algorithm, rate) for rate in rates]
        now, sweep_every = self._now, self._sweep_every
        acquire, release = self._lock.acquire, self._lock.release  # as in single()
        operations = 0  # this function's own count towards the next sweep step

        def decide_several(key: str, cost: int) -> Decision:
            nonlocal operations
            acquire()
            try:
                at = now()
                states = [table.get(key) for table in tables]
                decision = decide(algorithm, states, rates, at, cost)
                if decision.allowed:  # decide() put each admitted state in ``states``
                    for table, state in zip(tables, states, strict=True):
                        table[key] = state
                operations += 1
                if operations >= sweep_every:
                    operations = 0
                    self._sweep_step(at)
            finally:
                release()
            return decision

        return decide_several

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
        if len(set(rates)) < len(rates):  # a rate given twice is one limit
            rates = tuple(dict.fromkeys(rates))
        with self._lock:
            at = self._now() if now is None else now
            tables = [self._table(algorithm, rate) for rate in rates]
            found = [table.get(key) for table in tables]
            decision = decide(algorithm, found, rates, at, cost, consume=consume)
            if consume and decision.allowed:
                for table, state in zip(tables, found, strict=True):
                    table[key] = state
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
                self._table(algorithm, rate).pop(key, None)

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
            for table in self._tables.values():
                table.clear()
            self._leases.clear()
            self._pending.clear()
            self._pending_leases.clear()

    def __repr__(self) -> str:
        return f"MemoryStorage(keys={len(self)})"
