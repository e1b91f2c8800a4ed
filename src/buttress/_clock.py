"""Time as every policy sees it: the :class:`Clock` protocol and the real clock.

Policies never call :mod:`time` or :mod:`asyncio` directly; they take a ``clock`` so that tests can
substitute :class:`buttress.testing.FakeClock` and run waits of hours in microseconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = [
    "Clock",
    "SystemClock",
    "WaitRecorder",
    "active_wait_recorder",
    "check_clock",
    "pop_wait_recorder",
    "push_wait_recorder",
    "system_clock",
]


@runtime_checkable
class Clock(Protocol):
    """What a policy needs of time: a monotonic reading and two ways to sleep."""

    def now(self) -> float:
        """Return a monotonic time in seconds (only differences between readings mean anything)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` without blocking the event loop."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.sleep` and :func:`asyncio.sleep`."""

    __slots__ = ()

    # Bound straight to the C functions: the success path of a policy reads the clock on
    # every call, and an extra Python frame there would be most of its cost.
    now = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` (``asyncio.sleep``)."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


system_clock = SystemClock()
"""The shared real clock, the default of every policy. It holds no state."""


def check_clock(clock: object) -> None:
    """Check a ``clock`` argument provides what :class:`Clock` promises.

    Raises:
        TypeError: Naming the first method missing.
    """
    for method in ("now", "sleep", "sleep_async"):
        if not callable(getattr(clock, method, None)):
            raise TypeError(f"clock must provide {method}(), got {type(clock).__name__}")


# --- Instant waits for tests -------------------------------------------------------------------
# ``buttress.testing.instant_waits()`` pushes a recorder here; while one is active, policies
# record the delays they would have slept and return at once. A tuple replaced under a lock, so
# the hot path reads it without locking.

WaitRecorder = Callable[[str, float], None]
"""Receives (policy name, delay) for each wait skipped."""

_recorders_lock = threading.Lock()
_recorders: tuple[WaitRecorder, ...] = ()


def active_wait_recorder() -> WaitRecorder | None:
    """Return the innermost active instant-wait recorder, or ``None`` when waits are real."""
    recorders = _recorders
    return recorders[-1] if recorders else None


def push_wait_recorder(recorder: WaitRecorder) -> None:
    """Make waits instant, reporting them to ``recorder``, until :func:`pop_wait_recorder`."""
    global _recorders  # noqa: PLW0603 - replaced atomically, see above
    with _recorders_lock:
        _recorders = (*_recorders, recorder)


def pop_wait_recorder(recorder: WaitRecorder) -> None:
    """Remove ``recorder`` (wherever it is in the stack: exits may come out of order)."""
    global _recorders  # noqa: PLW0603 - replaced atomically, see above
    with _recorders_lock:
        items = list(_recorders)
        for index in range(len(items) - 1, -1, -1):
            if items[index] is recorder:
                del items[index]
                break
        _recorders = tuple(items)
