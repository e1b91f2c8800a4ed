"""The events a :class:`~buttress.hedge.Hedge` emits (logger ``buttress.hedge``).

A call that is answered before the hedging delay builds no event (it is the hot path). Each hedge
sent is announced by :class:`HedgeSent`; a hedge whose answer is the one returned by
:class:`HedgeWon`; a hedge that was due but not sent (the budget or the thread bound said no) by
:class:`HedgeRefused`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from buttress._events import Event

__all__ = ["HedgeEvent", "HedgeRefused", "HedgeSent", "HedgeWon"]


@dataclass(frozen=True, slots=True)
class HedgeEvent(Event):
    """The base of the hedge events.

    Attributes:
        target: What was called: a function's qualified name, or ``"GET https://host:443"``
            (method and origin, never the path or query) for the HTTP integrations.
        attempt: The number of the attempt concerned (1 is the first, 2 the first hedge, ...).
    """

    logger_name: ClassVar[str] = "buttress.hedge"

    target: str
    attempt: int


@dataclass(frozen=True, slots=True)
class HedgeSent(HedgeEvent):
    """The attempts in flight were slow: another attempt (number ``attempt``) was started.

    Attributes:
        delay: The hedging delay that passed without a good answer, in seconds.
        elapsed: Seconds since the call began.
    """

    delay: float
    elapsed: float

    def describe(self) -> str:
        """Say which hedge was sent, and after how long."""
        return (
            f"{self.policy} {self.target}: no good answer after {self.elapsed:.3f} s; "
            f"sent hedge (attempt {self.attempt})"
        )


@dataclass(frozen=True, slots=True)
class HedgeWon(HedgeEvent):
    """A hedge (attempt number ``attempt``, 2 or more) gave the answer that was returned.

    Attributes:
        elapsed: Seconds from the start of the call to the answer.
        latency: Seconds the winning attempt took.
    """

    elapsed: float
    latency: float

    def describe(self) -> str:
        """Say which hedge won, and when."""
        return (
            f"{self.policy} {self.target}: hedge (attempt {self.attempt}) answered first, "
            f"after {self.elapsed:.3f} s"
        )


@dataclass(frozen=True, slots=True)
class HedgeRefused(HedgeEvent):
    """A hedge (it would have been attempt number ``attempt``) was due but not sent.

    Attributes:
        reason: ``"budget"`` (the hedging budget is spent) or ``"threads"`` (a synchronous call
            found every thread of the hedge busy, see ``max_threads``).
        elapsed: Seconds since the call began.
    """

    reason: str
    elapsed: float

    @property
    def log_level(self) -> int:
        """INFO: the budget (or the thread bound) is holding hedges back, worth seeing."""
        return logging.INFO

    def describe(self) -> str:
        """Say which hedge was refused, and why."""
        return (
            f"{self.policy} {self.target}: hedge (attempt {self.attempt}) refused after "
            f"{self.elapsed:.3f} s: {self.reason}"
        )
