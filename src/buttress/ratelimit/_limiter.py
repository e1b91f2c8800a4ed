"""The limiter fronts: ``Limiter`` (N per period per key), ``ConcurrencyLimit`` (N in flight).

Both talk to a store (memory or Redis) through a :class:`_StoreGuard`, which applies the
limiter's policy for store faults: a short timeout is the store's own (``timeout=`` of the Redis
store); after ``store_failures`` consecutive failures the guard stops calling the store for
``store_cooldown`` seconds, so an outage does not add a timeout to every request, and answers by
``on_store_error``:

- ``"local"`` (the default): decide with an in-process memory store instead (limits then hold per
  process, not across them);
- ``"fail-open"``: admit every request;
- ``"fail-closed"``: reject every request, with ``retry_after`` the time until the store is tried
  again.

Decisions made that way have ``degraded=True``; :class:`StoreDegraded` and :class:`StoreRecovered`
events mark each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from buttress import _events
from buttress._clock import Clock, check_clock, system_clock
from buttress._errors import RateLimited, StorageError
from buttress._events import Listener, check_listeners, emit
from buttress._store_circuit import StoreCircuit
from buttress._types import Duration, check_int, check_name, seconds, seconds_or_none
from buttress.ratelimit._algorithms import ALGORITHMS, Algorithm
from buttress.ratelimit._decision import Decision
from buttress.ratelimit._events import RateLimitDecided, StoreDegraded, StoreRecovered
from buttress.ratelimit._rate import Rate, parse_rates

if TYPE_CHECKING:
    from buttress.storage import Storage

__all__ = ["ConcurrencyLimit", "Limiter", "OnStoreError", "Permit"]

OnStoreError = Literal["local", "fail-open", "fail-closed"]
"""What a limiter answers while its store is failing; see the module docstring."""

_ON_STORE_ERROR: tuple[str, ...] = get_args(OnStoreError)
_MAX_KEY_LENGTH = 1024
_MIN_POLL = 0.001  # the shortest wait in acquire(): never spin on a zero retry_after

T = TypeVar("T")


def _resolve_storage(storage: object) -> Storage:
    # Imported here: the stores import this package's pure modules, so a top-level import would
    # be circular.
    from buttress.storage import Storage  # noqa: PLC0415
    from buttress.storage._url import resolve_storage  # noqa: PLC0415

    return resolve_storage(
        storage,
        Storage,  # type: ignore[type-abstract]  # a Protocol, checked at run time
        "a URL such as 'memory://' or 'redis://127.0.0.1:6379/0', or a store object",
    )


def _memory_store(clock: Clock) -> Storage:
    from buttress.storage.memory import MemoryStorage  # noqa: PLC0415 - see _resolve_storage

    return MemoryStorage(clock=clock)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__} ({key!r})")
    if not key or len(key) > _MAX_KEY_LENGTH:
        raise ValueError(f"key must be a non-empty str of at most {_MAX_KEY_LENGTH} characters")
    return key


class _StoreGuard(StoreCircuit):
    """Calls a store under the limiter's fault policy (see the module docstring)."""

    __slots__ = ("_guard_clock", "_guard_lock", "local", "mode", "store")

    def __init__(
        self,
        store: Storage,
        mode: str,
        failures: int,
        cooldown: float,
        clock: Clock,
        name: str,
        listeners: tuple[Listener, ...],
    ) -> None:
        super().__init__(
            failures,
            cooldown,
            clock,
            lambda error, retry_in: StoreDegraded(name, mode, error, retry_in),
            lambda down_for: StoreRecovered(name, down_for),
            listeners,
        )
        self.store = store
        self.mode = mode
        self.local: Storage | None = None  # the fallback store, made on first need
        self._guard_clock = clock
        self._guard_lock = threading.Lock()

    def fallback(self) -> Storage:
        """The local store used by the ``local`` policy."""
        if self.local is None:
            with self._guard_lock:
                if self.local is None:
                    self.local = _memory_store(self._guard_clock)
        return self.local


