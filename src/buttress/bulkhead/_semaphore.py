"""The semaphore bulkhead: at most N calls at once, for threads and asyncio tasks alike.

Free slots are tokens in a list. Taking a free slot pops a token and giving one back appends it:
each is one atomic step (under the GIL, and under the list's own lock on free-threaded builds),
so an uncontended call takes no lock at all. The bulkhead's lock guards the rest: the queue of
waiters (FIFO), their states, and the refusals so far.

A slot reaches a waiter only under the lock, through :meth:`Bulkhead._grant`: it pops a free
token for the first waiter and marks it ``GRANTED`` (the waiter is woken after the lock is let
go). Two rules make sure that no token stays free while someone waits:

- a waiter joins the queue under the lock and *then*, still under it, looks for a free token;
- whoever gives a slot back appends its token and *then* looks at the queue, and only if someone
  waits takes the lock to grant.

Whichever of the two comes second sees the other's step. A newcomer takes a free token without
the lock only when nobody waits, so it never overtakes a waiter that was queued before it came. A
waiter that times out or is cancelled either finds it was granted a slot (and gives it back) or
leaves the queue: under the lock, one or the other, never both. That is what makes every slot
come back exactly once.

Thread waiters block on a lock of their own; task waiters await a future of their own loop,
resolved thread-safely. The bulkhead therefore serves threads and tasks of any number of event
loops at once, and waiting never blocks an event loop.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from buttress import _events
from buttress._deadline import current_deadline
from buttress._errors import BulkheadFull
from buttress._events import Listener, check_listeners, emit
from buttress._types import Duration, check_int, check_name, seconds, seconds_or_none
from buttress.bulkhead._events import BulkheadRejected
from buttress.bulkhead._guard import SlotGuard

__all__ = ["Bulkhead", "BulkheadPermit", "BulkheadStats", "bulkhead"]

_log = logging.getLogger("buttress.bulkhead")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_WAITING, _GRANTED, _GONE = 0, 1, 2
_SLOT = True
"""A free slot's token: which object it is does not matter, only how many are free."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def wait_limit(max_wait: float | None, timeout: Duration | None) -> tuple[float | None, bool]:
    """The longest to wait for a slot, and whether the enclosing deadline is what sets it.

    Raises:
        TypeError, ValueError: For a bad ``timeout``.
    """
    limit = max_wait if timeout is None else seconds(timeout, "timeout")
    deadline = current_deadline()
    if deadline is not None:
        left = deadline.remaining()
        if limit is None or left < limit:
            return left, True
    return limit, False


