"""The fallback policy: answer with a substitute when a call fails in a way you choose."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, cast

from buttress import _events
from buttress._events import Listener, check_listeners, emit
from buttress._types import NO_FALLBACK, check_exception_types, check_name
from buttress.bulkhead._guard import check_decoratable, target_name
from buttress.fallback._events import FallbackUsed

__all__ = ["Fallback", "fallback"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_log = logging.getLogger("buttress.fallback")


class Fallback:
    """Return a substitute when a call raises one of ``on``, or returns a result ``on_result``.

    Give either ``value`` (returned as it is) or ``handler`` (called with the exception, or
    with the failing result, and its return value used; in async code it may be a coroutine
    function). Anything else is re-raised untouched: exceptions not in ``on``, and
    ``KeyboardInterrupt``, ``SystemExit`` and ``asyncio.CancelledError`` always. A handler may
    re-raise too (``raise`` inside it keeps the original as ``__context__``).

    Select rejections by their type: ``on=CircuitOpen``, ``on=(BulkheadFull, RateLimited)``,
    or ``on=Rejected`` for every refusal of a policy. Stack several fallbacks for several
    rules; the innermost answers first.

    Args:
        value: The substitute value (``None`` is a value).
        handler: Instead of ``value``: a function of the exception or the failing result.
        on: The exception types replaced (default :class:`Exception`); ``None`` for none (then
            ``on_result`` must be given).
        on_result: An optional predicate on the return value: when true, the result is replaced.
        name: The policy's name in events and logs.
        listeners: Callables receiving this policy's events (:class:`FallbackUsed`).

    Raises:
        TypeError, ValueError: At construction: neither or both of ``value`` and ``handler``,
            an ``on`` naming a type that is not an :class:`Exception` subclass, a predicate
            that is not callable.
    """

    __slots__ = ("_on", "handler", "listeners", "name", "on", "on_result", "value")

    def __init__(
        self,
        value: Any = NO_FALLBACK,
        *,
        handler: Callable[[Any], Any] | None = None,
        on: type[Exception] | tuple[type[Exception], ...] | None = Exception,
        on_result: Callable[[Any], bool] | None = None,
        name: str = "fallback",
        listeners: Sequence[Listener] = (),
    ) -> None:
        if (value is NO_FALLBACK) == (handler is None):
            raise TypeError("give exactly one of value (returned) and handler= (called)")
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        if on is None:
            self._on: tuple[type[BaseException], ...] = ()
            if on_result is None:
                raise ValueError("on=None replaces no exception: give on_result= then")
        else:
            self._on = check_exception_types(on, "on", hint=" (use on_result= for results)")
            for item in self._on:
                if not issubclass(item, Exception):
                    raise TypeError(
                        f"on must name Exception subclasses; {item.__name__} is not one "
                        "(cancellations and interrupts always propagate)"
                    )
        if on_result is not None and not callable(on_result):
            raise TypeError(f"on_result must be callable or None, got {type(on_result).__name__}")
        self.value = value
        self.handler = handler
        self.on = on
        self.on_result = on_result
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)

    def __repr__(self) -> str:
        what = f"handler={self.handler!r}" if self.handler is not None else repr(self.value)
        return f"Fallback({what}, on={self.on!r}, name={self.name!r})"

    def _used(self, target: str, error: BaseException | None, result: Any) -> None:
        if self.listeners or _events._global or _log.isEnabledFor(logging.INFO):  # noqa: SLF001
            emit(FallbackUsed(self.name, target, error, result), self.listeners)

    def _substitute(self, outcome: Any) -> Any:
        handler = self.handler
        return self.value if handler is None else handler(outcome)

    def _check_sync(self) -> None:
        if inspect.iscoroutinefunction(self.handler):
            raise TypeError("a coroutine function handler needs an async call: use acall()")

    # -- drivers --------------------------------------------------------------------------------

    def _run_sync(
        self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any], target: str
    ) -> R:
        try:
            result = fn(*args, **kwargs)
        except self._on as error:
            self._used(target, error, None)
            return cast("R", self._substitute(error))
        predicate = self.on_result
        if predicate is not None and predicate(result):
            self._used(target, None, result)
            return cast("R", self._substitute(result))
        return result

    async def _run_async(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: str,
    ) -> T:
        try:
            result = await fn(*args, **kwargs)
        except self._on as error:
            self._used(target, error, None)
            substitute = self._substitute(error)
            if inspect.isawaitable(substitute):
                substitute = await substitute
            return cast("T", substitute)
        predicate = self.on_result
        if predicate is not None and predicate(result):
            self._used(target, None, result)
            substitute = self._substitute(result)
            if inspect.isawaitable(substitute):
                substitute = await substitute
            return cast("T", substitute)
        return result

    # -- fronts ---------------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        Raises:
            TypeError: If ``fn`` is not callable or a generator function, or if a synchronous
                ``fn`` is given a coroutine function handler.
        """
        check_decoratable(fn, "Fallback")
        target = target_name(fn)
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn, target))
        self._check_sync()
        run = self._run_sync

        @functools.wraps(fn)
        def with_fallback(*args: P.args, **kwargs: P.kwargs) -> R:
            return run(fn, args, kwargs, target)

        return with_fallback

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]], target: str
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        run = self._run_async

        @functools.wraps(fn)
        async def with_fallback(*args: P.args, **kwargs: P.kwargs) -> T:
            return await run(fn, args, kwargs, target)

        return with_fallback

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)``, answering with the fallback on failure.

        Returns:
            What ``fn`` returns, or the substitute.

        Raises:
            TypeError: If ``fn`` or the handler is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await policy.acall(fn) instead")
        self._check_sync()
        return self._run_sync(fn, args, kwargs, target_name(fn))

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, answering with the fallback on failure.

        Returns:
            What the awaitable returns, or the substitute.

        Raises:
            TypeError: If ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        return await self._run_async(fn, args, kwargs, target_name(fn))


fallback = Fallback
"""``@fallback(value)`` or ``@fallback(handler=fn, on=...)``: the decorator spelling."""
