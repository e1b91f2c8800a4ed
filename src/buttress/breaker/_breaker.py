"""The circuit breaker front: decorator, ``call``/``acall``, ``guard()`` blocks, manual control.

The rules live in :mod:`buttress.breaker._machine`; this module admits calls, times them when a
rule needs it, classifies their outcomes and reports events. No lock is held while the protected
call runs.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, get_args

from buttress import _events
from buttress._clock import Clock, check_clock, system_clock
from buttress._errors import CircuitOpen, StorageError, _circuit_open
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
from buttress.breaker._events import (
    BreakerCall,
    BreakerEvent,
    BreakerStateChanged,
    CallOutcome,
)
from buttress.breaker._machine import (
    CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    Machine,
    Rules,
    State,
    Transition,
)
from buttress.breaker._shared import LOCAL, TRIAL, SharedState, Ticket
from buttress.breaker._window import CountWindow

if TYPE_CHECKING:
    from buttress.storage import BreakerStorage

__all__ = ["BreakerMetrics", "BreakerRegistry", "CircuitBreaker", "Guard", "breaker_registry"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

WindowType = Literal["count", "time"]
_WINDOW_TYPES: tuple[str, ...] = get_args(WindowType)


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of a breaker, for dashboards and the registry.

    Attributes:
        name: The breaker's name.
        state: Its state.
        calls: Calls in the failure-rate window.
        failures: Failures among them.
        slow: Slow calls among them.
        failure_rate: ``failures / calls`` (0 when empty).
        slow_rate: ``slow / calls`` (0 when empty).
        consecutive_failures: Failures in a row while closed.
        retry_after: Seconds until a trial call is allowed while OPEN (0 otherwise; ``None``
            while FORCED_OPEN).
    """

    name: str
    state: State
    calls: int
    failures: int
    slow: int
    failure_rate: float
    slow_rate: float
    consecutive_failures: int
    retry_after: float | None


