"""Adapters that make keyed policies fit a pipeline: a rate limiter and a keyed bulkhead.

A :class:`~buttress.Limiter` and a :class:`~buttress.bulkhead.KeyedBulkhead` need a key for
every call, which a pipeline cannot guess. :func:`limited` and :func:`keyed` bind one: a fixed
string, or a function of the call's own arguments (``key=lambda user, *_: user.tenant``).
Both are policies in their own right (decorator, ``call``/``acall``), usable outside pipelines.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast

from buttress._deadline import current_deadline
from buttress._errors import RateLimited
from buttress._types import Duration, check_int, check_name, seconds_or_none
from buttress.bulkhead import KeyedBulkhead
from buttress.bulkhead._guard import check_decoratable
from buttress.ratelimit import Decision, Limiter

__all__ = ["KeyedBulkheadPolicy", "RateLimitPolicy", "keyed", "limited"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

KeyFunction = Callable[..., str]
"""A function of a call's arguments (``*args, **kwargs``) returning the key to limit."""


def _check_key_argument(key: object) -> str | KeyFunction:
    if isinstance(key, str):
        if not key:
            raise ValueError("key must be a non-empty str or a function of the call's arguments")
        return key
    if callable(key):
        return cast("KeyFunction", key)
    raise TypeError(
        f"key must be a str or a function of the call's arguments, got {type(key).__name__}"
    )


class RateLimitPolicy:
    """A :class:`~buttress.Limiter` bound to a key: a policy that raises when the rate is spent.

    Made by :func:`limited`. Each call takes ``cost`` units of the key's rate before running;
    when the limiter refuses, the call is not run and :class:`~buttress.RateLimited` is raised,
    carrying ``retry_after`` (seconds until the key admits it). With ``max_wait`` the call
    first waits up to that long for the rate to free up (never past the current deadline of
    an enclosing :class:`~buttress.timeout.TimeLimit`).

    Attributes:
        limiter: The limiter.
        key: The fixed key, or the function of the call's arguments that picks it.
        cost: Units taken per call.
        max_wait: The longest a call waits for admission, in seconds (``0``: not at all;
            ``None``: as long as needed, bounded only by the current deadline).
        name: The policy's name (the limiter's).
    """

    __slots__ = ("cost", "key", "limiter", "max_wait", "name")

    def __init__(
        self,
        limiter: Limiter,
        *,
        key: str | KeyFunction = "default",
        cost: int = 1,
        max_wait: Duration | None = 0.0,
    ) -> None:
        if not isinstance(limiter, Limiter):
            raise TypeError(f"limiter must be a Limiter, got {type(limiter).__name__}")
        self.limiter = limiter
        self.key = _check_key_argument(key)
        self.cost = check_int(cost, "cost", minimum=1)
        self.max_wait = seconds_or_none(max_wait, "max_wait")
        self.name = check_name(limiter.name)

    def __repr__(self) -> str:
        return f"limited({self.limiter!r}, key={self.key!r}, cost={self.cost})"

    def _key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        key = self.key
        return key if isinstance(key, str) else key(*args, **kwargs)

    def _wait_limit(self) -> float | None:
        """The longest to wait for admission now: ``max_wait``, or less if a deadline is near."""
        limit = self.max_wait
        deadline = current_deadline()
        if deadline is not None:
            left = deadline.remaining()
            if limit is None or left < limit:
                return left
        return limit

    def _refused(self, key: str, decision: Decision) -> RateLimited:
        retry_after = decision.retry_after
        when = "" if retry_after is None else f"; the next admission in {retry_after:.3f} s"
        return RateLimited(
            f"{self.name}: {key!r} is over its limit ({decision.rate}){when}",
            name=self.name,
            retry_after=retry_after,
        )

    def _admit(self, key: str) -> None:
        """Wait for admission after a refusal, or raise :class:`RateLimited` (sync)."""
        limit = self._wait_limit()
        decision = self.limiter.hit(key, self.cost)
        if decision.allowed:
            return
        if limit is not None and limit <= 0:
            raise self._refused(key, decision)
        self.limiter.acquire(key, self.cost, timeout=limit)

    async def _aadmit(self, key: str) -> None:
        """The coroutine form of :meth:`_admit` (waits without blocking the loop)."""
        limit = self._wait_limit()
        decision = await self.limiter.ahit(key, self.cost)
        if decision.allowed:
            return
        if limit is not None and limit <= 0:
            raise self._refused(key, decision)
        await self.limiter.aacquire(key, self.cost, timeout=limit)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        Raises:
            TypeError: If ``fn`` is not callable, or is a generator function.
        """
        check_decoratable(fn, "limited()")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn))
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        # The admitted path reads the limiter's (possibly specialised) hit() once, here.
        hit, cost, fixed, key_of = self.limiter.hit, self.cost, self.key, self._key_of
        waits = self.max_wait != 0
        refused, admit = self._refused, self._admit

        @functools.wraps(fn)
        def rate_limited(*args: P.args, **kwargs: P.kwargs) -> R:
            key = fixed if isinstance(fixed, str) else key_of(args, kwargs)
            decision = hit(key, cost)
            if not decision.allowed:
                if not waits:
                    raise refused(key, decision)
                admit(key)
            return fn(*args, **kwargs)

        return rate_limited

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        ahit, cost, fixed, key_of = self.limiter.ahit, self.cost, self.key, self._key_of
        waits = self.max_wait != 0
        refused, aadmit = self._refused, self._aadmit

        @functools.wraps(fn)
        async def rate_limited(*args: P.args, **kwargs: P.kwargs) -> T:
            key = fixed if isinstance(fixed, str) else key_of(args, kwargs)
            decision = await ahit(key, cost)
            if not decision.allowed:
                if not waits:
                    raise refused(key, decision)
                await aadmit(key)
            return await fn(*args, **kwargs)

        return rate_limited

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` once the limiter admits it.

        Returns:
            What ``fn`` returns.

        Raises:
            RateLimited: If the key's rate is spent (and no admission came within ``max_wait``).
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await policy.acall(fn) instead")
        return self._decorate_sync(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` once the limiter admits it.

        Returns:
            What the awaitable returns.

        Raises:
            RateLimited: If the key's rate is spent (and no admission came within ``max_wait``).
        """
        key = self._key_of(args, kwargs)
        await self._aadmit(key)
        return await fn(*args, **kwargs)