class _GuardedFront:
    """What :class:`Limiter` and :class:`ConcurrencyLimit` share: arguments and the guard."""

    def __init__(
        self,
        storage: Storage | str,
        name: str,
        on_store_error: OnStoreError,
        store_failures: int,
        store_cooldown: Duration,
        listeners: Sequence[Listener],
        clock: Clock,
    ) -> None:
        check_name(name)
        if on_store_error not in _ON_STORE_ERROR:
            raise ValueError(
                f"on_store_error must be one of {', '.join(_ON_STORE_ERROR)}; "
                f"got {on_store_error!r}"
            )
        check_clock(clock)
        self.name = name
        self.on_store_error: OnStoreError = on_store_error
        self.listeners = check_listeners(listeners)
        self.clock = clock
        self._guard = _StoreGuard(
            _resolve_storage(storage),
            on_store_error,
            check_int(store_failures, "store_failures", minimum=1),
            seconds(store_cooldown, "store_cooldown"),
            clock,
            name,
            self.listeners,
        )

    @property
    def storage(self) -> Storage:
        """The store this limiter decides with."""
        return self._guard.store

    def _guarded(self, call: Callable[[Storage], T], degraded: Callable[[], T]) -> T:
        guard = self._guard
        if guard.available():
            try:
                result = call(guard.store)
            except StorageError as error:
                guard.failed(error)
            else:
                guard.succeeded()
                return result
        return degraded()

    async def _aguarded(
        self, call: Callable[[Storage], Awaitable[T]], degraded: Callable[[], T]
    ) -> T:
        guard = self._guard
        if guard.available():
            try:
                result = await call(guard.store)
            except StorageError as error:
                guard.failed(error)
            else:
                guard.succeeded()
                return result
        return degraded()


