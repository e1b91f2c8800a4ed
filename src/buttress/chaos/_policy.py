"""The fault-injection policy: a pure decision per call, and thin sync and async drivers.

:meth:`ChaosPolicy.decide` is the whole logic: is the policy enabled, does the call match its
predicate and flag, does the seeded generator pick it at ``rate``; if so, which fault (a delay
drawn from ``latency``, then an exception or a result). The drivers only sleep, raise or return.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import math
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast

from buttress import _events
from buttress._clock import Clock, check_clock, system_clock
from buttress._events import Listener, check_listeners, emit
from buttress._types import NO_FALLBACK, Duration, check_name, seconds
from buttress.chaos._events import ChaosInjected

__all__ = ["ChaosPolicy", "Injection", "SyntheticResponse", "active_flags", "flagged"]

_log = logging.getLogger("buttress.chaos")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

NO_RESULT: Any = NO_FALLBACK
"""The marker for "no synthetic result configured" (``None`` is a valid result)."""

_flags: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "buttress_chaos_flags", default=frozenset()
)


def active_flags() -> frozenset[str]:
    """Return the chaos flags set in the current context by :func:`flagged`."""
    return _flags.get()


@contextlib.contextmanager
def flagged(*flags: str) -> Iterator[frozenset[str]]:
    """Set chaos flags for the code in the block (and tasks started from it).

    A :class:`ChaosPolicy` made with ``flag="name"`` injects only while ``name`` is set, so one
    request, test or game day can be singled out without touching any other.

    Args:
        *flags: The flags to add to those already set.

    Yields:
        The flags now set.

    Raises:
        TypeError: If a flag is not a non-empty str.
    """
    for flag in flags:
        check_name(flag, "flag")
    current = _flags.get() | frozenset(flags)
    token = _flags.set(current)
    try:
        yield current
    finally:
        _flags.reset(token)


@dataclass(frozen=True, slots=True)
class SyntheticResponse:
    """An HTTP response made up by a :class:`ChaosPolicy` instead of asking the server.

    The HTTP integrations turn it into a response of their client library (``httpx.Response``,
    ``requests.Response``); a plain ``call`` returns it as it is.

    Attributes:
        status: The status code (100-599).
        headers: Response headers (e.g. ``{"Retry-After": "1"}``).
        content: The body.

    Raises:
        TypeError, ValueError: For a bad status, headers or content.
    """

    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or isinstance(self.status, bool):
            raise TypeError(f"status must be an int, got {self.status!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code (100-599), got {self.status}")
        if not isinstance(self.headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise TypeError("headers must be a mapping of str to str")
        if not isinstance(self.content, bytes):
            raise TypeError(f"content must be bytes, got {type(self.content).__name__}")
        object.__setattr__(self, "headers", dict(self.headers))


@dataclass(frozen=True, slots=True)
class Injection:
    """What a :class:`ChaosPolicy` decided to do to one call.

    Attributes:
        latency: Seconds to wait before going on (``0.0``: none).
        error: The exception to raise after the wait, or ``None``.
        result: The result to return after the wait instead of calling (``NO_RESULT``: none).
    """

    latency: float
    error: BaseException | None
    result: Any

    @property
    def replaces_call(self) -> bool:
        """Whether the real call is skipped (an error or a result is injected)."""
        return self.error is not None or self.result is not NO_RESULT

    @property
    def fault(self) -> str:
        """``"error"``, ``"result"`` or ``"latency"``."""
        if self.error is not None:
            return "error"
        return "latency" if self.result is NO_RESULT else "result"


ErrorSpec = BaseException | type[BaseException] | Callable[[], BaseException]


def _latency_range(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError("latency must be seconds or a (low, high) pair of seconds")
        low = seconds(value[0], "latency[0]")
        high = seconds(value[1], "latency[1]")
        if high < low:
            raise ValueError(f"latency must be (low, high) with low <= high, got {value!r}")
        return low, high
    fixed = seconds(value, "latency")
    return fixed, fixed


def _error_factory(value: object) -> Callable[[], BaseException] | None:
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, BaseException):
        return lambda: value(f"fault injected by buttress.chaos ({value.__name__})")
    if isinstance(value, BaseException):
        # A fresh copy per injection: one instance raised twice would grow one traceback.
        return lambda: _copy_error(value)
    if callable(value):
        return cast("Callable[[], BaseException]", value)
    raise TypeError(
        f"error must be an exception, an exception type or a function making one, got {value!r}"
    )


def _copy_error(error: BaseException) -> BaseException:
    try:
        fresh = type(error)(*error.args)
    except Exception:  # noqa: BLE001 - some exceptions cannot be rebuilt from their args
        return error
    fresh.__dict__.update(getattr(error, "__dict__", {}))
    return fresh


class ChaosPolicy:
    """Inject latency, exceptions or synthetic results into a share of calls, on purpose.

    Use it as a decorator, with :meth:`call`/:meth:`acall`, or as ``chaos=`` of the HTTP
    integrations. It does nothing until :meth:`enable` is called (or ``enabled=True``).

    Args:
        rate: The share of matching calls that get a fault (``0 <= rate <= 1``).
        latency: A delay added to each chosen call: seconds, or a ``(low, high)`` range drawn
            uniformly. Alone, the real call runs after it (slow calls); with ``error`` or
            ``result``, the fault comes after it.
        error: An exception to raise instead of calling: an instance (copied per injection), a
            type (made with a message saying it was injected) or a function returning one.
        result: A value to return instead of calling (a :class:`SyntheticResponse` for the HTTP
            integrations). Only one of ``error`` and ``result``.
        when: A predicate on the call's arguments (for the HTTP integrations: the request);
            only matching calls can be chosen.
        flag: Inject only while this flag is set by :func:`flagged` in the calling context.
        enabled: Whether the policy starts enabled (default ``False``: off).
        seed: Seed of the policy's own random generator, for reproducible runs.
        name: The policy's name in events.
        listeners: Callables receiving :class:`~buttress.chaos.ChaosInjected` events.
        clock: The time source for the injected waits.

    Raises:
        TypeError, ValueError: At construction, for bad arguments or when no fault is given.
    """

    def __init__(
        self,
        *,
        rate: float = 0.1,
        latency: Duration | tuple[Duration, Duration] | None = None,
        error: ErrorSpec | None = None,
        result: Any = NO_RESULT,
        when: Callable[..., bool] | None = None,
        flag: str | None = None,
        enabled: bool = False,
        seed: int | None = None,
        name: str = "chaos",
        listeners: Sequence[Listener] = (),
        clock: Clock = system_clock,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"rate must be a number in [0, 1], got {rate!r}")
        if not (math.isfinite(rate) and 0 <= rate <= 1):
            raise ValueError(f"rate must be in [0, 1] (0.1 is 10%), got {rate!r}")
        self.rate = float(rate)
        self.latency = _latency_range(latency)
        self._error = _error_factory(error)
        self.error = error
        if error is not None and result is not NO_RESULT:
            raise ValueError("give error or result, not both")
        if self.latency is None and error is None and result is NO_RESULT:
            raise ValueError("a ChaosPolicy needs a fault: latency, error or result")
        self.result = result
        if when is not None and not callable(when):
            raise TypeError(f"when must be a predicate on the call's arguments, got {when!r}")
        self.when = when
        self.flag = None if flag is None else check_name(flag, "flag")
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        self._enabled = enabled
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)
        check_clock(clock)
        self.clock = clock
        self.injected = 0
        """How many calls got a fault so far."""

    def __repr__(self) -> str:
        state = "enabled" if self._enabled else "disabled"
        return f"ChaosPolicy(rate={self.rate}, name={self.name!r}, {state})"

    # -- switching ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the policy injects faults now."""
        return self._enabled

    def enable(self) -> None:
        """Start injecting faults."""
        self._enabled = True

    def disable(self) -> None:
        """Stop injecting faults (calls pass through untouched)."""
        self._enabled = False

    # -- the decision (no sleeping, no I/O) ----------------------------------------------------

    def decide(self, *args: Any, **kwargs: Any) -> Injection | None:
        """Decide whether a call with these arguments gets a fault, and which.

        Args:
            *args: The call's arguments, for ``when``.
            **kwargs: The call's keyword arguments, for ``when``.

        Returns:
            The :class:`Injection` to apply, or ``None`` to call as usual.
        """
        if not self._enabled:
            return None
        if self.flag is not None and self.flag not in _flags.get():
            return None
        if self.when is not None and not self.when(*args, **kwargs):
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            latency = 0.0
            if self.latency is not None:
                low, high = self.latency
                latency = low if low == high else self._random.uniform(low, high)
            self.injected += 1
        error = self._error() if self._error is not None else None
        return Injection(latency, error, self.result)

    def _report(self, target: str, injection: Injection) -> None:
        if self.listeners or _events._global or _log.isEnabledFor(logging.INFO):  # noqa: SLF001
            emit(
                ChaosInjected(self.name, target, injection.latency, injection.fault), self.listeners
            )

    def apply(self, injection: Injection, target: str) -> Any:
        """Carry out an injection synchronously: wait, then raise or return its result.

        Returns:
            The synthetic result, or ``NO_RESULT`` when the real call should go ahead.

        Raises:
            BaseException: The injected error.
        """
        self._report(target, injection)
        if injection.latency > 0:
            self.clock.sleep(injection.latency)
        if injection.error is not None:
            raise injection.error
        return injection.result

    async def aapply(self, injection: Injection, target: str) -> Any:
        """The coroutine form of :meth:`apply` (waits without blocking the loop)."""
        self._report(target, injection)
        if injection.latency > 0:
            await self.clock.sleep_async(injection.latency)
        if injection.error is not None:
            raise injection.error
        return injection.result

    # -- calling styles -------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        Raises:
            TypeError: If ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"chaos can only decorate callables, got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn))
        target = getattr(fn, "__qualname__", repr(fn))

        @functools.wraps(fn)
        def injected(*args: P.args, **kwargs: P.kwargs) -> R:
            injection = self.decide(*args, **kwargs)
            if injection is not None:
                result = self.apply(injection, target)
                if injection.replaces_call:
                    return cast("R", result)
            return fn(*args, **kwargs)

        return injected

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        target = getattr(fn, "__qualname__", repr(fn))

        @functools.wraps(fn)
        async def injected(*args: P.args, **kwargs: P.kwargs) -> T:
            injection = self.decide(*args, **kwargs)
            if injection is not None:
                result = await self.aapply(injection, target)
                if injection.replaces_call:
                    return cast("T", result)
            return await fn(*args, **kwargs)

        return injected

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` under this policy.

        Raises:
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await policy.acall(fn) instead")
        return self(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this policy; ``fn`` returns an awaitable."""
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        wrapped = self._decorate_async(cast("Callable[P, Coroutine[Any, Any, T]]", fn))
        return await wrapped(*args, **kwargs)
