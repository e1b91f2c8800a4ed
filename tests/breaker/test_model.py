"""The breaker follows its documented model.

A hypothesis state machine drives a :class:`CircuitBreaker` on a fake clock with random calls
(succeeding, failing, slow, ignored, not recorded, bad results), clock jumps, manual transitions
and guarded blocks left in flight and finished later, and checks every step against a small
reference model written here from the rules in :mod:`buttress.breaker._machine`'s docstring and
the :class:`CircuitBreaker` arguments: the state, which calls are admitted, ``retry_after``, the
window's totals, the failures in a row and the state changes reported.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from buttress import BreakerStateChanged, CircuitBreaker, CircuitOpen, Event, Guard, State
from buttress.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
FORCED_OPEN, DISABLED = State.FORCED_OPEN, State.DISABLED


class Failure(Exception):
    """Recorded as a failure."""


class Ignored(Exception):
    """Configured as ignored by type."""


def ignored_by_predicate(error: BaseException) -> bool:
    return isinstance(error, KeyError) and error.args == ("skip",)


def bad_result(result: Any) -> bool:
    return bool(result == "bad")


# -- the reference model ------------------------------------------------------------------------


@dataclass
class Model:
    """The documented rules, written plainly (no shortcuts, no O(1) windows)."""

    fail_max: int | None
    failure_rate: float | None
    slow_call_rate: float | None
    slow_call_duration: float | None
    window_type: str
    window_size: float
    buckets: int
    min_calls: int
    reset_timeout: float
    multiplier: float
    cap: float
    half_open_max_calls: int
    success_threshold: int
    state: State = CLOSED
    generation: int = 0
    consecutive: int = 0
    recorded: list[tuple[float, bool, bool]] = field(default_factory=list)  # (time, fail, slow)
    open_until: float = -math.inf
    trips: int = 0
    in_flight: int = 0
    successes: int = 0
    changes: list[tuple[State, State, float | None]] = field(default_factory=list)
    causes: set[str] = field(default_factory=set)  # what tripped it, for the statistics

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Model:
        """Apply the documented defaults of the CircuitBreaker arguments."""
        failure_rate = options.get("failure_rate")
        slow_call_rate = options.get("slow_call_rate")
        fail_max = options.get("fail_max")
        if fail_max is None and failure_rate is None and slow_call_rate is None:
            fail_max = 5
        window_type = options.get("window_type", "count")
        window_size = options.get("window_size", 100)
        min_calls = options.get("min_calls")
        if min_calls is None:
            min_calls = min(10, window_size) if window_type == "count" else 10
        reset_timeout = options.get("reset_timeout", 30.0)
        multiplier = options.get("reset_timeout_multiplier", 1.0)
        cap = options.get("reset_timeout_max")
        if cap is None:
            cap = reset_timeout * 10 if multiplier > 1 else reset_timeout
        return cls(
            fail_max=fail_max,
            failure_rate=failure_rate,
            slow_call_rate=slow_call_rate,
            slow_call_duration=options.get("slow_call_duration"),
            window_type=window_type,
            window_size=window_size,
            buckets=options.get("window_buckets", 10),
            min_calls=min_calls,
            reset_timeout=reset_timeout,
            multiplier=multiplier,
            cap=cap,
            half_open_max_calls=options.get("half_open_max_calls", 1),
            success_threshold=options.get("success_threshold", 1),
        )

    @property
    def windowed(self) -> bool:
        return self.failure_rate is not None or self.slow_call_rate is not None

    def is_slow(self, duration: float) -> bool:
        return self.slow_call_duration is not None and duration >= self.slow_call_duration

    def totals(self, now: float) -> tuple[int, int, int]:
        if self.window_type == "count":
            live = self.recorded[-int(self.window_size) :]
        else:
            width = self.window_size / self.buckets
            current = int(now // width)
            live = [c for c in self.recorded if current - int(c[0] // width) < self.buckets]
        return len(live), sum(c[1] for c in live), sum(c[2] for c in live)

    def retry_after(self, now: float) -> float | None:
        if self.state is FORCED_OPEN:
            return None
        if self.state is OPEN:
            return max(0.0, self.open_until - now)
        return 0.0

    # transitions

    def move(self, new: State, open_for: float | None = None) -> None:
        self.changes.append((self.state, new, open_for))
        self.state = new
        self.generation += 1
        self.in_flight = 0
        self.successes = 0

    def trip(self, now: float) -> None:
        self.trips += 1
        period = self.reset_timeout
        for _ in range(self.trips - 1):  # times the multiplier per trip in a row, capped
            period = min(period * self.multiplier, self.cap)
        period = min(period, self.cap)
        self.open_until = now + period
        self.consecutive = 0
        self.recorded.clear()
        self.move(OPEN, period)

    def close(self) -> None:
        self.trips = 0
        self.consecutive = 0
        self.open_until = -math.inf
        self.recorded.clear()
        self.move(CLOSED)

    def trip_cause(self, now: float) -> str | None:
        if self.fail_max is not None and self.consecutive >= self.fail_max:
            return "fail_max"
        if not self.windowed:
            return None
        calls, failures, slow = self.totals(now)
        if calls < self.min_calls:
            return None
        if self.failure_rate is not None and failures / calls >= self.failure_rate:
            return "failure_rate"
        if self.slow_call_rate is not None and slow / calls >= self.slow_call_rate:
            return "slow_call_rate"
        return None

    # calls

    def admit(self, now: float) -> int | None:
        """The generation the call is admitted with, or None if rejected."""
        if self.state is OPEN and now >= self.open_until:
            self.move(HALF_OPEN)
        if self.state in (CLOSED, DISABLED):
            return self.generation
        if self.state is HALF_OPEN and self.in_flight < self.half_open_max_calls:
            self.in_flight += 1
            return self.generation
        return None

    def finish(self, generation: int, kind: str, slow: bool, now: float) -> None:
        """Report an outcome: ``success``, ``failure`` or ``ignored``."""
        if generation != self.generation:
            return  # admitted under an earlier state
        if kind == "ignored":
            if self.state is HALF_OPEN:
                self.in_flight -= 1
            return
        failure = kind == "failure"
        if self.state is CLOSED:
            if self.windowed:
                self.recorded.append((now, failure, slow))
            self.consecutive = self.consecutive + 1 if failure else 0
            cause = self.trip_cause(now)
            if cause is not None:
                self.causes.add(f"{cause} ({self.window_type} window)")
                self.trip(now)
        elif self.state is HALF_OPEN:
            self.in_flight -= 1
            if failure:
                self.trip(now)
            else:
                self.successes += 1
                if self.successes >= self.success_threshold:
                    self.close()
        elif self.state is DISABLED:
            self.recorded.append((now, failure, slow))

    def by_hand(self, action: str, now: float) -> None:
        if action == "open":
            self.trip(now)
        elif action in ("close", "reset"):
            if self.state is CLOSED:
                self.recorded.clear()
                self.consecutive = self.trips = 0
            else:
                self.close()
        elif action == "half_open":
            self.move(HALF_OPEN)  # again while half-open: the trials start over
        else:
            new = FORCED_OPEN if action == "force_open" else DISABLED
            if new is not self.state:
                if new is DISABLED:
                    self.recorded.clear()
                self.move(new)


# -- configurations -----------------------------------------------------------------------------

RARELY = st.sampled_from([False, False, False, True])
RATES = [0.25, 0.5, 0.75, 1.0, 0.375]  # exact in binary: the model divides, the breaker multiplies
TIME_SHAPES = [(4.0, 1), (4.0, 2), (4.0, 4), (8.0, 4), (10.0, 5), (10.0, 10), (6.0, 3)]


@st.composite
def configurations(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["count", "time", "slow", "fail_max", "growth", "count", "time", "slow", "default"]
        )
    )
    options: dict[str, Any] = {
        "reset_timeout": draw(st.sampled_from([0.0, 1.0, 2.5, 5.0])),
        "half_open_max_calls": draw(st.integers(1, 3)),
        "success_threshold": draw(st.integers(1, 3)),
    }
    if kind == "default":
        return {}
    if kind in ("fail_max", "growth"):
        options["fail_max"] = draw(st.integers(1, 4))
    elif draw(st.sampled_from([False, False, False, True])):
        options["fail_max"] = draw(st.integers(2, 6))  # combined with a rate
    if kind in ("count", "time", "slow"):
        if kind != "slow" or draw(st.booleans()):
            options["failure_rate"] = draw(st.sampled_from(RATES))
        if kind == "time" or (kind == "slow" and draw(st.booleans())):
            seconds, buckets = draw(st.sampled_from(TIME_SHAPES))
            options.update(window_type="time", window_size=seconds, window_buckets=buckets)
            options["min_calls"] = draw(st.integers(1, 6))
        else:
            size = draw(st.integers(1, 8))
            options["window_size"] = size
            options["min_calls"] = draw(st.none() | st.integers(1, size))
    if kind == "slow":
        options["slow_call_rate"] = draw(st.sampled_from(RATES))
        options["slow_call_duration"] = draw(st.sampled_from([1.0, 2.0]))
    elif draw(RARELY):
        options["slow_call_duration"] = 1.0  # timed, without a slow-call rule
    if kind == "growth":
        options["reset_timeout"] = draw(st.sampled_from([1.0, 2.5]))
        options["reset_timeout_multiplier"] = draw(st.sampled_from([1.5, 2.0, 3.0]))
        options["reset_timeout_max"] = draw(
            st.none()
            | st.sampled_from([1.0, 4.0, 10.0]).map(lambda k: k * options["reset_timeout"])
        )
    return options


OTHER_OUTCOMES = ["bad_result", "ignored", "skip", "unrecorded", "interrupt"]
# "decorated" functions are decorated once per run, as in real code; call() and acall() wrap the
# function anew each time.
STYLES = st.sampled_from(["call", "decorated", "acall", "decorated_async"])
DURATIONS = [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
ADVANCES = st.one_of(
    st.integers(0, 24).map(lambda quarters: quarters / 4),
    st.sampled_from([30.0, 100.0, 1000.0, 100_000.0]),
)


@dataclass
class InFlight:
    guard: Guard
    generation: int
    start: float


class BreakerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.events: list[Event] = []
        self.pending: list[InFlight] = []

    @initialize(
        options=configurations(),
        start=st.sampled_from([0.0, 1000.0]),
        # Listeners, result predicates and timing each take the breaker off its fastest paths:
        # leave them out of most runs so that those paths are well exercised too.
        listen=RARELY,
        judge_results=RARELY,
        narrow_record=st.booleans(),
        manual=st.integers(0, 8),
    )
    def setup(self, options, start, listen, judge_results, narrow_record, manual):
        self.clock = FakeClock(start)
        self.model = Model.from_options(options)
        self.listen = listen
        self.judge_results = judge_results
        self.narrow_record = narrow_record
        self.manual = manual  # how many transitions by hand this run may make
        self.breaker = CircuitBreaker(
            "model",
            clock=self.clock,
            registry=None,
            listeners=[self.events.append] if listen else [],
            failure_if_result=bad_result if judge_results else None,
            record=Failure if narrow_record else Exception,
            ignore=[Ignored, ignored_by_predicate],
            **options,
        )
        self.last_rejection: CircuitOpen | None = None
        self.work: Callable[[], str] = str

        def run() -> str:
            return self.work()

        async def run_async() -> str:
            return self.work()

        self.decorated = self.breaker(run)
        self.decorated_async = self.breaker(run_async)

    def teardown(self) -> None:
        self.loop.close()
        model: Model | None = getattr(self, "model", None)
        if model is not None:  # what the run covered (pytest --hypothesis-show-statistics)
            for cause in sorted(model.causes):
                event(f"tripped by {cause}")
            for state in sorted({new.value for _, new, _ in model.changes}):
                event(f"reached {state}")

    # -- what each outcome means to the model --------------------------------------------------

    def kind(self, outcome: str) -> str:
        if outcome in ("ignored", "skip", "interrupt"):
            return "ignored"
        if outcome == "failure":
            return "failure"
        if outcome == "unrecorded":
            return "success" if self.narrow_record else "failure"
        if outcome == "bad_result":
            return "failure" if self.judge_results else "success"
        return "success"

    @staticmethod
    def error(outcome: str, asynchronous: bool) -> BaseException | None:
        if outcome == "failure":
            return Failure()
        if outcome == "ignored":
            return Ignored()
        if outcome == "skip":
            return KeyError("skip")
        if outcome == "unrecorded":
            return LookupError("an answer, not a failure")
        if outcome == "interrupt":
            return asyncio.CancelledError() if asynchronous else KeyboardInterrupt()
        return None

    def check_rejection(self, error: CircuitOpen) -> None:
        assert error.name == "model"
        assert error.retry_after == self.model.retry_after(self.clock.now())
        assert error is not self.last_rejection
        self.last_rejection = error

    # -- rules ----------------------------------------------------------------------------------

    # Three rules for calls, so that calls are most of the steps and plain successes and
    # failures most of the calls.
    @rule(duration=st.sampled_from(DURATIONS), style=STYLES)
    def call_succeeds(self, duration, style):
        self.call("success", duration, style)

    @rule(duration=st.sampled_from(DURATIONS), style=STYLES)
    def call_fails(self, duration, style):
        self.call("failure", duration, style)

    @rule(
        outcome=st.sampled_from(OTHER_OUTCOMES), duration=st.sampled_from(DURATIONS), style=STYLES
    )
    def call_ends_otherwise(self, outcome, duration, style):
        self.call(outcome, duration, style)

    @rule(
        burst=st.lists(
            st.tuples(
                st.sampled_from(["success", "failure"] * 3 + OTHER_OUTCOMES),
                st.sampled_from(DURATIONS),
                STYLES,
            ),
            min_size=2,
            max_size=12,
        )
    )
    def calls_in_a_row(self, burst):
        for outcome, duration, style in burst:
            self.call(outcome, duration, style)
            self.agrees_with_the_model()

    def call(self, outcome: str, duration: float, style: str) -> None:
        asynchronous = style in ("acall", "decorated_async")
        error = self.error(outcome, asynchronous)
        result = "bad" if outcome == "bad_result" else "ok"
        ran: list[bool] = []
        clock = self.clock

        def work() -> str:
            ran.append(True)
            clock.advance(duration)
            if error is not None:
                raise error
            return result

        async def awork() -> str:
            return work()

        admitted = self.model.admit(clock.now())
        returned: object = None
        raised: BaseException | None = None
        try:
            self.work = work
            if style == "call":
                returned = self.breaker.call(work)
            elif style == "decorated":
                returned = self.decorated()
            elif style == "acall":
                returned = self.loop.run_until_complete(self.breaker.acall(awork))
            else:
                returned = self.loop.run_until_complete(self.decorated_async())
        except BaseException as exception:  # KeyboardInterrupt too: the test raised it
            raised = exception
        if isinstance(raised, CircuitOpen):
            assert admitted is None, "admitted by the model, rejected by the breaker"
            assert not ran
            self.check_rejection(raised)
            return
        if isinstance(error, asyncio.CancelledError) and sys.version_info < (3, 11):
            # Before 3.11, run_until_complete turns a task's CancelledError into a new one.
            assert type(raised) is type(error)
        else:
            assert raised is error, f"the call's own exception must come out, got {raised!r}"
        if error is None:
            assert returned == result
        assert admitted is not None, "rejected by the model, admitted by the breaker"
        assert ran == [True]
        self.model.finish(admitted, self.kind(outcome), self.model.is_slow(duration), clock.now())

    @precondition(lambda self: len(self.pending) < 4)
    @rule()
    def enter_guard(self):
        guard = self.breaker.guard()
        now = self.clock.now()
        admitted = self.model.admit(now)
        try:
            guard.__enter__()
        except CircuitOpen as rejection:
            assert admitted is None, "admitted by the model, rejected by the guard"
            self.check_rejection(rejection)
            return
        assert admitted is not None, "rejected by the model, admitted by the guard"
        self.pending.append(InFlight(guard, admitted, now))

    @precondition(lambda self: bool(self.pending))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(
            ["success", "failure", "ignored", "skip", "unrecorded", "interrupt"]
        ),
    )
    def exit_guard(self, data, outcome):
        index = data.draw(st.integers(0, len(self.pending) - 1), label="which")
        block = self.pending.pop(index)
        error = self.error(outcome, asynchronous=False)
        if error is None:
            block.guard.__exit__(None, None, None)
        else:
            block.guard.__exit__(type(error), error, None)
        now = self.clock.now()
        slow = self.model.is_slow(now - block.start)
        self.model.finish(block.generation, self.kind(outcome), slow, now)

    @rule(seconds=ADVANCES)
    def advance(self, seconds):
        self.clock.advance(seconds)

    @precondition(lambda self: self.manual > 0)
    @rule(action=st.sampled_from(["open", "close", "reset", "half_open", "force_open", "disable"]))
    def by_hand(self, action):
        self.manual -= 1
        getattr(self.breaker, action)()
        self.model.by_hand(action, self.clock.now())

    # -- the comparison after every step --------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        now = self.clock.now()
        model = self.model
        metrics = self.breaker.metrics()
        assert self.breaker.state is model.state
        assert metrics.state is model.state
        assert (metrics.calls, metrics.failures, metrics.slow) == model.totals(now)
        assert metrics.consecutive_failures == model.consecutive
        assert metrics.retry_after == model.retry_after(now)
        if metrics.calls:
            assert metrics.failure_rate == metrics.failures / metrics.calls
        changes = [
            (e.old, e.new, e.open_for) for e in self.events if isinstance(e, BreakerStateChanged)
        ]
        if self.listen:
            assert changes == model.changes


BreakerModel.TestCase.settings = settings(
    max_examples=700,
    stateful_step_count=50,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerModel = BreakerModel.TestCase
