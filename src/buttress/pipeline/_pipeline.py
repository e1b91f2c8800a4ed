"""The pipeline: policies composed outermost first, built once per decorated function."""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import MethodType
from typing import Any, ParamSpec, Protocol, TypeVar, cast, runtime_checkable

from buttress.adaptive import AdaptiveConcurrency
from buttress.breaker import CircuitBreaker
from buttress.bulkhead import Bulkhead, DistributedBulkhead, KeyedBulkhead, ThreadPoolBulkhead
from buttress.bulkhead._guard import check_decoratable
from buttress.fallback import Fallback
from buttress.pipeline._adapters import KeyedBulkheadPolicy, RateLimitPolicy
from buttress.pipeline._validate import RULES, check_order, describe, warn
from buttress.ratelimit import Limiter
from buttress.retry import Retry
from buttress.timeout import TimeLimit

__all__ = ["Pipeline", "Policy", "pipeline"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

AnyFunction = Callable[..., Any]

# Policies whose decorator handles both plain and coroutine functions and is their fast path:
# the pipeline composes these decorators once per function, so a call costs what the policies
# cost, nothing more.
_DECORATORS: tuple[type, ...] = (
    Fallback,
    TimeLimit,
    Retry,
    CircuitBreaker,
    Bulkhead,
    DistributedBulkhead,
    AdaptiveConcurrency,
    RateLimitPolicy,
    KeyedBulkheadPolicy,
)


@runtime_checkable
class Policy(Protocol):
    """What a pipeline accepts besides buttress's own policies: ``call`` and ``acall``.

    ``call(fn, *args, **kwargs)`` runs the synchronous ``fn`` under the policy and returns its
    result; ``acall(fn, *args, **kwargs)`` awaits ``fn(*args, **kwargs)`` under it. Every
    buttress policy has both; a pipeline uses the decorators of its own policies instead (they
    are faster), and ``call``/``acall`` for anything else.
    """

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run the synchronous ``fn(*args, **kwargs)`` under the policy."""
        ...

    async def acall(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` under the policy."""
        ...


def _check_policy(policy: object, index: int) -> None:
    """Refuse what cannot be a layer, saying what to do instead."""
    if isinstance(policy, Limiter):
        raise TypeError(
            f"policies[{index}] is a Limiter, which needs a key per call: "
            "pass limited(limiter, key=...) instead"
        )
    if isinstance(policy, KeyedBulkhead):
        raise TypeError(
            f"policies[{index}] is a KeyedBulkhead, which needs a key per call: "
            "pass keyed(bulkhead, key=...) instead"
        )
    if isinstance(policy, (*_DECORATORS, ThreadPoolBulkhead)):
        return
    if not (callable(getattr(policy, "call", None)) and callable(getattr(policy, "acall", None))):
        raise TypeError(
            f"policies[{index}] must be a policy (an object with call() and acall(), see "
            f"buttress.pipeline.Policy), got {type(policy).__name__}"
        )


def _wrap_sync(policy: object, fn: AnyFunction) -> AnyFunction:
    """One synchronous layer: ``policy`` around ``fn``."""
    if isinstance(policy, (*_DECORATORS, ThreadPoolBulkhead)):
        return cast("AnyFunction", policy(fn))  # type: ignore[operator]
    call = cast("Policy", policy).call

    @functools.wraps(fn)
    def layer(*args: Any, **kwargs: Any) -> Any:
        return call(fn, *args, **kwargs)

    return layer


def _wrap_async(policy: object, fn: Callable[..., Coroutine[Any, Any, Any]]) -> AnyFunction:
    """One asynchronous layer: ``policy`` around the coroutine function ``fn``."""
    if isinstance(policy, ThreadPoolBulkhead):
        raise TypeError(
            f"{policy!r} runs synchronous calls on threads; it cannot hold a coroutine: use a "
            "Bulkhead in an async pipeline"
        )
    if isinstance(policy, _DECORATORS):
        return cast("AnyFunction", policy(fn))  # type: ignore[operator]
    acall = cast("Policy", policy).acall

    @functools.wraps(fn)
    async def layer(*args: Any, **kwargs: Any) -> Any:
        return await acall(fn, *args, **kwargs)

    return layer


def _flatten(policies: Iterable[object]) -> tuple[object, ...]:
    flat: list[object] = []
    for policy in policies:
        if isinstance(policy, Pipeline):
            flat.extend(policy.policies)
        else:
            flat.append(policy)
    return tuple(flat)


class Pipeline:
    """Policies composed into one, outermost first; a decorator and a ``call``/``acall`` front.

    ``Pipeline(fallback, total, retry, bulkhead, breaker, attempt)`` runs a call as
    ``fallback(total(retry(bulkhead(breaker(attempt(fn))))))``: the first policy sees the call
    first and its outcome last. Decorating a function composes the policies' own decorators
    once, so a call costs what its policies cost; :meth:`call` and :meth:`acall` keep the
    composed chain per function (weakly), so they pay for it once per function too.

    The policies are shared, not copied: one breaker in two pipelines is one breaker, and a
    pipeline serves any number of threads and tasks at once. A pipeline may hold another
    pipeline (its policies take its place). The same policy twice is refused.

    When it is built, the order is checked (see :func:`~buttress.pipeline.check_order`) and
    each problem is reported as a :class:`~buttress.pipeline.PipelineOrderWarning`.

    Args:
        *policies: The policies, outermost first: buttress's policies,
            :func:`~buttress.pipeline.limited` rate limiters,
            :func:`~buttress.pipeline.keyed` keyed bulkheads, other pipelines, or any object
            with ``call`` and ``acall`` (:class:`Policy`).
        name: The pipeline's name (in ``repr`` and in :class:`~buttress.pipeline.Pipelines`).
        validate: Whether to check the order at all.
        allow: Ids of order rules not to warn about (see :data:`~buttress.pipeline.RULES`).

    Raises:
        TypeError: For something that is not a policy (a bare ``Limiter`` or ``KeyedBulkhead``
            is refused with the adapter to use), naming its position.
        ValueError: For the same policy twice, or an unknown rule id in ``allow``.
    """

    __slots__ = (
        "__weakref__",
        "_async",
        "_async_ids",
        "_lock",
        "_sync",
        "_sync_ids",
        "allow",
        "name",
        "policies",
    )

    def __init__(
        self,
        *policies: object,
        name: str = "pipeline",
        validate: bool = True,
        allow: Iterable[str] = (),
        _stacklevel: int = 1,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if isinstance(allow, str):
            raise TypeError("allow must be a collection of rule ids, not a single str")
        allowed = frozenset(allow)
        unknown = sorted(allowed - RULES.keys())
        if unknown:
            raise ValueError(f"allow names unknown rules {unknown}; known: {sorted(RULES)}")
        flat = _flatten(policies)
        for index, policy in enumerate(flat):
            _check_policy(policy, index)
            for earlier in range(index):
                if flat[earlier] is policy:
                    raise ValueError(
                        f"{describe(flat, index)} is the same object as policies[{earlier}]: "
                        "a policy can be in a pipeline once"
                    )
        self.policies = flat
        self.name = name
        self.allow = allowed
        self._lock = threading.Lock()
        self._sync: weakref.WeakKeyDictionary[Any, AnyFunction] = weakref.WeakKeyDictionary()
        self._async: weakref.WeakKeyDictionary[Any, AnyFunction] = weakref.WeakKeyDictionary()
        # The same chains by id(function), looked up first by call()/acall(): a plain dict
        # lookup and an identity check, where the weak dictionary makes a weak reference per
        # lookup and the inspect checks cost more than the policies. An entry is dropped when
        # its function is collected, before its id can be reused.
        self._sync_ids: dict[int, _Known] = {}
        self._async_ids: dict[int, _Known] = {}
        if validate:
            warn(check_order(flat), allowed, stacklevel=_stacklevel + 1)

    def __repr__(self) -> str:
        inner = ", ".join(repr(policy) for policy in self.policies)
        return f"Pipeline({inner}, name={self.name!r})"

    def __len__(self) -> int:
        return len(self.policies)

    # -- composing ------------------------------------------------------------------------------

    def _compose_sync(self, fn: AnyFunction) -> AnyFunction:
        wrapped = fn
        for policy in reversed(self.policies):
            wrapped = _wrap_sync(policy, wrapped)
        return wrapped

    def _compose_async(self, fn: Callable[..., Coroutine[Any, Any, Any]]) -> AnyFunction:
        wrapped: AnyFunction = fn
        for policy in reversed(self.policies):
            wrapped = _wrap_async(policy, wrapped)
        return wrapped

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (a function, method or ``async def`` coroutine function).

        The policies' decorators are composed here, once; the result keeps ``fn``'s name,
        docstring and signature (and is a coroutine function if ``fn`` is one).

        Returns:
            The protected function.

        Raises:
            TypeError: If ``fn`` is not callable or is a generator function, or if a policy
                cannot wrap it (a :class:`~buttress.bulkhead.ThreadPoolBulkhead` around a
                coroutine function).
        """
        check_decoratable(fn, "a pipeline")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, R]", self._compose_async(fn))
        return cast("Callable[P, R]", self._compose_sync(fn))

    # -- calling --------------------------------------------------------------------------------

    def _chain(
        self,
        cache: weakref.WeakKeyDictionary[Any, AnyFunction],
        ids: dict[int, _Known],
        key: Any,
        compose: Callable[[Any], AnyFunction],
        weak: Callable[[Any], AnyFunction],
    ) -> AnyFunction:
        """The composed chain for ``key`` (a function), made once and kept while it lives.

        The chain is composed around ``weak(key)``, a stand-in holding ``key`` weakly, so that
        the cache entry does not keep its own key alive. It is also entered in ``ids``, the
        fast lookup of :meth:`call` and :meth:`acall`.
        """
        try:
            chain = cache.get(key)
        except TypeError:  # cannot be weakly referenced or hashed: compose for this call
            return compose(key)
        if chain is None:
            chain = compose(weak(key))
            with self._lock:
                cache[key] = chain
        known = ids.get(id(key))
        if known is None or known[0]() is not key:
            _remember(ids, key, chain)
        return chain

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the synchronous ``fn(*args, **kwargs)`` through every policy.

        The composed chain is kept per function (and per method's function), so the policies'
        decorators are composed once, not at every call.

        Returns:
            What ``fn`` returns (or what a fallback answers).

        Raises:
            TypeError: If ``fn`` is a coroutine function (use :meth:`acall`).
            Exception: What the outermost policy lets through: ``fn``'s own exception, or a
                rejection (:class:`~buttress.Rejected`) or :class:`~buttress.Timeout`.
        """
        ids = self._sync_ids
        known = ids.get(id(fn))
        result: R  # (not cast(): a call, in the path this lookup is here to make short)
        if known is not None and known[0]() is fn:  # a function called before: no checks left
            result = known[1](*args, **kwargs)
            return result
        if type(fn) is MethodType:  # a new object at every attribute access: its function
            func = fn.__func__
            known = ids.get(id(func))
            if known is not None and known[0]() is func:
                result = known[1](fn.__self__, *args, **kwargs)
                return result
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() runs synchronous functions; await pipeline.acall(fn) instead")
        if inspect.ismethod(fn):
            chain = self._chain(self._sync, ids, fn.__func__, self._compose_sync, _weak_sync)
            return cast("R", chain(fn.__self__, *args, **kwargs))
        chain = self._chain(self._sync, ids, fn, self._compose_sync, _weak_sync)
        return cast("R", chain(*args, **kwargs))

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through every policy; ``fn`` returns an awaitable.

        Returns:
            What the awaitable gives (or what a fallback answers).

        Raises:
            TypeError: If ``fn`` is not callable.
            Exception: As for :meth:`call`.
        """
        ids = self._async_ids
        known = ids.get(id(fn))
        result: T
        if known is not None and known[0]() is fn:  # a function called before: no checks left
            result = await known[1](*args, **kwargs)
            return result
        if type(fn) is MethodType:  # a new object at every attribute access: its function
            func = fn.__func__
            known = ids.get(id(func))
            if known is not None and known[0]() is func:
                result = await known[1](fn.__self__, *args, **kwargs)
                return result
        if not callable(fn):
            raise TypeError(f"acall() needs a callable, got {type(fn).__name__}")
        if inspect.ismethod(fn) and inspect.iscoroutinefunction(fn.__func__):
            chain = self._chain(self._async, ids, fn.__func__, self._compose_async, _weak_async)
            return cast("T", await chain(fn.__self__, *args, **kwargs))
        if inspect.iscoroutinefunction(fn):
            chain = self._chain(self._async, ids, fn, self._compose_async, _weak_async)
        else:  # returns an awaitable without being a coroutine function: compose around it
            chain = self._compose_async(_as_coroutine_function(fn))
        return cast("T", await chain(*args, **kwargs))


_Known = tuple["weakref.ref[Any]", AnyFunction]
"""An entry of a pipeline's id-keyed chains: the function (weakly) and its chain."""


def _remember(ids: dict[int, _Known], key: Any, chain: AnyFunction) -> None:
    """Enter ``key``'s chain in ``ids`` under ``id(key)``, for as long as ``key`` lives.

    The weak reference's callback drops the entry when ``key`` is collected, which happens
    before its id can be given to another object; the identity check at lookup is the guard
    for the rest (an entry made and replaced by another thread meanwhile).
    """
    number = id(key)

    def forget(ref: weakref.ref[Any]) -> None:
        known = ids.get(number)
        if known is not None and known[0] is ref:
            del ids[number]

    ids[number] = (weakref.ref(key, forget), chain)


def _weak_sync(fn: AnyFunction) -> AnyFunction:
    """A stand-in for ``fn`` that holds it weakly (it is alive whenever the stand-in runs)."""
    ref = weakref.ref(fn)

    def target(*args: Any, **kwargs: Any) -> Any:
        return ref()(*args, **kwargs)  # type: ignore[misc]  # alive: the caller holds it

    functools.update_wrapper(target, fn)  # its name, for the policies' events
    del target.__wrapped__  # type: ignore[attr-defined]  # a strong reference
    return target


def _weak_async(fn: AnyFunction) -> AnyFunction:
    """The coroutine function form of :func:`_weak_sync`."""
    ref = weakref.ref(fn)

    async def target(*args: Any, **kwargs: Any) -> Any:
        return await ref()(*args, **kwargs)  # type: ignore[misc]  # alive: the caller holds it

    functools.update_wrapper(target, fn)
    del target.__wrapped__  # type: ignore[attr-defined]  # a strong reference
    return target


def _as_coroutine_function(
    fn: Callable[..., Awaitable[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    @functools.wraps(fn)
    async def awaited(*args: Any, **kwargs: Any) -> T:
        return await fn(*args, **kwargs)

    return awaited


def pipeline(
    *policies: object,
    name: str = "pipeline",
    validate: bool = True,
    allow: Iterable[str] = (),
) -> Pipeline:
    """Compose ``policies``, outermost first, into a :class:`Pipeline`.

    ::

        resilient = pipeline(
            fallback(None, on=(Rejected, Timeout)),
            timeout(10, mode="cooperative"),           # the whole call
            Retry(attempts=3, budget=RetryBudget()),
            Bulkhead(20, max_wait=0.5),
            CircuitBreaker("payments", fail_max=5),
            timeout(2),                                # each attempt
        )

        @resilient
        def charge(order): ...

    Args:
        *policies: The policies, outermost first (see :class:`Pipeline`).
        name: The pipeline's name.
        validate: Whether to check the order (warning with
            :class:`~buttress.pipeline.PipelineOrderWarning`).
        allow: Ids of order rules not to warn about.

    Returns:
        The :class:`Pipeline`.

    Raises:
        TypeError, ValueError: As :class:`Pipeline` does.
    """
    return Pipeline(*policies, name=name, validate=validate, allow=allow, _stacklevel=2)
