"""The worker threads of synchronous hedged calls: bounded, no queue, idle threads end.

A hedged synchronous call runs each attempt on one of these threads and waits for the first good
answer. A thread cannot be interrupted: an attempt that lost goes on until it ends, holding its
thread, so the bound is also the bound on abandoned attempts. Work is never queued: a caller
first reserves a thread (:meth:`Workers.reserve`), and is told no at once when every one is busy.

Threads are daemon threads, started on demand and ended after ``keep_alive`` seconds idle (or at
once by :meth:`Workers.close`), so an idle hedge holds none and a hung attempt never keeps the
interpreter from exiting.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Workers"]

_log = logging.getLogger("buttress.hedge")

Job = Callable[[], None]


class Workers:
    """At most ``max_threads`` jobs at once on daemon threads (private to :mod:`buttress.hedge`).

    Args:
        max_threads: The most jobs running (or reserved) at once.
        keep_alive: Seconds an idle thread waits for work before it ends.
        name: Used in the threads' names.
    """

    __slots__ = (
        "_alive_in",
        "_cond",
        "_generation",
        "_idle",
        "_idle_in",
        "_jobs",
        "_started",
        "_watchers",
        "keep_alive",
        "max_threads",
        "name",
        "reserved",
        "threads",
    )

    def __init__(self, max_threads: int, keep_alive: float, name: str) -> None:
        self.max_threads = max_threads
        self.keep_alive = keep_alive
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._jobs: collections.deque[Job] = collections.deque()
        self._idle = 0
        self._idle_in: dict[int, int] = {}  # generation -> idle threads of it
        self._alive_in: dict[int, int] = {}  # generation -> threads of it alive
        self._started = 0
        self._watchers = 0  # close() calls waiting for threads to end
        self._generation = 0
        self.reserved = 0
        """Jobs running, or reserved and about to start."""
        self.threads = 0
        """Threads alive (busy or idle)."""

    def reserve(self) -> bool:
        """Reserve a thread for one job; ``False`` (and nothing reserved) when all are taken."""
        with self._cond:
            if self.reserved >= self.max_threads:
                return False
            self.reserved += 1
            return True

    def unreserve(self) -> None:
        """Give back a reservation that will not be used."""
        with self._cond:
            self.reserved -= 1
            self._cond.notify_all()

    def start(self, job: Job) -> None:
        """Run ``job`` (which must not raise) on a thread reserved by :meth:`reserve`.

        Raises:
            RuntimeError: If no thread could be started (the reservation is given back).
        """
        with self._cond:
            if self._idle > len(self._jobs):
                self._jobs.append(job)
                self._cond.notify()
                return
            self.threads += 1
            self._started += 1
            number, generation = self._started, self._generation
            _add(self._alive_in, generation, 1)
        thread = threading.Thread(
            target=self._work,
            args=(job, generation),
            name=f"buttress-{self.name}-{number}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            with self._cond:
                self.threads -= 1
                _add(self._alive_in, generation, -1)
                self.reserved -= 1
                self._cond.notify_all()
            raise

    def _work(self, job: Job | None, generation: int) -> None:
        cond = self._cond
        while job is not None:
            try:
                job()
            except BaseException:  # noqa: BLE001 - jobs catch their own errors: this is a bug; logged
                _log.exception("buttress %s: a hedge worker job failed", self.name)
            job = None  # do not keep the last attempt's closure alive while idle
            with cond:
                self.reserved -= 1
                ends = time.monotonic() + self.keep_alive
                while not self._jobs:
                    left = ends - time.monotonic()
                    if left <= 0 or generation != self._generation:
                        self.threads -= 1
                        _add(self._alive_in, generation, -1)
                        if self._watchers:
                            cond.notify_all()
                        return
                    self._idle += 1
                    _add(self._idle_in, generation, 1)
                    cond.wait(left)
                    self._idle -= 1
                    _add(self._idle_in, generation, -1)
                job = self._jobs.popleft()

    def close(self, timeout: float | None = 0.0) -> bool:
        """End the idle threads (now, before returning); running jobs end theirs when they finish.

        The pool stays usable: a later job starts a new thread.

        Args:
            timeout: Seconds to wait for the running jobs' threads to end (``None``: as long as
                it takes; ``0``: do not wait).

        Returns:
            ``True`` if none of the threads alive at the call is left (with ``timeout=0``: if
            no thread at all is left).
        """
        with self._cond:
            closed = self._generation
            self._generation += 1
            self._cond.notify_all()
            self._watchers += 1
            try:
                # Woken, the idle threads end at once: wait for that, whatever the timeout
                # (threads started since, for later jobs, may idle on: not this close's business).
                while any(generation <= closed for generation in self._idle_in):
                    self._cond.wait(0.1)
                if timeout == 0:
                    return not self._alive_in
                ends = None if timeout is None else time.monotonic() + timeout
                while any(generation <= closed for generation in self._alive_in):
                    left = None if ends is None else ends - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._watchers -= 1


def _add(counts: dict[int, int], generation: int, amount: int) -> None:
    """Add ``amount`` to the count of ``generation``; a count of zero is removed."""
    value = counts.get(generation, 0) + amount
    if value:
        counts[generation] = value
    else:
        del counts[generation]
