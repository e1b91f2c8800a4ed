"""The events an :class:`~buttress.AdaptiveConcurrency` emits (logger ``buttress.adaptive``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from buttress._events import Event

__all__ = ["AdaptiveEvent", "AdaptiveLimitChanged", "AdaptiveRejected"]


@dataclass(frozen=True, slots=True)
class AdaptiveEvent(Event):
    """The base of the adaptive concurrency events."""

    logger_name: ClassVar[str] = "buttress.adaptive"


@dataclass(frozen=True, slots=True)
class AdaptiveLimitChanged(AdaptiveEvent):
    """A sample moved the concurrency limit.

    Attributes:
        old: The limit before.
        new: The limit after.
        rtt: The sample's round-trip time in seconds.
        inflight: Requests in flight when the sampled request started, itself included.
        dropped: Whether the sampled request was dropped.
    """

    old: int
    new: int
    rtt: float
    inflight: int
    dropped: bool

    def describe(self) -> str:
        """Say how the limit moved and on what sample."""
        what = "dropped" if self.dropped else f"rtt {self.rtt * 1000:.2f} ms"
        return (
            f"{self.policy}: limit {self.old} -> {self.new}"
            f" ({what}, {self.inflight} in flight at start)"
        )


@dataclass(frozen=True, slots=True)
class AdaptiveRejected(AdaptiveEvent):
    """A call was refused: no slot under the current limit, nor a place to wait.

    Attributes:
        limit: The limit at the time.
        inflight: Requests in flight at the time.
        waited: Seconds the caller waited before being refused (0 for an immediate refusal).
    """

    limit: int
    inflight: int
    waited: float

    @property
    def log_level(self) -> int:
        """INFO: load is being shed."""
        return logging.INFO

    def describe(self) -> str:
        """Say what was full."""
        waited = f" after waiting {self.waited:.3f} s" if self.waited else ""
        return f"{self.policy}: rejected at {self.inflight}/{self.limit} in flight{waited}"
