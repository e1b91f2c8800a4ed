"""The events a :class:`~buttress.Retry` policy emits.

Every call through a policy ends with exactly one of :class:`RetrySucceeded`,
:class:`RetryGaveUp` or :class:`RetryFailed` (when something listens), and each retry is announced
by a :class:`RetryScheduled` before its wait. Together they carry each call's statistics:
attempts, time waited and time elapsed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from buttress._errors import StopReason
from buttress._events import Event

__all__ = ["RetryEvent", "RetryFailed", "RetryGaveUp", "RetryScheduled", "RetrySucceeded"]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _what(error: BaseException | None, result: Any) -> str:
    if error is not None:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"result {result!r}"


@dataclass(frozen=True, slots=True)
class RetryEvent(Event):
    """The base of the retry events.

    Attributes:
        target: What was called: the function's qualified name, or ``"<block>"`` for the
            ``for attempt in retrying(...)`` form.
        attempt: The number of the last attempt made (1 for the first).
        elapsed: Seconds since the first attempt started.
        waited: Seconds spent waiting between attempts so far.
    """

    logger_name: ClassVar[str] = "buttress.retry"

    target: str
    attempt: int
    elapsed: float
    waited: float


@dataclass(frozen=True, slots=True)
class RetryScheduled(RetryEvent):
    """An attempt failed and another will start after ``delay`` seconds.

    Attributes:
        delay: The wait before the next attempt.
        error: The exception the attempt raised, or ``None`` if its result failed the predicate.
        result: The result that failed ``retry_if_result`` (``None`` when ``error`` is set).
    """

    delay: float
    error: BaseException | None
    result: Any = None

    @property
    def log_level(self) -> int:
        """INFO: each retry is worth a line in the logs."""
        return logging.INFO

    def describe(self) -> str:
        """Say which attempt failed, with what, and when the next starts."""
        return (
            f"{self.policy} {self.target}: attempt {self.attempt} failed with "
            f"{_what(self.error, self.result)}; retrying in {self.delay:.2f} s"
        )


@dataclass(frozen=True, slots=True)
class RetrySucceeded(RetryEvent):
    """The call succeeded (on the first attempt or after retries)."""

    @property
    def log_level(self) -> int:
        """INFO after retries, DEBUG on the first attempt."""
        return logging.INFO if self.attempt > 1 else logging.DEBUG

    def describe(self) -> str:
        """Say after how many attempts and how long the call succeeded."""
        return (
            f"{self.policy} {self.target}: succeeded after {_plural(self.attempt, 'attempt')} "
            f"in {self.elapsed:.2f} s"
        )


@dataclass(frozen=True, slots=True)
class RetryGaveUp(RetryEvent):
    """The policy stopped retrying: attempts, time budget or retry budget ran out.

    Attributes:
        reason: ``"attempts"``, ``"timeout"`` or ``"budget"``.
        error: The last exception (re-raised to the caller), or ``None`` if results failed.
        result: The last result that failed ``retry_if_result`` (``None`` when ``error`` is set).
    """

    reason: StopReason
    error: BaseException | None
    result: Any = None

    @property
    def log_level(self) -> int:
        """WARNING: the caller is about to see a failure."""
        return logging.WARNING

    def describe(self) -> str:
        """Say why the policy gave up and what the last failure was."""
        why = {
            "attempts": "no attempts left",
            "timeout": "the next attempt would pass the timeout",
            "budget": "the retry budget is exhausted",
        }[self.reason]
        return (
            f"{self.policy} {self.target}: gave up after {_plural(self.attempt, 'attempt')} in "
            f"{self.elapsed:.2f} s ({why}); last failure: {_what(self.error, self.result)}"
        )


@dataclass(frozen=True, slots=True)
class RetryFailed(RetryEvent):
    """The call raised an exception the policy does not retry; it reaches the caller as it is.

    Attributes:
        error: The exception.
    """

    error: BaseException

    def describe(self) -> str:
        """Say which attempt raised what."""
        return (
            f"{self.policy} {self.target}: attempt {self.attempt} raised "
            f"{_what(self.error, None)}, which is not retried"
        )
