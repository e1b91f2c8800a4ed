"""Sliding windows of call outcomes, O(1) per recorded call.

A window answers three totals, ``calls``, ``failures`` and ``slow``, over either the last N
recorded calls (:class:`CountWindow`) or the last N seconds (:class:`TimeWindow`, split into
buckets; a bucket leaves the totals when it ages out). Both are pure data structures: the breaker
calls them under its lock (except :meth:`CountWindow.add_success`), with the time as an argument.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from buttress._types import check_int, seconds

__all__ = ["CountWindow", "TimeWindow", "Totals", "WindowSpec"]


@dataclass(frozen=True, slots=True)
class Totals:
    """What a window holds now.

    Attributes:
        calls: Recorded calls in the window.
        failures: Of those, failures.
        slow: Of those, slow calls (successful or not).
    """

    calls: int
    failures: int
    slow: int

    @property
    def failure_rate(self) -> float:
        """Failures / calls (0 when empty)."""
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        """Slow calls / calls (0 when empty)."""
        return self.slow / self.calls if self.calls else 0.0


class CountWindow:
    """The last ``size`` recorded calls.

    Calls are numbered in order. Successes only take a number (``next()`` on an
    :func:`itertools.count`, atomic in CPython), so the success path needs no lock; failures and
    slow calls also keep their numbers in a queue, under the breaker's lock, and leave it once
    ``size`` newer calls came. Every operation is O(1) amortised.

    Args:
        size: How many calls the window holds (``>= 1``).
    """

    __slots__ = ("_failures", "_sequence", "_slow", "add_success", "size")

    def __init__(self, size: int) -> None:
        self.size = check_int(size, "size", minimum=1)
        self._sequence = itertools.count()
        self.add_success = self._sequence.__next__
        self._failures: deque[int] = deque()
        self._slow: deque[int] = deque()

    def record(self, failure: bool, slow: bool, now: float) -> None:
        """Add one call's outcome (call under the breaker's lock)."""
        number = next(self._sequence)
        if failure:
            self._failures.append(number)
        if slow:
            self._slow.append(number)
        self._trim(number)

    def _trim(self, last: int) -> None:
        horizon = last - self.size  # numbers at or below it have left the window
        for queue in (self._failures, self._slow):
            while queue and queue[0] <= horizon:
                queue.popleft()

    def totals(self, now: float) -> Totals:
        """The totals of the last ``size`` calls (call under the breaker's lock)."""
        # The next number, i.e. how many were taken: count's repr is "count(N)" (its __reduce__
        # is deprecated since Python 3.12).
        taken = int(repr(self._sequence)[6:-1])
        self._trim(taken - 1)
        return Totals(min(taken, self.size), len(self._failures), len(self._slow))

    def clear(self) -> None:
        """Forget every call."""
        self._sequence = itertools.count()
        self.add_success = self._sequence.__next__
        self._failures.clear()
        self._slow.clear()


class TimeWindow:
    """The calls recorded in the last ``seconds``, in ``buckets`` slots.

    A call leaves the window with its bucket, so the window covers between ``seconds - seconds /
    buckets`` and ``seconds``.

    Args:
        seconds: The window's length.
        buckets: How many slots it is split into (more = finer, more memory).
    """

    __slots__ = ("_counts", "_ids", "_width", "buckets", "calls", "failures", "seconds", "slow")

    def __init__(self, seconds_: float | timedelta, buckets: int = 10) -> None:
        self.seconds = seconds(seconds_, "seconds", allow_zero=False)
        self.buckets = check_int(buckets, "buckets", minimum=1)
        self._width = self.seconds / self.buckets
        self._ids = [-1] * self.buckets
        self._counts = [[0, 0, 0] for _ in range(self.buckets)]  # calls, failures, slow
        self.calls = self.failures = self.slow = 0

    def _expire(self, now: float) -> int:
        """Drop buckets older than the window; return the current bucket's index."""
        current = int(now // self._width)
        index = current % self.buckets
        if self._ids[index] != current:
            # Everything in a slot whose id is older than the window leaves the totals. Only the
            # slots passed since the last call can be stale, but checking all is still O(buckets).
            for slot, slot_id in enumerate(self._ids):
                if slot_id != -1 and current - slot_id >= self.buckets:
                    counts = self._counts[slot]
                    self.calls -= counts[0]
                    self.failures -= counts[1]
                    self.slow -= counts[2]
                    counts[0] = counts[1] = counts[2] = 0
                    self._ids[slot] = -1
            self._ids[index] = current
        return index

    def record(self, failure: bool, slow: bool, now: float) -> None:
        """Add one call's outcome at ``now``."""
        counts = self._counts[self._expire(now)]
        counts[0] += 1
        counts[1] += failure
        counts[2] += slow
        self.calls += 1
        self.failures += failure
        self.slow += slow

    def totals(self, now: float) -> Totals:
        """The totals of the calls still in the window at ``now``."""
        self._expire(now)
        return Totals(self.calls, self.failures, self.slow)

    def clear(self) -> None:
        """Forget every call."""
        self._ids = [-1] * self.buckets
        self._counts = [[0, 0, 0] for _ in range(self.buckets)]
        self.calls = self.failures = self.slow = 0


WindowSpec = CountWindow | TimeWindow
