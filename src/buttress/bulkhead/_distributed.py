"""The distributed bulkhead: one limit on calls in flight, shared by every process.

A thin front over :class:`~buttress.ratelimit.ConcurrencyLimit`: each slot is a lease in its
store (Redis for several processes), given back on release, or by its TTL if the holder dies.
This module adds the bulkhead's face: ``BulkheadFull`` refusals with data, a bound on local
waiters, the deadline, statistics and events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from buttress import _events
from buttress._errors import BulkheadFull, RateLimited
from buttress._events import Listener, check_listeners, emit
from buttress._types import Duration, check_int, check_name, seconds_or_none
from buttress.bulkhead._events import BulkheadRejected
from buttress.bulkhead._guard import SlotGuard
from buttress.bulkhead._semaphore import BulkheadStats, wait_limit
from buttress.ratelimit._limiter import ConcurrencyLimit, Permit

__all__ = ["DistributedBulkhead"]

_log = logging.getLogger("buttress.bulkhead")


class DistributedBulkhead(SlotGuard):
    """At most ``limit.limit`` calls at once on ``key``, across every process sharing the store.

    Waiting polls the store (see :class:`~buttress.ratelimit.ConcurrencyLimit`); ``max_waiting``
    bounds the callers of *this process* that wait. A holder that lives longer than the lease
    renews it with :meth:`~buttress.ratelimit.Permit.renew`.

    Args:
        limit: The concurrency limit holding the slots, e.g.
            ``ConcurrencyLimit(10, storage="redis://...", lease=30)``.
        key: The limited key in the store (several bulkheads may share one limit with their own
            keys).
        max_waiting: The most callers of this process waiting for a slot (``>= 0``); ``0``
            refuses at once when every slot is taken.
        max_wait: The longest a caller waits, in seconds; ``None`` waits as long as it takes.
        name: The name in errors, events and logs (default: the limit's name).
        listeners: Callables receiving this bulkhead's events.

    Raises:
        TypeError, ValueError: At construction, for arguments of the wrong type or out of range.
    """

    __slots__ = (
        "_lock",
        "_rejected",
        "_waiting",
        "key",
        "limit",
        "listeners",
        "max_wait",
        "max_waiting",
        "name",
    )

    def __init__(
        self,
        limit: ConcurrencyLimit,
        *,
        key: str = "bulkhead",
        max_waiting: int = 0,
        max_wait: Duration | None = None,
        name: str | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        if not isinstance(limit, ConcurrencyLimit):
            raise TypeError(f"limit must be a ConcurrencyLimit, got {type(limit).__name__}")
        self.limit = limit
        self.key = check_name(key, "key")
        self.max_waiting = check_int(max_waiting, "max_waiting", minimum=0)
        self.max_wait = seconds_or_none(max_wait, "max_wait")
        self.name = limit.name if name is None else check_name(name)
        self.listeners = check_listeners(listeners)
        self._lock = threading.Lock()
        self._waiting = 0
        self._rejected = 0

    def __repr__(self) -> str:
        return f"DistributedBulkhead({self.limit!r}, key={self.key!r}, name={self.name!r})"

    @property
    def max_concurrent(self) -> int:
        """The most calls in flight at once, over every process."""
        return self.limit.limit

    def stats(self) -> BulkheadStats:
        """Return the bulkhead's numbers: ``in_use`` counts the holders of every process.

        Raises:
            StorageError: If the store fails.
        """
        in_use = self.limit.in_flight(self.key)
        return BulkheadStats(
            self.name,
            self.max_concurrent,
            in_use,
            max(0, self.max_concurrent - in_use),
            self._waiting,
            self.max_waiting,
            self._rejected,
        )

    def _refuse(self, reason: str, detail: str = "") -> BulkheadFull:
        with self._lock:
            self._rejected += 1
            waiting = self._waiting
        if self.listeners or _events._global or _log.isEnabledFor(logging.INFO):  # noqa: SLF001
            emit(
                BulkheadRejected(
                    self.name, reason, self.max_concurrent, self.max_concurrent, waiting, self.key
                ),
                self.listeners,
            )
        return BulkheadFull(
            f"{self.name} {self.key!r}: all {self.max_concurrent} slots are in use"
            + (f"; {detail}" if detail else ""),
            name=self.name,
            limit=self.max_concurrent,
            waiting=waiting,
            reason=reason,
        )

    def _join(self, limit: float | None) -> bool:
        """Take a place among this process's waiters, if there is one."""
        with self._lock:
            if self._waiting >= self.max_waiting or (limit is not None and limit <= 0):
                return False
            self._waiting += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._waiting -= 1

    def try_acquire(self) -> Permit | None:
        """Take a slot now if one is free in the store (a refusal is counted).

        Returns:
            A :class:`~buttress.ratelimit.Permit`, or ``None``.
        """
        permit = self.limit.try_acquire(self.key)
        if permit is None:
            self._refuse("full")
        return permit

    def acquire(self, timeout: Duration | None = None) -> Permit:
        """Take a slot, waiting (this thread, polling the store) if the bulkhead allows waiting.

        Args:
            timeout: The longest to wait; ``None`` uses ``max_wait``. Waiting also ends at the
                current deadline.

        Returns:
            A :class:`~buttress.ratelimit.Permit`; use it as ``with bulkhead.acquire():``.

        Raises:
            BulkheadFull: If no slot was free and the caller could not wait, or the wait ended.
        """
        limit, by_deadline = wait_limit(self.max_wait, timeout)
        permit = self.limit.try_acquire(self.key)
        if permit is not None:
            return permit
        if not self._join(limit):
            raise self._refuse("full")
        try:
            return self.limit.acquire(self.key, timeout=limit)
        except RateLimited:
            pass
        finally:
            self._leave()
        raise self._refuse(
            "deadline" if by_deadline else "wait-timeout", f"waited {limit or 0.0:g} s"
        )

    async def aacquire(self, timeout: Duration | None = None) -> Permit:
        """The coroutine form of :meth:`acquire`; cancelling it while it waits takes no slot.

        Raises:
            BulkheadFull: As for :meth:`acquire`.
        """
        limit, by_deadline = wait_limit(self.max_wait, timeout)
        permit = await self.limit.atry_acquire(self.key)
        if permit is not None:
            return permit
        if not self._join(limit):
            raise self._refuse("full")
        try:
            return await self.limit.aacquire(self.key, timeout=limit)
        except RateLimited:
            pass
        finally:
            self._leave()
        raise self._refuse(
            "deadline" if by_deadline else "wait-timeout", f"waited {limit or 0.0:g} s"
        )

    def _enter(self) -> Permit:
        return self.acquire()

    async def _aenter(self) -> Permit:
        return await self.aacquire()
