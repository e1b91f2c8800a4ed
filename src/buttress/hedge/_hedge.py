"""The hedging policy: a pure latency window and delay rule, and asyncio and thread drivers.

:class:`LatencyWindow` keeps the latencies of recent successful calls and answers quantiles;
:meth:`Hedge.delay_now` turns it into the wait before a hedge. :meth:`Hedge.run` (asyncio) and
:meth:`Hedge.run_sync` (threads) start the first attempt, start another each time the delay
passes without a good answer (while the budget, and for threads the thread bound, allow), and
return the first good answer. The asyncio driver cancels the others; the thread driver cannot
interrupt a thread, so it abandons them: each answer that arrives after the call returned is
handed to ``discard`` (an HTTP response is closed, so its connection goes back to the pool).
Both drivers count and report the same way (:meth:`Hedge._send`, :meth:`Hedge._won`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, ParamSpec, TypeVar, cast

from buttress import _events
from buttress._clock import Clock, check_clock, system_clock
from buttress._events import Listener, check_listeners, emit
from buttress._types import Duration, check_int, check_name, seconds, seconds_or_none
from buttress.bulkhead._guard import check_decoratable, target_name
from buttress.hedge._events import HedgeEvent, HedgeRefused, HedgeSent, HedgeWon
from buttress.hedge._threads import Workers
from buttress.retry import RetryBudget

__all__ = ["Hedge", "LatencyWindow"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_QUANTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")
_KEEP_ALIVE = 30.0  # seconds an idle worker thread of a hedge waits for work before it ends
_log = logging.getLogger("buttress.hedge")


class LatencyWindow:
    """The latencies of the last ``size`` calls, and their quantiles (thread-safe).

    Quantiles are computed from a sorted copy, at most once per ``size // 10`` new samples, so
    reading one on every call costs a comparison.

    Args:
        size: How many recent latencies are kept (``>= 1``).

    Raises:
        TypeError, ValueError: For a bad ``size``.
    """

    __slots__ = ("_cache", "_count", "_lock", "_next", "_samples", "_stale", "size")

    def __init__(self, size: int = 200) -> None:
        self.size = check_int(size, "size", minimum=1)
        self._samples: list[float] = []
        self._next = 0
        self._count = 0
        self._lock = threading.Lock()
        self._cache: dict[float, float] = {}
        self._stale = 0

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, latency: float) -> None:
        """Add one latency, in seconds (the oldest is forgotten once ``size`` are kept)."""
        with self._lock:
            if len(self._samples) < self.size:
                self._samples.append(latency)
            else:
                self._samples[self._next] = latency
                self._next = (self._next + 1) % self.size
            self._stale += 1
            if self._stale > max(1, self.size // 10):
                self._cache.clear()
                self._stale = 0

    def quantile(self, q: float) -> float | None:
        """Return the ``q`` quantile (``0 < q < 1``) of the kept latencies, or ``None`` if empty."""
        cached = self._cache.get(q)
        if cached is not None:
            return cached
        with self._lock:
            if not self._samples:
                return None
            ordered = sorted(self._samples)
            index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
            value = ordered[index]
            self._cache[q] = value
            return value


def _delay_rule(value: object) -> tuple[float | None, float | None]:
    """``(fixed delay, quantile)``: exactly one is set."""
    if isinstance(value, str):
        match = _QUANTILE.fullmatch(value)
        if match is None or not 0 < float(match.group(1)) < 100:
            raise ValueError(f"delay must be seconds or a percentile like 'p95', got {value!r}")
        return None, float(match.group(1)) / 100
    return seconds(value, "delay"), None


class Hedge:
    """Send another attempt when the first is slow; keep the first good answer.

    Only for idempotent work: the same call may run more than once at a time. Asynchronous
    calls (:meth:`acall`, :meth:`run`, decorated ``async def``) cancel the losers (an HTTP
    request in flight is abandoned and its connection closed). Synchronous calls (:meth:`call`,
    :meth:`run_sync`, decorated ``def``) run each attempt on a worker thread of the hedge and
    wait for the first good answer; a thread cannot be interrupted, so a loser runs to its end,
    holding its thread, and its answer is then handed to ``discard``. At most ``max_threads``
    attempts run on the threads at once, abandoned ones included: a call finding none free runs
    on the caller's thread, unhedged.

    Args:
        delay: The wait before each hedge: seconds, or a percentile of the latencies of recent
            good answers (``"p95"``, the default); until ``min_samples`` are known,
            ``initial_delay`` is used.
        max_hedges: The most extra attempts per call (``>= 1``).
        budget: The :class:`~buttress.RetryBudget` hedges draw from: ``"default"`` allows 10% of
            calls plus one a second (over 10 s); ``None`` allows every hedge (not advised). A
            call whose hedge is refused just waits for its first attempt.
        initial_delay: The delay while too few latencies are known.
        min_delay: The smallest delay a percentile may give (so a burst of fast answers does
            not make every call hedge at once).
        min_samples: Latencies needed before the percentile is used.
        window: How many recent latencies the percentile is taken over.
        max_threads: The most attempts of synchronous calls running at once on the hedge's
            threads (``>= 2``), losers still running included. Threads are started when needed
            and end after 30 s idle, or at :meth:`close`.
        name: The policy's name.
        listeners: Callables receiving the policy's events (:class:`~buttress.hedge.HedgeSent`,
            :class:`~buttress.hedge.HedgeWon`, :class:`~buttress.hedge.HedgeRefused`).
        clock: The time source (monotonic readings for latencies).

    Raises:
        TypeError, ValueError: At construction, for bad arguments.
    """

    def __init__(
        self,
        *,
        delay: Duration | str = "p95",
        max_hedges: int = 1,
        budget: RetryBudget | Literal["default"] | None = "default",
        initial_delay: Duration = 0.1,
        min_delay: Duration = 0.005,
        min_samples: int = 20,
        window: int = 200,
        max_threads: int = 32,
        name: str = "hedge",
        listeners: Sequence[Listener] = (),
        clock: Clock = system_clock,
    ) -> None:
        self._fixed, self._quantile = _delay_rule(delay)
        self.delay = delay
        self.max_hedges = check_int(max_hedges, "max_hedges", minimum=1)
        check_clock(clock)
        self.clock = clock
        if budget == "default":
            budget = RetryBudget(0.1, 1.0, clock=clock)
        elif budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget, 'default' or None, got {budget!r}")
        self.budget = budget
        self.initial_delay = seconds(initial_delay, "initial_delay")
        self.min_delay = seconds(min_delay, "min_delay")
        self.min_samples = check_int(min_samples, "min_samples", minimum=1)
        self.latencies = LatencyWindow(window)
        self.max_threads = check_int(max_threads, "max_threads", minimum=2)
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)
        self._workers = Workers(self.max_threads, _KEEP_ALIVE, self.name)
        self._lock = threading.Lock()
        self._abandoned = 0
        self.calls = 0
        """Calls run through the policy."""
        self.hedges = 0
        """Hedges sent."""
        self.hedges_won = 0
        """Hedges whose answer was the one returned."""
        self.hedges_refused = 0
        """Hedges that were due but refused (by the budget, or for want of a thread)."""

    def __repr__(self) -> str:
        return f"Hedge(delay={self.delay!r}, max_hedges={self.max_hedges}, name={self.name!r})"

    # -- inspection -----------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Attempts of synchronous calls running on the hedge's threads now (losers included)."""
        return self._workers.reserved

    @property
    def abandoned(self) -> int:
        """Attempts running on the hedge's threads whose call has already returned (losers)."""
        return self._abandoned

    @property
    def threads(self) -> int:
        """Worker threads alive now (busy or idle)."""
        return self._workers.threads

    def delay_now(self) -> float:
        """Return the wait before a hedge, as things stand (fixed, or the percentile)."""
        if self._fixed is not None:
            return self._fixed
        latencies = self.latencies
        if len(latencies) < self.min_samples:
            return self.initial_delay
        value = latencies.quantile(cast("float", self._quantile))
        return self.initial_delay if value is None else max(value, self.min_delay)

    # -- counting and events (shared by both drivers) -------------------------------------------

    def _count(self, field: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + amount)

    def _emit(self, event: HedgeEvent) -> None:
        emit(event, self.listeners)

    def _wants(self, level: int) -> bool:
        """Whether an event of ``level`` would be read (else it is not even built)."""
        return bool(self.listeners or _events._global or _log.isEnabledFor(level))  # noqa: SLF001

    def _begin(self) -> float:
        """Count a call (into the budget too); return the delay before its first hedge."""
        if self.budget is not None:
            self.budget.deposit()
        self._count("calls")
        return self.delay_now()

    def _send(self, target: str, number: int, delay: float, elapsed: float) -> bool:
        """Decide whether hedge ``number`` may go now (the budget); count and report it."""
        budget = self.budget
        if budget is not None and not budget.try_withdraw():
            self._refuse(target, number, "budget", elapsed)
            return False
        self._count("hedges")
        if self._wants(logging.DEBUG):
            self._emit(HedgeSent(self.name, target, number, delay, elapsed))
        return True

    def _refuse(self, target: str, number: int, reason: str, elapsed: float) -> None:
        self._count("hedges_refused")
        if self._wants(logging.INFO):
            self._emit(HedgeRefused(self.name, target, number, reason, elapsed))

    def _won(self, target: str, number: int, elapsed: float, latency: float) -> None:
        """Record the latency of the answer returned; count and report a hedge's win."""
        self.latencies.record(latency)
        if number > 1:
            self._count("hedges_won")
            if self._wants(logging.DEBUG):
                self._emit(HedgeWon(self.name, target, number, elapsed, latency))

    # -- asyncio --------------------------------------------------------------------------------

    async def run(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        accept: Callable[[T], bool] | None = None,
        discard: Callable[[T], object] | None = None,
        target: str = "<call>",
    ) -> T:
        """Run ``attempt(n)`` (``n`` = 1, 2, ...) hedged; return the first accepted answer.

        Args:
            attempt: Makes attempt number ``n`` (1 is the first, 2 the first hedge, ...).
            accept: Whether an answer is good (default: any answer without an exception). A
                rejected answer is kept while others are in flight, and returned if none does
                better.
            discard: Called with each answer that is not returned (e.g. to close a response);
                may return an awaitable.
            target: What is called, in events and logs.

        Returns:
            The first accepted answer, or else the last answer of all.

        Raises:
            BaseException: The last exception, when every attempt raised.
        """
        delay = self._begin()
        clock = self.clock
        begun = clock.now()
        first: asyncio.Future[T] = asyncio.ensure_future(attempt(1))
        started: dict[asyncio.Future[T], float] = {first: begun}
        numbers: dict[asyncio.Future[T], int] = {first: 1}
        pending: set[asyncio.Future[T]] = {first}
        may_hedge = True
        winner: asyncio.Future[T] | None = None
        fallback: asyncio.Future[T] | None = None
        try:
            while pending:
                timeout = delay if may_hedge and len(started) <= self.max_hedges else None
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    number = len(started) + 1
                    now = clock.now()
                    if self._send(target, number, delay, now - begun):
                        hedge = asyncio.ensure_future(attempt(number))
                        started[hedge] = now
                        numbers[hedge] = number
                        pending.add(hedge)
                    else:
                        may_hedge = False
                    continue
                for task in done:
                    if task.cancelled():
                        continue
                    error = task.exception()
                    if error is None and (accept is None or accept(task.result())):
                        winner = task
                        now = clock.now()
                        self._won(target, numbers[task], now - begun, now - started[task])
                        return task.result()
                    fallback = task
            if fallback is None:
                raise asyncio.CancelledError  # every attempt was cancelled from outside
            return fallback.result()
        finally:
            await self._clean_up(started, pending, winner or fallback, discard)

    @staticmethod
    async def _clean_up(
        started: dict[asyncio.Future[T], float],
        pending: set[asyncio.Future[T]],
        kept: asyncio.Future[T] | None,
        discard: Callable[[T], object] | None,
    ) -> None:
        """Cancel the attempts still running; hand every answer not returned to ``discard``."""
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in started:
            if task is kept or not task.done() or task.cancelled():
                continue
            if task.exception() is not None:  # retrieved, so asyncio does not warn about it
                continue
            if discard is not None:
                outcome = discard(task.result())
                if inspect.isawaitable(outcome):
                    await outcome

    # -- threads --------------------------------------------------------------------------------

    def run_sync(
        self,
        attempt: Callable[[int], T],
        *,
        accept: Callable[[T], bool] | None = None,
        discard: Callable[[T], object] | None = None,
        target: str = "<call>",
    ) -> T:
        """Run ``attempt(n)`` (``n`` = 1, 2, ...) on threads, hedged; return the first good answer.

        Each attempt runs on a worker thread of the hedge, in a copy of the caller's context
        (so it sees the caller's :func:`~buttress.timeout.current_deadline`); the caller waits.
        When no thread is free, or the budget could not allow a hedge anyway, the first attempt
        runs on the caller's thread, unhedged (a hedge it would have needed is counted as
        refused). Attempts still running when the call returns are abandoned: they run to their
        end, and their answers are then handed to ``discard``.

        Args:
            attempt: Makes attempt number ``n`` (1 is the first, 2 the first hedge, ...); called
                on a worker thread, so it must be safe to run concurrently with itself.
            accept: Whether an answer is good (default: any answer without an exception). A
                rejected answer is kept while others are in flight, and returned if none does
                better.
            discard: Called with each answer that is not returned (e.g. to close a response),
                on the caller's thread, or on the worker's for an answer that comes late. What it
                raises is logged on ``buttress.hedge``, never raised.
            target: What is called, in events and logs.

        Returns:
            The first accepted answer, or else the last answer of all.

        Raises:
            BaseException: The last exception, when every attempt raised (the attempt's own
                exception object, with its traceback).
        """
        delay = self._begin()
        clock = self.clock
        begun = clock.now()
        workers = self._workers
        budget = self.budget
        if budget is not None and budget.available() == 0:
            return self._run_inline(attempt, accept, target, delay, begun, "budget")
        if not workers.reserve():
            return self._run_inline(attempt, accept, target, delay, begun, "threads")
        race = _Race(self, attempt, discard)
        try:
            starts = {1: race.start(1)}
        except RuntimeError:  # no thread could be started (the reservation was given back)
            return self._run_inline(attempt, accept, target, delay, begun, "threads")
        return self._wait_race(race, starts, accept, target, delay, begun)

    def _wait_race(
        self,
        race: _Race[T],
        starts: dict[int, float],
        accept: Callable[[T], bool] | None,
        target: str,
        delay: float,
        begun: float,
    ) -> T:
        """Wait for the attempts of ``race``; start hedges when due; settle it on the way out."""
        cond = race.cond
        next_at = time.monotonic() + delay  # waits are real time, as asyncio's are
        hedging = True
        fallback: _Outcome[T] | None = None
        unwanted: list[_Outcome[T]] = []
        try:
            while True:
                with cond:
                    while not race.outcomes and race.running:
                        left = next_at - time.monotonic() if hedging else None
                        if left is not None and left <= 0:
                            break
                        cond.wait(left)
                    outcomes, race.outcomes = race.outcomes, []
                    running = race.running
                winner, fallback = _judge(outcomes, accept, fallback, unwanted)
                if winner is not None:
                    elapsed = winner.finished - begun
                    self._won(target, winner.number, elapsed, winner.finished - winner.started)
                    return cast("T", winner.value)
                if not running:
                    break
                if hedging and time.monotonic() >= next_at:
                    hedging = self._hedge_sync(race, starts, target, delay, begun)
                    next_at = time.monotonic() + delay
            if fallback is None:  # pragma: no cover - every attempt reports an outcome
                raise RuntimeError("hedge: no attempt reported an outcome")
            if fallback.error is not None:
                raise fallback.error
            return cast("T", fallback.value)
        finally:
            unwanted.extend(race.settle())
            for outcome in unwanted:
                if outcome.error is None:
                    race.discard_quietly(cast("T", outcome.value))
            del unwanted, fallback  # break the cycle through a raised error's traceback

    def _hedge_sync(
        self, race: _Race[T], starts: dict[int, float], target: str, delay: float, begun: float
    ) -> bool:
        """Start the next hedge if a thread and the budget allow; return whether more may go."""
        number = len(starts) + 1
        elapsed = self.clock.now() - begun
        workers = self._workers
        if not workers.reserve():
            self._refuse(target, number, "threads", elapsed)
            return False
        if not self._send(target, number, delay, elapsed):
            workers.unreserve()
            return False
        try:
            starts[number] = race.start(number)
        except RuntimeError:  # no thread could be started (the reservation was given back)
            return False
        return len(starts) <= self.max_hedges

    def _run_inline(
        self,
        attempt: Callable[[int], T],
        accept: Callable[[T], bool] | None,
        target: str,
        delay: float,
        begun: float,
        reason: str,
    ) -> T:
        """The first attempt on the caller's thread, unhedged (no thread free, or no budget)."""
        clock = self.clock
        try:
            value = attempt(1)
        finally:
            elapsed = clock.now() - begun
            if elapsed > delay:  # a hedge was due: say it was refused, as the drivers do
                self._refuse(target, 2, reason, elapsed)
        if accept is None or accept(value):
            self._won(target, 1, elapsed, elapsed)
        return value

    def close(self, timeout: Duration | None = 0.0) -> bool:
        """End the hedge's idle worker threads now (the transports call this when closed).

        Attempts still running on threads cannot be stopped: each thread ends when its attempt
        does. The hedge stays usable; a later synchronous call starts threads again. Calling it
        more than once is harmless.

        Args:
            timeout: Seconds to wait for the running attempts' threads to end (``None``: as long
                as they take; ``0``, the default: do not wait).

        Returns:
            ``True`` if none of the worker threads alive at the call is left (with
            ``timeout=0``: if no worker thread is left at all).

        Raises:
            TypeError, ValueError: For a bad ``timeout``.
        """
        return self._workers.close(seconds_or_none(timeout, "timeout"))

    def __enter__(self) -> Hedge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the fronts -----------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a function (``def`` or ``async def``): each call is hedged.

        Raises:
            TypeError: If ``fn`` is not callable, or is a generator function.
        """
        check_decoratable(fn, "Hedge")
        target = target_name(fn)
        if inspect.iscoroutinefunction(fn):
            afn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def ahedged(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.run(lambda _: afn(*args, **kwargs), target=target)

            return cast("Callable[P, R]", ahedged)

        @functools.wraps(fn)
        def hedged(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.run_sync(lambda _: fn(*args, **kwargs), target=target)

        return hedged

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` hedged on threads: it may run more than once at a time.

        Raises:
            TypeError: If ``fn`` is not callable, or is a coroutine function (use :meth:`acall`).
        """
        if not callable(fn):
            raise TypeError(f"call() needs a callable, got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await acall() for coroutines")
        return self.run_sync(lambda _: fn(*args, **kwargs), target=target_name(fn))

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` hedged: it may run more than once at a time."""
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        return await self.run(lambda _: fn(*args, **kwargs), target=target_name(fn))


def _judge(
    outcomes: list[_Outcome[T]],
    accept: Callable[[T], bool] | None,
    fallback: _Outcome[T] | None,
    unwanted: list[_Outcome[T]],
) -> tuple[_Outcome[T] | None, _Outcome[T] | None]:
    """Pick the first good outcome; keep the last bad one as the fallback; the rest is unwanted.

    Returns:
        ``(winner or None, fallback)``; outcomes neither returned nor kept go to ``unwanted``.
    """
    winner: _Outcome[T] | None = None
    for outcome in outcomes:
        if winner is not None:
            unwanted.append(outcome)
        elif outcome.good(accept):
            winner = outcome
        else:
            if fallback is not None:
                unwanted.append(fallback)
            fallback = outcome
    if winner is not None and fallback is not None:
        unwanted.append(fallback)
    return winner, fallback


class _Outcome(Generic[T]):
    """What one attempt of a synchronous hedged call ended with."""

    __slots__ = ("error", "finished", "number", "started", "value")

    def __init__(
        self,
        number: int,
        started: float,
        finished: float,
        value: T | None,
        error: BaseException | None,
    ) -> None:
        self.number = number
        self.started = started
        self.finished = finished
        self.value = value
        self.error = error

    def good(self, accept: Callable[[T], bool] | None) -> bool:
        """Whether the attempt answered, and ``accept`` (if any) likes the answer."""
        return self.error is None and (accept is None or accept(cast("T", self.value)))


class _Race(Generic[T]):
    """The attempts of one synchronous hedged call, and what they report to the caller."""

    __slots__ = ("attempt", "cond", "discard", "hedge", "outcomes", "running", "settled")

    def __init__(
        self,
        hedge: Hedge,
        attempt: Callable[[int], T],
        discard: Callable[[T], object] | None,
    ) -> None:
        self.hedge = hedge
        self.attempt = attempt
        self.discard = discard
        self.cond = threading.Condition(threading.Lock())
        self.outcomes: list[_Outcome[T]] = []
        self.running = 0
        self.settled = False

    def start(self, number: int) -> float:
        """Start attempt ``number`` on the thread reserved for it; return when it started.

        Raises:
            RuntimeError: If no thread could be started.
        """
        started = self.hedge.clock.now()
        job = functools.partial(self._run, number, started, contextvars.copy_context())
        with self.cond:
            self.running += 1
        try:
            self.hedge._workers.start(job)  # noqa: SLF001 - the race is part of the hedge
        except BaseException:
            with self.cond:
                self.running -= 1
            raise
        return started

    def _run(self, number: int, started: float, context: contextvars.Context) -> None:
        """Run one attempt on a worker thread and report it (or discard it if nobody waits)."""
        value: T | None = None
        error: BaseException | None = None
        try:
            value = context.run(self.attempt, number)
        except BaseException as caught:  # noqa: BLE001 - handed to the caller, which raises it
            error = caught
        finished = self.hedge.clock.now()
        with self.cond:
            self.running -= 1
            if not self.settled:
                self.outcomes.append(_Outcome(number, started, finished, value, error))
                self.cond.notify()
                return
        try:
            if error is None:
                self.discard_quietly(cast("T", value))
        finally:  # counted until its answer is discarded (its response closed)
            self.hedge._count("_abandoned", -1)  # noqa: SLF001 - the race is part of the hedge

    def settle(self) -> list[_Outcome[T]]:
        """The caller stops waiting: count the attempts left running as abandoned.

        Returns:
            The outcomes reported but not read yet (to be discarded).
        """
        with self.cond:
            self.settled = True
            left, self.outcomes = self.outcomes, []
            if self.running:
                # Under the race's lock, so that no late attempt can take itself off first.
                self.hedge._count("_abandoned", self.running)  # noqa: SLF001
        return left

    def discard_quietly(self, value: T) -> None:
        """Hand an answer that is not returned to ``discard``; log what it raises."""
        if self.discard is None:
            return
        try:
            self.discard(value)
        except Exception:  # noqa: BLE001 - a late answer has nobody to raise to; logged
            _log.exception("buttress %s: discarding an answer failed", self.hedge.name)
