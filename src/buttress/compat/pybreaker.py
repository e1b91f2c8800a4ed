"""pybreaker's public surface, implemented on :class:`buttress.CircuitBreaker`.

Code written for pybreaker 1.x runs by changing only its import::

    from buttress.compat import pybreaker     # was: import pybreaker

    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=5)

    @breaker
    def fragile_function(): ...

The rules (when to open, how long to stay open, which call is the trial) are those of the
buttress breaker underneath, available as :attr:`CircuitBreaker.breaker` for its events, metrics
and the registry; this module only translates pybreaker's names, counters, listener hooks and
exceptions.

Covered:

* ``CircuitBreaker(fail_max=5, reset_timeout=60, success_threshold=1, exclude=None,
  listeners=None, state_storage=None, name=None, throw_new_error_on_trip=True)``, positionally
  in that order, as pybreaker takes them.
* Calling: as a decorator (``@breaker`` or ``@breaker()``), ``call(func, *args, **kwargs)``,
  ``with breaker.calling():``, ``call_async(func, *args, **kwargs)`` and generator functions (the
  outcome is judged when the generator finishes, as pybreaker does).
* :class:`CircuitBreakerError`, raised when a call is rejected and, unless
  ``throw_new_error_on_trip=False``, by the call that opens the breaker (with the original
  exception as its ``__context__`` and its traceback), with pybreaker's messages.
* ``current_state`` (``"closed"``, ``"open"``, ``"half-open"``), ``state`` (an object with a
  ``name``), ``fail_counter``, ``success_counter``, ``fail_max``, ``reset_timeout``,
  ``success_threshold`` (all three with setters), ``name``, ``open()`` (returns
  ``throw_new_error_on_trip``), ``close()``, ``half_open()``.
* :class:`CircuitBreakerListener` with ``before_call(cb, func, *args, **kwargs)``,
  ``state_change(cb, old_state, new_state)``, ``failure(cb, exc)`` and ``success(cb)``, called in
  pybreaker's order; ``listeners``, ``add_listener``, ``add_listeners``, ``remove_listener``.
  As in pybreaker, a hook that raises propagates to the caller, and ``open()``, ``close()`` and
  ``half_open()`` announce a state change even when the state stays the same.
* ``exclude``: exception types and predicates; an excluded exception counts as a *success* (it
  resets ``fail_counter`` and can close a half-open breaker), exactly as in pybreaker.
  ``excluded_exceptions``, ``add_excluded_exception(s)``, ``remove_excluded_exception``,
  ``is_system_error``.
* ``STATE_CLOSED``, ``STATE_OPEN``, ``STATE_HALF_OPEN`` and the state classes
  ``CircuitClosedState``, ``CircuitOpenState``, ``CircuitHalfOpenState``.

Not covered:

* ``state_storage``: only pybreaker's default (state in process memory) exists here; passing a
  storage raises :class:`~buttress.ConfigurationError`, and ``CircuitMemoryStorage``,
  ``CircuitRedisStorage`` and ``CircuitBreakerStorage`` are not provided. State shared across
  processes through Redis is planned for :class:`buttress.CircuitBreaker` itself.
* Tornado: ``call_async`` and ``@breaker(__pybreaker_call_async=True)`` return an awaitable for
  asyncio (which Tornado 5 and later runs on) instead of a Tornado future, and need no Tornado.
* Setting ``cb.state`` to a string, and the internals of the state objects (their ``call``,
  ``on_success``, ... methods).

Where it behaves differently:

* **No lock is held while the protected function runs.** pybreaker serialises every call through
  one lock (a slow call delays all the others, even while closed). Here calls run concurrently;
  while half-open exactly one trial call runs at a time and concurrent calls are *rejected* with
  :class:`CircuitBreakerError` ("Trial call in progress") instead of queueing behind the trial.
* ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit`` and ``asyncio.CancelledError`` are
  neither failures nor successes (no hook is called, the counters do not move); pybreaker counts
  them as failures. A generator closed before it finished likewise.
* ``async def`` functions decorated with ``@breaker`` are protected around the awaited call;
  pybreaker calls them without awaiting, so their exceptions never reach it.
* Time is monotonic (:class:`buttress.Clock`), not the wall clock: a clock adjustment neither
  shortens nor prolongs an open period.
* A new ``reset_timeout`` applies from the next time the breaker opens; pybreaker also applies it
  to the open period under way.
* ``fail_max``, ``success_threshold`` and ``reset_timeout`` are checked: ``fail_max`` and
  ``success_threshold`` must be ints >= 1 and ``reset_timeout`` >= 0, else ``TypeError`` or
  ``ValueError`` (pybreaker accepts anything and misbehaves later).
* A listener hook that raises does not stop the breaker from recording the call's outcome.
* Changing :attr:`CircuitBreaker.name` does not rename the buttress breaker underneath (its
  events, errors and registry entry keep the first name).

buttress extensions: the keyword-only ``clock`` argument (a :class:`buttress.Clock`, e.g.
:class:`buttress.testing.FakeClock` in tests), :attr:`CircuitBreaker.breaker`, and
:class:`CircuitBreakerError` being a :class:`buttress.CircuitOpen` (so ``except CircuitOpen``
catches it too) with ``name`` and ``retry_after``. A named breaker registers in
:func:`buttress.breaker_registry`; an unnamed one registers nowhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, ParamSpec, TypeVar, cast, overload

from buttress._clock import Clock, system_clock
from buttress._errors import CircuitOpen, ConfigurationError
from buttress._types import check_int, seconds
from buttress.breaker import BreakerStateChanged, State
from buttress.breaker import CircuitBreaker as _Breaker

if TYPE_CHECKING:
    from buttress._events import Event
    from buttress.breaker import Guard

__all__ = [
    "STATE_CLOSED",
    "STATE_HALF_OPEN",
    "STATE_OPEN",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitBreakerListener",
    "CircuitBreakerState",
    "CircuitClosedState",
    "CircuitHalfOpenState",
    "CircuitOpenState",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

STATE_OPEN = "open"
STATE_CLOSED = "closed"
STATE_HALF_OPEN = "half-open"

_Exclusion = type[BaseException] | Callable[[BaseException], bool]
"""What ``exclude`` holds: exception types, or predicates on the exception."""


class CircuitBreakerError(CircuitOpen):
    """The breaker refused the call, or the call just opened it.

    It is also a :class:`buttress.CircuitOpen`, carrying the breaker's ``name`` and
    ``retry_after`` (seconds until a trial call is allowed, when known).
    """

    def __init__(
        self, *args: Any, name: str | None = None, retry_after: float | None = None
    ) -> None:
        Exception.__init__(self, *args)  # pybreaker's error takes any arguments, like Exception
        self.name = name
        self.retry_after = retry_after


class CircuitBreakerState:
    """A state as pybreaker's listeners and ``CircuitBreaker.state`` show it.

    Attributes:
        name: ``"closed"``, ``"open"`` or ``"half-open"``.
    """

    __slots__ = ("_breaker", "_name")

    def __init__(self, cb: CircuitBreaker, name: str) -> None:
        self._breaker = cb
        self._name = name

    @property
    def name(self) -> str:
        """The state's name: ``"closed"``, ``"open"`` or ``"half-open"``."""
        return self._name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


