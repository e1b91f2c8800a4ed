"""The retry policy: one object for decorators, direct calls and ``for attempt in ...`` blocks.

The decision of what to do after a failed attempt (:meth:`Retry._next_delay`) is pure logic over
a per-call :class:`_CallState`; the sync and async drivers below only run attempts, sleep and
report. A :class:`Retry` holds configuration only, so one instance serves any number of
functions, threads and tasks at once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from buttress import _events
from buttress._clock import Clock, active_wait_recorder, check_clock, system_clock
from buttress._deadline import Deadline, current_deadline
from buttress._errors import RetryBudgetExhausted, RetryExhausted, StopReason
from buttress._events import Listener, check_listeners, emit
from buttress._types import (
    NO_FALLBACK,
    Duration,
    check_exception_types,
    check_int,
    check_name,
    seconds,
    seconds_or_none,
)
from buttress.retry._budget import RetryBudget
from buttress.retry._events import RetryFailed, RetryGaveUp, RetryScheduled, RetrySucceeded
from buttress.retry._wait import Wait, WaitExponential, as_wait

__all__ = ["Attempt", "Attempts", "Retry", "retry", "retrying"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


_log = logging.getLogger("buttress.retry")
_ON_HINT = " (use retry_if= for a predicate on the exception)"

DEFAULT_WAIT = WaitExponential(initial=0.1, multiplier=2.0, max=10.0, jitter="full")
"""The default wait: exponential from 0.1 s, doubling, capped at 10 s, with full jitter."""


def _add_note(error: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:  # PEP 678 on 3.10: the attribute is honoured by exceptiongroup and pytest
        notes = getattr(error, "__notes__", None)
        error.__notes__ = [*(notes or ()), note]  # type: ignore[attr-defined]


def _plural(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _target_name(fn: object) -> str:
    """Name a called function for events and logs: its qualified name, without ``<locals>``."""
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        return repr(fn)
    return name.replace("<locals>.", "")


def _check_callable(value: object, name: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


class _CallState:
    """What one call through a policy has done so far (never shared between calls)."""

    __slots__ = (
        "attempt",
        "deadline",
        "previous",
        "reason",
        "skipped",
        "start",
        "target",
        "waited",
    )

    def __init__(self, start: float, target: str) -> None:
        self.start = start
        self.target = target
        self.attempt = 1
        self.waited = 0.0
        self.skipped = 0.0  # waits skipped by testing.instant_waits(), counted as elapsed
        self.previous = 0.0  # the last backoff, for decorrelated jitter
        self.reason: StopReason | None = None
        self.deadline: Deadline | None = None  # the enclosing deadline, when it stopped the call


@dataclass(frozen=True, slots=True, eq=False)
class Retry:
    """A retry policy; use it as a decorator, with :meth:`call`/:meth:`acall`, or as a block.

    ``@retry(...)`` is the same as ``@Retry(...)``. Decorating an ``async def`` function gives a
    coroutine function that sleeps with the event loop; anything else is retried synchronously.
    A policy holds configuration only: one instance serves many functions, threads and tasks.

    Args:
        attempts: The total number of tries, first included (``>= 1``), or ``None`` for no limit
            on the count (then ``timeout`` usually bounds the call).
        timeout: The total time budget in seconds, waits included: a wait that would end past it
            is not started, and the last failure is raised at once. ``None`` for no limit. The
            deadline of an enclosing :class:`~buttress.timeout.TimeLimit` (see
            :func:`~buttress.timeout.current_deadline`) is honoured the same way, whatever this
            says; the stop reason is then ``"timeout"`` too.
        wait: The delay between attempts: a :class:`Wait` or a fixed number of seconds (``0``
            retries at once without calling ``sleep``). Defaults to exponential backoff from
            0.1 s, doubling, capped at 10 s, with full jitter.
        on: The exception types that are retried (default :class:`Exception`).
            ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` and
            ``asyncio.CancelledError`` are never retried, whatever ``on`` says.
        retry_if: An optional predicate on the exception: it is retried only if it is an instance
            of ``on`` *and* ``retry_if(exc)`` is true.
        retry_if_result: An optional predicate on the return value: when it returns true the
            result counts as a failure and the call is retried (e.g. ``lambda r: r.status == 503``).
        pushback: An optional function of the failed attempt's exception (or of its result, when
            the result failed ``retry_if_result``) returning the delay the server asked for
            (``Retry-After``), or ``None``. The policy waits the larger of that and its own backoff.
        max_wait: The cap on any single delay, pushback included.
        budget: An optional :class:`RetryBudget` shared with other policies; when it refuses a
            retry the call fails at once.
        fallback: Returned instead of failing when the policy gives up (attempts, timeout or budget
            exhausted). A callable is called with the final exception (a :class:`RetryExhausted`
            when results failed) and its return value is used; in async code it may be a coroutine
            function. Exceptions that are not retried are never replaced by the fallback.
        name: The policy's name in events and logs.
        listeners: Callables receiving this policy's events (see :mod:`buttress.retry`).
        clock: The time source (:class:`buttress.testing.FakeClock` in tests).

    Raises:
        TypeError, ValueError: At construction, for arguments of the wrong type or out of range.
    """

    attempts: int | None = 3
    timeout: float | timedelta | None = None
    wait: Wait | float | timedelta = DEFAULT_WAIT
    on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    retry_if: Callable[[BaseException], bool] | None = None
    retry_if_result: Callable[[Any], bool] | None = None
    pushback: Callable[[Any], Duration | None] | None = None
    max_wait: float | timedelta = 60.0
    budget: RetryBudget | None = None
    fallback: Any = NO_FALLBACK
    name: str = "retry"
    listeners: Sequence[Listener] = ()
    clock: Clock = system_clock

    _timeout: float | None = field(init=False, repr=False)
    _wait: Wait = field(init=False, repr=False)
    _on: tuple[type[BaseException], ...] = field(init=False, repr=False)
    _max_wait: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.attempts is not None:
            if callable(self.attempts):
                raise TypeError("retry must be called before decorating: write @retry()")
            check_int(self.attempts, "attempts", minimum=1)
        set_(self, "_timeout", seconds_or_none(self.timeout, "timeout", allow_zero=False))
        set_(self, "_wait", as_wait(self.wait))
        set_(self, "_on", check_exception_types(self.on, "on", hint=_ON_HINT))
        _check_callable(self.retry_if, "retry_if")
        _check_callable(self.retry_if_result, "retry_if_result")
        _check_callable(self.pushback, "pushback")
        set_(self, "_max_wait", seconds(self.max_wait, "max_wait"))
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget, got {type(self.budget).__name__}")
        check_name(self.name)
        set_(self, "listeners", check_listeners(self.listeners))
        check_clock(self.clock)
        # Store the normalised values in the public fields too, so repr and replace() show them.
        set_(self, "timeout", self._timeout)
        set_(self, "max_wait", self._max_wait)

    # -- decision logic (pure: no sleeping, no I/O) ---------------------------------------------

    def _retryable(self, error: BaseException) -> bool:
        if not isinstance(error, Exception) or not isinstance(error, self._on):
            return False
        return self.retry_if is None or bool(self.retry_if(error))

    def _next_delay(
        self, state: _CallState, error: BaseException | None, result: Any
    ) -> float | None:
        """Decide what follows a failed attempt: the delay before the next, or ``None`` to stop.

        On ``None``, ``state.reason`` says why (``None`` there means the error is not retryable).
        """
        clock_now = self.clock.now()
        elapsed = clock_now - state.start + state.skipped
        if error is not None and not self._retryable(error):
            state.reason = None
            if self._wants(logging.DEBUG):
                self._emit(
                    RetryFailed(
                        self.name, state.target, state.attempt, elapsed, state.waited, error
                    )
                )
            return None
        if self.attempts is not None and state.attempt >= self.attempts:
            return self._stop(state, "attempts", elapsed, error, result)
        backoff = self._wait.delay(state.attempt, state.previous)
        delay = backoff
        if self.pushback is not None:
            asked = self.pushback(error if error is not None else result)
            if asked is not None:
                delay = max(delay, seconds(asked, "the value returned by pushback"))
        delay = min(delay, self._max_wait)
        if self._timeout is not None and elapsed + delay >= self._timeout:
            return self._stop(state, "timeout", elapsed, error, result)
        deadline = current_deadline()
        # An enclosing time limit (buttress.timeout): a wait that ends at or past its deadline
        # leaves no time for the attempt after it. Skipped test waits count as time passed.
        if deadline is not None and delay >= deadline.remaining() - state.skipped:
            state.deadline = deadline
            return self._stop(state, "timeout", elapsed, error, result)
        if self.budget is not None and not self.budget.try_withdraw():
            return self._stop(state, "budget", elapsed, error, result)
        state.previous = backoff
        if self._wants(logging.INFO):
            self._emit(
                RetryScheduled(
                    self.name,
                    state.target,
                    state.attempt,
                    elapsed,
                    state.waited,
                    delay,
                    error,
                    result,
                )
            )
        return delay

    def _stop(
        self,
        state: _CallState,
        reason: StopReason,
        elapsed: float,
        error: BaseException | None,
        result: Any,
    ) -> float | None:
        """Record why the policy stops, announce it, and return ``None`` (no next attempt)."""
        state.reason = reason
        if self._wants(logging.WARNING):
            self._emit(
                RetryGaveUp(
                    self.name,
                    state.target,
                    state.attempt,
                    elapsed,
                    state.waited,
                    reason,
                    error,
                    result,
                )
            )
        return None

    def _emit(self, event: _events.Event) -> None:
        emit(event, self.listeners)

    def _wants(self, level: int) -> bool:
        """Whether an event logged at ``level`` would reach anyone (building one costs ~1 µs).

        A negative ``level`` means "listeners only": such an event is never worth a log line.
        """
        return bool(
            self.listeners
            or _events._global  # noqa: SLF001 - the registry's fast check
            or (level >= 0 and _log.isEnabledFor(level))
        )

    def _succeeded(self, state: _CallState) -> None:
        # A first-attempt success is news only to listeners; one after retries is logged too.
        if self._wants(logging.INFO if state.attempt > 1 else logging.NOTSET - 1):
            elapsed = self.clock.now() - state.start + state.skipped
            self._emit(
                RetrySucceeded(self.name, state.target, state.attempt, elapsed, state.waited)
            )

    def _failure(
        self, state: _CallState, error: BaseException | None, result: Any
    ) -> tuple[bool, Any]:
        """After the policy stopped: return the exception to raise, or a fallback to return.

        Returns:
            ``(True, exception)`` or ``(False, fallback value)``.
        """
        elapsed = self.clock.now() - state.start + state.skipped
        reason = state.reason
        if reason is None:  # not retryable: the user's exception, untouched unless retried
            assert error is not None  # noqa: S101 - results are always retryable
            if state.attempt > 1:
                _add_note(
                    error,
                    f"buttress: {type(error).__name__} is not retried; raised by "
                    f"attempt {state.attempt} after {elapsed:.2f} s",
                )
            return True, error
        how = f"gave up after {_plural(state.attempt)} in {elapsed:.2f} s"
        if reason == "timeout" and state.deadline is not None:
            how += (
                f" (the next attempt would pass the deadline of {state.deadline.name}, "
                f"{state.deadline.timeout:g} s)"
            )
        elif reason == "timeout":
            how += f" (the next attempt would pass the timeout of {self._timeout:g} s)"
        elif reason == "budget":
            how += " (the retry budget is exhausted)"
        if error is None:
            message = f"{self.name}: {how}; the last result was {result!r}"
            error = (
                RetryBudgetExhausted(
                    message,
                    last_result=result,
                    attempts=state.attempt,
                    elapsed=elapsed,
                    name=self.name,
                )
                if reason == "budget"
                else RetryExhausted(
                    message,
                    last_result=result,
                    attempts=state.attempt,
                    elapsed=elapsed,
                    reason=reason,
                )
            )
        else:
            _add_note(error, f"buttress: {how}")
        if self.fallback is NO_FALLBACK:
            return True, error
        fallback = self.fallback
        return False, (fallback(error) if callable(fallback) else fallback)

    def _skip_wait(self, state: _CallState, delay: float) -> bool:
        """Account for a wait; return ``True`` if testing.instant_waits() says to skip it."""
        state.waited += delay
        recorder = active_wait_recorder()
        if recorder is None:
            return False
        state.skipped += delay
        recorder(self.name, delay)
        return True

    # -- drivers --------------------------------------------------------------------------------

    def _begin(self, target: str) -> _CallState:
        if self.budget is not None:
            self.budget.deposit()
        return _CallState(self.clock.now(), target)

    def _retry_sync(
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        state: _CallState,
        error: BaseException | None,
        result: Any,
    ) -> R:
        predicate = self.retry_if_result
        while True:
            delay = self._next_delay(state, error, result)
            if delay is None:
                is_error, outcome = self._failure(state, error, result)
                if not is_error:
                    return cast("R", outcome)
                try:
                    raise outcome
                finally:  # break the frame -> exception -> traceback -> frame cycle
                    del outcome, error
            if delay > 0 and not self._skip_wait(state, delay):
                self.clock.sleep(delay)
            state.attempt += 1
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified by _next_delay
                error = exc
                continue
            error = None
            if predicate is None or not predicate(result):
                self._succeeded(state)
                return cast("R", result)

    async def _retry_async(
        self,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        state: _CallState,
        error: BaseException | None,
        result: Any,
    ) -> R:
        predicate = self.retry_if_result
        while True:
            delay = self._next_delay(state, error, result)
            if delay is None:
                is_error, outcome = self._failure(state, error, result)
                if not is_error:
                    if inspect.isawaitable(outcome):
                        outcome = await outcome
                    return cast("R", outcome)
                try:
                    raise outcome
                finally:  # break the frame -> exception -> traceback -> frame cycle
                    del outcome, error
            if delay > 0:
                if self._skip_wait(state, delay):
                    await asyncio.sleep(0)  # still yield to the loop, as a wait would
                else:
                    await self.clock.sleep_async(delay)
            state.attempt += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified by _next_delay
                error = exc
                continue
            error = None
            if predicate is None or not predicate(result):
                self._succeeded(state)
                return cast("R", result)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        Raises:
            TypeError: If ``fn`` is not callable, or is a generator function (its body runs only
                when iterated, so a retry around the call would retry nothing).
        """
        if not callable(fn):
            raise TypeError(f"retry can only decorate callables, got {type(fn).__name__}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError("retry cannot decorate a generator function: retry what it calls")
        target = _target_name(fn)
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn, target))
        return self._decorate_sync(fn, target)

    def _decorate_sync(self, fn: Callable[P, R], target: str) -> Callable[P, R]:
        # The success path is inlined here and kept to a few attribute reads: the common case
        # (first attempt succeeds) must cost next to nothing.
        now = self.clock.now
        budget = self.budget
        predicate = self.retry_if_result
        listeners = self.listeners
        events = _events
        slow = self._retry_sync

        @functools.wraps(fn)
        def retrying_call(*args: P.args, **kwargs: P.kwargs) -> R:
            start = now()
            if budget is not None:
                budget.deposit()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified by _next_delay
                error: BaseException | None = exc
            else:
                if predicate is None or not predicate(result):
                    if listeners or events._global:  # noqa: SLF001 - the registry's fast check
                        self._succeeded(_CallState(start, target))
                    return result
                error = None
            # Outside the ``except`` block, so retried attempts do not chain as __context__.
            return slow(
                fn,
                args,
                kwargs,
                _CallState(start, target),
                error,
                None if error is not None else result,
            )

        return retrying_call

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]], target: str
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        now = self.clock.now
        budget = self.budget
        predicate = self.retry_if_result
        listeners = self.listeners
        events = _events
        slow = self._retry_async

        @functools.wraps(fn)
        async def retrying_call(*args: P.args, **kwargs: P.kwargs) -> T:
            start = now()
            if budget is not None:
                budget.deposit()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified by _next_delay
                error: BaseException | None = exc
            else:
                if predicate is None or not predicate(result):
                    if listeners or events._global:  # noqa: SLF001 - the registry's fast check
                        self._succeeded(_CallState(start, target))
                    return result
                error = None
            return await slow(
                fn,
                args,
                kwargs,
                _CallState(start, target),
                error,
                None if error is not None else result,
            )

        return retrying_call

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` under this policy.

        Raises:
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await policy.acall(fn) instead")
        return self._decorate_sync(fn, _target_name(fn))(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this policy; ``fn`` returns an awaitable."""
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        target = _target_name(fn)
        wrapped = self._decorate_async(cast("Callable[P, Coroutine[Any, Any, T]]", fn), target)
        return await wrapped(*args, **kwargs)

    def retrying(self) -> Attempts:
        """Return the attempts of one call, for ``for attempt in ...: with attempt: ...``.

        Works with ``for`` (sleeping the thread) and ``async for`` (sleeping the task). The block
        form re-raises the last exception when the policy gives up; ``fallback`` and
        ``retry_if_result`` do not apply to it (a block has no return value).

        Raises:
            TypeError: If the policy has a ``fallback`` or a ``retry_if_result``.
        """
        if self.fallback is not NO_FALLBACK:
            raise TypeError("fallback does not apply to the block form; catch the exception")
        if self.retry_if_result is not None:
            raise TypeError("retry_if_result does not apply to the block form; raise instead")
        return Attempts(self)


retry = Retry
"""``@retry(attempts=3, ...)``: the decorator spelling of :class:`Retry`."""


def retrying(**options: Any) -> Attempts:
    """Return the attempts of one call under ``Retry(**options)``, for the block form.

    Example::

        for attempt in retrying(attempts=3, on=ConnectionError):
            with attempt:
                connect()

    ``async for`` works the same in coroutines. See :meth:`Retry.retrying`.
    """
    return Retry(**options).retrying()


class Attempt:
    """One attempt of the block form: use it as ``with attempt:``.

    Attributes:
        number: The attempt's number, 1 for the first.
    """

    __slots__ = ("_iterator", "_state", "number")

    def __init__(self, iterator: _AttemptIterator, number: int) -> None:
        self._iterator = iterator
        self.number = number
        self._state = "new"  # -> "entered" -> "succeeded" | "failed"

    def __enter__(self) -> Attempt:
        if self._state != "new":
            raise RuntimeError("an attempt can be entered only once")
        self._state = "entered"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._iterator.finished(self, exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number} {self._state}>"


class _AttemptIterator:
    """Drives one call of the block form; shared by ``for`` and ``async for``."""

    __slots__ = ("_current", "_delay", "_done", "_policy", "_state")

    def __init__(self, policy: Retry) -> None:
        self._policy = policy
        self._state: _CallState | None = None
        self._current: Attempt | None = None
        self._delay = 0.0
        self._done = False

    def finished(self, attempt: Attempt, exc: BaseException | None) -> bool:
        """Record an attempt's outcome; return ``True`` to swallow its exception and retry."""
        policy, state = self._policy, self._state
        assert state is not None  # noqa: S101 - an attempt exists only after the first next()
        if exc is None:
            attempt._state = "succeeded"  # noqa: SLF001 - the iterator owns its attempts
            self._done = True
            policy._succeeded(state)  # noqa: SLF001 - policy internals shared with the drivers
            return False
        attempt._state = "failed"  # noqa: SLF001
        if not isinstance(exc, Exception):  # KeyboardInterrupt, CancelledError, ...: propagate
            self._done = True
            return False
        delay = policy._next_delay(state, exc, None)  # noqa: SLF001
        if delay is None:
            self._done = True
            _, error = policy._failure(state, exc, None)  # noqa: SLF001
            assert error is exc  # noqa: S101 - no fallback in the block form
            return False
        self._delay = delay
        return True

    def advance(self) -> tuple[Attempt | None, float, bool]:
        """Return the next attempt (``None`` when done), its delay, and whether to sleep it.

        The delay is not slept when ``testing.instant_waits()`` skips it.
        """
        if self._done:
            return None, 0.0, False
        current = self._current
        if current is None:
            self._state = self._policy._begin("<block>")  # noqa: SLF001
            self._current = Attempt(self, 1)
            return self._current, 0.0, False
        if current._state != "failed":  # noqa: SLF001
            raise RuntimeError("use each attempt as a context manager: `with attempt: ...`")
        state = self._state
        assert state is not None  # noqa: S101 - set with the first attempt
        delay = self._delay
        real = delay > 0 and not self._policy._skip_wait(state, delay)  # noqa: SLF001
        state.attempt += 1
        self._current = Attempt(self, state.attempt)
        return self._current, delay, real


class _SyncAttempts(Iterator[Attempt]):
    __slots__ = ("_driver", "_sleep")

    def __init__(self, policy: Retry) -> None:
        self._driver = _AttemptIterator(policy)
        self._sleep = policy.clock.sleep

    def __next__(self) -> Attempt:
        attempt, delay, real = self._driver.advance()
        if attempt is None:
            raise StopIteration
        if real:
            self._sleep(delay)
        return attempt


class _AsyncAttempts(AsyncIterator[Attempt]):
    __slots__ = ("_driver", "_sleep")

    def __init__(self, policy: Retry) -> None:
        self._driver = _AttemptIterator(policy)
        self._sleep = policy.clock.sleep_async

    async def __anext__(self) -> Attempt:
        attempt, delay, real = self._driver.advance()
        if attempt is None:
            raise StopAsyncIteration
        if real:
            await self._sleep(delay)
        elif delay > 0:  # skipped by testing.instant_waits(): still yield, as a wait would
            await asyncio.sleep(0)
        return attempt


class Attempts:
    """The attempts of one call under a policy; iterate with ``for`` or ``async for``.

    Each iteration starts a fresh call (new attempt count, new time budget), so one ``Attempts``
    may be iterated many times, also concurrently.
    """

    __slots__ = ("_policy",)

    def __init__(self, policy: Retry) -> None:
        self._policy = policy

    def __iter__(self) -> Iterator[Attempt]:
        return _SyncAttempts(self._policy)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return _AsyncAttempts(self._policy)

    def __repr__(self) -> str:
        return f"Attempts({self._policy!r})"
