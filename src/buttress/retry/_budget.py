"""The retry budget: retries may not exceed a share of recent first attempts.

Finagle and Linkerd bound retries this way. Every call through a policy that uses the budget
*deposits* one first attempt; every retry must *withdraw* one token, and is refused when

    retries in the last ``ttl`` seconds + 1  >  ratio * first attempts in the last ``ttl`` seconds
                                               + min_per_second * ttl

So with the defaults (20%, 10/s, 10 s) a failing dependency sees at most 1.2 times its normal load
plus ten retries a second, however many layers and threads retry, instead of ``attempts`` times it.

Time is split into ``buckets`` slots of ``ttl / buckets`` seconds. To keep the bound exact for the
trailing window despite the slots, first attempts are counted only from slots wholly inside the
window and retries from every slot that overlaps it: the bucketing can only make the budget
stricter, never looser.
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta

from buttress._clock import Clock, system_clock
from buttress._types import check_int, seconds

__all__ = ["RetryBudget"]


class RetryBudget:
    """A budget of retries shared by many policies, threads and tasks.

    Args:
        ratio: Retries allowed per first attempt in the window (``0.2`` = 20%).
        min_per_second: Retries allowed per second however few first attempts there were, so that
            low-traffic callers can still retry.
        ttl: The window, in seconds, over which first attempts and retries are counted.
        buckets: How many slots the window is split into (more = finer, slightly slower).
        clock: The time source (a :class:`buttress.testing.FakeClock` in tests).

    Raises:
        TypeError, ValueError: For arguments out of range, naming the argument.
    """

    __slots__ = (
        "_clock",
        "_deposits",
        "_ids",
        "_lock",
        "_reserve",
        "_slot_seconds",
        "_withdrawals",
        "buckets",
        "min_per_second",
        "ratio",
        "ttl",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        ttl: float | timedelta = 10.0,
        *,
        buckets: int = 10,
        clock: Clock = system_clock,
    ) -> None:
        for name, value in (("ratio", ratio), ("min_per_second", min_per_second)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.ratio = float(ratio)
        self.min_per_second = float(min_per_second)
        self.ttl = seconds(ttl, "ttl", allow_zero=False)
        self.buckets = check_int(buckets, "buckets", minimum=1)
        self._clock = clock
        self._slot_seconds = self.ttl / self.buckets
        self._reserve = self.min_per_second * self.ttl
        # One slot more than the window holds: retries are counted over all of them.
        size = self.buckets + 1
        self._ids = [-1] * size
        self._deposits = [0] * size
        self._withdrawals = [0] * size
        self._lock = threading.Lock()

    def _slot(self, now: float) -> int:
        """Return the current slot's index, clearing slots that fell out of the window."""
        slot_id = math.floor(now / self._slot_seconds)
        index = slot_id % len(self._ids)
        if self._ids[index] != slot_id:
            self._ids[index] = slot_id
            self._deposits[index] = 0
            self._withdrawals[index] = 0
        return index

    def _counts(self, now: float) -> tuple[int, int]:
        """Return (first attempts wholly in the window, retries overlapping it)."""
        current = math.floor(now / self._slot_seconds)
        deposits = withdrawals = 0
        for index, slot_id in enumerate(self._ids):
            age = current - slot_id
            if 0 <= age < self.buckets:
                deposits += self._deposits[index]
            if 0 <= age <= self.buckets:
                withdrawals += self._withdrawals[index]
        return deposits, withdrawals

    def deposit(self) -> None:
        """Record one first attempt (policies call this for every call they run)."""
        now = self._clock.now()
        with self._lock:
            self._deposits[self._slot(now)] += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget if it allows one.

        Returns:
            ``True`` if the retry may go ahead (and was counted), ``False`` if the budget is empty.
        """
        now = self._clock.now()
        with self._lock:
            deposits, withdrawals = self._counts(now)
            if withdrawals + 1 > self.ratio * deposits + self._reserve:
                return False
            self._withdrawals[self._slot(now)] += 1
            return True

    def available(self) -> int:
        """Return how many retries the budget would allow right now."""
        now = self._clock.now()
        with self._lock:
            deposits, withdrawals = self._counts(now)
        return max(0, math.floor(self.ratio * deposits + self._reserve) - withdrawals)

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_per_second={self.min_per_second}, "
            f"ttl={self.ttl}, available={self.available()})"
        )
