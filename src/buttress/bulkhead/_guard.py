"""What every bulkhead front shares: the decorator, ``call`` and ``acall`` around a permit."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, cast

__all__ = ["Releasable", "SlotGuard", "check_decoratable", "target_name"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Releasable(Protocol):
    """A held slot: given back by ``release()`` (sync) or ``arelease()`` (async), once."""

    def release(self) -> bool:
        """Give the slot back; only the first call does anything."""
        ...

    async def arelease(self) -> bool:
        """The coroutine form of :meth:`release`."""
        ...


def target_name(fn: object) -> str:
    """Name a called function for events and logs: its qualified name, without ``<locals>``."""
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        return repr(fn)
    return name.replace("<locals>.", "")


def check_decoratable(fn: object, what: str) -> None:
    """Refuse what a policy cannot wrap: non-callables and generator functions.

    Raises:
        TypeError: Naming the policy (``what``).
    """
    if not callable(fn):
        raise TypeError(f"{what} can only decorate callables, got {type(fn).__name__}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(f"{what} cannot decorate a generator function: wrap what it calls")


class SlotGuard:
    """A front that runs calls while holding a slot: subclasses say how to take one.

    Subclasses implement :meth:`_enter` (take a slot, waiting by their rules, or raise
    :class:`~buttress.BulkheadFull`) and :meth:`_aenter` (the same without blocking the loop).
    """

    __slots__ = ()

    def _enter(self) -> Releasable:
        raise NotImplementedError

    async def _aenter(self) -> Releasable:
        raise NotImplementedError

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        Each call takes a slot first (waiting by the bulkhead's rules) and gives it back when
        the call returns or raises.

        Raises:
            TypeError: If ``fn`` is not callable, or is a generator function.
        """
        check_decoratable(fn, type(self).__name__)
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn))
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        enter = self._enter

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            permit = enter()
            try:
                return fn(*args, **kwargs)
            finally:
                permit.release()

        return guarded

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        aenter = self._aenter

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            permit = await aenter()
            try:
                return await fn(*args, **kwargs)
            finally:
                await permit.arelease()

        return guarded

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` while holding a slot.

        Returns:
            What ``fn`` returns.

        Raises:
            BulkheadFull: If no slot could be had (see the bulkhead's rules).
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await bulkhead.acall(fn) instead")
        permit = self._enter()
        try:
            return fn(*args, **kwargs)
        finally:
            permit.release()

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` while holding a slot; waiting never blocks the loop.

        Returns:
            What the awaitable returns.

        Raises:
            BulkheadFull: If no slot could be had (see the bulkhead's rules).
            TypeError: If ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        permit = await self._aenter()
        try:
            return await fn(*args, **kwargs)
        finally:
            await permit.arelease()