class CircuitClosedState(CircuitBreakerState):
    """Closed: calls run; failures in a row are counted."""

    __slots__ = ()

    def __init__(self, cb: CircuitBreaker) -> None:
        super().__init__(cb, STATE_CLOSED)


class CircuitOpenState(CircuitBreakerState):
    """Open: calls are rejected at once until the reset timeout has passed."""

    __slots__ = ()

    def __init__(self, cb: CircuitBreaker) -> None:
        super().__init__(cb, STATE_OPEN)


class CircuitHalfOpenState(CircuitBreakerState):
    """Half-open: a trial call runs; it closes the breaker or opens it again."""

    __slots__ = ()

    def __init__(self, cb: CircuitBreaker) -> None:
        super().__init__(cb, STATE_HALF_OPEN)


# FORCED_OPEN and DISABLED exist only in buttress (reached through ``cb.breaker``); pybreaker's
# vocabulary calls them open and closed.
_STATE_CLASSES: dict[State, type[CircuitClosedState | CircuitOpenState | CircuitHalfOpenState]] = {
    State.CLOSED: CircuitClosedState,
    State.OPEN: CircuitOpenState,
    State.HALF_OPEN: CircuitHalfOpenState,
    State.FORCED_OPEN: CircuitOpenState,
    State.DISABLED: CircuitClosedState,
}
_STATE_NAMES = {
    State.CLOSED: STATE_CLOSED,
    State.OPEN: STATE_OPEN,
    State.HALF_OPEN: STATE_HALF_OPEN,
    State.FORCED_OPEN: STATE_OPEN,
    State.DISABLED: STATE_CLOSED,
}


