"""Keyed bulkheads: one :class:`Bulkhead` per downstream or tenant, made on first use, bounded.

Every slot is taken under the registry's lock (the per-key bulkhead is found or made, and its slot
taken or its queue joined, in one step), so that an idle bulkhead can be dropped to make room for
a new key without ever leaving two bulkheads for one key.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import ParamSpec, TypeVar

from buttress._errors import BulkheadFull
from buttress._events import Listener, check_listeners, emit
from buttress._types import Duration, check_int, check_name, seconds_or_none
from buttress.bulkhead._events import BulkheadRejected
from buttress.bulkhead._semaphore import (
    Bulkhead,
    BulkheadPermit,
    BulkheadStats,
    _TaskWaiter,
    _ThreadWaiter,
    _Waiter,
    wait_limit,
)

__all__ = ["KeyedBulkhead"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_MAX_KEY_LENGTH = 1024


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__} ({key!r})")
    if not key or len(key) > _MAX_KEY_LENGTH:
        raise ValueError(f"key must be a non-empty str of at most {_MAX_KEY_LENGTH} characters")
    return key


class KeyedBulkhead:
    """A separate :class:`Bulkhead` for each key (downstream service, tenant, ...).

    Each key gets ``max_concurrent`` slots of its own (or its entry in ``limits``), so one busy
    key cannot take the slots of the others. Bulkheads are made on first use; at most
    ``max_keys`` are kept: to make room, the least recently used *idle* one is dropped (no slot
    held, nobody waiting; it starts fresh if its key comes back). When every kept bulkhead is
    busy, a call on a new key is refused with :class:`~buttress.BulkheadFull`
    (``reason="too-many-keys"``).

    Args:
        max_concurrent: Slots per key (``>= 1``).
        max_waiting: Waiters per key (``>= 0``).
        max_wait: The longest a caller waits, in seconds (``None``: as long as it takes).
        limits: Slots for particular keys, overriding ``max_concurrent``.
        max_keys: The most bulkheads kept at once (``>= 1``).
        name: The name of every bulkhead made (their key goes in events and errors).
        listeners: Callables receiving the events of every bulkhead made.

    Raises:
        TypeError, ValueError: At construction, for arguments of the wrong type or out of range.
    """

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = 0,
        max_wait: Duration | None = None,
        limits: Mapping[str, int] | None = None,
        max_keys: int = 1024,
        name: str = "bulkhead",
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.max_concurrent = check_int(max_concurrent, "max_concurrent", minimum=1)
        self.max_waiting = check_int(max_waiting, "max_waiting", minimum=0)
        self.max_wait = seconds_or_none(max_wait, "max_wait")
        if limits is not None and not isinstance(limits, Mapping):
            raise TypeError(f"limits must be a mapping of key to int, got {type(limits).__name__}")
        self.limits = {
            _check_key(key): check_int(value, f"limits[{key!r}]", minimum=1)
            for key, value in (limits or {}).items()
        }
        self.max_keys = check_int(max_keys, "max_keys", minimum=1)
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)
        self._lock = threading.Lock()
        self._bulkheads: collections.OrderedDict[str, Bulkhead] = collections.OrderedDict()
        self._refused_keys = 0

    def __repr__(self) -> str:
        return (
            f"KeyedBulkhead({self.max_concurrent}, max_waiting={self.max_waiting}, "
            f"max_keys={self.max_keys}, name={self.name!r})"
        )

    def __len__(self) -> int:
        return len(self._bulkheads)

    def keys(self) -> list[str]:
        """The keys that have a bulkhead now, least recently used first."""
        with self._lock:
            return list(self._bulkheads)

    def stats(self) -> dict[str, BulkheadStats]:
        """Return ``key -> statistics`` for every bulkhead kept now."""
        with self._lock:
            items = list(self._bulkheads.items())
        return {key: bulkhead.stats() for key, bulkhead in items}

    def _bulkhead(self, key: str) -> Bulkhead | None:
        """Find or make the bulkhead of ``key`` (the lock is held); ``None`` if there is no room."""
        bulkheads = self._bulkheads
        found = bulkheads.get(key)
        if found is not None:
            bulkheads.move_to_end(key)
            return found
        if len(bulkheads) >= self.max_keys:
            for old_key, old in bulkheads.items():
                if old.idle:  # slots are taken only under this lock: it stays idle until dropped
                    del bulkheads[old_key]
                    break
            else:
                return None
        made = Bulkhead(
            self.limits.get(key, self.max_concurrent),
            max_waiting=self.max_waiting,
            max_wait=self.max_wait,
            name=self.name,
            listeners=self.listeners,
        )
        made._key = key  # noqa: SLF001 - named in its errors and events
        bulkheads[key] = made
        return made

    def _take(
        self, key: str, limit: float | None, waiter: Callable[[], _Waiter] | None
    ) -> tuple[Bulkhead, bool, _Waiter | None]:
        """Find or make ``key``'s bulkhead and, in the same step, take a slot or queue a waiter.

        Returns:
            The bulkhead, whether a slot was taken, and the waiter queued (``None`` if none).

        Raises:
            BulkheadFull: If there is no room for the bulkhead, or the call is refused at once.
        """
        queued: _Waiter | None = None
        granted: list[_Waiter] = []
        with self._lock:
            bulkhead = self._bulkhead(key)
            if bulkhead is not None:
                with bulkhead._lock:  # noqa: SLF001 - see the module docstring
                    admitted = bulkhead._admit(limit)  # noqa: SLF001
                    if admitted is None and waiter is not None:
                        queued = waiter()
                        granted = bulkhead._queue(queued)  # noqa: SLF001
        if bulkhead is None:
            raise self._too_many(key)
        if admitted:
            return bulkhead, True, None
        if queued is None:
            raise bulkhead._refuse("full")  # noqa: SLF001
        bulkhead._wake_all(granted)  # noqa: SLF001 - a slot freed while it queued
        return bulkhead, False, queued

    def _too_many(self, key: str) -> BulkheadFull:
        with self._lock:
            self._refused_keys += 1
        emit(
            BulkheadRejected(self.name, "too-many-keys", self.max_concurrent, 0, 0, key),
            self.listeners,
        )
        return BulkheadFull(
            f"{self.name}: no room for a bulkhead for {key!r}: all {self.max_keys} kept are busy",
            name=self.name,
            limit=self.max_concurrent,
            reason="too-many-keys",
        )

    def try_acquire(self, key: str) -> BulkheadPermit | None:
        """Take a slot on ``key`` now if one is free.

        Returns:
            A :class:`BulkheadPermit`, or ``None`` when every slot of ``key`` is in use.

        Raises:
            BulkheadFull: If ``key`` has no bulkhead and there is no room for one.
        """
        key = _check_key(key)
        try:
            bulkhead, _, _ = self._take(key, 0.0, None)
        except BulkheadFull as error:
            if error.reason == "too-many-keys":
                raise
            return None
        return BulkheadPermit(bulkhead)

    def acquire(self, key: str, timeout: Duration | None = None) -> BulkheadPermit:
        """Take a slot on ``key``, waiting (this thread) as :meth:`Bulkhead.acquire` does.

        Raises:
            BulkheadFull: If no slot could be had, or there is no room for ``key``'s bulkhead.
        """
        key = _check_key(key)
        limit, by_deadline = wait_limit(self.max_wait, timeout)
        bulkhead, taken, waiter = self._take(key, limit, _ThreadWaiter)
        if taken:
            return BulkheadPermit(bulkhead)
        assert isinstance(waiter, _ThreadWaiter)  # noqa: S101 - _take queued one
        return bulkhead._wait(waiter, limit, by_deadline)  # noqa: SLF001

    async def aacquire(self, key: str, timeout: Duration | None = None) -> BulkheadPermit:
        """Take a slot on ``key``, waiting (this task, never the loop) as :meth:`acquire` does.

        Raises:
            BulkheadFull: If no slot could be had, or there is no room for ``key``'s bulkhead.
        """
        key = _check_key(key)
        limit, by_deadline = wait_limit(self.max_wait, timeout)
        loop = asyncio.get_running_loop()
        bulkhead, taken, waiter = self._take(key, limit, lambda: _TaskWaiter(loop))
        if taken:
            return BulkheadPermit(bulkhead)
        assert isinstance(waiter, _TaskWaiter)  # noqa: S101 - _take queued one
        return await bulkhead._await(waiter, limit, by_deadline)  # noqa: SLF001

    def call(self, key: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` holding a slot of ``key``'s bulkhead.

        Returns:
            What ``fn`` returns.

        Raises:
            BulkheadFull: If no slot could be had.
        """
        with self.acquire(key):
            return fn(*args, **kwargs)

    async def acall(
        self, key: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await ``fn(*args, **kwargs)`` holding a slot of ``key``'s bulkhead.

        Returns:
            What the awaitable returns.

        Raises:
            BulkheadFull: If no slot could be had.
        """
        with await self.aacquire(key):
            return await fn(*args, **kwargs)
