"""The adaptive concurrency limiter: a bulkhead whose size a limit algorithm moves.

Admission hands out :class:`AdaptivePermit` objects while fewer than ``limit`` are held. Each
permit measures its call's round-trip time on the limiter's clock and reports exactly one outcome:
``success()`` and ``dropped()`` feed the algorithm a sample, ``ignore()`` only frees the slot.

Waiting callers (``acquire(timeout=...)``, ``await aacquire(timeout=...)``) queue in arrival
order; a freed slot is handed to the first waiter directly, under the limiter's lock, so no later
caller can take it first and a waiter that gives up (timeout, cancellation, ``KeyboardInterrupt``)
either leaves the queue or, if a slot was handed to it meanwhile, gives that slot back: nothing
leaks. The lock is never held while the protected call runs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from buttress import _events
from buttress._clock import Clock, check_clock, system_clock
from buttress._errors import BulkheadFull, Rejected
from buttress._events import Listener, check_listeners, emit
from buttress._types import Duration, check_exception_types, check_int, check_name, seconds_or_none
from buttress.adaptive._algorithms import LimitAlgorithm, Vegas, Windowed
from buttress.adaptive._events import AdaptiveLimitChanged, AdaptiveRejected

__all__ = ["DEFAULT_DROP_ON", "AdaptiveConcurrency", "AdaptivePermit", "AdaptiveStats"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_log = logging.getLogger("buttress.adaptive")

DEFAULT_DROP_ON: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError, Rejected)
"""What a protected call may raise to count as *dropped*: a timeout (``buttress.Timeout``
included) or a rejection by an inner policy (a full bulkhead, an open breaker, a rate limit),
which all say the downstream is overloaded. On Python 3.10 ``asyncio.TimeoutError`` is not yet the
builtin ``TimeoutError``, hence both."""

_SUCCESS, _DROPPED, _IGNORED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class AdaptiveStats:
    """A snapshot of an :class:`AdaptiveConcurrency`.

    Attributes:
        limit: The current concurrency limit.
        inflight: Permits held now.
        waiting: Callers waiting for a permit.
        rejected: Calls refused since the limiter was made.
        samples: Outcomes fed to the algorithm (successes and drops) since it was made.
        dropped: How many of those were drops.
    """

    limit: int
    inflight: int
    waiting: int
    rejected: int
    samples: int
    dropped: int

    @property
    def available(self) -> int:
        """Permits that can be taken at once (0 when the limit is full or exceeded)."""
        return max(0, self.limit - self.inflight)


class _Waiter:
    """One caller waiting for a slot: a thread (``event``) or a task (``future`` on ``loop``)."""

    __slots__ = ("event", "future", "granted", "inflight", "loop")

    def __init__(
        self,
        event: threading.Event | None = None,
        future: asyncio.Future[None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.event = event
        self.future = future
        self.loop = loop
        self.granted = False  # set under the limiter's lock: the slot is this waiter's
        self.inflight = 0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AdaptiveConcurrency:
    """Limit concurrent calls to a limit that adapts to the latency and drops it measures.

    A bulkhead whose size moves: at most :attr:`limit` permits are held at once, and every
    finished call is a sample for the ``algorithm`` (by default :class:`~buttress.Vegas` fed
    averages of 10 samples by :class:`~buttress.Windowed`, the best of our simulations), which
    raises the limit while latency stays low and lowers it when latency rises or calls are
    dropped. Calls beyond the limit are refused with :class:`~buttress.BulkheadFull`, or wait for
    a slot if allowed to.

    Use it as a decorator (functions, methods and coroutine functions), with ``call``/``acall``,
    or take permits by hand::

        limiter = AdaptiveConcurrency("search", algorithm=Gradient2())

        @limiter
        async def search(query): ...

        permit = limiter.try_acquire()
        if permit is not None:
            with permit:            # success, dropped or ignored, by how the block ends
                ...

    How a call's end is reported: returning is a success; raising one of ``drop_on`` (timeouts
    and rejections by inner policies, :data:`DEFAULT_DROP_ON`) is a drop; any other exception,
    cancellation included, is ignored: it frees the slot but says nothing about load (a fast
    ``ValueError`` is no sign of a healthy downstream).

    Args:
        name: The limiter's name, used in events, logs and rejections.
        algorithm: The limit algorithm; one instance per limiter (it keeps state).
        max_wait: How long the decorator, ``call`` and ``acall`` wait for a slot: ``0`` (the
            default) refuses at once, ``None`` waits as long as needed.
        max_waiting: How many callers may wait at once (``None``: no bound); beyond it a caller
            is refused at once.
        drop_on: The exception types that count as drops.
        clock: The time source that measures round-trip times. Waits for a slot end when another
            caller frees one, so their timeouts run on real time.
        listeners: Callables receiving this limiter's events.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range.
    """

    __slots__ = (
        "_algorithm",
        "_drops",
        "_inflight",
        "_limit",
        "_lock",
        "_rejected",
        "_samples",
        "_waiters",
        "clock",
        "drop_on",
        "listeners",
        "max_wait",
        "max_waiting",
        "name",
    )

    def __init__(
        self,
        name: str = "adaptive",
        *,
        algorithm: LimitAlgorithm | None = None,
        max_wait: Duration | None = 0.0,
        max_waiting: int | None = None,
        drop_on: type[BaseException] | tuple[type[BaseException], ...] = DEFAULT_DROP_ON,
        clock: Clock = system_clock,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.name = check_name(name)
        if algorithm is None:
            algorithm = Windowed(Vegas())
        elif not isinstance(algorithm, LimitAlgorithm):
            raise TypeError(
                "algorithm must provide on_sample() and limit (AIMD, Vegas, Gradient2, ...),"
                f" got {type(algorithm).__name__}"
            )
        self._algorithm = algorithm
        self.max_wait = seconds_or_none(max_wait, "max_wait")
        self.max_waiting = (
            None if max_waiting is None else check_int(max_waiting, "max_waiting", minimum=0)
        )
        self.drop_on = check_exception_types(drop_on, "drop_on")
        check_clock(clock)
        self.clock = clock
        self.listeners = check_listeners(listeners)
        self._lock = threading.Lock()
        self._limit = max(1, algorithm.limit)
        self._inflight = 0
        self._waiters: deque[_Waiter] = deque()
        self._rejected = 0
        self._samples = 0
        self._drops = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def algorithm(self) -> LimitAlgorithm:
        """The limit algorithm (read its state only; the limiter feeds it)."""
        return self._algorithm

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return self._limit

    @property
    def inflight(self) -> int:
        """Permits held now."""
        return self._inflight

    def stats(self) -> AdaptiveStats:
        """Return a consistent snapshot of the limit and the counters."""
        with self._lock:
            return AdaptiveStats(
                limit=self._limit,
                inflight=self._inflight,
                waiting=len(self._waiters),
                rejected=self._rejected,
                samples=self._samples,
                dropped=self._drops,
            )

    # -- admission ------------------------------------------------------------------------------

    def try_acquire(self) -> AdaptivePermit | None:
        """Take a permit if one is free now, without waiting.

        Returns:
            A permit, or ``None`` if the limit is reached (counted as a rejection).
        """
        with self._lock:
            if self._inflight < self._limit and not self._waiters:
                self._inflight += 1
                inflight = self._inflight
            else:
                self._rejected += 1
                inflight = -1
        if inflight < 0:
            self._rejected_event(0.0)
            return None
        return AdaptivePermit(self, self.clock.now(), inflight)

    def acquire(self, timeout: Duration | None = None) -> AdaptivePermit:
        """Take a permit, waiting (blocking this thread) up to ``timeout`` seconds for one.

        Args:
            timeout: The most seconds to wait (real time); ``0`` does not wait, ``None`` waits as
                long as needed.

        Returns:
            The permit.

        Raises:
            BulkheadFull: If no permit was free within ``timeout``, or no place to wait was free.
        """
        wait = seconds_or_none(timeout, "timeout")
        waiter, inflight = self._enter(wait, None)
        if waiter is None:
            return AdaptivePermit(self, self.clock.now(), inflight)
        event = cast("threading.Event", waiter.event)
        begun = system_clock.now()
        try:
            event.wait(wait)
        except BaseException:
            self._abandon(waiter)
            raise
        return self._after_wait(waiter, wait, begun)

    async def aacquire(self, timeout: Duration | None = None) -> AdaptivePermit:
        """Take a permit, waiting up to ``timeout`` seconds without blocking the event loop.

        Cancelling the waiting task leaks no permit: a slot handed to it meanwhile is freed.

        Args:
            timeout: The most seconds to wait (real time); ``0`` does not wait, ``None`` waits as
                long as needed.

        Returns:
            The permit.

        Raises:
            BulkheadFull: If no permit was free within ``timeout``, or no place to wait was free.
        """
        wait = seconds_or_none(timeout, "timeout")
        waiter, inflight = self._enter(wait, asyncio.get_running_loop())
        if waiter is None:
            return AdaptivePermit(self, self.clock.now(), inflight)
        future = cast("asyncio.Future[None]", waiter.future)
        begun = system_clock.now()
        try:
            if wait is None:
                await future
            else:
                await asyncio.wait_for(future, wait)
        except (asyncio.TimeoutError, TimeoutError):
            pass  # decided below, under the lock: a slot may have been handed over meanwhile
        except BaseException:
            self._abandon(waiter)
            raise
        return self._after_wait(waiter, wait, begun)

    def _enter(
        self, wait: float | None, loop: asyncio.AbstractEventLoop | None
    ) -> tuple[_Waiter | None, int]:
        """Admit at once, or queue a waiter, or refuse: the non-blocking core of both acquires."""
        with self._lock:
            if self._inflight < self._limit and not self._waiters:
                self._inflight += 1
                return None, self._inflight
            if wait != 0 and (self.max_waiting is None or len(self._waiters) < self.max_waiting):
                if loop is None:
                    waiter = _Waiter(event=threading.Event())
                else:
                    waiter = _Waiter(future=loop.create_future(), loop=loop)
                self._waiters.append(waiter)
                return waiter, 0
            self._rejected += 1
            limit, inflight = self._limit, self._inflight
        self._rejected_event(0.0)
        raise BulkheadFull(
            f"{self.name}: {inflight} calls in flight at the limit of {limit}", name=self.name
        )

    def _after_wait(self, waiter: _Waiter, wait: float | None, begun: float) -> AdaptivePermit:
        with self._lock:
            granted = waiter.granted
            if not granted:
                self._waiters.remove(waiter)
                self._rejected += 1
            limit, inflight = self._limit, self._inflight
        if granted:
            return AdaptivePermit(self, self.clock.now(), waiter.inflight)
        waited = system_clock.now() - begun
        self._rejected_event(waited)
        raise BulkheadFull(
            f"{self.name}: no slot freed within {wait or 0:g} s ({inflight} in flight,"
            f" limit {limit})",
            name=self.name,
        )

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter gave up by an exception: leave the queue, or give back the slot it got."""
        with self._lock:
            if waiter.granted:
                self._inflight -= 1
                self._hand_over()
            else:
                self._waiters.remove(waiter)

    def _hand_over(self) -> None:
        """Give free slots to waiters, first come first served (under the lock)."""
        waiters = self._waiters
        while waiters and self._inflight < self._limit:
            waiter = waiters.popleft()
            self._inflight += 1
            waiter.granted = True
            waiter.inflight = self._inflight
            if waiter.event is not None:
                waiter.event.set()
                continue
            try:
                cast("asyncio.AbstractEventLoop", waiter.loop).call_soon_threadsafe(
                    _resolve, cast("asyncio.Future[None]", waiter.future)
                )
            except RuntimeError:  # its loop is closed: nobody will use the slot
                waiter.granted = False
                self._inflight -= 1

    # -- outcomes -------------------------------------------------------------------------------

    def _finish(self, permit: AdaptivePermit, outcome: int) -> None:
        """Free a permit's slot and, unless ignored, feed its sample to the algorithm."""
        rtt = max(0.0, self.clock.now() - permit.start) if outcome != _IGNORED else 0.0
        dropped = outcome == _DROPPED
        with self._lock:
            old = self._limit
            self._inflight -= 1
            try:
                if outcome != _IGNORED:
                    self._samples += 1
                    self._drops += dropped
                    self._limit = max(
                        1, self._algorithm.on_sample(permit.start, rtt, permit.inflight, dropped)
                    )
            finally:
                self._hand_over()
            new = self._limit
        if new != old and (
            self.listeners
            or _events._global  # noqa: SLF001 - the registry's fast check
            or _log.isEnabledFor(logging.DEBUG)
        ):
            event = AdaptiveLimitChanged(self.name, old, new, rtt, permit.inflight, dropped)
            emit(event, self.listeners)

    def _rejected_event(self, waited: float) -> None:
        if (
            self.listeners
            or _events._global  # noqa: SLF001 - the registry's fast check
            or _log.isEnabledFor(logging.INFO)
        ):
            emit(AdaptiveRejected(self.name, self._limit, self._inflight, waited), self.listeners)

    def _classify(self, error: BaseException) -> int:
        return _DROPPED if isinstance(error, self.drop_on) else _IGNORED

    # -- calling styles -------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or coroutine function) to run under a permit.

        The wrapper waits up to ``max_wait`` for a permit and reports the call's end (see the
        class).

        Raises:
            TypeError: If ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"a limiter can only decorate callables, got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn))
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            permit = self.acquire(self.max_wait)
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                self._finish_once(permit, self._classify(error))
                raise
            self._finish_once(permit, _SUCCESS)
            return result

        return limited

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
            permit = await self.aacquire(self.max_wait)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as error:
                self._finish_once(permit, self._classify(error))
                raise
            self._finish_once(permit, _SUCCESS)
            return result

        return limited

    @staticmethod
    def _finish_once(permit: AdaptivePermit, outcome: int) -> None:
        permit._report(outcome)  # noqa: SLF001 - the permit's owner

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` under a permit.

        Returns:
            What ``fn`` returns.

        Raises:
            BulkheadFull: If no permit was free within ``max_wait``.
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await limiter.acall(fn) instead")
        return self._decorate_sync(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under a permit.

        Returns:
            What ``fn``'s awaitable gives.

        Raises:
            BulkheadFull: If no permit was free within ``max_wait``.
        """
        wrapped = self._decorate_async(cast("Callable[P, Coroutine[Any, Any, T]]", fn))
        return await wrapped(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"AdaptiveConcurrency({self.name!r}, limit={self._limit}, inflight={self._inflight},"
            f" algorithm={self._algorithm!r})"
        )


class AdaptivePermit:
    """A slot held in an :class:`AdaptiveConcurrency`; report how the call ended exactly once.

    ``success()`` and ``dropped()`` free the slot and give the algorithm a sample (the time since
    the permit was granted, on the limiter's clock); ``ignore()`` only frees the slot. Only the
    first report counts; later ones return ``False`` and do nothing. As a context manager (``with``
    or ``async with``) it reports when the block ends, unless reported inside it: success if the
    block ends normally, dropped on one of the limiter's ``drop_on`` exceptions, ignored on any
    other exception (cancellation included).

    Attributes:
        start: When the permit was granted (the limiter's clock).
        inflight: Permits held when it was granted, itself included.
    """

    __slots__ = ("_done", "_lock", "_owner", "inflight", "start")

    def __init__(self, owner: AdaptiveConcurrency, start: float, inflight: int) -> None:
        self._owner = owner
        self.start = start
        self.inflight = inflight
        self._done = False
        self._lock = threading.Lock()

    @property
    def reported(self) -> bool:
        """Whether an outcome was reported (the slot is free)."""
        return self._done

    def _report(self, outcome: int) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
        self._owner._finish(self, outcome)  # noqa: SLF001 - the permit's owner
        return True

    def success(self) -> bool:
        """The call succeeded: free the slot and feed its round-trip time to the algorithm.

        Returns:
            ``True`` if this was the permit's first report.
        """
        return self._report(_SUCCESS)

    def dropped(self) -> bool:
        """The call was dropped (timed out, shed by an overloaded downstream): free and sample.

        Returns:
            ``True`` if this was the permit's first report.
        """
        return self._report(_DROPPED)

    def ignore(self) -> bool:
        """The call says nothing about load (it failed for another reason): only free the slot.

        Returns:
            ``True`` if this was the permit's first report.
        """
        return self._report(_IGNORED)

    def _exit(self, exc: BaseException | None) -> None:
        if exc is None:
            self._report(_SUCCESS)
        else:
            self._report(self._owner._classify(exc))  # noqa: SLF001 - the permit's owner

    def __enter__(self) -> AdaptivePermit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> AdaptivePermit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    def __repr__(self) -> str:
        state = "reported" if self._done else "held"
        return f"<AdaptivePermit {self._owner.name!r} {state}>"
