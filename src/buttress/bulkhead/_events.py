"""The events the bulkheads emit (logger ``buttress.bulkhead``).

Admissions and releases build no event (they are the hot path); refusals and abandoned calls do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from buttress._events import Event

__all__ = ["BulkheadCallAbandoned", "BulkheadEvent", "BulkheadRejected"]


@dataclass(frozen=True, slots=True)
class BulkheadEvent(Event):
    """The base of the bulkhead events."""

    logger_name: ClassVar[str] = "buttress.bulkhead"


@dataclass(frozen=True, slots=True)
class BulkheadRejected(BulkheadEvent):
    """A call was refused a slot.

    Attributes:
        reason: ``"full"``, ``"wait-timeout"``, ``"deadline"`` or ``"too-many-keys"`` (see
            :class:`~buttress.BulkheadFull`).
        limit: The bulkhead's size.
        in_use: Slots taken at the refusal.
        waiting: Callers waiting at the refusal.
        key: The key, for keyed and distributed bulkheads (``None`` otherwise).
    """

    reason: str
    limit: int
    in_use: int
    waiting: int
    key: str | None = None

    @property
    def log_level(self) -> int:
        """INFO: refusals are what a bulkhead is for, but worth seeing."""
        return logging.INFO

    def describe(self) -> str:
        """Say why the call was refused and how full the bulkhead was."""
        key = f" {self.key!r}" if self.key is not None else ""
        return (
            f"{self.policy}{key}: call refused ({self.reason}); {self.in_use}/{self.limit} in use, "
            f"{self.waiting} waiting"
        )


@dataclass(frozen=True, slots=True)
class BulkheadCallAbandoned(BulkheadEvent):
    """A caller stopped waiting for a call in a thread-pool bulkhead (timed out or cancelled).

    Attributes:
        target: What was called.
        running: ``True`` if the call was already running: it goes on in its thread and keeps
            its slot until it ends. ``False`` if it was still queued: it was dropped, never run.
    """

    target: str
    running: bool

    @property
    def log_level(self) -> int:
        """WARNING when a thread is left running (it holds a slot nobody waits for)."""
        return logging.WARNING if self.running else logging.INFO

    def describe(self) -> str:
        """Say what happened to the call."""
        what = "still running, its slot held until it ends" if self.running else "dropped"
        return f"{self.policy}: caller stopped waiting for {self.target}; {what}"