class CircuitBreakerListener:
    """Subclass this and override the hooks you need; the default hooks do nothing."""

    def before_call(
        self, cb: CircuitBreaker, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Called before the breaker ``cb`` calls ``func`` (only for calls it admits)."""

    def state_change(
        self,
        cb: CircuitBreaker,
        old_state: CircuitBreakerState | None,
        new_state: CircuitBreakerState,
    ) -> None:
        """Called when ``cb`` changes state, and on each ``open()``/``close()``/``half_open()``."""

    def failure(self, cb: CircuitBreaker, exc: BaseException) -> None:
        """Called when a call through ``cb`` raised an exception that counts as a failure."""

    def success(self, cb: CircuitBreaker) -> None:
        """Called when a call through ``cb`` succeeded (or raised an excluded exception)."""


class _Change(NamedTuple):
    """A state change, as the listeners' ``state_change`` hook receives it."""

    old: CircuitBreakerState
    new: CircuitBreakerState
    event: BreakerStateChanged | None  # None: announced by hand, the state stayed the same


class _NotRun(BaseException):
    """Ends an admitted call that never ran: the breaker frees its slot and judges nothing.

    Used when a ``before_call`` hook raised, or a generator was dropped before it started. A
    BaseException, because the buttress breaker ignores those.
    """


class _Pending:
    """An admitted generator call, judged once: when it finishes or when it is dropped."""

    __slots__ = ("_claim", "guard")

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._claim = threading.Lock()

    def claim(self) -> bool:
        """``True`` for the first caller only (finishing and dropping may race)."""
        return self._claim.acquire(blocking=False)


def _calling_block() -> None:
    """What ``before_call`` receives as ``func`` for a ``with breaker.calling():`` block."""


class CircuitBreaker:
    """pybreaker's ``CircuitBreaker`` on top of :class:`buttress.CircuitBreaker`.

    Args:
        fail_max: Open after this many failures in a row (an int >= 1).
        reset_timeout: Seconds to stay open before letting a trial call through.
        success_threshold: Trial successes in a row that close the breaker again.
        exclude: Exception types, or predicates on the exception, that are not failures: such
            an exception still propagates but counts as a success.
        listeners: :class:`CircuitBreakerListener` objects.
        state_storage: Must be ``None``: only pybreaker's default in-memory state is supported.
        name: The breaker's name (also the buttress breaker's name and registry key).
        throw_new_error_on_trip: Whether the call that opens the breaker raises
            :class:`CircuitBreakerError` (``True``, pybreaker's default) or its own exception.
        clock: The time source (a buttress extension, for tests).

    Raises:
        ConfigurationError: If ``state_storage`` is given.
        TypeError, ValueError: For numbers out of range.
    """

    def __init__(
        self,
        fail_max: int = 5,
        reset_timeout: float = 60,
        success_threshold: int = 1,
        exclude: Iterable[_Exclusion] | None = None,
        listeners: Sequence[CircuitBreakerListener] | None = None,
        state_storage: object | None = None,
        name: str | None = None,
        throw_new_error_on_trip: bool = True,
        *,
        clock: Clock | None = None,
    ) -> None:
        if state_storage is not None:
            raise ConfigurationError(
                "state_storage is not supported by buttress.compat.pybreaker: the breaker keeps "
                "its state in process memory (pybreaker's default); state shared across "
                f"processes is planned for buttress.CircuitBreaker (got {state_storage!r})"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self._lock = threading.Lock()
        self._local = threading.local()
        self._name = name
        self._throw_new_error_on_trip = throw_new_error_on_trip
        self._excluded: tuple[_Exclusion, ...] = ()
        self.add_excluded_exceptions(*(exclude or ()))
        self._listeners: tuple[CircuitBreakerListener, ...] = tuple(listeners or ())
        self._fail_counter = 0
        self._success_counter = 0
        self._state: CircuitBreakerState = CircuitClosedState(self)
        self._breaker = _Breaker(
            name or "pybreaker",
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            success_threshold=success_threshold,
            half_open_max_calls=1,
            listeners=[self._on_event],
            clock=system_clock if clock is None else clock,
            registry="default" if name else None,
        )

    def __repr__(self) -> str:
        return f"<buttress.compat.pybreaker.CircuitBreaker {self._name!r} {self.current_state}>"

    # -- configuration --------------------------------------------------------------------------

    @property
    def breaker(self) -> _Breaker:
        """The :class:`buttress.CircuitBreaker` doing the work (events, metrics, registry)."""
        return self._breaker

    @property
    def name(self) -> str | None:
        """The name given at construction (``None`` if none)."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name

    @property
    def fail_max(self) -> int:
        """Failures in a row that open the breaker."""
        fail_max = self._breaker.rules.fail_max
        assert fail_max is not None  # noqa: S101 - always set: this face builds it so
        return fail_max

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        self._replace_rules(fail_max=check_int(number, "fail_max", minimum=1))

    @property
    def reset_timeout(self) -> float:
        """Seconds the breaker stays open before a trial call."""
        return self._breaker.rules.reset_timeout

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        value = seconds(timeout, "reset_timeout")
        self._replace_rules(reset_timeout=value, reset_timeout_max=value)

    @property
    def success_threshold(self) -> int:
        """Trial successes in a row that close the breaker."""
        return self._breaker.rules.success_threshold

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        value = check_int(threshold, "success_threshold", minimum=1)
        self._replace_rules(success_threshold=value)

    def _replace_rules(self, **changes: Any) -> None:
        # buttress has no public way yet to change a live breaker's rules; the machine reads
        # ``rules`` afresh on every decision, so swapping the frozen object takes effect at once.
        with self._lock:  # two setters at once must not lose one change
            rules = dataclasses.replace(self._breaker.rules, **changes)
            self._breaker.rules = rules
            self._breaker._machine.rules = rules  # noqa: SLF001 - see above

    # -- inspection -----------------------------------------------------------------------------

    @property
    def current_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``.

        As in pybreaker, an open breaker reports ``"open"`` until a call arrives after the reset
        timeout.
        """
        return _STATE_NAMES[self._breaker.state]

    @property
    def state(self) -> CircuitBreakerState:
        """The current state object (``state.name`` is :attr:`current_state`)."""
        return self._state

    @property
    def fail_counter(self) -> int:
        """Failures in a row, as pybreaker counts them.

        A success (or an excluded exception) and closing reset it; opening does not, so while
        open it still shows the failures that opened the breaker (and a failed trial adds one).
        """
        return self._fail_counter

    @property
    def success_counter(self) -> int:
        """Trial successes so far while half-open (reset by every state change)."""
        return self._success_counter

    # -- exclusions -----------------------------------------------------------------------------

    @property
    def excluded_exceptions(self) -> tuple[_Exclusion, ...]:
        """The exception types and predicates that do not count as failures."""
        return self._excluded

    def add_excluded_exception(self, exception: _Exclusion) -> None:
        """Stop counting ``exception`` (a type, or a predicate on the exception) as a failure."""
        if not callable(exception):
            raise TypeError(f"exclude must hold exception types or predicates, got {exception!r}")
        with self._lock:
            self._excluded = (*self._excluded, exception)

    def add_excluded_exceptions(self, *exceptions: _Exclusion) -> None:
        """Add several exclusions (see :meth:`add_excluded_exception`)."""
        for exception in exceptions:
            self.add_excluded_exception(exception)

    def remove_excluded_exception(self, exception: _Exclusion) -> None:
        """Count ``exception`` as a failure again.

        Raises:
            ValueError: If it was not excluded.
        """
        with self._lock:
            items = list(self._excluded)
            items.remove(exception)
            self._excluded = tuple(items)

    def is_system_error(self, exception: BaseException) -> bool:
        """Whether ``exception`` counts as a failure (it is not excluded)."""
        for exclusion in self._excluded:
            if isinstance(exclusion, type):
                if isinstance(exception, exclusion):
                    return False
            elif exclusion(exception):
                return False
        return True

    # -- listeners ------------------------------------------------------------------------------

    @property
    def listeners(self) -> tuple[CircuitBreakerListener, ...]:
        """The registered listeners."""
        return self._listeners

    def add_listener(self, listener: CircuitBreakerListener) -> None:
        """Register ``listener``."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def add_listeners(self, *listeners: CircuitBreakerListener) -> None:
        """Register several listeners."""
        for listener in listeners:
            self.add_listener(listener)

    def remove_listener(self, listener: CircuitBreakerListener) -> None:
        """Unregister ``listener``.

        Raises:
            ValueError: If it was not registered.
        """
        with self._lock:
            items = list(self._listeners)
            items.remove(listener)
            self._listeners = tuple(items)

    def _on_event(self, event: Event) -> None:
        """Follow the buttress breaker's state changes (its listener)."""
        if not isinstance(event, BreakerStateChanged):
            return
        with self._lock:
            old = self._state
            self._state = new = _STATE_CLASSES[event.new](self)
            self._success_counter = 0
            if new.name == STATE_CLOSED:
                self._fail_counter = 0
        change = _Change(old, new, event)
        captured: list[_Change] | None = getattr(self._local, "captured", None)
        if captured is not None:
            captured.append(change)  # the caller announces it after the buttress call returns
        else:
            self._announce([change])  # changed from outside this face (e.g. cb.breaker.open())

    def _announce(self, changes: list[_Change]) -> None:
        for change in changes:
            for listener in self._listeners:
                listener.state_change(self, change.old, change.new)

    def _captured(self, action: Callable[[], object]) -> list[_Change]:
        """Run ``action`` on the buttress breaker; return the state changes it caused.

        The breaker emits its events synchronously in the calling thread, so a thread-local list
        collects exactly this action's changes, whatever other threads do meanwhile.
        """
        local = self._local
        outer = getattr(local, "captured", None)
        captured: list[_Change] = []
        local.captured = captured
        try:
            action()
        finally:
            local.captured = outer
        return captured

    # -- manual control -------------------------------------------------------------------------

    def _manual(self, changes: list[_Change]) -> None:
        if not changes:
            # buttress saw nothing to change; pybreaker announces the (same) state again.
            with self._lock:
                old = self._state
                self._state = new = type(old)(self)  # type: ignore[call-arg]  # a subclass
            changes = [_Change(old, new, None)]
        self._announce(changes)

    def open(self) -> bool:
        """Open now; a trial call is allowed after the reset timeout.

        Returns:
            ``throw_new_error_on_trip``, as pybreaker does.
        """
        self._manual(self._captured(self._breaker.open))
        return self._throw_new_error_on_trip

    def half_open(self) -> None:
        """Let the next call through as a trial.

        On a breaker already half-open this restarts the count of trial successes, as pybreaker.
        """
        self._manual(self._captured(self._breaker.half_open))

    def close(self) -> None:
        """Close now and reset the counters."""
        with self._lock:
            self._fail_counter = self._success_counter = 0
        self._manual(self._captured(self._breaker.close))

    # -- the protocol of one call ---------------------------------------------------------------

    def _admit(self) -> Guard:
        """Admit a call or raise :class:`CircuitBreakerError`."""
        guard = self._breaker.guard()
        rejected: CircuitOpen | None = None

        def enter() -> None:
            nonlocal rejected
            try:
                guard.__enter__()
            except CircuitOpen as error:
                rejected = error

        self._announce(self._captured(enter))  # OPEN -> HALF_OPEN when the timeout has passed
        if rejected is None:
            return guard
        state = self._breaker.state
        message = (
            "Trial call in progress, circuit breaker half-open"
            if state is State.HALF_OPEN
            else "Circuit breaker forced open"
            if state is State.FORCED_OPEN
            else "Timeout not elapsed yet, circuit breaker still open"
        )
        raise CircuitBreakerError(
            message, name=self._breaker.name, retry_after=rejected.retry_after
        )

    def _exit(self, guard: Guard, error: BaseException | None) -> list[_Change]:
        if error is None:
            return self._captured(lambda: guard.__exit__(None, None, None))
        return self._captured(lambda: guard.__exit__(type(error), error, error.__traceback__))

    def _before_call(
        self, guard: Guard, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            for listener in self._listeners:
                listener.before_call(self, func, *args, **kwargs)
        except BaseException:
            self._exit(guard, _NotRun())  # the call never ran: free its slot, judge nothing
            raise

    def _succeeded(self, guard: Guard) -> None:
        with self._lock:
            self._fail_counter = 0
        changes = self._exit(guard, None)
        if not changes and self._breaker.state is State.HALF_OPEN:
            with self._lock:
                self._success_counter += 1
        self._announce(changes)
        for listener in self._listeners:
            listener.success(self)

    def _failed(self, guard: Guard, error: BaseException) -> None:
        """Judge an exception; raise :class:`CircuitBreakerError` if it opened the breaker.

        Returns normally when the caller should re-raise ``error``.
        """
        if not self.is_system_error(error):
            self._succeeded(guard)
            return
        if not isinstance(error, Exception):  # KeyboardInterrupt, CancelledError, ...
            self._exit(guard, error)  # buttress ignores these: neither failure nor success
            return
        with self._lock:
            self._fail_counter += 1
        try:
            for listener in self._listeners:
                listener.failure(self, error)
        finally:
            changes = self._exit(guard, error)
        self._announce(changes)
        if not self._throw_new_error_on_trip:
            return
        for change in changes:
            event = change.event
            if event is not None and event.new is State.OPEN:
                message = (
                    "Trial call failed, circuit breaker opened"
                    if event.old is State.HALF_OPEN
                    else "Failures threshold reached, circuit breaker opened"
                )
                raise CircuitBreakerError(
                    message, name=self._breaker.name, retry_after=event.open_for
                ).with_traceback(error.__traceback__)

    # -- calling styles -------------------------------------------------------------------------

    def call(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``func(*args, **kwargs)`` through the breaker.

        A generator function's outcome is judged when the generator finishes.

        Raises:
            CircuitBreakerError: If the breaker rejects the call, or the call opened it.
        """
        guard = self._admit()
        self._before_call(guard, func, args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            self._failed(guard, error)
            raise
        if isinstance(result, types.GeneratorType):
            return cast("R", self._follow_generator(guard, result))
        self._succeeded(guard)
        return result

    async def call_async(
        self, func: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``func(*args, **kwargs)`` through the breaker (asyncio, no Tornado needed).

        Raises:
            CircuitBreakerError: If the breaker rejects the call, or the call opened it.
        """
        guard = self._admit()
        self._before_call(guard, func, args, kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as error:
            self._failed(guard, error)
            raise
        self._succeeded(guard)
        return result

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Protect a block: ``with breaker.calling(): ...``.

        Raises:
            CircuitBreakerError: On entering if the breaker rejects, or on leaving if the block's
                exception opened it.
        """
        guard = self._admit()
        self._before_call(guard, _calling_block, (), {})
        try:
            yield
        except BaseException as error:
            self._failed(guard, error)
            raise
        self._succeeded(guard)

    def _follow_generator(self, guard: Guard, generator: types.GeneratorType[Any, Any, Any]) -> Any:
        pending = _Pending(guard)
        follower = self._iterate(pending, generator)
        # A generator dropped before it started never runs its body; free the slot anyway.
        weakref.finalize(follower, self._drop, pending)
        return follower

    def _iterate(
        self, pending: _Pending, generator: types.GeneratorType[Any, Any, Any]
    ) -> Generator[Any, Any, Any]:
        try:
            result = yield from generator
        except BaseException as error:
            if pending.claim():
                self._failed(pending.guard, error)
            raise
        if pending.claim():
            self._succeeded(pending.guard)
        return result

    def _drop(self, pending: _Pending) -> None:
        if pending.claim():
            self._exit(pending.guard, _NotRun())

    @overload
    def __call__(self, func: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def __call__(self, /, **options: bool) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def __call__(self, func: Callable[P, R] | None = None, /, **options: bool) -> Any:
        """Decorate ``func``: ``@breaker`` or ``@breaker()``.

        ``async def`` functions (and any function with ``__pybreaker_call_async=True``) are
        protected around the awaited call, as :meth:`call_async` does.
        """
        call_async = options.pop("__pybreaker_call_async", False)
        if options:
            raise TypeError(f"unexpected arguments: {', '.join(options)}")

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if call_async or inspect.iscoroutinefunction(fn):
                afn = cast("Callable[P, Awaitable[Any]]", fn)

                @functools.wraps(fn)
                async def protected_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    return await self.call_async(afn, *args, **kwargs)

                return cast("Callable[P, R]", protected_async)

            @functools.wraps(fn)
            def protected(*args: P.args, **kwargs: P.kwargs) -> R:
                return self.call(fn, *args, **kwargs)

            return protected

        return decorate if func is None else decorate(func)


_MISSING = {
    "CircuitBreakerStorage": "buttress.compat.pybreaker keeps state in process memory only",
    "CircuitMemoryStorage": "the in-memory state is the default: pass no state_storage",
    "CircuitRedisStorage": (
        "state shared through Redis is planned for buttress.CircuitBreaker; keep using pybreaker "
        "for it until then"
    ),
}

if not TYPE_CHECKING:  # hidden from type checkers, so that a typo is still reported as one

    def __getattr__(name: str) -> NoReturn:
        """Explain the pybreaker names this face does not provide."""
        if name in _MISSING:
            raise AttributeError(
                f"buttress.compat.pybreaker has no {name}: {_MISSING[name]}", name=name
            )
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}", name=name)
