"""The hedging policy: a pure latency window and delay rule, and an asyncio driver.

:class:`LatencyWindow` keeps the latencies of recent successful calls and answers quantiles;
:meth:`Hedge.delay_now` turns it into the wait before a hedge. :meth:`Hedge.run` starts the
first attempt, starts another each time the delay passes without a good answer (while the budget
allows), returns the first good answer and cancels the others.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Literal, ParamSpec, TypeVar, cast

from buttress._clock import Clock, check_clock, system_clock
from buttress._events import Listener, check_listeners
from buttress._types import Duration, check_int, check_name, seconds
from buttress.retry import RetryBudget

__all__ = ["Hedge", "LatencyWindow"]

P = ParamSpec("P")
T = TypeVar("T")

_QUANTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")


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

    Only for idempotent work: the same call may run more than once at a time. Losers are
    cancelled (an HTTP request in flight is abandoned and its connection closed).

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
        name: The policy's name.
        listeners: Reserved for events (kept for the common policy signature).
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
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)
        self._lock = threading.Lock()
        self.calls = 0
        """Calls run through the policy."""
        self.hedges = 0
        """Hedges sent."""
        self.hedges_won = 0
        """Hedges whose answer was the one returned."""
        self.hedges_refused = 0
        """Hedges the budget refused."""

    def __repr__(self) -> str:
        return f"Hedge(delay={self.delay!r}, max_hedges={self.max_hedges}, name={self.name!r})"

    def delay_now(self) -> float:
        """Return the wait before a hedge, as things stand (fixed, or the percentile)."""
        if self._fixed is not None:
            return self._fixed
        latencies = self.latencies
        if len(latencies) < self.min_samples:
            return self.initial_delay
        value = latencies.quantile(cast("float", self._quantile))
        return self.initial_delay if value is None else max(value, self.min_delay)

    def _count(self, field: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + amount)

    async def run(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        accept: Callable[[T], bool] | None = None,
        discard: Callable[[T], object] | None = None,
    ) -> T:
        """Run ``attempt(n)`` (``n`` = 1, 2, ...) hedged; return the first accepted answer.

        Args:
            attempt: Makes attempt number ``n`` (1 is the first, 2 the first hedge, ...).
            accept: Whether an answer is good (default: any answer without an exception). A
                rejected answer is kept while others are in flight, and returned if none does
                better.
            discard: Called with each answer that is not returned (e.g. to close a response);
                may return an awaitable.

        Returns:
            The first accepted answer, or else the last answer of all.

        Raises:
            BaseException: The last exception, when every attempt raised.
        """
        budget = self.budget
        if budget is not None:
            budget.deposit()
        self._count("calls")
        clock = self.clock
        delay = self.delay_now()
        first: asyncio.Future[T] = asyncio.ensure_future(attempt(1))
        started: dict[asyncio.Future[T], float] = {first: clock.now()}
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
                    if budget is None or budget.try_withdraw():
                        number = len(started) + 1
                        hedge = asyncio.ensure_future(attempt(number))
                        started[hedge] = clock.now()
                        numbers[hedge] = number
                        pending.add(hedge)
                        self._count("hedges")
                    else:
                        may_hedge = False
                        self._count("hedges_refused")
                    continue
                for task in done:
                    if task.cancelled():
                        continue
                    error = task.exception()
                    if error is None and (accept is None or accept(task.result())):
                        winner = task
                        self.latencies.record(clock.now() - started[task])
                        if numbers[task] > 1:
                            self._count("hedges_won")
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

    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate a coroutine function: each call is hedged.

        Raises:
            TypeError: If ``fn`` is not a coroutine function (threads cannot be cancelled).
        """
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("Hedge decorates coroutine functions (async def) only")

        @functools.wraps(fn)
        async def hedged(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.run(lambda _: fn(*args, **kwargs))

        return hedged

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` hedged: it may run more than once at a time."""
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        return await self.run(lambda _: fn(*args, **kwargs))
