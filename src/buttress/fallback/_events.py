"""The event a :class:`~buttress.fallback.Fallback` emits (logger ``buttress.fallback``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from buttress._events import Event

__all__ = ["FallbackUsed"]


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """A call failed and the fallback answered instead.

    Attributes:
        target: What was called.
        error: The exception that was replaced, or ``None`` when a result was.
        result: The result that failed ``on_result`` (``None`` when ``error`` is set).
    """

    logger_name: ClassVar[str] = "buttress.fallback"

    target: str
    error: BaseException | None
    result: Any = None

    @property
    def log_level(self) -> int:
        """INFO: the caller got a substitute, worth a line."""
        return logging.INFO

    def describe(self) -> str:
        """Say what was replaced."""
        if self.error is not None:
            what = (
                f"{type(self.error).__name__}: {self.error}"
                if str(self.error)
                else type(self.error).__name__
            )
        else:
            what = f"result {self.result!r}"
        return f"{self.policy}: {self.target} failed with {what}; fallback used"
