"""The event a :class:`~buttress.timeout.TimeLimit` emits (logger ``buttress.timeout``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from buttress._events import Event

__all__ = ["TimedOut"]


@dataclass(frozen=True, slots=True)
class TimedOut(Event):
    """A call ran out of time and :class:`~buttress.Timeout` was raised.

    Attributes:
        target: What was called.
        timeout: The limit's length in seconds.
        how: ``"cancelled"`` (a coroutine, cancelled), ``"abandoned"`` (a thread, left to
            finish on its own) or ``"not started"`` (the deadline had passed already).
        deadline_of: The name of the policy whose deadline ran out (an enclosing one may come
            first).
    """

    logger_name: ClassVar[str] = "buttress.timeout"

    target: str
    timeout: float
    how: str
    deadline_of: str

    @property
    def log_level(self) -> int:
        """WARNING: a call that runs out of time is worth seeing."""
        return logging.WARNING

    def describe(self) -> str:
        """Say what timed out and what became of it."""
        return (
            f"{self.policy}: {self.target} timed out after {self.timeout:g} s ({self.how}; the "
            f"deadline of {self.deadline_of})"
        )
