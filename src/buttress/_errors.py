"""The exceptions buttress raises, all under one root.

The tree::

    ButtressError                 every exception raised by buttress itself
    ├── Rejected                  a policy refused the call before running it (carries data)
    │   ├── RateLimited           a rate limit is exhausted
    │   ├── CircuitOpen           a circuit breaker is open
    │   ├── BulkheadFull          no concurrency slot (or queue place) is free
    │   └── RetryBudgetExhausted  the retry budget refused a retry (also a RetryExhausted)
    ├── RetryExhausted            results kept failing the retry's result predicate
    ├── Timeout                   a time limit passed (also the builtin TimeoutError)
    ├── StorageError              a backing store (e.g. Redis) failed or did not answer
    └── ConfigurationError        bad configuration (also the builtin ValueError)

buttress never wraps or swallows *your* exceptions: a retry that gives up re-raises the last
exception your code raised, with a note (PEP 678) saying how many attempts were made and over how
long. :class:`RetryExhausted` is raised only when there is no exception to re-raise, i.e. when the
*results* kept failing a ``retry_if_result`` predicate.

Every exception here pickles with its data (for process pools and task queues).
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "BulkheadFull",
    "ButtressError",
    "CircuitOpen",
    "ConfigurationError",
    "RateLimited",
    "Rejected",
    "RetryBudgetExhausted",
    "RetryExhausted",
    "StopReason",
    "StorageError",
    "Timeout",
]

StopReason = Literal["attempts", "timeout", "budget"]
"""Why a retry gave up: the attempts ran out, the time budget ran out, or the retry budget did."""


def _restore(cls: type[ButtressError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ButtressError(Exception):
    """The root of every exception raised by buttress itself."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduction re-calls __init__ with ``self.args`` only, losing the
        # keyword-only data subclasses carry; restore the instance dict instead.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class Rejected(ButtressError):
    """A policy refused to run the call at all.

    Args:
        message: What happened, for people.
        name: The name of the policy that refused, if it has one.
        retry_after: Seconds after which the same call may be admitted, when known.
    """

    def __init__(
        self, message: str, *, name: str | None = None, retry_after: float | None = None
    ) -> None:
        Exception.__init__(self, message)  # not super(): rejections are built on hot paths
        self.name = name
        self.retry_after = retry_after


class RateLimited(Rejected):
    """A rate limit is exhausted; ``retry_after`` says when a request will be admitted."""


class CircuitOpen(Rejected):
    """A circuit breaker is open; ``retry_after`` says when a trial call will be allowed."""


class BulkheadFull(Rejected):
    """A bulkhead has no free slot and no free place in its queue (or waited too long for one).

    Args:
        message: What happened, for people.
        name: The name of the bulkhead that refused.
        retry_after: Seconds after which a slot may be free, when known (usually not).
        limit: The bulkhead's size: the most calls it runs at once.
        in_use: The slots taken when the call was refused.
        waiting: The callers waiting for a slot when the call was refused.
        reason: ``"full"`` (no slot, no place to wait), ``"wait-timeout"`` (waited the longest
            allowed), ``"deadline"`` (the enclosing deadline came first) or ``"too-many-keys"``.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        retry_after: float | None = None,
        limit: int | None = None,
        in_use: int | None = None,
        waiting: int | None = None,
        reason: str = "full",
    ) -> None:
        Exception.__init__(self, message)  # not super(): rejections are built on hot paths
        self.name = name
        self.retry_after = retry_after
        self.limit = limit
        self.in_use = in_use
        self.waiting = waiting
        self.reason = reason


class RetryExhausted(ButtressError):
    """Retries ended while the result still failed the ``retry_if_result`` predicate.

    Args:
        message: What happened, for people.
        last_result: The result of the last attempt.
        attempts: How many attempts were made.
        elapsed: Seconds from the first attempt's start to giving up.
        reason: Why the retry stopped (``"attempts"``, ``"timeout"`` or ``"budget"``).
    """

    def __init__(
        self,
        message: str,
        *,
        last_result: Any,
        attempts: int,
        elapsed: float,
        reason: StopReason,
    ) -> None:
        super().__init__(message)
        self.last_result = last_result
        self.attempts = attempts
        self.elapsed = elapsed
        self.reason: StopReason = reason


class RetryBudgetExhausted(Rejected, RetryExhausted):
    """The shared retry budget refused a retry while results kept failing the predicate.

    When the failure was an exception, that exception is re-raised instead (with a note), so this
    is only seen with ``retry_if_result``. It is both a :class:`Rejected` and a
    :class:`RetryExhausted`.
    """

    def __init__(
        self,
        message: str,
        *,
        last_result: Any,
        attempts: int,
        elapsed: float,
        name: str | None = None,
    ) -> None:
        RetryExhausted.__init__(
            self,
            message,
            last_result=last_result,
            attempts=attempts,
            elapsed=elapsed,
            reason="budget",
        )
        self.name = name
        self.retry_after = None


class Timeout(ButtressError, TimeoutError):
    """A time limit passed. It is also a builtin :class:`TimeoutError`."""


class StorageError(ButtressError):
    """A backing store (Redis, ...) failed, refused, or did not answer in time."""


class ConfigurationError(ButtressError, ValueError):
    """A policy was configured wrongly. It is also a builtin :class:`ValueError`."""


def _circuit_open(message: str, name: str, retry_after: float) -> CircuitOpen:
    """Build a CircuitOpen on the hot path: no Python-level __init__ call, same instance."""
    error = _new(CircuitOpen, message)
    error.name = name
    error.retry_after = retry_after
    return error


_new = CircuitOpen.__new__
