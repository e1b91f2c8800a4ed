"""One timer per event loop for every async time limit running on it.

An async :class:`~buttress.timeout.TimeLimit` must cancel its task at the deadline. Scheduling a
``loop.call_at`` handle per call (or opening an ``asyncio.timeout`` scope) costs more than the
rest of a resilience pipeline together, and nearly every call finishes in time, so the handle
is made only to be cancelled. Here each loop has one :class:`LoopTimer`: a call registers
``(deadline, task)`` in its heap, and the timer keeps a single ``call_at`` handle for the
earliest deadline. When the handle fires, the tasks whose deadline has come are cancelled and
their entries marked :data:`FIRED` (the marker by which a time limit knows that the
cancellation is its own), and the handle is set again for the next deadline.

A call that finishes only marks its entry done (O(1)); done entries leave the heap when they
reach its top, when the heap is compacted (once done entries outnumber live ones), or all at
once when no live entry is left. The handle is not cancelled when the heap empties: the next
call, usually with the same timeout and so a later deadline, reuses it, and a handle that finds
nothing to do when it fires simply is not set again. So at most one handle per loop is ever
pending for the time limits, and none once the last deadline has passed.

Everything here runs on the loop's own thread (tasks of the loop and the loop's callbacks), so
no lock is needed. The registry holds timers weakly: it keeps no loop (and no timer) alive.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

__all__ = ["FIRED", "LoopTimer", "timer_of"]

FIRED: Final = object()
"""Put in an entry's task slot when the timer cancelled that task for its deadline."""

_order = itertools.count()
# asyncio runs a handle when its time is less than now + the clock's resolution: a deadline in
# that margin has come too (otherwise the timer would be set again to fire at once).
_RESOLUTION: Final = time.get_clock_info("monotonic").resolution
_COMPACT_SLACK: Final = 64


def _no_loop() -> None:
    """The loop reference of an unregistered timer: it matches no loop."""
    return


Entry = list[Any]
"""``[deadline, order, task]``: the task slot holds the task while the call runs, ``None``
once it has finished, :data:`FIRED` once the timer cancelled it. Lists compare item by item,
so the heap orders entries by deadline, then by arrival (``order`` is unique: tasks are never
compared)."""


class LoopTimer:
    """The deadlines of the time limits running on one event loop, and its one timer handle.

    Args:
        loop_ref: A weak reference to the loop, for :func:`timer_of` to recognise it; ``None``
            for a timer serving one call only, which cancels its handle when the call ends
            (a registered timer leaves it pending, for the next call to reuse).
    """

    __slots__ = ("__weakref__", "handle", "handle_at", "heap", "keep_idle", "live", "loop_ref")

    def __init__(self, loop_ref: weakref.ref[asyncio.AbstractEventLoop] | None) -> None:
        self.heap: list[Entry] = []
        self.live = 0  # entries in the heap whose call is still running
        self.handle: asyncio.TimerHandle | None = None
        self.handle_at = float("inf")  # when the handle fires, in loop time
        self.loop_ref: Callable[[], asyncio.AbstractEventLoop | None] = (
            _no_loop if loop_ref is None else loop_ref
        )
        self.keep_idle = loop_ref is not None

    def arm(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], at: float) -> Entry:
        """Register ``task`` to be cancelled at ``at`` (loop time); return its entry.

        Give the entry to :meth:`disarm` when the call ends, however it ends.
        """
        entry = [at, next(_order), task]
        heapq.heappush(self.heap, entry)
        self.live += 1
        if at < self.handle_at:
            handle = self.handle
            if handle is not None:
                handle.cancel()
            self.handle = loop.call_at(at, self.fire, loop)
            self.handle_at = at
        return entry

    def disarm(self, entry: Entry) -> None:
        """The call of ``entry`` has ended: forget its deadline (a fired entry is gone already)."""
        if entry[2] is FIRED:
            return
        entry[2] = None
        live = self.live = self.live - 1
        heap = self.heap
        if not live:
            heap.clear()
            if not self.keep_idle:
                self._cancel_handle()
        elif len(heap) > 2 * live + _COMPACT_SLACK:
            heap[:] = [kept for kept in heap if kept[2] is not None]
            heapq.heapify(heap)

    def fire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The handle's callback: cancel every task whose deadline has come, then set it again."""
        self.handle = None
        self.handle_at = float("inf")
        heap = self.heap
        now = loop.time() + _RESOLUTION
        while heap and heap[0][0] < now:
            entry = heapq.heappop(heap)
            task = entry[2]
            if task is None:  # finished in time
                continue
            entry[2] = FIRED
            self.live -= 1
            task.cancel()
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        if heap:
            at = heap[0][0]
            self.handle = loop.call_at(at, self.fire, loop)
            self.handle_at = at

    def _cancel_handle(self) -> None:
        handle = self.handle
        if handle is not None:
            handle.cancel()
            self.handle = None
            self.handle_at = float("inf")


_registry: dict[int, weakref.ref[LoopTimer]] = {}
_last: weakref.ref[LoopTimer] = weakref.ref(LoopTimer(None))  # the timer found last (weakly)


def _forget(ref: weakref.ref[LoopTimer], key: int) -> None:
    """A timer is gone: drop it from the registry (unless its key is already another's)."""
    if _registry.get(key) is ref:
        del _registry[key]


def timer_of(loop: asyncio.AbstractEventLoop) -> LoopTimer:
    """Return the timer of ``loop``, made at its first use (or again after it was collected).

    The registry holds timers weakly, keyed by ``id(loop)``: a dict lookup, not a weak
    reference made at every call as a ``WeakKeyDictionary`` would. What keeps a timer alive is
    its pending handle, which the loop holds (and the running calls); a timer holds its loop
    weakly, so that neither keeps the other alive from here. A loop that cannot be weakly
    referenced gets a fresh timer for each call, which cancels its handle when done.
    """
    global _last  # noqa: PLW0603 - a one-entry cache in front of the registry
    last = _last()  # read once: another thread (another loop) may replace it meanwhile
    if last is not None and last.loop_ref() is loop:
        return last
    key = id(loop)
    ref = _registry.get(key)
    if ref is not None:
        timer = ref()
        if timer is not None and timer.loop_ref() is loop:
            _last = ref
            return timer
    try:
        loop_ref = weakref.ref(loop)
    except TypeError:
        return LoopTimer(None)
    timer = LoopTimer(loop_ref)
    _registry[key] = _last = weakref.ref(timer, lambda ref: _forget(ref, key))
    return timer
