"""The thread-pool bulkhead: synchronous calls on a bounded pool of threads with a bounded queue.

Like resilience4j's ThreadPoolBulkhead: at most ``max_threads`` calls run at once, at most
``max_queue`` more wait in line, and anything beyond is refused at once with
:class:`~buttress.BulkheadFull`. Calls run in a copy of the caller's context, so they see its
deadline (:func:`~buttress.timeout.current_deadline`).

A thread cannot be stopped from outside. When a caller stops waiting (its deadline passed, or its
task was cancelled), a call still queued is dropped, and a call already running goes on in its
thread: it is reported (:class:`BulkheadCallAbandoned`, ``stats().abandoned``) and keeps its slot
until it really ends, so a dependency that hangs fills the pool instead of growing threads
without bound.

Worker threads are daemon threads, started when needed and ended after ``keep_alive`` seconds
idle, so an idle pool holds no thread and a call that hangs never keeps the interpreter from
exiting.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from buttress import _events
from buttress._deadline import Deadline, current_deadline
from buttress._errors import BulkheadFull, Timeout
from buttress._events import Listener, check_listeners, emit
from buttress._types import Duration, check_int, check_name, seconds
from buttress.bulkhead._events import BulkheadCallAbandoned, BulkheadRejected
from buttress.bulkhead._guard import check_decoratable, target_name

__all__ = ["ThreadPoolBulkhead", "ThreadPoolStats"]

P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger("buttress.bulkhead")

_QUEUED, _RUNNING, _DONE, _DROPPED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class ThreadPoolStats:
    """A snapshot of a :class:`ThreadPoolBulkhead`.

    Attributes:
        name: The pool's name.
        max_threads: The most calls running at once.
        max_queue: The most calls waiting in line.
        active: Calls running now, abandoned ones included.
        abandoned: Calls running now whose caller stopped waiting (they still hold a slot).
        queued: Calls waiting in line now.
        available: Calls that could start at once now (``max_threads - active``, less the queue).
        threads: Worker threads alive now (busy or idle).
        rejected: Calls refused since the pool was made.
        completed: Calls that ended (returned or raised) since the pool was made.
    """

    name: str
    max_threads: int
    max_queue: int
    active: int
    abandoned: int
    queued: int
    available: int
    threads: int
    rejected: int
    completed: int


class _Job:
    __slots__ = ("abandoned", "args", "context", "fn", "future", "kwargs", "state", "target")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.context = contextvars.copy_context()
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.state = _QUEUED
        self.abandoned = False
        self.target = target_name(fn)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ThreadPoolBulkhead:
    """Run synchronous calls on at most ``max_threads`` threads, with at most ``max_queue`` in line.

    Use :meth:`call` from threads (it waits, at most until the current deadline) and
    :meth:`acall` from asyncio (it awaits without blocking the loop), or :meth:`submit` for a
    :class:`concurrent.futures.Future`. It also decorates synchronous functions. See the module
    docstring for what happens to calls nobody waits for any more.

    Args:
        max_threads: The most calls running at once (``>= 1``).
        max_queue: The most calls waiting for a thread (``>= 0``; ``0``: refuse when all run).
        keep_alive: Seconds an idle worker thread lives before it ends (``> 0``).
        name: The pool's name in errors, events, logs and thread names.
        listeners: Callables receiving the pool's events.

    Raises:
        TypeError, ValueError: At construction, for arguments of the wrong type or out of range.
    """

    def __init__(
        self,
        max_threads: int,
        *,
        max_queue: int = 0,
        keep_alive: Duration = 30.0,
        name: str = "thread-pool",
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.max_threads = check_int(max_threads, "max_threads", minimum=1)
        self.max_queue = check_int(max_queue, "max_queue", minimum=0)
        self.keep_alive = seconds(keep_alive, "keep_alive", allow_zero=False)
        self.name = check_name(name)
        self.listeners = check_listeners(listeners)
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[_Job] = collections.deque()
        self._threads = 0
        self._idle = 0
        self._active = 0
        self._abandoned = 0
        self._rejected = 0
        self._completed = 0
        self._started = 0
        self._shutdown = False

    def __repr__(self) -> str:
        return (
            f"ThreadPoolBulkhead({self.max_threads}, max_queue={self.max_queue}, "
            f"name={self.name!r})"
        )

    def stats(self) -> ThreadPoolStats:
        """Return a consistent snapshot of the pool's numbers."""
        with self._cond:
            active, queued = self._active, len(self._queue)
            return ThreadPoolStats(
                self.name,
                self.max_threads,
                self.max_queue,
                active,
                self._abandoned,
                queued,
                max(0, self.max_threads - active - queued),
                self._threads,
                self._rejected,
                self._completed,
            )

    # -- workers --------------------------------------------------------------------------------

    def _worker(self) -> None:
        cond = self._cond
        queue = self._queue
        while True:
            with cond:
                while not queue:
                    if self._shutdown:
                        self._threads -= 1
                        return
                    self._idle += 1
                    woken = cond.wait(self.keep_alive)
                    self._idle -= 1
                    if not woken and not queue:
                        self._threads -= 1
                        return
                job = queue.popleft()
                job.state = _RUNNING
                self._active += 1
            self._run(job)
            with cond:
                job.state = _DONE
                self._active -= 1
                self._completed += 1
                if job.abandoned:
                    self._abandoned -= 1
            del job  # do not keep the last call's arguments and result alive while idle

    @staticmethod
    def _run(job: _Job) -> None:
        future = job.future
        if not future.set_running_or_notify_cancel():  # cancelled through submit()'s future
            return
        try:
            result = job.context.run(job.fn, *job.args, **job.kwargs)
        except BaseException as error:  # noqa: BLE001 - delivered to the caller, as executors do
            future.set_exception(error)
        else:
            future.set_result(result)

    # -- admission ------------------------------------------------------------------------------

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Job:
        if not callable(fn):
            raise TypeError(f"{self.name} can only run callables, got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                "a thread-pool bulkhead runs synchronous functions; use a Bulkhead for coroutines"
            )
        job = _Job(fn, args, kwargs)
        with self._cond:
            if self._shutdown:
                raise RuntimeError(f"{self.name} is shut down")
            if self._active + len(self._queue) >= self.max_threads + self.max_queue:
                self._rejected += 1
                active, queued = self._active, len(self._queue)
                full = True
            else:
                full = False
                self._queue.append(job)
                if len(self._queue) > self._idle and self._threads < self.max_threads:
                    self._threads += 1
                    self._started += 1
                    threading.Thread(
                        target=self._worker,
                        name=f"buttress-{self.name}-{self._started}",
                        daemon=True,
                    ).start()
                self._cond.notify()
        if full:
            raise self._refuse(active, queued)
        return job

    def _refuse(self, active: int, queued: int) -> BulkheadFull:
        if self.listeners or _events._global or _log.isEnabledFor(logging.INFO):  # noqa: SLF001
            emit(
                BulkheadRejected(self.name, "full", self.max_threads, active, queued),
                self.listeners,
            )
        return BulkheadFull(
            f"{self.name}: all {self.max_threads} threads are busy"
            + (f" and the queue of {self.max_queue} is full" if self.max_queue else ""),
            name=self.name,
            limit=self.max_threads,
            in_use=active,
            waiting=queued,
            reason="full",
        )

    def _abandon(self, job: _Job) -> bool:
        """The caller stopped waiting: drop the call if queued; report it if running.

        Returns:
            ``True`` if the call had already ended (its outcome can still be used).
        """
        with self._cond:
            state = job.state
            if state == _QUEUED:
                self._queue.remove(job)
                job.state = _DROPPED
            elif state == _RUNNING and not job.abandoned:
                job.abandoned = True
                self._abandoned += 1
            else:
                return state == _DONE
        if state == _QUEUED:
            job.future.cancel()
        if self.listeners or _events._global or _log.isEnabledFor(logging.INFO):  # noqa: SLF001
            emit(BulkheadCallAbandoned(self.name, job.target, state == _RUNNING), self.listeners)
        return False

    @staticmethod
    def _timed_out(job: _Job, deadline: Deadline) -> Timeout:
        return Timeout(
            f"{deadline.name}: {job.target} did not finish within {deadline.timeout:g} s"
            " (it goes on in its thread, holding its slot, until it ends)"
        )

    # -- the fronts -----------------------------------------------------------------------------

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        """Queue ``fn(*args, **kwargs)`` on the pool and return its future at once.

        Cancelling the future before the call starts drops it (its place is freed when a
        worker reaches it); a running call cannot be cancelled.

        Returns:
            A :class:`concurrent.futures.Future` of the call's outcome.

        Raises:
            BulkheadFull: If every thread is busy and the queue is full.
            RuntimeError: If the pool was shut down.
            TypeError: If ``fn`` is not callable or is a coroutine function.
        """
        return self._submit(fn, args, kwargs).future

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` on the pool and wait for it (at most until the deadline).

        Returns:
            What ``fn`` returned (what it raised is raised here, unchanged).

        Raises:
            BulkheadFull: If every thread is busy and the queue is full.
            Timeout: If the current deadline passed first; the call is dropped if it had not
                started, and otherwise goes on in its thread, holding its slot.
        """
        job = self._submit(fn, args, kwargs)
        future = job.future
        deadline = current_deadline()
        try:
            if deadline is not None:
                concurrent.futures.wait((future,), timeout=deadline.remaining())
            else:
                concurrent.futures.wait((future,))
        except BaseException:  # interrupted while waiting: nobody will collect the outcome
            self._abandon(job)
            raise
        if not future.done() and not self._abandon(job):
            assert deadline is not None  # noqa: S101 - without one the wait ends only when done
            raise self._timed_out(job, deadline)
        return cast("R", future.result())

    async def acall(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` on the pool and await it without blocking the event loop.

        Cancelling the awaiting task (e.g. by an async :class:`~buttress.timeout.TimeLimit`)
        drops the call if it had not started; a running one goes on in its thread, holding its
        slot, and is reported as abandoned.

        Returns:
            What ``fn`` returned (what it raised is raised here, unchanged).

        Raises:
            BulkheadFull: If every thread is busy and the queue is full.
            Timeout: If the current deadline passed first.
        """
        job = self._submit(fn, args, kwargs)
        future = job.future
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, woken)

        future.add_done_callback(wake)
        deadline = current_deadline()
        handle = (
            None if deadline is None else loop.call_later(deadline.remaining(), _resolve, woken)
        )
        try:
            await woken
        except BaseException:  # cancelled: nobody will collect the outcome
            self._abandon(job)
            raise
        finally:
            if handle is not None:
                handle.cancel()
        if not future.done() and not self._abandon(job):
            assert deadline is not None  # noqa: S101 - without one the wait ends only when done
            raise self._timed_out(job, deadline)
        return cast("R", future.result())

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a synchronous function: each call runs on the pool (see :meth:`call`).

        Raises:
            TypeError: If ``fn`` is not callable, a generator function or a coroutine function.
        """
        check_decoratable(fn, "ThreadPoolBulkhead")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                "a thread-pool bulkhead runs synchronous functions; use a Bulkhead for coroutines"
            )
        call = self.call

        @functools.wraps(fn)
        def on_pool(*args: P.args, **kwargs: P.kwargs) -> R:
            return call(fn, *args, **kwargs)

        return on_pool

    def shutdown(self, *, wait: bool = True) -> None:
        """Refuse new calls; let queued and running ones finish; idle threads end.

        Args:
            wait: Whether to wait until every worker thread has ended (an abandoned call that
                never returns would make this wait forever: pass ``False`` then).
        """
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
            if not wait:
                return
            while self._threads:
                self._cond.wait(0.05)

    def __enter__(self) -> ThreadPoolBulkhead:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=True)