class _Waiter:
    """A caller in the queue. ``state`` is changed only under the bulkhead's lock."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = _WAITING

    def wake(self) -> bool:
        """Tell the waiter to look at its state; ``False`` if it can never hear it."""
        raise NotImplementedError


class _ThreadWaiter(_Waiter):
    __slots__ = ("_signal",)

    def __init__(self) -> None:
        super().__init__()
        self._signal = threading.Lock()
        self._signal.acquire()

    def wake(self) -> bool:
        self._signal.release()
        return True

    def wait(self, timeout: float | None) -> None:
        self._signal.acquire(timeout=-1 if timeout is None else timeout)


class _TaskWaiter(_Waiter):
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> bool:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            _resolve(self.future)
            return True
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # its loop is closed: nobody will ever collect the slot
            return False
        return True


@dataclass(frozen=True, slots=True)
class BulkheadStats:
    """A snapshot of a bulkhead.

    Attributes:
        name: The bulkhead's name.
        limit: The most calls it runs at once (``max_concurrent``).
        in_use: Slots held now.
        available: Slots free now (``limit - in_use``).
        waiting: Callers waiting for a slot now.
        max_waiting: The most callers allowed to wait.
        rejected: Calls refused since the bulkhead was made.
    """

    name: str
    limit: int
    in_use: int
    available: int
    waiting: int
    max_waiting: int
    rejected: int


class BulkheadPermit:
    """A slot held in a :class:`Bulkhead`; give it back exactly once (``with`` does).

    Releasing twice, or from another thread, is safe: only the first release counts.
    """

    # The slot is a one-item list: the release that pops the item is the one that gives the
    # slot back, an atomic check-and-set that needs no lock.
    __slots__ = ("_owner", "_slot")

    def __init__(self, owner: Bulkhead) -> None:
        self._owner = owner
        self._slot = [_SLOT]

    @property
    def released(self) -> bool:
        """Whether the slot was given back."""
        return not self._slot

    def release(self) -> bool:
        """Give the slot back (to the first waiter, if any).

        Returns:
            ``True`` if this call gave it back, ``False`` if it was already given back.
        """
        try:
            self._slot.pop()
        except IndexError:
            return False
        owner = self._owner
        owner._free.append(_SLOT)  # noqa: SLF001 - the permit's owner
        if owner._waiters:  # noqa: SLF001 - appended first, then looked: see the module docstring
            owner._grant_and_wake()  # noqa: SLF001
        return True

    async def arelease(self) -> bool:
        """The same as :meth:`release` (which never blocks), for symmetry with other permits."""
        return self.release()

    def __enter__(self) -> BulkheadPermit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._slot.pop()
        except IndexError:
            return
        owner = self._owner
        owner._free.append(_SLOT)  # noqa: SLF001 - the permit's owner, as in release()
        if owner._waiters:  # noqa: SLF001
            owner._grant_and_wake()  # noqa: SLF001

    async def __aenter__(self) -> BulkheadPermit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if not self._slot else "held"
        return f"<BulkheadPermit {self._owner.name!r} {state}>"


class _AsyncAcquire:
    """What :meth:`Bulkhead.aacquire` returns: await it, or use it as ``async with``."""

    __slots__ = ("_bulkhead", "_permit", "_timeout")

    def __init__(self, bulkhead: Bulkhead, timeout: Duration | None) -> None:
        self._bulkhead = bulkhead
        self._timeout = timeout
        self._permit: BulkheadPermit | None = None

    def __await__(self) -> Generator[Any, None, BulkheadPermit]:
        return self._bulkhead._aacquire(self._timeout).__await__()  # noqa: SLF001

    async def __aenter__(self) -> BulkheadPermit:
        bulkhead = self._bulkhead
        if self._timeout is None and bulkhead._take():  # noqa: SLF001 - a free slot: no coroutine
            self._permit = BulkheadPermit(bulkhead)
        else:
            self._permit = await bulkhead._aacquire(self._timeout)  # noqa: SLF001
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._permit is not None:
            self._permit.release()


class Bulkhead(SlotGuard):
    """Run at most ``max_concurrent`` calls at once; let a few more wait; refuse the rest at once.

    One object serves threads and asyncio tasks (of any loop) together: use it as a decorator on
    functions and coroutine functions, with :meth:`call`/:meth:`acall`, or take slots by hand
    with :meth:`try_acquire`, :meth:`acquire` and :meth:`aacquire`. Waiting in a task never
    blocks the event loop. Waiters are served first come, first served. A waiter that times out
    or is cancelled never takes a slot with it, and a call that raises gives its slot back.

    A wait also ends at the deadline of an enclosing :class:`~buttress.timeout.TimeLimit`
    (:func:`~buttress.timeout.current_deadline`), whichever comes first.

    Args:
        max_concurrent: The most calls running at once (``>= 1``).
        max_waiting: The most callers waiting for a slot (``>= 0``); ``0`` (the default) refuses
            every call that finds the bulkhead full, at once.
        max_wait: The longest a caller waits for a slot, in seconds, unless :meth:`acquire` is
            given its own ``timeout``; ``None`` (the default) waits as long as it takes.
        name: The bulkhead's name in errors, events and logs.
        listeners: Callables receiving this bulkhead's events (:class:`BulkheadRejected`).

    Raises:
        TypeError, ValueError: At construction, for arguments of the wrong type or out of range.
    """

    __slots__ = (
        "__weakref__",
        "_free",
        "_key",
        "_lock",
        "_rejected",
        "_waiters",
        "listeners",
        "max_concurrent",
        "max_wait",
        "max_waiting",
        "name",
    )

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = 0,
        max_wait: Duration | None = None,
        name: str = "bulkhead",
        listeners: Sequence[Listener] = (),
    ) -> None:
        if callable(max_concurrent):
            raise TypeError("bulkhead must be called before decorating: write @bulkhead(10)")
        self.max_concurrent = check_int(max_concurrent, "max_concurrent", minimum=1)
        self.max_waiting = check_int(max_waiting, "max_waiting", minimum=0)
        self.max_wait = seconds_or_none(max_wait, "max_wait")
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)
        self._lock = threading.Lock()
        self._free = [_SLOT] * self.max_concurrent  # one token per free slot
        self._rejected = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._key: str | None = None  # set by KeyedBulkhead on the bulkheads it makes

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.max_concurrent}, max_waiting={self.max_waiting}, "
            f"max_wait={self.max_wait}, name={self.name!r})"
        )

    # -- statistics -----------------------------------------------------------------------------

    def stats(self) -> BulkheadStats:
        """Return a snapshot of the bulkhead's numbers.

        The queue and the refusals are read together, under the lock; an uncontended slot is
        taken and given back without it, so ``in_use`` is the number at one moment of the call.
        """
        with self._lock:
            free, waiting, rejected = len(self._free), len(self._waiters), self._rejected
        return BulkheadStats(
            self.name,
            self.max_concurrent,
            self.max_concurrent - free,
            free,
            waiting,
            self.max_waiting,
            rejected,
        )

    @property
    def in_use(self) -> int:
        """Slots held now."""
        return self.max_concurrent - len(self._free)

    @property
    def available(self) -> int:
        """Slots free now."""
        return len(self._free)

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        return len(self._waiters)

    @property
    def idle(self) -> bool:
        """Whether no slot is held and nobody waits."""
        return len(self._free) == self.max_concurrent and not self._waiters

    # -- the core -------------------------------------------------------------------------------

    def _wait_limit(self, timeout: Duration | None) -> tuple[float | None, bool]:
        return wait_limit(self.max_wait, timeout)

    def _take(self) -> bool:
        """Take a free slot if nobody waits (no waiting, no refusal counted): the fast path.

        No lock: the pop is atomic, and a waiter queued meanwhile looks for a free token after
        joining the queue (see the module docstring).
        """
        if self._waiters:
            return False
        try:
            self._free.pop()
        except IndexError:
            return False
        return True

    def _admit(self, limit: float | None) -> bool | None:
        """Take a slot (``True``), or say a waiter may queue (``None``), or refuse (``False``).

        Must be called with the lock held; a waiter it lets queue joins by :meth:`_queue`.
        """
        if self._take():
            return True
        if len(self._waiters) >= self.max_waiting or (limit is not None and limit <= 0):
            return False
        return None

    def _queue(self, waiter: _Waiter) -> list[_Waiter]:
        """Put ``waiter`` last in the queue, then hand out any token freed meanwhile.

        Must be called with the lock held. Returns the waiters granted a slot (``waiter``
        itself, or ones queued before it), to be woken by :meth:`_wake_all` outside the lock.
        """
        self._waiters.append(waiter)
        return self._grant()

    def _grant(self) -> list[_Waiter]:
        """Give free tokens to the first waiters; return them, to be woken outside the lock.

        Must be called with the lock held.
        """
        granted: list[_Waiter] = []
        waiters, free = self._waiters, self._free
        while waiters:
            try:
                free.pop()
            except IndexError:
                break
            waiter = waiters.popleft()
            waiter.state = _GRANTED
            granted.append(waiter)
        return granted

    def _grant_and_wake(self) -> None:
        """After a token was given back while someone waits: hand it on (takes the lock)."""
        with self._lock:
            granted = self._grant()
        self._wake_all(granted)

    def _wake_all(self, granted: list[_Waiter]) -> None:
        """Wake granted waiters (outside the lock); one that cannot hear passes its slot on."""
        while granted:
            lost = [waiter for waiter in granted if not waiter.wake()]
            if not lost:
                return
            with self._lock:
                for waiter in lost:
                    if waiter.state == _GRANTED:  # not given back by _abandon meanwhile
                        self._free.append(_SLOT)
                    waiter.state = _GONE
                granted = self._grant()

    def _give_back(self) -> None:
        """Return a slot: its token to the free list, then to the first waiter if any."""
        self._free.append(_SLOT)
        if self._waiters:
            self._grant_and_wake()

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter is leaving by an exception (cancelled, interrupted): keep no slot for it."""
        with self._lock:
            state, waiter.state = waiter.state, _GONE
            if state == _WAITING:
                self._waiters.remove(waiter)
            if state != _GRANTED:  # waiting, or already given up by _wake_all (its loop closed)
                return
            self._free.append(_SLOT)
            granted = self._grant()
        self._wake_all(granted)

    def _collect(self, waiter: _Waiter, limit: float | None, by_deadline: bool) -> BulkheadPermit:
        """After a waiter woke: its permit if it was granted one, else the refusal."""
        with self._lock:
            if waiter.state == _GRANTED:
                waiter.state = _GONE
                return BulkheadPermit(self)
            waiter.state = _GONE
            self._waiters.remove(waiter)
        waited = "" if limit is None else f" within {limit:g} s"
        raise self._refuse(
            "deadline" if by_deadline else "wait-timeout",
            f"no slot freed{waited}" + (" (the deadline)" if by_deadline else ""),
        )

    def _refuse(self, reason: str, detail: str = "") -> BulkheadFull:
        """Count a refusal, announce it, and return the exception to raise (outside the lock)."""
        key = self._key
        with self._lock:
            self._rejected += 1
            in_use, waiting = self.max_concurrent - len(self._free), len(self._waiters)
        if self.listeners or _events._global or _log.isEnabledFor(logging.INFO):  # noqa: SLF001
            emit(
                BulkheadRejected(self.name, reason, self.max_concurrent, in_use, waiting, key),
                self.listeners,
            )
        where = self.name if key is None else f"{self.name} {key!r}"
        message = (
            f"{where}: all {self.max_concurrent} slots are in use"
            + (f" and {waiting} callers wait" if waiting else "")
            + (f"; {detail}" if detail else "")
        )
        return BulkheadFull(
            message,
            name=self.name,
            limit=self.max_concurrent,
            in_use=in_use,
            waiting=waiting,
            reason=reason,
        )

    # -- taking slots ---------------------------------------------------------------------------

    def try_acquire(self) -> BulkheadPermit | None:
        """Take a slot now if one is free (never waits; a refusal is counted).

        Returns:
            A :class:`BulkheadPermit`, or ``None`` when every slot is in use.
        """
        if self._take():
            return BulkheadPermit(self)
        self._refuse("full")
        return None

    def acquire(self, timeout: Duration | None = None) -> BulkheadPermit:
        """Take a slot, waiting (this thread) for one if the bulkhead allows waiting.

        Args:
            timeout: The longest to wait, in seconds; ``None`` uses ``max_wait``. Waiting also
                ends at the current deadline. Without a free place in the queue
                (``max_waiting``), the call is refused at once whatever the timeout.

        Returns:
            A :class:`BulkheadPermit`; use it as ``with bulkhead.acquire():``.

        Raises:
            BulkheadFull: If no slot was free and the caller could not wait, or the wait ended.
        """
        if timeout is None and self._take():
            return BulkheadPermit(self)
        limit, by_deadline = self._wait_limit(timeout)
        granted: list[_Waiter] = []
        with self._lock:
            admitted = self._admit(limit)
            if admitted:
                return BulkheadPermit(self)
            if admitted is None:
                waiter = _ThreadWaiter()
                granted = self._queue(waiter)
        if admitted is False:
            raise self._refuse("full")
        self._wake_all(granted)
        return self._wait(waiter, limit, by_deadline)

    def _wait(
        self, waiter: _ThreadWaiter, limit: float | None, by_deadline: bool
    ) -> BulkheadPermit:
        try:
            waiter.wait(limit)
        except BaseException:  # KeyboardInterrupt and the like: keep no slot
            self._abandon(waiter)
            raise
        return self._collect(waiter, limit, by_deadline)

    def aacquire(self, timeout: Duration | None = None) -> _AsyncAcquire:
        """Take a slot, waiting (this task, never the loop) for one if the bulkhead allows it.

        Use it as ``permit = await bulkhead.aacquire()`` or ``async with bulkhead.aacquire():``.
        Cancelling the task while it waits leaves no slot taken.

        Args:
            timeout: As for :meth:`acquire`.

        Returns:
            An awaitable of a :class:`BulkheadPermit`, also an async context manager.

        Raises:
            BulkheadFull: As for :meth:`acquire` (when awaited).
        """
        return _AsyncAcquire(self, timeout)

    async def _aacquire(self, timeout: Duration | None) -> BulkheadPermit:
        if timeout is None and self._take():
            return BulkheadPermit(self)
        limit, by_deadline = self._wait_limit(timeout)
        granted: list[_Waiter] = []
        with self._lock:
            admitted = self._admit(limit)
            if admitted:
                return BulkheadPermit(self)
            if admitted is None:
                loop = asyncio.get_running_loop()
                waiter = _TaskWaiter(loop)
                granted = self._queue(waiter)
        if admitted is False:
            raise self._refuse("full")
        self._wake_all(granted)
        return await self._await(waiter, limit, by_deadline)

    async def _await(
        self, waiter: _TaskWaiter, limit: float | None, by_deadline: bool
    ) -> BulkheadPermit:
        loop = waiter.loop
        handle = None if limit is None else loop.call_later(limit, _resolve, waiter.future)
        try:
            await waiter.future
        except BaseException:  # cancelled: keep no slot
            self._abandon(waiter)
            raise
        finally:
            if handle is not None:
                handle.cancel()
        return self._collect(waiter, limit, by_deadline)

    def _enter(self) -> BulkheadPermit:
        return self.acquire()

    async def _aenter(self) -> BulkheadPermit:
        return await self._aacquire(None)

    # -- the decorator, with the uncontended slot taken and given back inline --------------------
    #
    # What _take and _give_back do for a permit, done here without one and without a lock: the
    # wrapper pops a free token itself (only when nobody waits) and its finally clause appends it
    # back, exactly once. Only a call that finds no free token, or waiters queued, goes through
    # acquire()/_aacquire() (waiting or refusal) and holds a real permit.

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        waiters, free = self._waiters, self._free
        take, give_back, hand_on, acquire = (
            free.pop,
            free.append,
            self._grant_and_wake,
            self.acquire,
        )

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            if not waiters:
                try:
                    take()
                except IndexError:
                    pass
                else:
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        give_back(_SLOT)
                        if waiters:  # appended first, then looked: see the module docstring
                            hand_on()
            with acquire():
                return fn(*args, **kwargs)

        return guarded

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        waiters, free = self._waiters, self._free
        take, give_back, hand_on = free.pop, free.append, self._grant_and_wake
        aacquire = self._aacquire

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            if not waiters:
                try:
                    take()
                except IndexError:
                    pass
                else:
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        give_back(_SLOT)
                        if waiters:  # appended first, then looked: see the module docstring
                            hand_on()
            with await aacquire(None):
                return await fn(*args, **kwargs)

        return guarded


bulkhead = Bulkhead
"""``@bulkhead(10, max_waiting=5)``: the decorator spelling of :class:`Bulkhead`."""