class Limiter(_GuardedFront):
    """Admit at most N units per period per key ("10/minute"), in memory or on a shared store.

    Args:
        limits: A limit string (``"10/second; 1000/hour"``), a :class:`Rate`, or rates. Several
            limits are decided together, all or nothing: a request rejected by one consumes
            nothing from the others.
        algorithm: ``"fixed-window"`` (default; the chapter's and Flask-Limiter's),
            ``"sliding-window"`` (exact log), ``"sliding-window-counter"`` (approximate, cheap),
            ``"token-bucket"`` or ``"gcra"``. See :mod:`buttress.ratelimit`.
        storage: A store or a URL for :func:`~buttress.storage.storage_from_url`
            (default ``"memory://"``, this process only).
        name: The limiter's name in events and errors.
        on_store_error: ``"local"``, ``"fail-open"`` or ``"fail-closed"``: see the module docstring.
        store_failures: Consecutive store failures after which the store is left alone for
            ``store_cooldown`` seconds.
        store_cooldown: Seconds before a failed store is tried again.
        rejection_cache: Remember locally that a key is over its limit until its
            ``retry_after``, and reject further requests for it without asking the store. ``None``
            (the default) turns it on for shared stores and off for memory.
        listeners: Callables receiving this limiter's events.
        clock: The time source for waits, the cache and the memory fallback.

    Raises:
        TypeError, ValueError: For bad arguments (``ConfigurationError`` for a bad limit string).
    """

    def __init__(
        self,
        limits: str | Rate | Sequence[Rate],
        *,
        algorithm: Algorithm = "fixed-window",
        storage: Storage | str = "memory://",
        name: str = "limiter",
        on_store_error: OnStoreError = "local",
        store_failures: int = 3,
        store_cooldown: Duration = 5.0,
        rejection_cache: bool | None = None,
        listeners: Sequence[Listener] = (),
        clock: Clock = system_clock,
    ) -> None:
        # A rate written twice is one limit (stores keep one state per rate).
        self.rates = tuple(dict.fromkeys(parse_rates(limits)))  # type: ignore[arg-type]
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {algorithm!r}")
        self.algorithm: Algorithm = algorithm
        super().__init__(
            storage, name, on_store_error, store_failures, store_cooldown, listeners, clock
        )
        from buttress.storage.memory import MemoryStorage  # noqa: PLC0415 - see _resolve_storage

        if rejection_cache is None:
            rejection_cache = not isinstance(self.storage, MemoryStorage)
        elif not isinstance(rejection_cache, bool):
            raise TypeError("rejection_cache must be True, False or None")
        self._cache: dict[str, tuple[float, int, Decision, float]] | None = (
            {} if rejection_cache else None
        )
        self._cache_lock = threading.Lock()
        self._max_cost = min(rate.limit for rate in self.rates)
        # A memory store never fails: without a cache, hit() calls it directly, through a
        # decision function the store makes for these rates (single() or several()).
        store = self.storage
        self._direct: Callable[[str, int], Decision] | None = None
        if isinstance(store, MemoryStorage) and self._cache is None:
            if len(self.rates) == 1:
                self._direct = store.single(algorithm, self.rates[0])
            else:
                self._direct = store.several(algorithm, self.rates)
            self.hit = self._fast_hit(self._direct)  # type: ignore[method-assign,assignment]

    def __repr__(self) -> str:
        limits = "; ".join(str(rate) for rate in self.rates)
        return f"Limiter({limits!r}, algorithm={self.algorithm!r}, name={self.name!r})"

    # -- the decision, shared by every front method ---------------------------------------------

    def _check(self, key: object, cost: object) -> tuple[str, int]:
        if (
            type(key) is str
            and 0 < len(key) <= _MAX_KEY_LENGTH
            and type(cost) is int
            and 1 <= cost <= self._max_cost
        ):
            return key, cost  # the common case, in four cheap tests
        key = _check_key(key)
        if not isinstance(cost, int) or isinstance(cost, bool):
            raise TypeError(f"cost must be an int, got {type(cost).__name__} ({cost!r})")
        if not 1 <= cost <= self._max_cost:
            raise ValueError(
                f"cost must be between 1 and the smallest limit ({self._max_cost}), got {cost}: "
                "a larger cost could never be admitted"
            )
        return key, cost

    def _cached(self, key: str, cost: int) -> Decision | None:
        cache = self._cache
        if not cache:
            return None
        entry = cache.get(key)
        if entry is None:
            return None
        until, rejected_cost, decision, at = entry
        now = self.clock.now()
        if now >= until:
            with self._cache_lock:
                if cache.get(key) is entry:
                    del cache[key]
            return None
        if cost < rejected_cost:
            return None
        return Decision(
            allowed=False,
            limit=decision.limit,
            remaining=0,
            reset_after=max(0.0, decision.reset_after - (now - at)),
            retry_after=until - now,
            rate=decision.rate,
        )

    def _remember(self, key: str, cost: int, decision: Decision) -> None:
        cache = self._cache
        if cache is None or decision.allowed or decision.degraded or not decision.retry_after:
            return
        now = self.clock.now()
        with self._cache_lock:
            if len(cache) >= 10_000:  # bounded: drop what expired, else the older half
                for stale in [k for k, entry in cache.items() if entry[0] <= now]:
                    del cache[stale]
                if len(cache) >= 10_000:
                    for old in list(cache)[: len(cache) // 2]:
                        del cache[old]
            cache[key] = (now + decision.retry_after, cost, decision, now)

    def _degraded(self, key: str, cost: int, consume: bool) -> Decision:
        mode = self.on_store_error
        rate = self.rates[0]
        if mode == "fail-open":
            return Decision(True, rate.limit, rate.limit, 0.0, None, rate, degraded=True)
        if mode == "fail-closed":
            retry = max(self._guard.retry_in(), _MIN_POLL)
            return Decision(False, rate.limit, 0, retry, retry, rate, degraded=True)
        local = self._guard.fallback().decide(
            self.algorithm, key, self.rates, cost, consume=consume
        )
        return Decision(
            local.allowed,
            local.limit,
            local.remaining,
            local.reset_after,
            local.retry_after,
            local.rate,
            degraded=True,
        )

    def _report(self, key: str, cost: int, decision: Decision, cached: bool) -> Decision:
        if self.listeners or _events._global:  # noqa: SLF001 - the registry's fast check
            emit(RateLimitDecided(self.name, key, cost, decision, cached), self.listeners)
        return decision

    def _fast_hit(self, direct: Callable[[str, int], Decision]) -> Callable[[str, int], Decision]:
        """Make this limiter's ``hit`` for a memory store: the checks and the call, nothing more.

        The same behaviour as :meth:`hit` (which it replaces on the instance), in a closure, as
        attribute look-ups are a good part of a microsecond-long decision.
        """
        max_cost, listeners, name, slow = self._max_cost, self.listeners, self.name, self._hit
        events = _events

        def hit(key: str, cost: int = 1) -> Decision:
            if (
                type(key) is str
                and 0 < len(key) <= _MAX_KEY_LENGTH
                and type(cost) is int
                and 0 < cost <= max_cost
            ):
                decision = direct(key, cost)
                if listeners or events._global:  # noqa: SLF001 - the registry's fast check
                    emit(RateLimitDecided(name, key, cost, decision), listeners)
                return decision
            return slow(key, cost)  # raises for the bad argument

        hit.__doc__ = Limiter.hit.__doc__
        return hit

    # -- sync -----------------------------------------------------------------------------------

    def hit(self, key: str, cost: int = 1) -> Decision:
        """Count a request of ``cost`` units on ``key`` if every limit admits it.

        Returns:
            The :class:`Decision`; when rejected, nothing was counted.

        Raises:
            TypeError, ValueError: For a key that is not a non-empty str, or a cost that is not an
                int between 1 and the smallest limit. Store faults never raise (see
                ``on_store_error``).
        """
        return self._hit(key, cost)

    def _hit(self, key: str, cost: int = 1) -> Decision:
        # The common case (good arguments, no cached rejections, an admission, no listener)
        # calls nothing but the store: each method call is about a thousand instructions.
        if not (
            type(key) is str
            and 0 < len(key) <= _MAX_KEY_LENGTH
            and type(cost) is int
            and 0 < cost <= self._max_cost
        ):
            key, cost = self._check(key, cost)  # raises for the bad argument
        direct = self._direct
        if direct is not None:
            return self._report(key, cost, direct(key, cost), cached=False)
        if self._cache:
            cached = self._cached(key, cost)
            if cached is not None:
                return self._report(key, cost, cached, cached=True)
        decision = self._store_decision(key, cost, consume=True)
        if not decision.allowed:
            self._remember(key, cost, decision)
        if self.listeners or _events._global:  # noqa: SLF001 - the registry's fast check
            emit(RateLimitDecided(self.name, key, cost, decision, False), self.listeners)
        return decision

    def _store_decision(self, key: str, cost: int, consume: bool) -> Decision:
        """The store's decision, or the ``on_store_error`` policy's while the store fails.

        :meth:`_guarded` for a decision, without the two closures it takes (made on every call):
        the synchronous twin of the block :meth:`ahit` writes out.
        """
        guard = self._guard
        if guard.healthy or guard.available():  # healthy: the common case, no call
            try:
                decision = guard.store.decide(
                    self.algorithm, key, self.rates, cost, consume=consume
                )
            except StorageError as error:
                guard.failed(error)
            else:
                if not guard.healthy:
                    guard.succeeded()
                return decision
        return self._degraded(key, cost, consume=consume)

    def peek(self, key: str, cost: int = 1) -> Decision:
        """Say whether a request of ``cost`` would be admitted now, counting nothing."""
        key, cost = self._check(key, cost)
        cached = self._cached(key, cost)
        if cached is not None:
            return cached
        return self._store_decision(key, cost, consume=False)

    def reset(self, key: str) -> None:
        """Forget everything counted for ``key`` (in the store, the local cache and fallback).

        Raises:
            StorageError: If the store fails (a reset must not silently do nothing).
        """
        key = _check_key(key)
        self._forget(key)
        self._guard.store.reset(self.algorithm, key, self.rates)

    def _forget(self, key: str) -> None:
        if self._cache is not None:
            with self._cache_lock:
                self._cache.pop(key, None)
        if self._guard.local is not None:
            self._guard.local.reset(self.algorithm, key, self.rates)

    def _wait_plan(
        self, key: str, decision: Decision, begun: float, timeout: float | None
    ) -> float:
        wait = max(decision.retry_after or 0.0, _MIN_POLL)
        if timeout is not None and self.clock.now() - begun + wait > timeout:
            raise RateLimited(
                f"{self.name}: {key!r} is over its limit ({decision.rate}); the next admission "
                f"in {wait:.3f} s would pass the timeout of {timeout:g} s",
                name=self.name,
                retry_after=wait,
            )
        return wait

    def acquire(self, key: str, cost: int = 1, *, timeout: Duration | None = None) -> Decision:
        """Wait (sleeping this thread) until ``key`` admits ``cost``, then count it.

        Args:
            key: The limited key.
            cost: The units to take.
            timeout: The most seconds to wait; ``None`` waits as long as needed. A wait that
                would end past it is not started.

        Returns:
            The admitting :class:`Decision`.

        Raises:
            RateLimited: If admission would come after ``timeout``; carries ``retry_after``.
        """
        limit = seconds_or_none(timeout, "timeout")
        begun = self.clock.now()
        while True:
            decision = self.hit(key, cost)
            if decision.allowed:
                return decision
            self.clock.sleep(self._wait_plan(key, decision, begun, limit))

    # -- async ----------------------------------------------------------------------------------

    async def ahit(self, key: str, cost: int = 1) -> Decision:
        """The coroutine form of :meth:`hit` (the Redis store uses ``redis.asyncio``)."""
        if self._direct is not None:
            # A memory store answers at once and never fails: nothing to await.
            return self.hit(key, cost)
        # As _hit: the common case calls nothing but the store.
        if not (
            type(key) is str
            and 0 < len(key) <= _MAX_KEY_LENGTH
            and type(cost) is int
            and 0 < cost <= self._max_cost
        ):
            key, cost = self._check(key, cost)  # raises for the bad argument
        if self._cache:
            cached = self._cached(key, cost)
            if cached is not None:
                return self._report(key, cost, cached, cached=True)
        # _aguarded, written out: one coroutine frame less on every decision.
        guard = self._guard
        if guard.healthy or guard.available():  # healthy: the common case, no call
            try:
                decision = await guard.store.adecide(self.algorithm, key, self.rates, cost)
            except StorageError as error:
                guard.failed(error)
                decision = self._degraded(key, cost, consume=True)
            else:
                if not guard.healthy:
                    guard.succeeded()
        else:
            decision = self._degraded(key, cost, consume=True)
        if not decision.allowed:
            self._remember(key, cost, decision)
        if self.listeners or _events._global:  # noqa: SLF001 - the registry's fast check
            emit(RateLimitDecided(self.name, key, cost, decision, False), self.listeners)
        return decision

    async def apeek(self, key: str, cost: int = 1) -> Decision:
        """The coroutine form of :meth:`peek`."""
        key, cost = self._check(key, cost)
        cached = self._cached(key, cost)
        if cached is not None:
            return cached
        return await self._aguarded(
            lambda store: store.adecide(self.algorithm, key, self.rates, cost, consume=False),
            lambda: self._degraded(key, cost, consume=False),
        )

    async def areset(self, key: str) -> None:
        """The coroutine form of :meth:`reset`."""
        key = _check_key(key)
        self._forget(key)
        await self._guard.store.areset(self.algorithm, key, self.rates)

    async def aacquire(
        self, key: str, cost: int = 1, *, timeout: Duration | None = None
    ) -> Decision:
        """The coroutine form of :meth:`acquire`: waits without blocking the event loop."""
        limit = seconds_or_none(timeout, "timeout")
        begun = self.clock.now()
        while True:
            decision = await self.ahit(key, cost)
            if decision.allowed:
                return decision
            await self.clock.sleep_async(self._wait_plan(key, decision, begun, limit))


class Permit:
    """A slot held in a :class:`ConcurrencyLimit`; release it exactly once (``with`` does).

    Attributes:
        key: The limited key.
        lease_id: The slot's id in the store.
        degraded: ``True`` if the store was failing and ``on_store_error`` granted it.
    """

    __slots__ = ("_lock", "_owner", "_released", "degraded", "key", "lease_id")

    def __init__(self, owner: ConcurrencyLimit, key: str, lease_id: str, degraded: bool) -> None:
        self._owner = owner
        self.key = key
        self.lease_id = lease_id
        self.degraded = degraded
        self._released = False
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released

    def _claim_release(self) -> bool:
        with self._lock:
            if self._released:
                return False
            self._released = True
            return True

    def release(self) -> bool:
        """Give the slot back. Only the first call does anything.

        Returns:
            ``True`` if this call released a live slot; ``False`` if already released, or the
            lease had expired (the slot was given back by its TTL).
        """
        if not self._claim_release():
            return False
        return self._owner._release(self)  # noqa: SLF001 - the permit's owner

    async def arelease(self) -> bool:
        """The coroutine form of :meth:`release`."""
        if not self._claim_release():
            return False
        return await self._owner._arelease(self)  # noqa: SLF001 - the permit's owner

    def renew(self) -> bool:
        """Extend the lease by the limit's ``lease`` from now; ``False`` if it had expired."""
        if self._released:
            return False
        return self._owner._renew(self)  # noqa: SLF001 - the permit's owner

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.arelease()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Permit {self.key!r} {state}>"


class ConcurrencyLimit(_GuardedFront):
    """At most ``limit`` calls in flight per key, across threads, tasks and (on Redis) processes.

    Each slot is a lease with a TTL in the store, so a holder that crashes without releasing frees
    its slot after ``lease`` seconds. Long holders call :meth:`Permit.renew`.

    Args:
        limit: The most permits held at once per key.
        lease: Seconds a permit lives unless renewed or released.
        storage, name, on_store_error, store_failures, store_cooldown, listeners, clock: As for
            :class:`Limiter` (``fail-open`` grants permits that are not counted anywhere).
        poll: The longest pause between two tries while :meth:`acquire` waits for a slot.
    """

    def __init__(
        self,
        limit: int,
        *,
        lease: Duration = 30.0,
        storage: Storage | str = "memory://",
        name: str = "concurrency",
        on_store_error: OnStoreError = "local",
        store_failures: int = 3,
        store_cooldown: Duration = 5.0,
        poll: Duration = 0.05,
        listeners: Sequence[Listener] = (),
        clock: Clock = system_clock,
    ) -> None:
        self.limit = check_int(limit, "limit", minimum=1)
        self.lease = seconds(lease, "lease", allow_zero=False)
        self.poll = seconds(poll, "poll", allow_zero=False)
        super().__init__(
            storage, name, on_store_error, store_failures, store_cooldown, listeners, clock
        )

    def __repr__(self) -> str:
        return f"ConcurrencyLimit({self.limit}, name={self.name!r})"

    def _degraded_grant(self, key: str, lease_id: str) -> bool:
        if self.on_store_error == "fail-open":
            return True
        if self.on_store_error == "fail-closed":
            return False
        return self._guard.fallback().acquire_lease(key, self.limit, lease_id, self.lease)

    def try_acquire(self, key: str = "default") -> Permit | None:
        """Take a slot on ``key`` now if one is free.

        Returns:
            A :class:`Permit`, or ``None`` when all slots are taken.
        """
        key = _check_key(key)
        lease_id = uuid.uuid4().hex
        granted, degraded = self._guarded(
            lambda store: (store.acquire_lease(key, self.limit, lease_id, self.lease), False),
            lambda: (self._degraded_grant(key, lease_id), True),
        )
        return Permit(self, key, lease_id, degraded) if granted else None

    async def atry_acquire(self, key: str = "default") -> Permit | None:
        """The coroutine form of :meth:`try_acquire`.

        If the task is cancelled while the store answers, a slot the store may already have
        granted is given back before the cancellation propagates.
        """
        key = _check_key(key)
        lease_id = uuid.uuid4().hex

        async def attempt(store: Storage) -> tuple[bool, bool]:
            return await store.aacquire_lease(key, self.limit, lease_id, self.lease), False

        try:
            granted, degraded = await self._aguarded(
                attempt, lambda: (self._degraded_grant(key, lease_id), True)
            )
        except asyncio.CancelledError:
            with contextlib.suppress(StorageError):
                await asyncio.shield(self._guard.store.arelease_lease(key, lease_id))
            raise
        return Permit(self, key, lease_id, degraded) if granted else None

    def _full(self, key: str, timeout: float | None) -> RateLimited:
        return RateLimited(
            f"{self.name}: all {self.limit} slots of {key!r} are taken"
            + (f" (waited {timeout:g} s)" if timeout else ""),
            name=self.name,
            retry_after=self.poll,
        )

    def acquire(self, key: str = "default", *, timeout: Duration | None = None) -> Permit:
        """Wait (sleeping this thread, polling the store) for a slot on ``key``.

        Raises:
            RateLimited: If no slot freed within ``timeout`` seconds (``None``: wait forever).
        """
        limit = seconds_or_none(timeout, "timeout")
        begun = self.clock.now()
        pause = _MIN_POLL
        while True:
            permit = self.try_acquire(key)
            if permit is not None:
                return permit
            left = None if limit is None else limit - (self.clock.now() - begun)
            if left is not None and left <= 0:
                raise self._full(key, limit)
            self.clock.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, self.poll)

    async def aacquire(self, key: str = "default", *, timeout: Duration | None = None) -> Permit:
        """The coroutine form of :meth:`acquire`; cancelling it while it waits leaks no slot."""
        limit = seconds_or_none(timeout, "timeout")
        begun = self.clock.now()
        pause = _MIN_POLL
        while True:
            permit = await self.atry_acquire(key)
            if permit is not None:
                return permit
            left = None if limit is None else limit - (self.clock.now() - begun)
            if left is not None and left <= 0:
                raise self._full(key, limit)
            await self.clock.sleep_async(pause if left is None else min(pause, left))
            pause = min(pause * 2, self.poll)

    def in_flight(self, key: str = "default") -> int:
        """Return how many permits are held on ``key`` (by every holder of the store).

        Raises:
            StorageError: If the store fails (a count is not something to guess).
        """
        return self._guard.store.count_leases(_check_key(key))

    def _lease_store(self, permit: Permit) -> Storage:
        """The store holding ``permit``'s lease: the local one if it was granted degraded."""
        local = self._guard.local
        return local if permit.degraded and local is not None else self._guard.store

    def _release(self, permit: Permit) -> bool:
        store = self._lease_store(permit)
        try:
            return store.release_lease(permit.key, permit.lease_id)
        except StorageError:
            return False  # the lease expires by its TTL

    async def _arelease(self, permit: Permit) -> bool:
        store = self._lease_store(permit)
        try:
            return await store.arelease_lease(permit.key, permit.lease_id)
        except StorageError:
            return False  # the lease expires by its TTL

    def _renew(self, permit: Permit) -> bool:
        store = self._lease_store(permit)
        return store.renew_lease(permit.key, permit.lease_id, self.lease)
