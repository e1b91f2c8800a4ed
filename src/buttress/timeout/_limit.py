"""The time limit policy and the cooperative :func:`deadline` block.

Both set the current deadline (:mod:`buttress._deadline`) for the code they run. What differs is
how the limit is enforced:

- coroutines are cancelled when the time is up, and :class:`~buttress.Timeout` is raised;
- a synchronous call cannot be interrupted from outside, so :class:`TimeLimit` offers a choice:
  ``mode="thread"`` runs it on a :class:`~buttress.bulkhead.ThreadPoolBulkhead` and stops waiting
  at the deadline (the thread runs on, counted by the pool, holding its slot, until the call
  ends), and ``mode="cooperative"`` runs it in the caller's thread with the deadline visible to
  everything inside (retry, bulkheads, your own ``remaining()``), which is what stops it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast, get_args

from buttress import _events
from buttress._clock import Clock, check_clock, system_clock
from buttress._deadline import Deadline, enter_deadline, reset_deadline
from buttress._deadline import deadline_var as _deadline_var
from buttress._errors import Timeout
from buttress._events import Listener, check_listeners, emit
from buttress._types import Duration, check_name
from buttress._types import seconds as _seconds
from buttress.bulkhead._guard import check_decoratable, target_name
from buttress.bulkhead._pool import ThreadPoolBulkhead
from buttress.timeout._events import TimedOut
from buttress.timeout._timers import FIRED, timer_of

__all__ = ["DeadlineScope", "TimeLimit", "TimeoutMode", "deadline", "timeout"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

TimeoutMode = Literal["thread", "cooperative"]
"""How a :class:`TimeLimit` limits a synchronous call (see :mod:`buttress.timeout`)."""

_MODES: tuple[str, ...] = get_args(TimeoutMode)
_DEFAULT_POOL_THREADS = 16
_log = logging.getLogger("buttress.timeout")


def _uncancel(task: asyncio.Task[Any]) -> bool:
    """Withdraw one cancellation request; ``True`` if none is left (ours was the only one)."""
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is None:
        return True  # 3.10 cannot tell an outside cancellation arriving at the same moment
    return cast("int", uncancel()) == 0


class TimeLimit:
    """Limit how long a call may take; set the deadline that inner policies see.

    ``@timeout(2)`` is the same as ``@TimeLimit(2)``. A coroutine function is always cancelled
    at the deadline (:class:`~buttress.Timeout` is raised, chained to the cancellation); for
    synchronous functions ``mode`` chooses (see :mod:`buttress.timeout`). A limit inside another
    takes the smaller deadline. A call whose deadline has already passed is not started.

    Args:
        timeout: Seconds the call may take (``> 0``), or a ``timedelta``.
        mode: For synchronous calls: ``"thread"`` (the default) or ``"cooperative"``.
        pool: The :class:`~buttress.bulkhead.ThreadPoolBulkhead` running synchronous calls in
            ``"thread"`` mode. By default each limit gets its own pool of 16 threads (started
            when needed), so calls left running by one dependency cannot take threads from
            another; a full pool refuses calls with :class:`~buttress.BulkheadFull`.
        name: The limit's name in errors, events and logs.
        listeners: Callables receiving this limit's events (:class:`TimedOut`).
        clock: The time source of the deadline (:class:`buttress.testing.FakeClock` in tests).

    Raises:
        TypeError, ValueError: At construction, for arguments of the wrong type or out of range.
    """

    __slots__ = ("clock", "listeners", "mode", "name", "pool", "timeout")

    def __init__(
        self,
        timeout: Duration,
        *,
        mode: TimeoutMode = "thread",
        pool: ThreadPoolBulkhead | None = None,
        name: str = "timeout",
        listeners: Sequence[Listener] = (),
        clock: Clock = system_clock,
    ) -> None:
        if callable(timeout):
            raise TypeError("timeout must be called before decorating: write @timeout(2)")
        self.timeout = _seconds(timeout, "timeout", allow_zero=False)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
        self.mode: TimeoutMode = mode
        if pool is not None and not isinstance(pool, ThreadPoolBulkhead):
            raise TypeError(f"pool must be a ThreadPoolBulkhead, got {type(pool).__name__}")
        if pool is not None and mode != "thread":
            raise ValueError("pool applies to mode='thread' only")
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)
        check_clock(clock)
        self.clock = clock
        if pool is None and mode == "thread":
            pool = ThreadPoolBulkhead(_DEFAULT_POOL_THREADS, name=f"{name}-threads")
        self.pool = pool

    def __repr__(self) -> str:
        return f"TimeLimit({self.timeout:g}, mode={self.mode!r}, name={self.name!r})"

    def _timed_out(self, target: str, deadline: Deadline, how: str) -> Timeout:
        if self.listeners or _events._global or _log.isEnabledFor(logging.WARNING):  # noqa: SLF001
            emit(TimedOut(self.name, target, self.timeout, how, deadline.name), self.listeners)
        if how == "not started":
            return Timeout(
                f"{self.name}: {target} not started: the deadline of {deadline.name} "
                f"({deadline.timeout:g} s) has passed"
            )
        return Timeout(
            f"{self.name}: {target} did not finish within {deadline.timeout:g} s"
            + (f" (the deadline of {deadline.name})" if deadline.name != self.name else "")
            + ("; it goes on in its thread until it ends" if how == "abandoned" else "")
        )

    # -- drivers --------------------------------------------------------------------------------
    #
    # The deadline in force is the enclosing one when it comes no later than this limit's (then
    # nothing is set: it is already the current deadline), else a new one, set for the call and
    # reset after it. Each driver is a closure over the limit's settings, read once: the
    # decorator wraps it once, call()/acall() make one per call.

    def _thread_driver(
        self, fn: Callable[..., R], target: str, pool: ThreadPoolBulkhead
    ) -> Callable[..., R]:
        """``fn`` run on ``pool``, waited for until the deadline (``mode="thread"``)."""
        get, set_deadline, reset = _deadline_var.get, _deadline_var.set, _deadline_var.reset
        limit, clock, name, timed_out = self.timeout, self.clock, self.name, self._timed_out

        def limited(*args: Any, **kwargs: Any) -> R:
            outer = get()
            if outer is None or (left := outer.remaining()) > limit:
                deadline = Deadline(clock.now() + limit, clock, limit, name)
                token = set_deadline(deadline)
            elif left <= 0.0:
                raise timed_out(target, outer, "not started")
            else:
                deadline, token = outer, None
            try:
                return pool.call(fn, *args, **kwargs)
            except Timeout:
                if deadline.remaining() <= 0:
                    timed_out(target, deadline, "abandoned")  # for the event; pool's message
                raise
            finally:
                if token is not None:
                    reset(token)

        return limited

    def _cooperative_driver(self, fn: Callable[..., R], target: str) -> Callable[..., R]:
        """``fn`` run in the caller's thread with the deadline set (``mode="cooperative"``)."""
        get, set_deadline, reset = _deadline_var.get, _deadline_var.set, _deadline_var.reset
        limit, clock, name, timed_out = self.timeout, self.clock, self.name, self._timed_out
        now = clock.now

        def limited(*args: Any, **kwargs: Any) -> R:
            outer = get()
            if outer is None or (left := outer.remaining()) > limit:
                token = set_deadline(Deadline(now() + limit, clock, limit, name))
                try:
                    return fn(*args, **kwargs)
                finally:
                    reset(token)
            if left <= 0.0:
                raise timed_out(target, outer, "not started")
            return fn(*args, **kwargs)

        return limited

    def _async_driver(
        self, fn: Callable[..., Awaitable[T]], target: str
    ) -> Callable[..., Coroutine[Any, Any, T]]:
        """``fn`` awaited in the calling task, which is cancelled at the deadline."""
        get, set_deadline, reset = _deadline_var.get, _deadline_var.set, _deadline_var.reset
        limit, clock, name, timed_out = self.timeout, self.clock, self.name, self._timed_out
        now = clock.now
        get_running_loop, current_task = asyncio.get_running_loop, asyncio.current_task

        async def limited(*args: Any, **kwargs: Any) -> T:
            outer = get()
            if outer is None or (left := outer.remaining()) > limit:
                deadline = Deadline(now() + limit, clock, limit, name)
                token = set_deadline(deadline)
                left = limit
            elif left <= 0.0:
                raise timed_out(target, outer, "not started")
            else:
                deadline, token = outer, None
            try:
                loop = get_running_loop()
                task = current_task(loop)
                if task is None:
                    raise RuntimeError("an async time limit needs to run in an asyncio task")
                # One timer per loop serves every limit (buttress.timeout._timers); the entry's
                # task slot turns to FIRED when that timer, not someone else, cancelled the task.
                timer = timer_of(loop)
                entry = timer.arm(loop, task, loop.time() + left)
                try:
                    result = await fn(*args, **kwargs)
                except asyncio.CancelledError as error:
                    if entry[2] is FIRED and _uncancel(task):
                        raise timed_out(target, deadline, "cancelled") from error
                    raise
                finally:
                    timer.disarm(entry)
                if entry[2] is FIRED:  # the call swallowed the cancellation and returned
                    _uncancel(task)
                return result
            finally:
                if token is not None:
                    reset(token)

        return limited

    def _sync_driver(self, fn: Callable[..., R], target: str) -> Callable[..., R]:
        pool = self.pool
        if pool is None:
            return self._cooperative_driver(fn, target)
        return self._thread_driver(fn, target, pool)

    # -- fronts ---------------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        The limit's settings are read here, once.

        Raises:
            TypeError: If ``fn`` is not callable, or is a generator function.
        """
        check_decoratable(fn, "TimeLimit")
        target = target_name(fn)
        if inspect.iscoroutinefunction(fn):
            driver: Callable[..., Any] = self._async_driver(fn, target)
        else:
            driver = self._sync_driver(fn, target)
        return cast("Callable[P, R]", functools.wraps(fn)(driver))

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` under this limit.

        Returns:
            What ``fn`` returns.

        Raises:
            Timeout: If the deadline passed (``"thread"`` mode), or had passed before the start.
            BulkheadFull: If the pool of ``"thread"`` mode is full.
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await limit.acall(fn) instead")
        return self._sync_driver(fn, target_name(fn))(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this limit, cancelling it at the deadline.

        Returns:
            What the awaitable returns.

        Raises:
            Timeout: If the deadline passed (the awaitable was cancelled) or had passed before.
            TypeError: If ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        return await self._async_driver(fn, target_name(fn))(*args, **kwargs)


timeout = TimeLimit
"""``@timeout(2, mode=...)``: the decorator spelling of :class:`TimeLimit`."""


class DeadlineScope:
    """What :func:`deadline` returns: a ``with`` block that sets the current deadline."""

    __slots__ = ("_clock", "_name", "_seconds", "_token")

    def __init__(self, limit: float, clock: Clock, name: str) -> None:
        self._seconds = limit
        self._clock = clock
        self._name = name
        self._token: Any = None

    def __enter__(self) -> Deadline:
        if self._token is not None:
            raise RuntimeError("this deadline() block is already in use")
        in_force, self._token = enter_deadline(self._seconds, self._clock, self._name)
        return in_force

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        reset_deadline(token)


def deadline(
    seconds: Duration, /, *, clock: Clock = system_clock, name: str = "deadline"
) -> DeadlineScope:
    """Set a cooperative deadline for a block: nothing is interrupted, everything inside sees it.

    Retry stops before a wait or attempt that cannot finish in time, bulkheads stop waiting for a
    slot, thread-pool calls stop being waited for, and your code can ask :func:`remaining`::

        with deadline(2.0) as d:
            response = session.get(url, timeout=d.remaining())

    An enclosing deadline that comes sooner stays in force.

    Args:
        seconds: Seconds from now (``> 0``), or a ``timedelta``.
        clock: The time source (:class:`buttress.testing.FakeClock` in tests).
        name: The name given in errors and notes.

    Returns:
        A context manager whose ``with ... as`` value is the :class:`Deadline` in force.

    Raises:
        TypeError, ValueError: For a bad duration, clock or name.
    """
    limit = _seconds(seconds, "seconds", allow_zero=False)
    check_clock(clock)
    return DeadlineScope(limit, clock, check_name(name))
