"""The circuit breaker's rules as a pure state machine: times and outcomes in, decisions out.

States::

    CLOSED ──trip──▶ OPEN ──reset timeout──▶ HALF_OPEN ──success_threshold successes──▶ CLOSED
                      ▲                           │
                      └──────── any failure ──────┘

    FORCED_OPEN: rejects everything until closed or reset by hand.
    DISABLED:    admits everything and records, never trips.

Trip conditions (any of those configured): ``fail_max`` failures in a row; a failure rate of at
least ``failure_rate`` over the window once it holds ``min_calls``; a slow-call rate of at least
``slow_call_rate`` likewise. The open period is ``reset_timeout``, multiplied by
``reset_timeout_multiplier`` on each trip in a row (a trip from HALF_OPEN) up to
``reset_timeout_max``.

Each admission carries the *generation* of the state it was admitted in; an outcome reported
after the state changed (a slow call admitted while CLOSED that ends after the trip) is not
counted against the new state, except that a HALF_OPEN trial always frees its slot.

The machine takes its lock only for its own bookkeeping, never around the protected call.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from buttress.breaker._window import CountWindow, TimeWindow, Totals

__all__ = [
    "CLOSED",
    "DISABLED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "OPEN",
    "Machine",
    "Rules",
    "State",
    "Transition",
]


class State(str, enum.Enum):
    """A breaker's state (its value is the name used in events, logs and metrics)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"

    def __str__(self) -> str:
        return self.value


# Module constants: looking up an enum member on its class costs ~80 ns, on every call.
CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
FORCED_OPEN, DISABLED = State.FORCED_OPEN, State.DISABLED