class BreakerRegistry:
    """Named breakers, for inspection (``name -> state, metrics``).

    Breakers register themselves on construction; the registry holds them weakly, so a breaker
    nobody uses any more disappears from it. A later breaker with the same name replaces the
    earlier one.
    """

    def __init__(self) -> None:
        self._breakers: weakref.WeakValueDictionary[str, CircuitBreaker] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()

    def add(self, breaker: CircuitBreaker) -> None:
        """Register ``breaker`` under its name."""
        with self._lock:
            self._breakers[breaker.name] = breaker

    def get(self, name: str) -> CircuitBreaker | None:
        """Return the breaker named ``name``, if it is still alive."""
        return self._breakers.get(name)

    def names(self) -> list[str]:
        """The names of the live breakers, sorted."""
        with self._lock:
            return sorted(self._breakers.keys())

    def snapshot(self) -> dict[str, BreakerMetrics]:
        """Return ``name -> metrics`` for every live breaker."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {breaker.name: breaker.metrics() for breaker in breakers}

    def __len__(self) -> int:
        return len(self._breakers)


_default_registry: BreakerRegistry | None = None
_default_lock = threading.Lock()


def breaker_registry() -> BreakerRegistry:
    """Return the default registry, where breakers register unless given another one."""
    global _default_registry  # noqa: PLW0603 - made on first use, never at import
    if _default_registry is None:
        with _default_lock:
            if _default_registry is None:
                _default_registry = BreakerRegistry()
    return _default_registry


def _rate(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1], got {type(value).__name__}")
    if not (0 < value <= 1):
        raise ValueError(f"{name} must be in (0, 1] (a fraction: 0.5 is 50%), got {value!r}")
    return float(value)


class CircuitBreaker:
    """Stop calling a failing dependency for a while, then try it again carefully.

    Args:
        name: The breaker's name, in events, errors and the registry.
        fail_max: Open after this many failures in a row. When no trip condition is given at
            all, ``fail_max=5``.
        failure_rate: Open when at least this fraction (0 < rate <= 1) of the calls in the
            window failed, once the window holds ``min_calls``.
        slow_call_rate: Open when at least this fraction of the calls in the window were slow.
        slow_call_duration: Seconds after which a call counts as slow (required with
            ``slow_call_rate``).
        window_size: The failure-rate window: the last N calls (``window_type="count"``) or the
            last N seconds (``"time"``).
        window_type: ``"count"`` or ``"time"``.
        window_buckets: How many buckets a time window has.
        min_calls: Calls the window must hold before rates are judged (default: 10, or the count
            window's size if smaller).
        reset_timeout: Seconds the breaker stays open before letting trial calls through.
        reset_timeout_multiplier: Each further trip in a row multiplies the open period by this.
        reset_timeout_max: The cap on the open period (default: ``reset_timeout`` times 10 when
            it grows, else ``reset_timeout``).
        half_open_max_calls: Trial calls allowed in flight while half-open; more are rejected.
        success_threshold: Trial successes that close the breaker.
        record: Exception types that count as failures (default: :class:`Exception`).
            Other exceptions count as successes (the dependency answered).
        ignore: Exception types, or predicates on the exception, that count as neither: the
            call's exception passes through and the breaker learns nothing from it.
            ``KeyboardInterrupt``, ``SystemExit`` and ``asyncio.CancelledError`` are always
            ignored.
        failure_if_result: A predicate on the return value marking it as a failure (e.g. HTTP
            5xx); the result is still returned.
        fallback: Returned instead of raising :class:`CircuitOpen` when a call is rejected: a
            value, or a callable taking the :class:`CircuitOpen` (a coroutine function in async
            code).
        listeners: Callables receiving this breaker's events.
        clock: The time source.
        registry: Where to register; default :func:`breaker_registry`; ``None`` registers
            nowhere.
        storage: Share the breaker's state with every process using the same store and name:
            a :class:`~buttress.storage.redis.RedisStorage` or a ``redis://`` URL (the
            ``redis`` extra). ``None`` (the default): this process's own state. See
            ``docs/breaker.md`` for the protocol and its trade-offs.
        sync_interval: With ``storage``: seconds a process may keep successes before writing
            them (failures are written at once); also how often a half-open or forced-open
            view is asked again.
        trial_lease: With ``storage``: seconds a half-open trial permit is held before it
            lapses (a crashed holder frees it then).
        store_cooldown: With ``storage``: seconds the breaker runs on local state after the
            store failed, before one call tries the store again.

    Raises:
        TypeError, ValueError: For arguments out of range, at construction.
    """

    def __init__(  # noqa: PLR0912, PLR0915 - one plain check per argument reads best
        self,
        name: str = "breaker",
        *,
        fail_max: int | None = None,
        failure_rate: float | None = None,
        slow_call_rate: float | None = None,
        slow_call_duration: Duration | None = None,
        window_size: float = 100,
        window_type: WindowType = "count",
        window_buckets: int = 10,
        min_calls: int | None = None,
        reset_timeout: Duration = 30.0,
        reset_timeout_multiplier: float = 1.0,
        reset_timeout_max: Duration | None = None,
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        record: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        ignore: Iterable[type[BaseException] | Callable[[BaseException], bool]] = (),
        failure_if_result: Callable[[Any], bool] | None = None,
        fallback: Any = NO_FALLBACK,
        listeners: Sequence[Listener] = (),
        clock: Clock = system_clock,
        registry: BreakerRegistry | Literal["default"] | None = "default",
        storage: BreakerStorage | str | None = None,
        sync_interval: Duration = 0.2,
        trial_lease: Duration = 10.0,
        store_cooldown: Duration = 5.0,
    ) -> None:
        check_name(name)
        self.name = name
        failure_rate = _rate(failure_rate, "failure_rate")
        slow_call_rate = _rate(slow_call_rate, "slow_call_rate")
        slow = seconds_or_none(slow_call_duration, "slow_call_duration", allow_zero=False)
        if slow_call_rate is not None and slow is None:
            raise ValueError("slow_call_rate needs slow_call_duration (what counts as slow)")
        if fail_max is None and failure_rate is None and slow_call_rate is None:
            fail_max = 5
        if fail_max is not None:
            check_int(fail_max, "fail_max", minimum=1)
        if window_type not in _WINDOW_TYPES:
            raise ValueError(f"window_type must be 'count' or 'time', got {window_type!r}")
        if window_type == "count":
            size: float = check_int(window_size, "window_size", minimum=1)
        else:
            size = seconds(window_size, "window_size", allow_zero=False)
        buckets = check_int(window_buckets, "window_buckets", minimum=1)
        default_min = min(10, int(size)) if window_type == "count" else 10
        calls = check_int(default_min if min_calls is None else min_calls, "min_calls", minimum=1)
        if window_type == "count" and calls > size:
            raise ValueError(
                f"min_calls ({calls}) cannot be larger than the count window ({int(size)} calls)"
            )
        timeout = seconds(reset_timeout, "reset_timeout")
        multiplier = reset_timeout_multiplier
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            raise TypeError("reset_timeout_multiplier must be a number >= 1")
        if not (math.isfinite(multiplier) and multiplier >= 1):
            raise ValueError(f"reset_timeout_multiplier must be >= 1, got {multiplier!r}")
        cap = seconds_or_none(reset_timeout_max, "reset_timeout_max")
        if cap is None:
            cap = timeout * 10 if multiplier > 1 else timeout
        if cap < timeout:
            raise ValueError(f"reset_timeout_max ({cap}) must be >= reset_timeout ({timeout})")
        self.rules = Rules(
            fail_max=fail_max,
            failure_rate=failure_rate,
            slow_call_rate=slow_call_rate,
            slow_call_duration=slow,
            window_type=window_type,
            window_size=size,
            window_buckets=buckets,
            min_calls=calls,
            reset_timeout=timeout,
            reset_timeout_multiplier=float(multiplier),
            reset_timeout_max=cap,
            half_open_max_calls=check_int(half_open_max_calls, "half_open_max_calls", minimum=1),
            success_threshold=check_int(success_threshold, "success_threshold", minimum=1),
        )
        self._record = check_exception_types(record, "record")
        ignored_types: list[type[BaseException]] = []
        self._ignore_predicates: list[Callable[[BaseException], bool]] = []
        single = isinstance(ignore, type) or (callable(ignore) and not hasattr(ignore, "__iter__"))
        for item in (ignore,) if single else ignore:
            if isinstance(item, type):
                if not issubclass(item, BaseException):
                    raise TypeError(f"ignore must hold exception types or predicates, got {item!r}")
                ignored_types.append(item)
            elif callable(item):
                self._ignore_predicates.append(item)
            else:
                raise TypeError(f"ignore must hold exception types or predicates, got {item!r}")
        self._ignore_types = tuple(ignored_types)
        if failure_if_result is not None and not callable(failure_if_result):
            raise TypeError("failure_if_result must be callable")
        self.failure_if_result = failure_if_result
        self.fallback = fallback
        self.listeners = check_listeners(listeners)
        check_clock(clock)
        self.clock = clock
        self._machine = Machine(self.rules, clock.now)
        self._open_message = f"circuit breaker {name!r} is open (see retry_after)"
        # Read the clock on the success path only when a rule needs the time.
        self._timed = slow is not None or window_type == "time"
        interval = seconds(sync_interval, "sync_interval", allow_zero=True)
        lease = seconds(trial_lease, "trial_lease", allow_zero=False)
        cooldown = seconds(store_cooldown, "store_cooldown", allow_zero=True)
        self._shared: SharedState | None = None
        if storage is not None:
            self._shared = SharedState(self, _breaker_store(storage), interval, lease, cooldown)
        if registry == "default":
            breaker_registry().add(self)
        elif isinstance(registry, BreakerRegistry):
            registry.add(self)
        elif registry is not None:
            raise TypeError("registry must be a BreakerRegistry, 'default' or None")

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state})"

    # -- inspection -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state (OPEN turns HALF_OPEN at the next call after the reset timeout).

        A shared breaker answers from the state it last learned from its store (no round trip),
        or from its local state while the store is down.
        """
        shared = self._shared
        if shared is not None and shared.known and not shared.circuit.down:
            return shared.state
        return self._machine.state

    @property
    def storage(self) -> BreakerStorage | None:
        """The store a shared breaker keeps its state in (``None`` for an in-process one)."""
        return None if self._shared is None else self._shared.store

    @property
    def shared(self) -> bool:
        """Whether this breaker's state is shared through a store and the store is answering."""
        return self._shared is not None and not self._shared.circuit.down

    def metrics(self) -> BreakerMetrics:
        """A snapshot of the state and the window.

        A shared breaker asks its store (one round trip) and describes the shared state; if the
        store fails, it describes its local state.
        """
        shared = self._shared
        if shared is not None and not shared.circuit.down:
            now = self.clock.now()
            sequence = shared.next_sequence()
            try:
                reply = shared.store.breaker(self.name, "read", shared.rules)
            except StorageError as error:
                shared.lost(error)
            else:
                shared.store_answered()
                shared.apply(reply, now, sequence)
                return shared.metrics(reply, now)
        machine, now = self._machine, self.clock.now()
        totals = machine.totals(now)
        return BreakerMetrics(
            name=self.name,
            state=machine.state,
            calls=totals.calls,
            failures=totals.failures,
            slow=totals.slow,
            failure_rate=totals.failure_rate,
            slow_rate=totals.slow_rate,
            consecutive_failures=machine.consecutive,
            retry_after=machine.retry_after(now),
        )

    # -- manual control -------------------------------------------------------------------------

    def _force(self, state: State, reason: str) -> None:
        shared = self._shared
        if shared is not None:
            sequence, operation, arguments = shared.force(state)
            now = self.clock.now()
            try:
                reply = shared.store.breaker(self.name, operation, shared.rules, arguments)
            except StorageError as error:
                shared.lost(error)
                self._changed(self._machine.force(state, reason, now))
                raise
            shared.store_answered()
            shared.apply(reply, now, sequence)
            return
        self._changed(self._machine.force(state, reason, self.clock.now()))

    def open(self) -> None:
        """Open now, as a trip would (trial calls after the reset timeout).

        On a shared breaker, each manual change applies to the shared state (one round trip); if
        the store fails, it applies to this process's local state and :class:`StorageError` is
        raised.
        """
        self._force(State.OPEN, "opened by hand")

    def close(self) -> None:
        """Close now and forget the recorded calls."""
        self._force(State.CLOSED, "closed by hand")

    def reset(self) -> None:
        """The same as :meth:`close`: back to a fresh, closed breaker."""
        self._force(State.CLOSED, "reset by hand")

    def half_open(self) -> None:
        """Let trial calls through now."""
        self._force(State.HALF_OPEN, "half-opened by hand")

    def force_open(self) -> None:
        """Reject every call until :meth:`close` or :meth:`reset` (FORCED_OPEN)."""
        self._force(State.FORCED_OPEN, "forced open by hand")

    def disable(self) -> None:
        """Admit every call and never trip, still recording (DISABLED), until closed."""
        self._force(State.DISABLED, "disabled by hand")

    # -- events ---------------------------------------------------------------------------------

    def _changed(self, transition: Transition | None) -> None:
        if transition is not None:
            emit(
                BreakerStateChanged(
                    self.name,
                    transition.old,
                    transition.new,
                    transition.reason,
                    transition.open_for,
                ),
                self.listeners,
            )

    def _changed_shared(self, event: BreakerEvent) -> None:
        emit(event, self.listeners)

    def _call_event(
        self,
        outcome: CallOutcome,
        state: State,
        duration: float | None,
        error: BaseException | None,
    ) -> None:
        if self.listeners or _events._global:  # noqa: SLF001 - the registry's fast check
            emit(BreakerCall(self.name, outcome, state, duration, error), self.listeners)

    # -- the protocol shared by every calling style ---------------------------------------------

    def _admit(self) -> int:
        """Admit a call or raise :class:`CircuitOpen`; return its generation."""
        machine = self._machine
        state = machine.state
        if state is CLOSED:
            return machine.generation
        now = self.clock.now()
        if state is OPEN:
            until = machine.open_until
            if now < until:  # the common rejection: no lock, a fresh exception, nothing else
                if not (self.listeners or _events._global):  # noqa: SLF001 - the fast check
                    raise _circuit_open(self._open_message, self.name, until - now)
                error = CircuitOpen(self._open_message, name=self.name, retry_after=until - now)
                try:
                    self._call_event("rejected", state, None, error)
                    raise error
                finally:
                    del error
        generation, transition = machine.acquire(now)
        self._changed(transition)
        if generation < 0:
            retry_after = machine.retry_after(now)
            state = machine.state
            why = (
                "forced open"
                if state is FORCED_OPEN
                else "half-open, trial calls busy"
                if state is HALF_OPEN
                else f"open; trial calls in {retry_after:.2f} s"
            )
            error = CircuitOpen(
                f"circuit breaker {self.name!r} is {why}", name=self.name, retry_after=retry_after
            )
            self._call_event("rejected", state, None, error)
            raise error
        return generation

    def _classify(self, error: BaseException) -> bool | None:
        """``True`` for a failure, ``False`` for a success, ``None`` to ignore."""
        if not isinstance(error, Exception):
            return None  # KeyboardInterrupt, SystemExit, CancelledError: nobody's verdict
        if self._ignore_types and isinstance(error, self._ignore_types):
            return None
        for predicate in self._ignore_predicates:
            if predicate(error):
                return None
        return isinstance(error, self._record)

    def _finish(
        self,
        generation: int,
        start: float,
        error: BaseException | None,
        result: Any,
        judge_result: bool = True,
    ) -> None:
        """Report how an admitted call ended (a block has no result to judge)."""
        machine = self._machine
        failure, is_slow, duration, now = self._judge(start, error, result, judge_result)
        if failure is None:
            machine.release(generation)
            self._call_event("ignored", machine.state_of(generation), None, error)
            return
        state = machine.state_of(generation)
        transition = machine.record(generation, failure, is_slow, now)
        self._call_event("failure" if failure else "success", state, duration, error)
        self._changed(transition)

    def _judge(
        self, start: float, error: BaseException | None, result: Any, judge_result: bool
    ) -> tuple[bool | None, bool, float | None, float | None]:
        """``(failure, slow, duration, now)`` of a call; ``failure`` is ``None`` to ignore it.

        ``now`` and ``duration`` are ``None`` unless a rule needs the time.
        """
        if error is not None:
            failure = self._classify(error)
            if failure is None:
                return None, False, None, None
        else:
            predicate = self.failure_if_result
            failure = judge_result and predicate is not None and bool(predicate(result))
        if not self._timed:
            return failure, False, None, None
        now = self.clock.now()
        duration = now - start
        slow = self.rules.slow_call_duration
        return failure, slow is not None and duration >= slow, duration, now

    def _reject(self, error: CircuitOpen) -> Any:
        fallback = self.fallback
        if fallback is NO_FALLBACK:
            raise error
        return fallback(error) if callable(fallback) else fallback

    # -- the shared protocol (a breaker made with storage=; see _shared.py) ----------------------

    def _enter(self) -> Ticket:
        """Admit a call (shared or not) or raise :class:`CircuitOpen`."""
        shared = self._shared
        if shared is None:
            return (LOCAL, self._admit(), "")
        now = self.clock.now()
        ticket = shared.cached(now)
        if ticket is not None:
            return ticket
        sequence, arguments = shared.trial_request()
        try:
            reply = shared.store.breaker(self.name, "trial", shared.rules, arguments)
        except StorageError as error:
            shared.lost(error)
            return shared.local()
        return shared.admitted(reply, now, sequence, arguments[0])

    async def _aenter(self) -> Ticket:
        """The coroutine form of :meth:`_enter`."""
        shared = self._shared
        if shared is None:
            return (LOCAL, self._admit(), "")
        now = self.clock.now()
        ticket = shared.cached(now)
        if ticket is not None:
            return ticket
        sequence, arguments = shared.trial_request()
        try:
            reply = await shared.store.abreaker(self.name, "trial", shared.rules, arguments)
        except StorageError as error:
            shared.lost(error)
            return shared.local()
        return shared.admitted(reply, now, sequence, arguments[0])

    def _outcome(
        self,
        ticket: Ticket,
        start: float,
        error: BaseException | None,
        result: Any,
        judge_result: bool,
    ) -> tuple[tuple[int, str, tuple[str, ...]], float] | None:
        """Count how a shared call ended; return the round trip to make now, if any."""
        shared = cast("SharedState", self._shared)
        kind = ticket[0]
        failure, slow, duration, now = self._judge(start, error, result, judge_result)
        if now is None:
            now = self.clock.now()
        state = HALF_OPEN if kind == TRIAL else shared.state
        outcome: CallOutcome = "ignored" if failure is None else "failure" if failure else "success"
        self._call_event(outcome, state, duration, error)
        if shared.circuit.down:
            # The store failed meanwhile: the local breaker counts it (a trial's permit lapses).
            if failure is not None and kind != TRIAL:
                machine = self._machine
                self._changed(machine.record(machine.generation, failure, slow, now))
            return None
        if kind == TRIAL:
            return shared.trial_done(ticket, failure), now
        if failure is None:
            return None
        request = shared.outcome(ticket, failure, slow, now)
        return None if request is None else (request, now)

    def _send(self, request: tuple[int, str, tuple[str, ...]], now: float) -> None:
        """Make one round trip of the shared protocol and learn from its reply.

        A store fault hands the breaker to its local state (with the outcomes of a ``sync``).
        """
        shared = cast("SharedState", self._shared)
        sequence, operation, arguments = request
        try:
            reply = shared.store.breaker(self.name, operation, shared.rules, arguments)
        except StorageError as failure:
            shared.lost(failure, arguments if operation == "sync" else None)
            return
        shared.store_answered()
        shared.apply(reply, now, sequence)

    async def _asend(self, request: tuple[int, str, tuple[str, ...]], now: float) -> None:
        """The coroutine form of :meth:`_send`."""
        shared = cast("SharedState", self._shared)
        sequence, operation, arguments = request
        try:
            reply = await shared.store.abreaker(self.name, operation, shared.rules, arguments)
        except StorageError as failure:
            shared.lost(failure, arguments if operation == "sync" else None)
            return
        shared.store_answered()
        shared.apply(reply, now, sequence)

    def _leave(
        self,
        ticket: Ticket,
        start: float,
        error: BaseException | None,
        result: Any,
        judge_result: bool = True,
    ) -> None:
        """Report how a call admitted by :meth:`_enter` ended."""
        if ticket[0] == LOCAL:
            self._finish(ticket[1], start, error, result, judge_result)
            return
        send = self._outcome(ticket, start, error, result, judge_result)
        if send is not None:
            self._send(*send)

    async def _aleave(
        self,
        ticket: Ticket,
        start: float,
        error: BaseException | None,
        result: Any,
        judge_result: bool = True,
    ) -> None:
        """The coroutine form of :meth:`_leave`."""
        if ticket[0] == LOCAL:
            self._finish(ticket[1], start, error, result, judge_result)
            return
        send = self._outcome(ticket, start, error, result, judge_result)
        if send is not None:
            await self._asend(*send)

    def _pending(self) -> tuple[tuple[int, str, tuple[str, ...]], float] | None:
        """The ``sync`` of what a shared breaker still holds, if anything is to be sent."""
        shared = self._shared
        if shared is None or shared.circuit.down:
            return None
        now = self.clock.now()
        request = shared.flush(now)
        return None if request is None else (request, now)

    def flush(self) -> None:
        """Write the outcomes a shared breaker still holds (a no-op for an in-process one).

        A shared breaker writes successes once per ``sync_interval``; call this before a
        process exits so that its last successes count. Store faults are handled as on a call.
        """
        pending = self._pending()
        if pending is not None:
            self._send(*pending)

    async def aflush(self) -> None:
        """The coroutine form of :meth:`flush`."""
        pending = self._pending()
        if pending is not None:
            await self._asend(*pending)

    def _decorate_shared_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        enter, leave, reject, timed, now = (
            self._enter,
            self._leave,
            self._reject,
            self._timed,
            (self.clock.now),
        )

        @functools.wraps(fn)
        def protected(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                ticket = enter()
            except CircuitOpen as error:
                return cast("R", reject(error))
            start = now() if timed else 0.0
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                leave(ticket, start, error, None)
                raise
            leave(ticket, start, None, result)
            return result

        return protected

    def _decorate_shared_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        enter, leave, reject, timed, now = (
            self._aenter,
            self._aleave,
            self._reject,
            self._timed,
            (self.clock.now),
        )

        @functools.wraps(fn)
        async def protected(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                ticket = await enter()
            except CircuitOpen as error:
                outcome = reject(error)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                return cast("T", outcome)
            start = now() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as error:
                await leave(ticket, start, error, None)
                raise
            await leave(ticket, start, None, result)
            return result

        return protected

    # -- calling styles -------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function)."""
        if not callable(fn):
            raise TypeError(f"a breaker can only decorate callables, got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn))
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        if self._shared is not None:
            return self._decorate_shared_sync(fn)
        machine, closed, timed, now = self._machine, CLOSED, self._timed, self.clock.now
        admit, finish, reject = self._admit, self._finish, self._reject
        # The success path inlined for the common configuration (no result predicate, no timing):
        # one record() call, which needs no lock unless a window counts successes.
        plain = self.failure_if_result is None and not timed
        record, listeners, events, changed = machine.record, self.listeners, _events, self._changed
        has_fallback = self.fallback is not NO_FALLBACK
        open_message, name = self._open_message, self.name
        fast = plain and not listeners
        windowed = machine.windowed
        min_calls = self.rules.min_calls
        window = machine.window
        # The window, not its add_success: clearing the window replaces its counter.
        counter = window if machine.counting and isinstance(window, CountWindow) else None

        @functools.wraps(fn)
        def protected(*args: P.args, **kwargs: P.kwargs) -> R:  # noqa: PLR0912 - inlined paths
            state = machine.state
            if state is closed:
                generation = machine.generation
            elif (
                state is OPEN
                and not has_fallback
                and (moment := now()) < (until := machine.open_until)
                and not (listeners or events._global)  # noqa: SLF001 - the fast check
            ):
                raise _circuit_open(open_message, name, until - moment)
            elif has_fallback:
                try:
                    generation = admit()
                except CircuitOpen as error:
                    return cast("R", reject(error))
            else:
                generation = admit()
            start = now() if timed else 0.0
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                finish(generation, start, error, None)
                raise
            if fast and not events._global:  # noqa: SLF001 - the fast check
                # A plain success while closed, decided here without a call (see Machine.record).
                if (
                    machine.state is closed
                    and generation == machine.generation
                    and not machine.consecutive
                ):
                    if counter is not None:
                        if counter.add_success() + 1 != min_calls:
                            return result
                        transition = machine.judge_success(generation, None)
                        if transition is not None:
                            changed(transition)
                        return result
                    if not windowed:
                        return result
                transition = record(generation, False, False, None)
                if transition is not None:
                    changed(transition)
            else:
                finish(generation, start, None, result)
            return result

        return protected

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        if self._shared is not None:
            return self._decorate_shared_async(fn)
        machine, closed, timed, now = self._machine, CLOSED, self._timed, self.clock.now
        admit, finish, reject = self._admit, self._finish, self._reject

        plain = self.failure_if_result is None and not timed
        record, listeners, events, changed = machine.record, self.listeners, _events, self._changed
        has_fallback = self.fallback is not NO_FALLBACK
        open_message, name = self._open_message, self.name
        fast = plain and not listeners
        windowed = machine.windowed
        min_calls = self.rules.min_calls
        window = machine.window
        # The window, not its add_success: clearing the window replaces its counter.
        counter = window if machine.counting and isinstance(window, CountWindow) else None

        @functools.wraps(fn)
        async def protected(  # noqa: PLR0912 - the paths are inlined for speed
            *args: P.args, **kwargs: P.kwargs
        ) -> T:
            state = machine.state
            if state is closed:
                generation = machine.generation
            elif (
                state is OPEN
                and not has_fallback
                and (moment := now()) < (until := machine.open_until)
                and not (listeners or events._global)  # noqa: SLF001 - the fast check
            ):
                raise _circuit_open(open_message, name, until - moment)
            elif has_fallback:
                try:
                    generation = admit()
                except CircuitOpen as error:
                    outcome = reject(error)
                    if inspect.isawaitable(outcome):
                        outcome = await outcome
                    return cast("T", outcome)
            else:
                generation = admit()
            start = now() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as error:
                finish(generation, start, error, None)
                raise
            if fast and not events._global:  # noqa: SLF001 - the fast check
                # A plain success while closed, decided here without a call (see Machine.record).
                if (
                    machine.state is closed
                    and generation == machine.generation
                    and not machine.consecutive
                ):
                    if counter is not None:
                        if counter.add_success() + 1 != min_calls:
                            return result
                        transition = machine.judge_success(generation, None)
                        if transition is not None:
                            changed(transition)
                        return result
                    if not windowed:
                        return result
                transition = record(generation, False, False, None)
                if transition is not None:
                    changed(transition)
            else:
                finish(generation, start, None, result)
            return result

        return protected

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` through the breaker.

        Raises:
            CircuitOpen: If the breaker rejects the call (and there is no ``fallback``).
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await breaker.acall(fn) instead")
        return self._decorate_sync(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        wrapped = self._decorate_async(cast("Callable[P, Coroutine[Any, Any, T]]", fn))
        return await wrapped(*args, **kwargs)

    def guard(self) -> Guard:
        """Protect a block: ``with breaker.guard(): ...`` (or ``async with``).

        The block's exception is classified like a call's; leaving it normally is a success.

        Raises:
            CircuitOpen: On entering, if the breaker rejects (``fallback`` does not apply).
        """
        return Guard(self)


class Guard:
    """One protected block (see :meth:`CircuitBreaker.guard`). Use it once."""

    __slots__ = ("_breaker", "_start", "_ticket")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._ticket: Ticket | None = None
        self._start = 0.0

    def _entered(self, ticket: Ticket) -> Guard:
        self._ticket = ticket
        breaker = self._breaker
        self._start = breaker.clock.now() if breaker._timed else 0.0  # noqa: SLF001
        return self

    def _check_unused(self) -> None:
        if self._ticket is not None:
            raise RuntimeError("a guard can be entered only once; call breaker.guard() again")

    def __enter__(self) -> Guard:
        self._check_unused()
        return self._entered(self._breaker._enter())  # noqa: SLF001 - the breaker's own protocol

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket = cast("Ticket", self._ticket)
        self._breaker._leave(ticket, self._start, exc, None, judge_result=False)  # noqa: SLF001

    async def __aenter__(self) -> Guard:
        self._check_unused()
        return self._entered(await self._breaker._aenter())  # noqa: SLF001 - the protocol

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket = cast("Ticket", self._ticket)
        await self._breaker._aleave(  # noqa: SLF001 - the breaker's own protocol
            ticket, self._start, exc, None, judge_result=False
        )


def _breaker_store(storage: object) -> BreakerStorage:
    """The store of a shared breaker, from a store or a URL."""
    # Imported here: storage sits below the breaker, and a URL may need the redis extra.
    from buttress.storage import BreakerStorage  # noqa: PLC0415
    from buttress.storage._url import resolve_storage  # noqa: PLC0415

    return resolve_storage(
        storage,
        BreakerStorage,  # type: ignore[type-abstract]  # a Protocol, checked at run time
        "a store that keeps shared breaker state (a RedisStorage or a redis:// URL)",
    )
