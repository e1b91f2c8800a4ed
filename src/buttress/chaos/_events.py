"""The event a :class:`~buttress.chaos.ChaosPolicy` emits (logger ``buttress.chaos``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from buttress._events import Event

__all__ = ["ChaosInjected"]


@dataclass(frozen=True, slots=True)
class ChaosInjected(Event):
    """A fault was injected into a call.

    Attributes:
        target: What was called (a function's name, or the request for the HTTP integrations).
        latency: Seconds of delay injected (``0.0`` for none).
        fault: ``"error"``, ``"result"`` or ``"latency"`` (latency alone, then the real call).
    """

    logger_name: ClassVar[str] = "buttress.chaos"

    target: str
    latency: float
    fault: str

    @property
    def log_level(self) -> int:
        """INFO: injected faults are deliberate, but worth seeing next to their effects."""
        return logging.INFO

    def describe(self) -> str:
        """Say what was injected where."""
        return (
            f"{self.policy}: injected {self.fault} ({self.latency:.3f} s delay) into {self.target}"
        )
