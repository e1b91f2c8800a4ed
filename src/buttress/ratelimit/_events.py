"""The events the rate limiters emit (logger ``buttress.ratelimit``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from buttress._events import Event
from buttress.ratelimit._decision import Decision

__all__ = ["LimiterEvent", "RateLimitDecided", "StoreDegraded", "StoreRecovered"]


@dataclass(frozen=True, slots=True)
class LimiterEvent(Event):
    """The base of the rate limiter events."""

    logger_name: ClassVar[str] = "buttress.ratelimit"


@dataclass(frozen=True, slots=True)
class RateLimitDecided(LimiterEvent):
    """A limiter decided a request (emitted only when a listener is registered).

    Attributes:
        key: The limited key.
        cost: The request's cost.
        decision: The answer.
        cached: ``True`` when the local rejection cache answered without asking the store.
    """

    key: str
    cost: int
    decision: Decision
    cached: bool = False

    def describe(self) -> str:
        """Say what was decided for which key."""
        d = self.decision
        verdict = "allowed" if d.allowed else f"rejected (retry after {d.retry_after:.2f} s)"
        return f"{self.policy} {self.key!r}: {verdict}; {d.remaining}/{d.limit} left of {d.rate}"


@dataclass(frozen=True, slots=True)
class StoreDegraded(LimiterEvent):
    """The store failed; the limiter answers by its ``on_store_error`` policy until it recovers.

    Attributes:
        mode: The policy now answering: ``fail-open``, ``fail-closed`` or ``local``.
        error: The store's error.
        retry_in: Seconds until the store is tried again: 0 when the first failures still try
            it on every call, until ``store_failures`` in a row leave it alone for a cooldown.
    """

    mode: str
    error: BaseException
    retry_in: float

    @property
    def log_level(self) -> int:
        """ERROR: decisions no longer come from the shared store."""
        return logging.ERROR

    def describe(self) -> str:
        """Say what failed and what answers now."""
        retry = (
            f"retrying the store in {self.retry_in:.1f} s"
            if self.retry_in > 0
            else "still trying the store on each request"
        )
        return (
            f"{self.policy}: store failed ({type(self.error).__name__}: {self.error}); answering "
            f"{self.mode}, {retry}"
        )


@dataclass(frozen=True, slots=True)
class StoreRecovered(LimiterEvent):
    """The store answers again after a failure.

    Attributes:
        down_for: Seconds the limiter was degraded.
    """

    down_for: float

    @property
    def log_level(self) -> int:
        """WARNING: worth seeing next to the error that started it."""
        return logging.WARNING

    def describe(self) -> str:
        """Say that the store is back."""
        return f"{self.policy}: store recovered after {self.down_for:.1f} s"
