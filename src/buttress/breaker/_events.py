"""The events a :class:`~buttress.CircuitBreaker` emits (logger ``buttress.breaker``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

from buttress._events import Event
from buttress.breaker._machine import State

__all__ = [
    "BreakerCall",
    "BreakerEvent",
    "BreakerStateChanged",
    "BreakerStoreDegraded",
    "BreakerStoreRecovered",
    "CallOutcome",
]

CallOutcome = Literal["success", "failure", "ignored", "rejected"]
"""How a call through a breaker ended."""


@dataclass(frozen=True, slots=True)
class BreakerEvent(Event):
    """The base of the breaker events."""

    logger_name: ClassVar[str] = "buttress.breaker"


@dataclass(frozen=True, slots=True)
class BreakerStateChanged(BreakerEvent):
    """The breaker changed state.

    Attributes:
        old: The state before.
        new: The state after.
        reason: Why, in words.
        open_for: For a change to OPEN, seconds until a trial call is allowed.
    """

    old: State
    new: State
    reason: str
    open_for: float | None = None

    @property
    def log_level(self) -> int:
        """WARNING when the breaker opens, INFO otherwise."""
        return logging.WARNING if self.new in (State.OPEN, State.FORCED_OPEN) else logging.INFO

    def describe(self) -> str:
        """Say what changed and why."""
        after = f"; trial calls in {self.open_for:.2f} s" if self.open_for is not None else ""
        return f"{self.policy}: {self.old} -> {self.new} ({self.reason}){after}"


@dataclass(frozen=True, slots=True)
class BreakerCall(BreakerEvent):
    """A call through the breaker ended (emitted only when a listener is registered).

    Attributes:
        outcome: ``success``, ``failure``, ``ignored`` or ``rejected``.
        state: The breaker's state when the call was admitted (or rejected).
        duration: Seconds the call took (``None`` when not measured or rejected).
        error: The exception, for failures, ignored exceptions and rejections.
    """

    outcome: CallOutcome
    state: State
    duration: float | None = None
    error: BaseException | None = None

    def describe(self) -> str:
        """Say how the call ended."""
        error = f": {type(self.error).__name__}" if self.error is not None else ""
        return f"{self.policy}: call {self.outcome} in state {self.state}{error}"


@dataclass(frozen=True, slots=True)
class BreakerStoreDegraded(BreakerEvent):
    """A shared breaker lost its store; it runs on this process's own state until it returns.

    Attributes:
        error: The store's error.
        retry_in: Seconds until the store is tried again.
    """

    error: BaseException
    retry_in: float

    @property
    def log_level(self) -> int:
        """ERROR: this process no longer shares the breaker's state."""
        return logging.ERROR

    def describe(self) -> str:
        """Say what failed and what happens now."""
        return (
            f"{self.policy}: store failed ({type(self.error).__name__}: {self.error}); running on "
            f"local state, retrying the store in {self.retry_in:.1f} s"
        )


@dataclass(frozen=True, slots=True)
class BreakerStoreRecovered(BreakerEvent):
    """A shared breaker's store answers again; the process rejoined the shared state.

    Attributes:
        down_for: Seconds the breaker ran on local state.
    """

    down_for: float

    @property
    def log_level(self) -> int:
        """WARNING: worth seeing next to the error that started it."""
        return logging.WARNING

    def describe(self) -> str:
        """Say that the shared state is back."""
        return f"{self.policy}: store recovered after {self.down_for:.1f} s; shared state rejoined"