@dataclass(frozen=True, slots=True)
class Rules:
    """The validated numbers the machine runs on (built by :class:`~buttress.CircuitBreaker`)."""

    fail_max: int | None
    failure_rate: float | None
    slow_call_rate: float | None
    slow_call_duration: float | None
    window_type: str
    window_size: float
    window_buckets: int
    min_calls: int
    reset_timeout: float
    reset_timeout_multiplier: float
    reset_timeout_max: float
    half_open_max_calls: int
    success_threshold: int


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for events.

    Attributes:
        old: The state before.
        new: The state after.
        reason: Why, in words (``"5 failures in a row"``, ``"failure rate 60% >= 50%"``, ...).
        open_for: For a change to OPEN, the open period in seconds.
    """

    old: State
    new: State
    reason: str
    open_for: float | None = None


class Machine:
    """The mutable state of one breaker, driven by the rules. Thread-safe."""

    __slots__ = (
        "_clock_now",
        "_history",
        "_lock",
        "_min_calls",
        "consecutive",
        "counting",
        "generation",
        "in_flight",
        "open_until",
        "rules",
        "state",
        "successes",
        "trips",
        "window",
        "windowed",
    )

    def __init__(self, rules: Rules, clock_now: Callable[[], float]) -> None:
        self.rules = rules
        self._clock_now = clock_now  # read only when a trip needs the time and none was given
        self._lock = threading.Lock()
        self.window: CountWindow | TimeWindow = (
            CountWindow(int(rules.window_size))
            if rules.window_type == "count"
            else TimeWindow(rules.window_size, rules.window_buckets)
        )
        # Whether anything reads the window; if not, successes need no bookkeeping at all.
        self.windowed = rules.failure_rate is not None or rules.slow_call_rate is not None
        self.counting = self.windowed and rules.window_type == "count"  # lock-free successes
        self._min_calls = rules.min_calls
        self.state = CLOSED
        self.generation = 0  # changes with every transition
        self._history: dict[int, State] = {0: CLOSED}
        self.consecutive = 0  # failures in a row while CLOSED
        self.open_until = -math.inf
        self.trips = 0  # trips in a row (reset when the breaker closes)
        self.in_flight = 0  # HALF_OPEN trials running
        self.successes = 0  # HALF_OPEN trial successes

    # -- admission ------------------------------------------------------------------------------

    def acquire(self, now: float) -> tuple[int, Transition | None]:
        """Admit a call, or not.

        Returns:
            ``(generation, transition)``: the generation to report the outcome with (``-1`` if
            rejected), and the transition the admission caused (OPEN to HALF_OPEN), if any.
        """
        state = self.state
        if state is CLOSED or state is DISABLED:
            return self.generation, None  # no lock: reading one attribute is atomic
        with self._lock:
            state = self.state
            transition = None
            if state is OPEN and now >= self.open_until:
                transition = self._move(HALF_OPEN, "the reset timeout passed")
                state = HALF_OPEN
            if state is HALF_OPEN:
                if self.in_flight < self.rules.half_open_max_calls:
                    self.in_flight += 1
                    return self.generation, transition
                return -1, transition
            if state is CLOSED or state is DISABLED:  # changed meanwhile
                return self.generation, transition
            return -1, transition

    def state_of(self, generation: int) -> State:
        """The state a call admitted with ``generation`` was admitted in (recent ones)."""
        return self._history.get(generation, self.state)

    def retry_after(self, now: float) -> float | None:
        """Seconds until a call may be admitted: ``None`` if forced open, 0 when trials are busy."""
        state = self.state
        if state is FORCED_OPEN:
            return None
        if state is OPEN:
            return max(0.0, self.open_until - now)
        return 0.0

    # -- outcomes -------------------------------------------------------------------------------

    def judge_success(self, generation: int, now: float | None) -> Transition | None:
        """A plain success already counted by a count window (or not windowed): judge it."""
        with self._lock:
            if self.state is not CLOSED or generation != self.generation:
                return None
            if not self.counting and self.windowed:
                self.window.record(False, False, now or 0.0)
            self.consecutive = 0
            reason = self._trip_reason(now or 0.0)
            return self._trip(self._when(now), reason) if reason is not None else None

    def record(  # noqa: PLR0911, PLR0912 - one early return per state reads best
        self, generation: int, failure: bool, slow: bool, now: float | None
    ) -> Transition | None:
        """Report the outcome of a call admitted with ``generation``.

        ``now`` may be ``None`` when no rule needs the time of the outcome (a count window, no
        slow calls); the machine then reads its clock only if the outcome trips the breaker.

        Returns:
            The transition it caused, if any.
        """
        if not (failure or slow) and self.state is CLOSED and generation == self.generation:
            # The common case, a plain success while closed: no lock unless something changes.
            window = self.window
            if self.counting:
                number = window.add_success()  # type: ignore[union-attr]  # a CountWindow
                if number + 1 != self._min_calls and not self.consecutive:
                    return None  # a success completing min_calls may trip a rate: judged below
            elif not self.windowed and not self.consecutive:
                return None
            return self.judge_success(generation, now)
        with self._lock:
            state = self.state
            if generation != self.generation:
                return None  # admitted under an earlier state: not this state's business
            if state is CLOSED:
                if self.windowed:
                    self.window.record(failure, slow, now or 0.0)
                if failure:
                    self.consecutive += 1
                else:
                    self.consecutive = 0
                reason = self._trip_reason(now or 0.0)
                return self._trip(self._when(now), reason) if reason is not None else None
            if state is HALF_OPEN:
                self.in_flight -= 1
                if failure:
                    return self._trip(self._when(now), "a trial call failed")
                self.successes += 1
                if self.successes >= self.rules.success_threshold:
                    return self._close(f"{self.successes} trial call(s) succeeded")
                return None
            if state is DISABLED:
                self.window.record(failure, slow, now or 0.0)
            return None

    def release(self, generation: int) -> None:
        """Free a HALF_OPEN trial slot without counting an outcome (an ignored exception)."""
        with self._lock:
            if generation == self.generation and self.state is HALF_OPEN:
                self.in_flight -= 1

    def _when(self, now: float | None) -> float:
        return self._clock_now() if now is None else now

    def _trip_reason(self, now: float) -> str | None:
        rules = self.rules
        if rules.fail_max is not None and self.consecutive >= rules.fail_max:
            return f"{self.consecutive} failures in a row"
        if not self.windowed:
            return None
        totals = self.window.totals(now)
        calls = totals.calls
        if calls < rules.min_calls:
            return None
        threshold = rules.failure_rate
        if threshold is not None and totals.failures >= threshold * calls:
            return f"failure rate {totals.failure_rate:.0%} >= {threshold:.0%} over {calls} calls"
        threshold = rules.slow_call_rate
        if threshold is not None and totals.slow >= threshold * calls:
            return f"slow-call rate {totals.slow_rate:.0%} >= {threshold:.0%} over {calls} calls"
        return None

    # -- transitions (under the lock) -----------------------------------------------------------

    def _move(self, new: State, reason: str, open_for: float | None = None) -> Transition:
        old, self.state = self.state, new
        self.generation += 1
        history = self._history  # the state of recent generations, for late call events
        history[self.generation] = new
        if len(history) > 16:
            del history[next(iter(history))]
        self.in_flight = 0
        self.successes = 0
        return Transition(old, new, reason, open_for)

    def _trip(self, now: float, reason: str) -> Transition:
        rules = self.rules
        self.trips += 1
        try:
            period = rules.reset_timeout * rules.reset_timeout_multiplier ** (self.trips - 1)
        except OverflowError:  # a very long outage: the period is long past the cap
            period = rules.reset_timeout_max
        period = min(period, rules.reset_timeout_max)
        self.open_until = now + period
        self.consecutive = 0
        self.window.clear()
        return self._move(OPEN, reason, period)

    def _close(self, reason: str) -> Transition:
        self.trips = 0
        self.consecutive = 0
        self.open_until = -math.inf
        self.window.clear()
        return self._move(CLOSED, reason)

    # -- manual control -------------------------------------------------------------------------

    def force(self, state: State, reason: str, now: float) -> Transition | None:
        """Put the breaker in ``state`` by hand.

        CLOSED resets it (window, counters, trips); OPEN starts an open period as a trip would;
        HALF_OPEN lets trial calls through now; FORCED_OPEN and DISABLED hold until changed.
        """
        with self._lock:
            if state is OPEN:
                return self._trip(now, reason)
            if state is CLOSED:
                if self.state is CLOSED:
                    self.window.clear()
                    self.consecutive = self.trips = 0
                    return None
                return self._close(reason)
            if state is self.state and state is not HALF_OPEN:
                return None  # (half_open() again restarts the trials, like open() the period)
            if state is DISABLED:
                self.window.clear()
            return self._move(state, reason)

    def adopt(self, state: State, open_until: float) -> None:
        """Take ``state`` as learned elsewhere (a shared breaker losing its store), afresh.

        The window and counters start empty; an OPEN state keeps ``open_until``. No event: the
        state is the one the breaker already showed.
        """
        with self._lock:
            if state is not self.state:
                self._move(state, "adopted")
            else:
                self.in_flight = self.successes = 0
            self.consecutive = 0
            self.window.clear()
            self.open_until = open_until if state is OPEN else -math.inf
            if state is CLOSED:
                self.trips = 0

    def totals(self, now: float) -> Totals:
        """The window's totals now."""
        with self._lock:
            return self.window.totals(now)
