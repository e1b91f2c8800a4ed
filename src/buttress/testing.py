"""Helpers for testing code that uses buttress: a fake clock and instant retry waits.

:class:`FakeClock` is a :class:`~buttress.Clock` whose sleeps return at once and move its time
forward, so tests of waits, windows and timeouts run in microseconds and always the same way::

    clock = FakeClock()
    policy = Retry(attempts=3, wait=WaitFixed(2), clock=clock)
    ...
    assert clock.sleeps == [2.0, 2.0]

:func:`instant_waits` makes the waits of *every* policy instant while it is active, recording the
delays that would have been used, for code whose policies you do not construct yourself::

    with instant_waits() as waits:
        client.fetch()          # retried inside, without sleeping
    assert waits.delays == [0.1, 0.2]

A pytest fixture, ``buttress_instant_waits``, wraps it (the plugin is registered through an entry
point, so it is there once buttress is installed).
"""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import timedelta
from types import TracebackType

from buttress._clock import pop_wait_recorder, push_wait_recorder
from buttress._types import seconds as _seconds

__all__ = ["FakeClock", "InstantWaits", "instant_waits"]


class FakeClock:
    """A clock for tests: ``now()`` moves only when told to or when something sleeps.

    Thread-safe. ``sleep``/``sleep_async`` advance the time by the duration at once and record it
    in :attr:`sleeps`; ``sleep_async`` still yields to the event loop once, as a real sleep would.

    Args:
        start: The initial reading of :meth:`now`.
    """

    __slots__ = ("_lock", "_now", "sleeps")

    def __init__(self, start: float = 0.0) -> None:
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise TypeError(f"start must be a number, got {type(start).__name__}")
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number, got {start!r}")
        self._lock = threading.Lock()
        self._now = float(start)
        self.sleeps: list[float] = []
        """Every duration passed to ``sleep`` or ``sleep_async``, in order."""

    def now(self) -> float:
        """Return the current fake time."""
        return self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move the time forward by ``seconds`` (``>= 0``, or a ``timedelta``)."""
        amount = _seconds(seconds, "seconds")
        with self._lock:
            self._now += amount

    def sleep(self, seconds: float | timedelta) -> None:
        """Record the sleep and advance the time by it, returning at once."""
        amount = _seconds(seconds, "seconds")
        with self._lock:
            self.sleeps.append(amount)
            self._now += amount

    async def sleep_async(self, seconds: float | timedelta) -> None:
        """Record the sleep and advance the time by it; yields to the loop once."""
        self.sleep(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


class InstantWaits:
    """The record kept by :func:`instant_waits`: every wait that was skipped.

    Attributes:
        waits: ``(policy name, delay)`` pairs, in the order the waits would have started.
    """

    __slots__ = ("_active", "_lock", "waits")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = False
        self.waits: list[tuple[str, float]] = []

    @property
    def delays(self) -> list[float]:
        """The delays alone, in order."""
        with self._lock:
            return [delay for _, delay in self.waits]

    def __call__(self, policy: str, delay: float) -> None:
        """Record one skipped wait (policies call this)."""
        with self._lock:
            self.waits.append((policy, delay))

    def __enter__(self) -> InstantWaits:
        if self._active:
            raise RuntimeError("this instant_waits() is already active")
        self._active = True
        push_wait_recorder(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False
        pop_wait_recorder(self)

    def __repr__(self) -> str:
        return f"InstantWaits(delays={self.delays})"


def instant_waits() -> InstantWaits:
    """Make every policy's waits instant until the ``with`` block ends, recording them.

    Applies to all threads and tasks (the record is thread-safe); nesting is allowed and the
    innermost record receives the waits. Leaving the block restores the previous state. Skipped
    waits still count towards a policy's ``timeout``, so time budgets behave as in production.

    Returns:
        An :class:`InstantWaits`, to use as ``with instant_waits() as waits:``.
    """
    return InstantWaits()
