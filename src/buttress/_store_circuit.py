"""A circuit around a shared store, so that an outage costs one timeout, not one per call.

Used by the rate limiters and the shared circuit breakers: after ``failures`` store failures in a
row, the store is left alone for ``cooldown`` seconds; then exactly one caller tries it again. A
degraded and a recovered event (made by the owner's factories) mark each change.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from buttress._clock import Clock
from buttress._events import Event, Listener, emit

__all__ = ["StoreCircuit"]


class StoreCircuit:
    """Whether to call a store now, and the bookkeeping of its failures. Thread-safe.

    Args:
        failures: Failures in a row that leave the store alone for a cooldown.
        cooldown: Seconds the store is left alone.
        clock: The time source.
        degraded: Makes the event of the first failure, from the error and the seconds until
            the store is tried again.
        recovered: Makes the event of the recovery, from the seconds the store was down.
        listeners: The owner's listeners.
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "_degraded",
        "_down_since",
        "_failures",
        "_limit_failures",
        "_listeners",
        "_lock",
        "_open",
        "_open_until",
        "_recovered",
        "healthy",
    )

    def __init__(
        self,
        failures: int,
        cooldown: float,
        clock: Clock,
        degraded: Callable[[BaseException, float], Event],
        recovered: Callable[[float], Event],
        listeners: tuple[Listener, ...],
    ) -> None:
        self._limit_failures = failures
        self._cooldown = cooldown
        self._clock = clock
        self._degraded = degraded
        self._recovered = recovered
        self._listeners = listeners
        self._lock = threading.Lock()
        self._failures = 0  # failures in a row while closed
        self._open = False  # True: the store is left alone until _open_until
        self._open_until = -math.inf
        self._down_since: float | None = None
        # True while nothing is recorded against the store (no failure, circuit closed, not
        # down): then available() is True and succeeded() has nothing to do, so a caller on
        # the common path may read this one attribute instead of calling them.
        self.healthy = True

    @property
    def down(self) -> bool:
        """Whether the store failed and has not answered since."""
        return self._down_since is not None

    def available(self) -> bool:
        """Whether this call may use the store.

        While the circuit is open, no; once the cooldown has passed, exactly one caller gets to
        try (the others keep answering without the store until that trial succeeds or fails).
        """
        if not self._open:
            return True
        now = self._clock.now()
        if now < self._open_until:
            return False
        with self._lock:
            if self._open and now >= self._open_until:
                self._open_until = now + self._cooldown  # this caller is the trial
                return True
        return False

    def succeeded(self) -> None:
        """Record a store call that answered."""
        if self._failures or self._open or self._down_since is not None:
            with self._lock:
                self._failures = 0
                self._open = False
                self._open_until = -math.inf
                since, self._down_since = self._down_since, None
                self.healthy = True
            if since is not None:
                emit(self._recovered(self._clock.now() - since), self._listeners)

    def failed(self, error: BaseException) -> None:
        """Record a store failure; open the circuit after too many in a row, or a failed trial."""
        now = self._clock.now()
        with self._lock:
            self.healthy = False
            self._failures += 1
            if self._open or self._failures >= self._limit_failures:
                self._open = True
                self._open_until = now + self._cooldown
                self._failures = 0
            retry_in = max(0.0, self._open_until - now)
            announce = self._down_since is None
            if announce:
                self._down_since = now
        if announce:
            emit(self._degraded(error, retry_in), self._listeners)

    def retry_in(self) -> float:
        """Seconds until the store will be tried again."""
        return max(0.0, self._open_until - self._clock.now())