def limited(
    limiter: Limiter,
    *,
    key: str | KeyFunction = "default",
    cost: int = 1,
    max_wait: Duration | None = 0.0,
) -> RateLimitPolicy:
    """Make a rate limiter a policy: bind the key it limits (and the cost of a call).

    ::

        per_user = limited(Limiter("10/second"), key=lambda user, *args, **kwargs: user.id)
        pipeline(retry_policy, per_user, breaker)

    Args:
        limiter: The :class:`~buttress.Limiter`.
        key: A fixed key, or a function called with the call's arguments returning the key.
        cost: Units of the rate each call takes (``>= 1``).
        max_wait: Seconds a refused call may wait for the rate to free up (``0``, the default:
            refuse at once; ``None``: wait as long as needed). Never past the current deadline.

    Returns:
        A :class:`RateLimitPolicy`.

    Raises:
        TypeError, ValueError: For a bad limiter, key, cost or wait, naming the argument.
    """
    return RateLimitPolicy(limiter, key=key, cost=cost, max_wait=max_wait)


class KeyedBulkheadPolicy:
    """A :class:`~buttress.bulkhead.KeyedBulkhead` bound to a key: made by :func:`keyed`.

    Each call holds a slot of its key's bulkhead while it runs (waiting by the bulkhead's
    rules), and gives it back when it returns or raises.

    Attributes:
        bulkhead: The keyed bulkhead.
        key: The fixed key, or the function of the call's arguments that picks it.
        name: The policy's name (the bulkhead's).
    """

    __slots__ = ("bulkhead", "key", "name")

    def __init__(self, bulkhead: KeyedBulkhead, *, key: str | KeyFunction) -> None:
        if not isinstance(bulkhead, KeyedBulkhead):
            raise TypeError(f"bulkhead must be a KeyedBulkhead, got {type(bulkhead).__name__}")
        self.bulkhead = bulkhead
        self.key = _check_key_argument(key)
        self.name = bulkhead.name

    def __repr__(self) -> str:
        return f"keyed({self.bulkhead!r}, key={self.key!r})"

    def _key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        key = self.key
        return key if isinstance(key, str) else key(*args, **kwargs)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        Raises:
            TypeError: If ``fn`` is not callable, or is a generator function.
        """
        check_decoratable(fn, "keyed()")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._decorate_async(fn))
        acquire, key_of = self.bulkhead.acquire, self._key_of

        @functools.wraps(fn)
        def partitioned(*args: P.args, **kwargs: P.kwargs) -> R:
            permit = acquire(key_of(args, kwargs))
            try:
                return fn(*args, **kwargs)
            finally:
                permit.release()

        return partitioned

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        aacquire, key_of = self.bulkhead.aacquire, self._key_of

        @functools.wraps(fn)
        async def partitioned(*args: P.args, **kwargs: P.kwargs) -> T:
            permit = await aacquire(key_of(args, kwargs))
            try:
                return await fn(*args, **kwargs)
            finally:
                permit.release()

        return partitioned

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` holding a slot of its key.

        Returns:
            What ``fn`` returns.

        Raises:
            BulkheadFull: If no slot could be had.
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await policy.acall(fn) instead")
        with self.bulkhead.acquire(self._key_of(args, kwargs)):
            return fn(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` holding a slot of its key.

        Returns:
            What the awaitable returns.

        Raises:
            BulkheadFull: If no slot could be had.
        """
        with await self.bulkhead.aacquire(self._key_of(args, kwargs)):
            return await fn(*args, **kwargs)


def keyed(bulkhead: KeyedBulkhead, *, key: str | KeyFunction) -> KeyedBulkheadPolicy:
    """Make a keyed bulkhead a policy: bind the key (a str, or a function of the call's args).

    ::

        per_tenant = keyed(KeyedBulkhead(5), key=lambda request: request.tenant)

    Args:
        bulkhead: The :class:`~buttress.bulkhead.KeyedBulkhead`.
        key: A fixed key, or a function called with the call's arguments returning the key.

    Returns:
        A :class:`KeyedBulkheadPolicy`.

    Raises:
        TypeError, ValueError: For a bad bulkhead or key, naming the argument.
    """
    return KeyedBulkheadPolicy(bulkhead, key=key)
