"""The CircuitBreaker front: trip conditions, half-open trials, classification, rejections,
fallbacks, manual control, metrics, the registry, events and logging, and every calling style."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import inspect
import logging
import pickle
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest

from buttress import (
    BreakerCall,
    BreakerMetrics,
    BreakerRegistry,
    BreakerStateChanged,
    ButtressError,
    CircuitBreaker,
    CircuitOpen,
    Event,
    Guard,
    Rejected,
    State,
    add_listener,
    breaker_registry,
)
from buttress.testing import FakeClock

T0 = 1000.0  # a monotonic clock rarely reads 0


class Boom(Exception):
    """The failure the protected calls raise."""


class Skip(Exception):
    """An exception configured as ignored."""


def make(clock: FakeClock | None = None, **options: Any) -> tuple[CircuitBreaker, FakeClock]:
    clock = clock if clock is not None else FakeClock(T0)
    options.setdefault("registry", None)
    return CircuitBreaker("test", clock=clock, **options), clock


def raiser(error: BaseException) -> Callable[[], Any]:
    def fn() -> Any:
        raise error

    return fn


def fail(breaker: CircuitBreaker, error: BaseException | None = None) -> BaseException:
    """Make one call that raises; return what came out (the same object, never wrapped)."""
    error = error if error is not None else Boom("down")
    with pytest.raises(type(error)) as info:
        breaker.call(raiser(error))
    assert info.value is error
    return info.value


def ok(breaker: CircuitBreaker, value: Any = "ok") -> Any:
    return breaker.call(lambda: value)


def rejected(breaker: CircuitBreaker) -> CircuitOpen:
    with pytest.raises(CircuitOpen) as info:
        breaker.call(lambda: "never runs")
    return info.value


def rejection_of(attempt: Callable[[], object]) -> CircuitOpen:
    with pytest.raises(CircuitOpen) as info:
        attempt()
    return info.value


def slow(clock: FakeClock, seconds: float, error: BaseException | None = None) -> Callable[[], Any]:
    """A call taking ``seconds`` of fake time, then returning or raising."""

    def fn() -> Any:
        clock.advance(seconds)
        if error is not None:
            raise error
        return "slow"

    return fn


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(1000):
        if breaker.state is not State.CLOSED:
            break
        fail(breaker)
    assert state_of(breaker) is State.OPEN


def state_of(breaker: CircuitBreaker) -> State:
    """The state, read through a call so that type checkers do not narrow it between reads."""
    return breaker.state


def changes(events: list[Event]) -> list[tuple[State, State, str, float | None]]:
    return [
        (e.old, e.new, e.reason, e.open_for) for e in events if isinstance(e, BreakerStateChanged)
    ]


def calls(events: list[Event]) -> list[BreakerCall]:
    return [e for e in events if isinstance(e, BreakerCall)]


class TestConstruction:
    @pytest.mark.parametrize(
        ("options", "error", "words"),
        [
            ({"name": ""}, (TypeError, ValueError), "name must be"),
            ({"name": 3}, TypeError, "name must be"),
            ({"fail_max": 0}, ValueError, "fail_max must be >= 1"),
            ({"fail_max": -2}, ValueError, "fail_max must be >= 1"),
            ({"fail_max": 2.5}, TypeError, "fail_max must be an int"),
            ({"fail_max": True}, TypeError, "fail_max must be an int"),
            ({"failure_rate": 0}, ValueError, r"failure_rate must be in \(0, 1\]"),
            ({"failure_rate": -0.1}, ValueError, r"failure_rate must be in \(0, 1\]"),
            ({"failure_rate": 1.01}, ValueError, r"failure_rate must be in \(0, 1\]"),
            ({"failure_rate": float("nan")}, ValueError, r"failure_rate must be in \(0, 1\]"),
            ({"failure_rate": "0.5"}, TypeError, "failure_rate must be a number"),
            (
                {"slow_call_rate": 0, "slow_call_duration": 1},
                ValueError,
                r"slow_call_rate must be in \(0, 1\]",
            ),
            (
                {"slow_call_rate": 1.5, "slow_call_duration": 1},
                ValueError,
                r"slow_call_rate must be in \(0, 1\]",
            ),
            ({"slow_call_rate": 0.5}, ValueError, "slow_call_rate needs slow_call_duration"),
            ({"slow_call_duration": 0}, ValueError, "slow_call_duration must be > 0"),
            ({"slow_call_duration": -1}, ValueError, "slow_call_duration must be > 0"),
            ({"slow_call_duration": "1s"}, TypeError, "slow_call_duration must be a number"),
            ({"window_size": 0}, ValueError, "window_size must be >= 1"),
            ({"window_size": -5}, ValueError, "window_size must be >= 1"),
            ({"window_size": 2.5}, TypeError, "window_size must be an int"),
            ({"window_size": 0, "window_type": "time"}, ValueError, "window_size must be > 0"),
            ({"window_size": -1, "window_type": "time"}, ValueError, "window_size must be > 0"),
            ({"window_type": "sliding"}, ValueError, "window_type must be 'count' or 'time'"),
            ({"window_buckets": 0, "window_type": "time"}, ValueError, "window_buckets must be"),
            ({"min_calls": 0}, ValueError, "min_calls must be >= 1"),
            ({"min_calls": 11, "window_size": 10}, ValueError, r"min_calls \(11\) cannot be"),
            ({"reset_timeout": -1}, ValueError, "reset_timeout must be >= 0"),
            ({"reset_timeout": "30"}, TypeError, "reset_timeout must be a number"),
            ({"reset_timeout_multiplier": 0.5}, ValueError, "reset_timeout_multiplier must be"),
            ({"reset_timeout_multiplier": 0}, ValueError, "reset_timeout_multiplier must be"),
            (
                {"reset_timeout_multiplier": float("inf")},
                ValueError,
                "reset_timeout_multiplier must be",
            ),
            ({"reset_timeout_multiplier": "2"}, TypeError, "reset_timeout_multiplier must be"),
            (
                {"reset_timeout": 10, "reset_timeout_max": 5},
                ValueError,
                r"reset_timeout_max \(5.0\) must be >= reset_timeout \(10.0\)",
            ),
            ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls must be >= 1"),
            ({"success_threshold": 0}, ValueError, "success_threshold must be >= 1"),
            ({"record": "Boom"}, TypeError, "record must be an exception type"),
            ({"record": int}, TypeError, "record must be an exception type"),
            ({"record": (Boom, 3)}, TypeError, "record must be an exception type"),
            ({"record": [Boom]}, TypeError, "record must be an exception type"),
            ({"ignore": [3]}, TypeError, "ignore must hold exception types or predicates"),
            ({"ignore": ["Boom"]}, TypeError, "ignore must hold exception types or predicates"),
            ({"ignore": (Skip, None)}, TypeError, "ignore must hold exception types or predicates"),
            ({"failure_if_result": 500}, TypeError, "failure_if_result must be callable"),
            ({"listeners": print}, TypeError, "listeners must be an iterable"),
            ({"listeners": [3]}, TypeError, "listeners must contain callables"),
            ({"registry": "mine"}, TypeError, "registry must be a BreakerRegistry"),
            ({"registry": {}}, TypeError, "registry must be a BreakerRegistry"),
        ],
    )
    def test_bad_arguments(self, options, error, words):
        options = {"name": "test", "registry": None, **options}
        with pytest.raises(error, match=words):
            CircuitBreaker(**options)

    def test_a_clock_must_be_a_clock(self):
        with pytest.raises(TypeError, match="clock must provide now"):
            CircuitBreaker("test", clock=object(), registry=None)  # type: ignore[arg-type]

    def test_an_ignore_item_that_is_a_class_but_not_an_exception_is_refused(self):
        # ``int`` is callable, so it would be taken as a predicate and ``int(error)`` would then
        # raise TypeError out of the protected call in place of the user's own exception.
        with pytest.raises(TypeError, match="ignore must hold exception types or predicates"):
            CircuitBreaker("test", ignore=[int], registry=None)  # type: ignore[list-item]

    def test_ignore_accepts_any_iterable(self):
        # The parameter is an Iterable; a generator is one.
        breaker, _ = make(fail_max=1, ignore=(kind for kind in [Skip]))
        fail(breaker, Skip())
        assert state_of(breaker) is State.CLOSED

    def test_accepted_edges(self):
        # min_calls equal to the count window, rates of exactly 1, a zero reset timeout,
        # timedeltas for durations, a single-exception ignore and a time window of any length.
        breaker, _ = make(
            failure_rate=1,
            slow_call_rate=1.0,
            slow_call_duration=timedelta(milliseconds=1500),
            window_size=5,
            min_calls=5,
            reset_timeout=0,
            ignore=Skip,
        )
        assert breaker.rules.slow_call_duration == 1.5
        assert breaker.rules.reset_timeout == 0.0
        breaker, _ = make(window_type="time", window_size=timedelta(seconds=2), min_calls=50)
        assert breaker.rules.window_size == 2.0

    def test_repr(self):
        breaker, _ = make()
        assert repr(breaker) == "CircuitBreaker('test', state=closed)"
        breaker.force_open()
        assert repr(breaker) == "CircuitBreaker('test', state=forced_open)"


class TestDefaults:
    def test_without_a_trip_condition_five_failures_in_a_row_trip(self):
        breaker, _ = make()
        for _ in range(4):
            fail(breaker)
        assert state_of(breaker) is State.CLOSED
        fail(breaker)
        assert state_of(breaker) is State.OPEN
        assert rejected(breaker).retry_after == 30.0

    def test_a_rate_alone_does_not_add_fail_max(self):
        breaker, _ = make(failure_rate=1.0, window_size=20, min_calls=20)
        for _ in range(19):
            fail(breaker)
        assert state_of(breaker) is State.CLOSED

    def test_min_calls_defaults_to_ten_or_a_smaller_count_window(self):
        small, _ = make(failure_rate=1.0, window_size=3)
        fail(small)
        fail(small)
        assert state_of(small) is State.CLOSED
        fail(small)
        assert state_of(small) is State.OPEN
        big, _ = make(failure_rate=1.0, window_size=50)
        for _ in range(9):
            fail(big)
        assert state_of(big) is State.CLOSED
        fail(big)
        assert state_of(big) is State.OPEN
        timed, _ = make(failure_rate=1.0, window_type="time", window_size=1)
        for _ in range(9):
            fail(timed)
        assert state_of(timed) is State.CLOSED
        fail(timed)
        assert state_of(timed) is State.OPEN

    def test_the_open_period_cap_defaults_to_ten_reset_timeouts_when_it_grows(self):
        breaker, clock = make(fail_max=1, reset_timeout=1, reset_timeout_multiplier=4)
        periods = []
        for _ in range(4):
            fail(breaker)
            error = rejected(breaker)
            assert error.retry_after is not None
            periods.append(error.retry_after)
            clock.advance(error.retry_after)
        assert periods == [1.0, 4.0, 10.0, 10.0]

    def test_without_growth_the_period_is_fixed(self):
        breaker, clock = make(fail_max=1, reset_timeout=7)
        for _ in range(3):
            fail(breaker)
            assert rejected(breaker).retry_after == 7.0
            clock.advance(7)


class TestTripTime:
    """The open period starts when the breaker trips, whatever the clock read then."""

    def test_after_a_failure_the_call_that_follows_is_rejected(self):
        breaker, _ = make(fail_max=1, reset_timeout=30)
        fail(breaker)
        error = rejected(breaker)
        assert error.retry_after == 30.0
        assert state_of(breaker) is State.OPEN
        assert breaker.metrics().retry_after == 30.0

    def test_a_success_completing_min_calls_trips_now(self):
        breaker, _ = make(failure_rate=0.5, window_size=2, reset_timeout=30)
        fail(breaker)
        ok(breaker)  # 1 of 2 failed: 50%
        assert state_of(breaker) is State.OPEN
        assert rejected(breaker).retry_after == 30.0

    def test_a_success_after_a_success_completing_min_calls_trips_now(self):
        breaker, _ = make(failure_rate=0.25, window_size=4, reset_timeout=30)
        fail(breaker)
        ok(breaker)
        ok(breaker)
        assert state_of(breaker) is State.CLOSED  # 3 calls: not judged yet
        ok(breaker)  # 1 of 4 failed: 25%
        assert state_of(breaker) is State.OPEN
        assert rejected(breaker).retry_after == 30.0

    def test_a_guard_trips_now(self):
        breaker, _ = make(fail_max=1, reset_timeout=30)
        with pytest.raises(Boom), breaker.guard():
            raise Boom
        assert rejected(breaker).retry_after == 30.0

    async def test_an_async_call_trips_now(self):
        breaker, _ = make(fail_max=1, reset_timeout=30)

        @breaker
        async def down() -> None:
            raise Boom

        with pytest.raises(Boom):
            await down()
        with pytest.raises(CircuitOpen) as info:
            await down()
        assert info.value.retry_after == 30.0

    def test_a_trip_later_in_time_starts_its_own_period(self):
        breaker, clock = make(fail_max=1, reset_timeout=30)
        clock.advance(5000)
        fail(breaker)
        clock.advance(29)
        assert rejected(breaker).retry_after == 1.0


class TestFailMax:
    def test_failures_in_a_row(self):
        breaker, _ = make(fail_max=3)
        fail(breaker)
        fail(breaker)
        assert breaker.metrics().consecutive_failures == 2
        assert state_of(breaker) is State.CLOSED
        fail(breaker)
        assert state_of(breaker) is State.OPEN

    def test_a_success_resets_the_count(self):
        breaker, _ = make(fail_max=3)
        for _ in range(5):
            fail(breaker)
            fail(breaker)
            assert ok(breaker) == "ok"
            assert breaker.metrics().consecutive_failures == 0
        assert state_of(breaker) is State.CLOSED

    def test_the_tripping_call_raises_its_own_error(self):
        breaker, _ = make(fail_max=1)
        error = Boom("the original")
        assert fail(breaker, error) is error  # not a CircuitOpen: the call did run
        assert isinstance(rejected(breaker), CircuitOpen)


class TestFailureRate:
    def test_count_window_judged_only_once_min_calls_are_recorded(self):
        breaker, _ = make(failure_rate=0.5, window_size=10, min_calls=5)
        for _ in range(4):
            fail(breaker)  # 100% failures, but only 4 calls
        assert state_of(breaker) is State.CLOSED
        assert breaker.metrics().calls == 4
        fail(breaker)
        assert state_of(breaker) is State.OPEN

    def test_count_window_slides(self):
        breaker, _ = make(failure_rate=0.5, window_size=4, min_calls=4)
        for _ in range(6):
            ok(breaker)
        fail(breaker)
        seen = []
        for _ in range(4):
            ok(breaker)
            seen.append(breaker.metrics().failures)
        assert seen == [1, 1, 1, 0]  # the failure left after four newer calls
        fail(breaker)
        assert state_of(breaker) is State.CLOSED  # 1 of 4
        fail(breaker)
        assert state_of(breaker) is State.OPEN  # 2 of 4 >= 50%
        assert breaker.metrics().calls == 0  # a trip empties the window

    @pytest.mark.parametrize("forget", ["reset", "trip_and_recover", "disable_and_close"])
    def test_a_decorated_function_keeps_counting_after_the_window_is_forgotten(self, forget):
        # Functions are decorated once; the window is emptied many times (each trip, close and
        # reset). Successes through the decorated function must still be counted afterwards.
        breaker, clock = make(failure_rate=0.5, window_size=10, min_calls=10, reset_timeout=5)

        @breaker
        def fetch(healthy: bool = True) -> str:
            if not healthy:
                raise Boom
            return "ok"

        for _ in range(4):
            fetch()
        assert breaker.metrics().calls == 4
        if forget == "reset":
            breaker.reset()
        elif forget == "trip_and_recover":
            breaker.open()
            clock.advance(5)
            fetch()  # the trial closes it
        else:
            breaker.disable()
            breaker.close()
        assert breaker.metrics().calls == 0
        for _ in range(6):
            fetch()
        assert breaker.metrics().calls == 6
        for _ in range(4):
            with pytest.raises(Boom):
                fetch(False)
        metrics = breaker.metrics()
        assert (metrics.state, metrics.calls, metrics.failures) == (State.CLOSED, 10, 4)

    async def test_an_async_decorated_function_keeps_counting_after_a_reset(self):
        breaker, _ = make(failure_rate=0.5, window_size=10, min_calls=10)

        @breaker
        async def fetch() -> str:
            return "ok"

        await fetch()
        breaker.reset()
        for _ in range(3):
            await fetch()
        assert breaker.metrics().calls == 3

    def test_below_the_threshold_never_trips(self):
        breaker, _ = make(failure_rate=0.6, window_size=5, min_calls=5)
        for _ in range(30):
            ok(breaker)
            ok(breaker)
            ok(breaker)
            fail(breaker)
            fail(breaker)
        assert state_of(breaker) is State.CLOSED
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures, metrics.failure_rate) == (5, 2, 0.4)

    def test_time_window(self):
        breaker, clock = make(
            failure_rate=0.5, window_type="time", window_size=10, window_buckets=10, min_calls=4
        )
        fail(breaker)
        fail(breaker)
        ok(breaker)
        clock.advance(10)  # all three leave the window
        assert breaker.metrics().calls == 0
        ok(breaker)
        ok(breaker)
        ok(breaker)
        fail(breaker)  # 1 of 4
        fail(breaker)  # 2 of 5
        assert state_of(breaker) is State.CLOSED
        fail(breaker)  # 3 of 6
        assert state_of(breaker) is State.OPEN

    def test_time_window_success_is_judged_too(self):
        # Old successes leaving the window can leave the rate over the threshold: the success
        # recorded then is judged like any call (the rule is about the window, not the call).
        breaker, clock = make(
            failure_rate=0.6, window_type="time", window_size=10, window_buckets=10, min_calls=5
        )
        for _ in range(5):
            ok(breaker)
        clock.advance(9)
        for _ in range(5):
            fail(breaker)  # 5 of 10: 50%
        assert state_of(breaker) is State.CLOSED
        clock.advance(1.5)  # the five successes leave
        ok(breaker)  # 5 of 6: 83%
        assert state_of(breaker) is State.OPEN

    def test_combined_with_fail_max_whichever_comes_first(self):
        breaker, _ = make(fail_max=3, failure_rate=0.5, window_size=20, min_calls=20)
        fail(breaker)
        fail(breaker)
        fail(breaker)  # fail_max; the window holds 3 < min_calls
        assert state_of(breaker) is State.OPEN
        events: list[Event] = []
        breaker, _ = make(
            fail_max=3, failure_rate=0.5, window_size=4, min_calls=4, listeners=[events.append]
        )
        for _ in range(2):
            ok(breaker)
            fail(breaker)
        assert state_of(breaker) is State.OPEN  # 2 of 4, never 2 in a row
        assert changes(events)[-1][2] == "failure rate 50% >= 50% over 4 calls"


class TestSlowCalls:
    def test_slow_call_rate(self):
        events: list[Event] = []
        breaker, clock = make(
            slow_call_rate=0.5,
            slow_call_duration=2.0,
            window_size=4,
            min_calls=4,
            listeners=[events.append],
        )
        breaker.call(slow(clock, 0.5))
        breaker.call(slow(clock, 2.0))  # exactly the duration is slow
        breaker.call(slow(clock, 1.999))
        assert breaker.metrics().slow == 1
        assert state_of(breaker) is State.CLOSED
        assert breaker.call(slow(clock, 60)) == "slow"  # the result still comes back
        assert state_of(breaker) is State.OPEN
        assert changes(events)[-1][2] == "slow-call rate 50% >= 50% over 4 calls"
        # The open period starts when the slow call ended.
        assert rejected(breaker).retry_after == 30.0

    def test_slow_calls_alone_never_trip_without_the_rate(self):
        breaker, clock = make(failure_rate=0.5, slow_call_duration=1.0, window_size=4, min_calls=4)
        for _ in range(8):
            breaker.call(slow(clock, 5))
        metrics = breaker.metrics()
        assert (metrics.state, metrics.calls, metrics.slow, metrics.slow_rate) == (
            State.CLOSED,
            4,
            4,
            1.0,
        )

    def test_a_slow_failure_is_both(self):
        breaker, clock = make(
            failure_rate=0.9,
            slow_call_rate=0.9,
            slow_call_duration=1.0,
            window_size=10,
            min_calls=10,
        )
        with pytest.raises(Boom):
            breaker.call(slow(clock, 3, Boom()))
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures, metrics.slow) == (1, 1, 1)

    def test_slow_calls_in_a_time_window(self):
        breaker, clock = make(
            slow_call_rate=1.0,
            slow_call_duration=1.0,
            window_type="time",
            window_size=10,
            min_calls=3,
        )
        breaker.call(slow(clock, 1))
        breaker.call(slow(clock, 1))
        clock.advance(20)  # both leave the window
        breaker.call(slow(clock, 1))
        assert breaker.metrics().calls == 1
        breaker.call(slow(clock, 1))
        assert state_of(breaker) is State.CLOSED
        breaker.call(slow(clock, 1))
        assert state_of(breaker) is State.OPEN


class TestOpenPeriod:
    def test_retry_after_counts_down_and_a_trial_follows(self):
        breaker, clock = make(fail_max=1, reset_timeout=30)
        fail(breaker)
        clock.advance(12.5)
        assert rejected(breaker).retry_after == 17.5
        clock.advance(17.499)
        assert rejected(breaker).retry_after == pytest.approx(0.001)
        assert state_of(breaker) is State.OPEN
        clock.advance(0.001)
        assert state_of(breaker) is State.OPEN  # it moves at the next call, not by itself
        assert breaker.metrics().retry_after == 0.0
        assert ok(breaker) == "ok"  # the trial
        assert state_of(breaker) is State.CLOSED

    def test_the_period_grows_on_trips_in_a_row_up_to_the_cap(self):
        breaker, clock = make(
            fail_max=1, reset_timeout=10, reset_timeout_multiplier=2, reset_timeout_max=35
        )
        periods = []
        fail(breaker)
        for _ in range(4):
            error = rejected(breaker)
            assert error.retry_after is not None
            periods.append(error.retry_after)
            clock.advance(error.retry_after)
            fail(breaker)  # the trial fails: another trip in a row
        assert periods == [10.0, 20.0, 35.0, 35.0]

    def test_closing_starts_the_growth_over(self):
        breaker, clock = make(
            fail_max=1, reset_timeout=10, reset_timeout_multiplier=3, reset_timeout_max=1000
        )
        fail(breaker)
        clock.advance(10)
        fail(breaker)  # 30 s now
        clock.advance(30)
        ok(breaker)  # the trial succeeds: closed
        fail(breaker)
        assert rejected(breaker).retry_after == 10.0

    def test_a_long_outage_keeps_the_period_at_the_cap(self, caplog):
        caplog.set_level(logging.ERROR, logger="buttress.breaker")  # 1500 warnings otherwise
        # Hundreds of trips in a row (a day-long outage with trials every minute) must not
        # overflow the growth computation: the period stays at the cap, the trial's own error
        # comes out, and the breaker reopens.
        breaker, clock = make(
            fail_max=1, reset_timeout=1, reset_timeout_multiplier=10, reset_timeout_max=60
        )
        fail(breaker)
        for _ in range(1500):
            clock.advance(60)
            fail(breaker)
            assert state_of(breaker) is State.OPEN
        assert rejected(breaker).retry_after == 60.0

    def test_opening_by_hand_many_times_keeps_the_period_at_the_cap(self, caplog):
        caplog.set_level(logging.ERROR, logger="buttress.breaker")
        breaker, _ = make(reset_timeout=1, reset_timeout_multiplier=2, reset_timeout_max=60)
        for _ in range(1100):
            breaker.open()
        assert breaker.metrics().retry_after == 60.0

    def test_zero_reset_timeout_trials_at_once(self):
        breaker, _ = make(fail_max=1, reset_timeout=0)
        fail(breaker)
        assert state_of(breaker) is State.OPEN
        assert ok(breaker) == "ok"
        assert state_of(breaker) is State.CLOSED


class TestHalfOpen:
    def half_open(self, **options: Any) -> tuple[CircuitBreaker, FakeClock]:
        options.setdefault("fail_max", 1)
        breaker, clock = make(reset_timeout=10, **options)
        fail(breaker)
        clock.advance(10)
        return breaker, clock

    def test_at_most_half_open_max_calls_in_flight(self):
        breaker, _ = self.half_open(half_open_max_calls=2, success_threshold=5)
        first, second = breaker.guard(), breaker.guard()
        first.__enter__()
        assert state_of(breaker) is State.HALF_OPEN
        second.__enter__()
        for _ in range(3):
            error = rejected(breaker)  # at once: no waiting for a slot
            assert error.retry_after == 0.0
            assert "half-open" in str(error)
        first.__exit__(None, None, None)  # a success frees its slot
        assert ok(breaker) == "ok"
        third = breaker.guard()
        third.__enter__()
        rejected(breaker)
        second.__exit__(None, None, None)
        third.__exit__(None, None, None)
        assert state_of(breaker) is State.HALF_OPEN  # 4 of 5 successes

    def test_success_threshold_successes_close(self):
        breaker, _ = self.half_open(success_threshold=3)
        ok(breaker)
        ok(breaker)
        assert state_of(breaker) is State.HALF_OPEN
        ok(breaker)
        assert state_of(breaker) is State.CLOSED
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.consecutive_failures, metrics.retry_after) == (0, 0, 0.0)

    def test_any_failure_reopens_and_the_period_grows(self):
        breaker, _ = self.half_open(
            success_threshold=3, reset_timeout_multiplier=2, reset_timeout_max=100
        )
        ok(breaker)
        ok(breaker)
        fail(breaker)
        assert state_of(breaker) is State.OPEN
        assert rejected(breaker).retry_after == 20.0

    def test_a_failure_result_reopens(self):
        breaker, _ = self.half_open(failure_if_result=lambda result: result == 503)
        assert breaker.call(lambda: 503) == 503
        assert state_of(breaker) is State.OPEN

    def test_an_ignored_exception_frees_the_slot_and_counts_as_nothing(self):
        breaker, _ = self.half_open(ignore=[Skip], success_threshold=2)
        fail(breaker, Skip())
        assert state_of(breaker) is State.HALF_OPEN
        ok(breaker)
        assert state_of(breaker) is State.HALF_OPEN  # the ignored call was not a success
        ok(breaker)
        assert state_of(breaker) is State.CLOSED

    def test_an_ignored_predicate_frees_the_slot(self):
        breaker, _ = self.half_open(ignore=[lambda error: "skip" in str(error)])
        fail(breaker, Boom("skip me"))
        assert state_of(breaker) is State.HALF_OPEN
        fail(breaker, Boom("real"))
        assert state_of(breaker) is State.OPEN

    @pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
    def test_base_exceptions_free_the_slot(self, error):
        breaker, _ = self.half_open()
        fail(breaker, error)
        assert state_of(breaker) is State.HALF_OPEN
        assert ok(breaker) == "ok"
        assert state_of(breaker) is State.CLOSED

    async def test_a_cancelled_trial_frees_the_slot(self):
        breaker, _ = self.half_open()
        started = asyncio.Event()

        @breaker
        async def hang() -> str:
            started.set()
            await asyncio.sleep(3600)
            return "never"

        task = asyncio.create_task(hang())
        await started.wait()
        with pytest.raises(CircuitOpen):
            await hang()  # the only slot is taken
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state_of(breaker) is State.HALF_OPEN

        @breaker
        async def fine() -> str:
            return "fine"

        assert await fine() == "fine"
        assert state_of(breaker) is State.CLOSED

    def test_exceptions_not_recorded_are_successes_here_too(self):
        breaker, _ = self.half_open(record=Boom)
        fail(breaker, KeyError("not ours"))
        assert state_of(breaker) is State.CLOSED

    def test_half_open_by_hand(self):
        breaker, _ = make(success_threshold=1)
        breaker.half_open()
        assert state_of(breaker) is State.HALF_OPEN
        guard = breaker.guard()
        guard.__enter__()
        rejected(breaker)
        guard.__exit__(None, None, None)
        assert state_of(breaker) is State.CLOSED


class TestClassification:
    def test_exceptions_not_in_record_count_as_successes(self):
        breaker, _ = make(fail_max=2, record=(Boom, ConnectionError))
        fail(breaker)
        fail(breaker, KeyError("a lookup miss is an answer"))
        assert breaker.metrics().consecutive_failures == 0
        fail(breaker, ConnectionError())
        assert state_of(breaker) is State.CLOSED
        fail(breaker)
        assert state_of(breaker) is State.OPEN

    def test_not_recorded_exceptions_are_successes_in_the_window(self):
        breaker, _ = make(failure_rate=0.5, window_size=10, min_calls=10, record=Boom)
        fail(breaker, ValueError())
        fail(breaker)
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures) == (2, 1)

    def test_ignored_types_count_as_nothing(self):
        breaker, _ = make(fail_max=2, failure_rate=0.9, window_size=10, min_calls=10, ignore=[Skip])
        fail(breaker)
        fail(breaker, Skip())  # does not reset the count either
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures, metrics.consecutive_failures) == (1, 1, 1)
        fail(breaker)
        assert state_of(breaker) is State.OPEN

    def test_ignore_wins_over_record(self):
        breaker, _ = make(fail_max=1, record=Exception, ignore=[Boom])
        fail(breaker)
        assert state_of(breaker) is State.CLOSED

    def test_ignored_subclasses(self):
        breaker, _ = make(fail_max=1, ignore=[LookupError])
        fail(breaker, KeyError("k"))
        assert state_of(breaker) is State.CLOSED

    def test_ignore_predicates_receive_the_exception(self):
        seen: list[BaseException] = []

        def predicate(error: BaseException) -> bool:
            seen.append(error)
            return isinstance(error, Boom) and error.args == ("ignore me",)

        breaker, _ = make(fail_max=1, ignore=[Skip, predicate])
        error = fail(breaker, Boom("ignore me"))
        assert seen == [error]
        assert state_of(breaker) is State.CLOSED
        fail(breaker, Skip())
        assert state_of(breaker) is State.CLOSED
        fail(breaker, Boom("count me"))
        assert state_of(breaker) is State.OPEN

    @pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(0), GeneratorExit()])
    def test_base_exceptions_are_always_ignored(self, error):
        breaker, _ = make(fail_max=1, failure_rate=0.5, window_size=2, min_calls=1)
        fail(breaker, error)
        metrics = breaker.metrics()
        assert (metrics.state, metrics.calls) == (State.CLOSED, 0)

    def test_base_exceptions_are_ignored_even_when_recorded(self):
        breaker, _ = make(fail_max=1, record=BaseException)
        fail(breaker, KeyboardInterrupt())
        assert state_of(breaker) is State.CLOSED

    async def test_cancellation_is_ignored(self):
        breaker, _ = make(fail_max=1)
        started = asyncio.Event()

        @breaker
        async def hang() -> None:
            started.set()
            await asyncio.sleep(3600)

        task = asyncio.create_task(hang())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state_of(breaker) is State.CLOSED

    def test_failure_if_result_marks_failures_but_returns_the_result(self):
        response = {"status": 503}
        breaker, _ = make(fail_max=2, failure_if_result=lambda r: r["status"] >= 500)
        assert breaker.call(lambda: response) is response
        assert breaker.metrics().consecutive_failures == 1
        assert breaker.call(lambda: {"status": 200}) == {"status": 200}
        assert breaker.metrics().consecutive_failures == 0
        breaker.call(lambda: response)
        assert breaker.call(lambda: response) is response
        assert state_of(breaker) is State.OPEN

    async def test_failure_if_result_async(self):
        breaker, _ = make(fail_max=1, failure_if_result=lambda r: r is None)

        @breaker
        async def nothing() -> object:
            return None

        assert await nothing() is None
        assert state_of(breaker) is State.OPEN

    def test_failure_if_result_does_not_judge_guards(self):
        breaker, _ = make(fail_max=1, failure_if_result=lambda r: True)
        with breaker.guard():
            pass
        assert state_of(breaker) is State.CLOSED

    def test_the_user_exception_comes_out_unchanged(self):
        breaker, _ = make(fail_max=1)
        error = Boom("mine")
        assert fail(breaker, error) is error
        assert error.__cause__ is None
        assert error.__context__ is None
        assert not getattr(error, "__notes__", None)


class TestGeneration:
    """Outcomes of calls admitted before a state change do not count against the new state."""

    def test_a_call_from_before_the_trip_does_not_reopen_the_trial(self):
        breaker, clock = make(fail_max=1, reset_timeout=10)
        old = breaker.guard()
        old.__enter__()  # admitted while CLOSED
        fail(breaker)  # trips
        clock.advance(10)
        trial = breaker.guard()
        trial.__enter__()
        assert state_of(breaker) is State.HALF_OPEN
        old.__exit__(Boom, Boom(), None)  # the old call fails after the trip
        assert state_of(breaker) is State.HALF_OPEN
        trial.__exit__(None, None, None)
        assert state_of(breaker) is State.CLOSED

    def test_a_call_from_before_the_trip_does_not_count_after_recovery(self):
        breaker, clock = make(fail_max=1, failure_rate=0.5, window_size=4, min_calls=4)
        slow_failure = breaker.guard()
        slow_failure.__enter__()
        breaker.open()
        clock.advance(30)
        ok(breaker)  # trial succeeds: closed, a new generation
        slow_failure.__exit__(Boom, Boom(), None)
        metrics = breaker.metrics()
        assert (metrics.state, metrics.calls, metrics.consecutive_failures) == (State.CLOSED, 0, 0)

    def test_an_old_trial_does_not_count_for_a_new_half_open_period(self):
        breaker, clock = make(fail_max=1, reset_timeout=10, half_open_max_calls=2)
        fail(breaker)
        clock.advance(10)
        old_trial = breaker.guard()
        old_trial.__enter__()
        fail(breaker)  # the other trial fails: OPEN again
        clock.advance(10)
        new_trial = breaker.guard()
        new_trial.__enter__()
        other = breaker.guard()
        other.__enter__()
        old_trial.__exit__(None, None, None)  # neither closes it nor frees a slot
        assert state_of(breaker) is State.HALF_OPEN
        rejected(breaker)
        new_trial.__exit__(None, None, None)
        assert state_of(breaker) is State.CLOSED
        other.__exit__(None, None, None)

    def test_a_call_admitted_before_opening_by_hand_cannot_trip_it_again(self):
        events: list[Event] = []
        breaker, _ = make(fail_max=1, listeners=[events.append])
        before = breaker.guard()
        before.__enter__()
        breaker.open()
        before.__exit__(Boom, Boom(), None)
        assert [c[1] for c in changes(events)] == [State.OPEN]
        assert rejected(breaker).retry_after == 30.0


class TestCircuitOpen:
    def test_carries_the_name_and_retry_after(self):
        breaker, clock = make(fail_max=1, reset_timeout=30)
        fail(breaker)
        clock.advance(4)
        error = rejected(breaker)
        assert isinstance(error, Rejected)
        assert isinstance(error, ButtressError)
        assert error.name == "test"
        assert error.retry_after == 26.0
        assert "'test'" in str(error)

    def test_forced_open_has_no_retry_after(self):
        breaker, _ = make()
        breaker.force_open()
        error = rejected(breaker)
        assert error.retry_after is None
        assert "forced open" in str(error)

    @pytest.mark.parametrize("style", ["call", "decorator", "guard"])
    @pytest.mark.parametrize("state", ["open", "forced_open", "half_open_busy"])
    def test_a_fresh_exception_per_rejection(self, style, state):
        breaker, _ = make(fail_max=1)
        if state == "open":
            fail(breaker)
        elif state == "forced_open":
            breaker.force_open()
        else:
            breaker.half_open()
            breaker.guard().__enter__()

        @breaker
        def decorated() -> None:
            raise AssertionError("never runs")

        def attempt() -> None:
            if style == "call":
                breaker.call(lambda: None)
            elif style == "decorator":
                decorated()
            else:
                with breaker.guard():
                    raise AssertionError("never runs")

        errors = [rejection_of(attempt) for _ in range(200)]
        lengths = {len(traceback.extract_tb(error.__traceback__)) for error in errors}
        assert len({id(error) for error in errors}) == 200  # all alive, so ids are distinct
        assert len(lengths) == 1  # tracebacks do not grow from one rejection to the next
        assert lengths.pop() <= 6
        assert all(e.__context__ is None and e.__cause__ is None for e in errors)

    def test_pickles(self):
        breaker, clock = make(fail_max=1)
        fail(breaker)
        clock.advance(10)
        error = rejected(breaker)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is CircuitOpen
        assert (copy.name, copy.retry_after, copy.args) == ("test", 20.0, error.args)
        breaker.force_open()
        copy = pickle.loads(pickle.dumps(rejected(breaker)))
        assert (copy.name, copy.retry_after) == ("test", None)


class TestFallback:
    def test_a_value(self):
        breaker, _ = make(fail_max=1, fallback="cached")
        fail(breaker)
        assert breaker.call(lambda: "fresh") == "cached"

    def test_none_is_a_value(self):
        breaker, _ = make(fail_max=1, fallback=None)
        fail(breaker)
        assert breaker.call(lambda: "fresh") is None

    def test_a_callable_receives_the_rejection(self):
        received: list[CircuitOpen] = []

        def fallback(error: CircuitOpen) -> str:
            received.append(error)
            return f"retry in {error.retry_after}"

        breaker, _ = make(fail_max=1, fallback=fallback)
        fail(breaker)

        @breaker
        def fetch(x: int) -> str:
            return f"fresh {x}"

        assert fetch(1) == "retry in 30.0"
        assert breaker.call(fetch, 2) == "retry in 30.0"
        assert len(received) == 2
        assert received[0] is not received[1]
        assert received[0].name == "test"

    def test_applies_when_forced_open_and_when_trials_are_busy(self):
        breaker, _ = make(fallback=lambda error: error.retry_after)

        def fresh() -> object:
            return "fresh"

        breaker.force_open()
        assert breaker.call(fresh) is None
        breaker.half_open()
        with breaker.guard():
            assert breaker.call(fresh) == 0.0

    def test_never_replaces_the_user_error(self):
        breaker, _ = make(fail_max=2, fallback="cached")
        fail(breaker)  # the call ran: its error comes out
        fail(breaker)  # and the one that trips the breaker too
        assert ok(breaker, "fresh") == "cached"

    def test_not_for_guards(self):
        breaker, _ = make(fail_max=1, fallback="cached")
        fail(breaker)
        with pytest.raises(CircuitOpen), breaker.guard():
            pass

    async def test_a_coroutine_fallback_in_async_code(self):
        async def fallback(error: CircuitOpen) -> str:
            await asyncio.sleep(0)
            return f"async {error.name}"

        breaker, _ = make(fail_max=1, fallback=fallback)
        fail(breaker)

        @breaker
        async def fetch() -> str:
            return "fresh"

        assert await fetch() == "async test"

        async def other() -> str:
            return "fresh"

        assert await breaker.acall(other) == "async test"

    async def test_a_plain_fallback_in_async_code(self):
        breaker, _ = make(fail_max=1, fallback=lambda error: "plain")
        fail(breaker)

        async def fetch() -> object:
            return "fresh"

        assert await breaker.acall(fetch) == "plain"
        value_breaker, _ = make(fail_max=1, fallback=42)
        fail(value_breaker)
        assert await value_breaker.acall(fetch) == 42


class TestForcedOpenAndDisabled:
    def test_forced_open_rejects_everything_until_closed(self):
        breaker, clock = make()
        breaker.force_open()
        for jump in [0, 30, 1e6]:
            clock.advance(jump)
            assert rejected(breaker).retry_after is None
        assert state_of(breaker) is State.FORCED_OPEN
        assert breaker.metrics().retry_after is None
        breaker.close()
        assert ok(breaker) == "ok"

    def test_forced_open_can_be_reset(self):
        breaker, _ = make()
        breaker.force_open()
        breaker.reset()
        assert state_of(breaker) is State.CLOSED

    def test_disabled_admits_everything_records_and_never_trips(self):
        breaker, clock = make(fail_max=1, failure_rate=0.1, window_size=10, min_calls=1)
        breaker.disable()
        for _ in range(25):
            fail(breaker)
        breaker.call(slow(clock, 100))
        metrics = breaker.metrics()
        assert (metrics.state, metrics.calls, metrics.failures) == (State.DISABLED, 10, 9)
        assert metrics.retry_after == 0.0
        breaker.close()
        metrics = breaker.metrics()
        assert (metrics.state, metrics.calls, metrics.failures) == (State.CLOSED, 0, 0)
        fail(breaker)
        assert state_of(breaker) is State.OPEN

    def test_disabled_records_even_without_a_rate(self):
        breaker, _ = make(fail_max=1)
        breaker.disable()
        fail(breaker)
        ok(breaker)
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures) == (2, 1)

    def test_disabling_an_open_breaker_admits_at_once(self):
        breaker, _ = make(fail_max=1)
        fail(breaker)
        breaker.disable()
        assert ok(breaker) == "ok"


class TestManualControl:
    def test_each_transition_is_an_event(self):
        events: list[Event] = []
        breaker, _ = make(reset_timeout=5, listeners=[events.append])
        breaker.open()
        breaker.half_open()
        breaker.force_open()
        breaker.disable()
        breaker.close()
        breaker.force_open()
        breaker.reset()
        c, o, h, f, d = (
            State.CLOSED,
            State.OPEN,
            State.HALF_OPEN,
            State.FORCED_OPEN,
            State.DISABLED,
        )
        assert changes(events) == [
            (c, o, "opened by hand", 5.0),
            (o, h, "half-opened by hand", None),
            (h, f, "forced open by hand", None),
            (f, d, "disabled by hand", None),
            (d, c, "closed by hand", None),
            (c, f, "forced open by hand", None),
            (f, c, "reset by hand", None),
        ]
        assert all(e.policy == "test" for e in events if isinstance(e, BreakerStateChanged))

    def test_the_same_state_again_is_no_event(self):
        events: list[Event] = []
        breaker, _ = make(listeners=[events.append])
        for action in [breaker.close, breaker.reset]:
            action()
        for action in [breaker.force_open, breaker.disable]:
            action()
            action()
        assert [c[1] for c in changes(events)] == [State.FORCED_OPEN, State.DISABLED]

    def test_half_open_again_restarts_the_trials(self):
        events: list[Event] = []
        breaker, _ = make(success_threshold=2, listeners=[events.append])
        breaker.half_open()
        ok(breaker)  # 1 of 2
        held = breaker.guard()
        held.__enter__()
        breaker.half_open()
        assert changes(events)[-1] == (
            State.HALF_OPEN,
            State.HALF_OPEN,
            "half-opened by hand",
            None,
        )
        ok(breaker)  # the slot is free again; 1 of 2 again
        held.__exit__(None, None, None)  # admitted before: not counted
        assert state_of(breaker) is State.HALF_OPEN
        ok(breaker)
        assert state_of(breaker) is State.CLOSED

    def test_open_starts_an_open_period(self):
        breaker, clock = make(reset_timeout=20)
        breaker.open()
        assert rejected(breaker).retry_after == 20.0
        clock.advance(20)
        assert ok(breaker) == "ok"
        assert state_of(breaker) is State.CLOSED

    def test_open_while_open_is_another_trip(self):
        breaker, _ = make(reset_timeout=5, reset_timeout_multiplier=2, reset_timeout_max=100)
        breaker.open()
        breaker.open()
        assert rejected(breaker).retry_after == 10.0

    def test_reset_forgets_the_window_and_counts(self):
        breaker, _ = make(fail_max=3, failure_rate=0.9, window_size=10, min_calls=10)
        fail(breaker)
        fail(breaker)
        breaker.reset()
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failures, metrics.consecutive_failures) == (0, 0, 0)
        fail(breaker)
        fail(breaker)
        assert state_of(breaker) is State.CLOSED

    def test_close_from_open_forgets_the_growth(self):
        breaker, _ = make(reset_timeout=5, reset_timeout_multiplier=2, reset_timeout_max=100)
        breaker.open()
        breaker.open()
        breaker.close()
        breaker.open()
        assert rejected(breaker).retry_after == 5.0


class TestMetrics:
    def test_snapshot(self):
        breaker, clock = make(
            fail_max=5,
            failure_rate=0.9,
            slow_call_duration=1,
            window_size=10,
            min_calls=10,
        )
        ok(breaker)
        breaker.call(slow(clock, 2))
        fail(breaker)
        fail(breaker)
        assert breaker.metrics() == BreakerMetrics(
            name="test",
            state=State.CLOSED,
            calls=4,
            failures=2,
            slow=1,
            failure_rate=0.5,
            slow_rate=0.25,
            consecutive_failures=2,
            retry_after=0.0,
        )

    def test_frozen(self):
        breaker, _ = make()
        metrics = breaker.metrics()
        with pytest.raises(dataclasses.FrozenInstanceError):
            metrics.calls = 3  # type: ignore[misc]

    def test_a_time_window_ages_in_the_snapshot(self):
        breaker, clock = make(failure_rate=0.9, window_type="time", window_size=10)
        fail(breaker)
        assert breaker.metrics().calls == 1
        clock.advance(10)
        assert breaker.metrics().calls == 0

    def test_retry_after_while_open(self):
        breaker, clock = make(fail_max=1, reset_timeout=30)
        fail(breaker)
        clock.advance(10)
        metrics = breaker.metrics()
        assert (metrics.state, metrics.retry_after) == (State.OPEN, 20.0)


class TestRegistry:
    def test_breakers_register_by_name(self):
        registry = BreakerRegistry()
        first = CircuitBreaker("b", registry=registry)
        second = CircuitBreaker("a", registry=registry)
        assert registry.names() == ["a", "b"]
        assert len(registry) == 2
        assert registry.get("b") is first
        assert registry.get("a") is second
        assert registry.get("c") is None

    def test_snapshot(self):
        registry = BreakerRegistry()
        clock = FakeClock(T0)
        healthy = CircuitBreaker("healthy", registry=registry, clock=clock)
        broken = CircuitBreaker("broken", fail_max=1, registry=registry, clock=clock)
        fail(broken)
        snapshot = registry.snapshot()
        assert sorted(snapshot) == ["broken", "healthy"]
        assert snapshot["healthy"] == healthy.metrics()
        assert snapshot["broken"].state is State.OPEN
        assert snapshot["broken"].retry_after == 30.0

    def test_a_later_breaker_with_the_same_name_replaces_the_first(self):
        registry = BreakerRegistry()
        CircuitBreaker("same", registry=registry)
        second = CircuitBreaker("same", registry=registry)
        assert registry.get("same") is second
        assert len(registry) == 1

    def test_held_weakly(self):
        registry = BreakerRegistry()
        breaker = CircuitBreaker("gone", registry=registry)

        @breaker
        def protected() -> str:
            return "ok"

        del breaker
        gc.collect()
        assert registry.names() == ["gone"]  # the decorated function keeps it alive
        del protected
        gc.collect()
        assert registry.names() == []
        assert registry.snapshot() == {}
        assert registry.get("gone") is None
        assert len(registry) == 0

    def test_the_default_registry(self):
        registry = breaker_registry()
        assert breaker_registry() is registry
        breaker = CircuitBreaker("tests.breaker.default-registry")
        assert registry.get("tests.breaker.default-registry") is breaker
        del breaker
        gc.collect()
        assert registry.get("tests.breaker.default-registry") is None

    def test_none_registers_nowhere(self):
        breaker = CircuitBreaker("tests.breaker.unregistered", registry=None)
        assert breaker_registry().get("tests.breaker.unregistered") is None
        assert breaker.name == "tests.breaker.unregistered"


class TestEvents:
    def test_state_changes_with_reasons(self):
        events: list[Event] = []
        breaker, clock = make(
            fail_max=2, reset_timeout=10, success_threshold=2, listeners=[events.append]
        )
        trip(breaker)
        clock.advance(10)
        fail(breaker)  # the trial fails
        clock.advance(10)
        ok(breaker)
        ok(breaker)
        c, o, h = State.CLOSED, State.OPEN, State.HALF_OPEN
        assert changes(events) == [
            (c, o, "2 failures in a row", 10.0),
            (o, h, "the reset timeout passed", None),
            (h, o, "a trial call failed", 10.0),
            (o, h, "the reset timeout passed", None),
            (h, c, "2 trial call(s) succeeded", None),
        ]
        first = next(e for e in events if isinstance(e, BreakerStateChanged))
        assert (
            first.describe() == "test: closed -> open (2 failures in a row); trial calls in 10.00 s"
        )
        assert first.log_level == logging.WARNING

    def test_a_call_event_for_every_outcome(self):
        events: list[Event] = []
        breaker, _ = make(fail_max=1, ignore=[Skip], record=Boom, listeners=[events.append])
        ok(breaker)
        skip = fail(breaker, Skip())
        other = fail(breaker, KeyError("answered"))
        boom = fail(breaker)
        rejection = rejected(breaker)
        observed = [(e.outcome, e.state, e.error) for e in calls(events)]
        assert observed == [
            ("success", State.CLOSED, None),
            ("ignored", State.CLOSED, skip),
            ("success", State.CLOSED, other),
            ("failure", State.CLOSED, boom),
            ("rejected", State.OPEN, rejection),
        ]
        assert all(e.policy == "test" for e in calls(events))
        assert calls(events)[-1].duration is None

    def test_rejections_in_each_state_are_events(self):
        events: list[Event] = []
        breaker, _ = make(listeners=[events.append])
        breaker.force_open()
        rejected(breaker)
        breaker.half_open()
        with breaker.guard():
            rejected(breaker)
        rejections = [(e.outcome, e.state) for e in calls(events) if e.outcome == "rejected"]
        assert rejections == [("rejected", State.FORCED_OPEN), ("rejected", State.HALF_OPEN)]

    def test_durations_when_measured(self):
        events: list[Event] = []
        timed, clock = make(slow_call_duration=1, listeners=[events.append])
        timed.call(slow(clock, 2.5))
        with pytest.raises(Boom):
            timed.call(slow(clock, 0.5, Boom()))
        untimed, _ = make(listeners=[events.append])
        ok(untimed)
        assert [e.duration for e in calls(events)] == [2.5, 0.5, None]

    @pytest.mark.parametrize("style", ["guard", "call", "decorated"])
    def test_the_call_event_state_is_the_state_at_admission(self, style):
        # BreakerCall.state is documented as the state "when the call was admitted".
        events: list[Event] = []
        breaker, _ = make(listeners=[events.append])

        def opens_meanwhile() -> str:
            breaker.force_open()  # e.g. an operator, while the call runs
            return "done"

        if style == "guard":
            with breaker.guard():
                opens_meanwhile()
        elif style == "call":
            breaker.call(opens_meanwhile)
        else:
            breaker(opens_meanwhile)()
        assert [(e.outcome, e.state) for e in calls(events)] == [("success", State.CLOSED)]

    def test_global_listeners_receive_them(self):
        events: list[Event] = []
        breaker, _ = make(fail_max=1)
        with add_listener(events.append):
            fail(breaker)
            rejected(breaker)
        ok_breaker, _ = make()
        ok(ok_breaker)  # after the subscription ended
        assert [type(e).__name__ for e in events] == [
            "BreakerCall",
            "BreakerStateChanged",
            "BreakerCall",
        ]

    def test_a_broken_listener_does_not_break_the_call(self, caplog):
        def broken(event: Event) -> None:
            raise RuntimeError("listener bug")

        breaker, _ = make(fail_max=1, listeners=[broken])
        assert ok(breaker) == "ok"
        fail(breaker)
        assert state_of(breaker) is State.OPEN
        assert "listener bug" in caplog.text


class TestLogging:
    def test_opening_is_a_warning(self, caplog):
        caplog.set_level(logging.INFO, logger="buttress.breaker")
        breaker, clock = make(fail_max=1, reset_timeout=30)
        fail(breaker)
        clock.advance(30)
        ok(breaker)
        breaker.force_open()
        records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
        assert records == [
            (
                "buttress.breaker",
                logging.WARNING,
                "test: closed -> open (1 failures in a row); trial calls in 30.00 s",
            ),
            (
                "buttress.breaker",
                logging.INFO,
                "test: open -> half_open (the reset timeout passed)",
            ),
            (
                "buttress.breaker",
                logging.INFO,
                "test: half_open -> closed (1 trial call(s) succeeded)",
            ),
            (
                "buttress.breaker",
                logging.WARNING,
                "test: closed -> forced_open (forced open by hand)",
            ),
        ]
        assert isinstance(caplog.records[0].buttress_event, BreakerStateChanged)

    def test_calls_are_logged_at_debug_only_when_someone_listens(self, caplog):
        caplog.set_level(logging.DEBUG, logger="buttress.breaker")
        quiet, _ = make()
        ok(quiet)
        assert caplog.records == []
        listened, _ = make(listeners=[lambda event: None])
        ok(listened)
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.DEBUG, "test: call success in state closed")
        ]


class TestDecorator:
    def test_on_a_function(self):
        breaker, _ = make(fail_max=1)

        @breaker
        def add(a: int, b: int = 2, *, c: int = 3) -> int:
            """Add them."""
            return a + b + c

        assert add(1) == 6
        assert add(1, 1, c=1) == 3
        assert add.__name__ == "add"
        assert add.__doc__ == "Add them."
        assert inspect.signature(add) == inspect.signature(add.__wrapped__)  # type: ignore[attr-defined]

    def test_on_methods(self):
        breaker, _ = make(fail_max=2)

        class Client:
            def __init__(self, healthy: bool) -> None:
                self.healthy = healthy

            @breaker
            def fetch(self, key: str) -> str:
                if not self.healthy:
                    raise Boom(key)
                return f"{key} from {id(self)}"

        good, bad = Client(True), Client(False)
        assert good.fetch("k") == f"k from {id(good)}"
        with pytest.raises(Boom):
            bad.fetch("x")
        with pytest.raises(Boom):
            bad.fetch("y")
        with pytest.raises(CircuitOpen):
            good.fetch("k")  # one breaker for every instance

    def test_on_static_and_class_methods(self):
        breaker, _ = make()

        class Service:
            @staticmethod
            @breaker
            def ping() -> str:
                return "pong"

            @classmethod
            @breaker
            def name(cls) -> str:
                return cls.__name__

        assert Service.ping() == "pong"
        assert Service.name() == "Service"

    async def test_on_coroutine_functions(self):
        breaker, _ = make(fail_max=1)

        @breaker
        async def fetch(x: int) -> int:
            await asyncio.sleep(0)
            if x < 0:
                raise Boom
            return x * 2

        assert inspect.iscoroutinefunction(fetch)
        assert fetch.__name__ == "fetch"
        assert await fetch(4) == 8
        with pytest.raises(Boom):
            await fetch(-1)
        with pytest.raises(CircuitOpen):
            await fetch(4)

    async def test_on_async_methods(self):
        breaker, _ = make()

        class Client:
            @breaker
            async def get(self) -> Client:
                return self

        client = Client()
        assert await client.get() is client

    def test_refuses_non_callables(self):
        breaker, _ = make()
        with pytest.raises(TypeError, match="only decorate callables"):
            breaker(42)  # type: ignore[arg-type]

    def test_on_a_partial(self):
        breaker, _ = make()
        protected = breaker(functools.partial(lambda a, b: a - b, 10))
        assert protected(3) == 7


class TestCallAndAcall:
    def test_call_passes_arguments(self):
        breaker, _ = make()

        def greet(name: str, *, punctuation: str = ".") -> str:
            return f"hello {name}{punctuation}"

        assert breaker.call(greet, "you", punctuation="!") == "hello you!"

    def test_call_refuses_coroutine_functions(self):
        breaker, _ = make()

        async def fetch() -> None:
            return None

        with pytest.raises(TypeError, match="acall"):
            breaker.call(cast("Any", fetch))

    async def test_acall(self):
        breaker, _ = make(fail_max=1)

        async def fetch(x: int, *, y: int) -> int:
            return x + y

        async def down() -> int:
            raise Boom

        assert await breaker.acall(fetch, 1, y=2) == 3
        with pytest.raises(Boom):
            await breaker.acall(down)
        with pytest.raises(CircuitOpen):
            await breaker.acall(fetch, 1, y=2)

    async def test_acall_and_call_share_the_state(self):
        breaker, _ = make(fail_max=2)

        async def down() -> None:
            raise Boom

        with pytest.raises(Boom):
            await breaker.acall(down)
        fail(breaker)
        assert state_of(breaker) is State.OPEN


class TestGuard:
    def test_a_block_is_a_call(self):
        breaker, _ = make(fail_max=2)
        with breaker.guard() as guard:
            assert isinstance(guard, Guard)
        with pytest.raises(Boom), breaker.guard():
            raise Boom
        assert breaker.metrics().consecutive_failures == 1
        with pytest.raises(Boom), breaker.guard():
            raise Boom
        assert state_of(breaker) is State.OPEN
        with pytest.raises(CircuitOpen), breaker.guard():
            raise AssertionError("never runs")

    def test_entered_once_only(self):
        breaker, _ = make()
        guard = breaker.guard()
        with guard:
            pass
        with pytest.raises(RuntimeError, match="entered only once"), guard:
            pass

    def test_entered_once_only_even_while_inside(self):
        breaker, _ = make()
        guard = breaker.guard()
        with guard, pytest.raises(RuntimeError, match="entered only once"):
            guard.__enter__()

    def test_timed_blocks_are_slow_calls(self):
        breaker, clock = make(slow_call_rate=1.0, slow_call_duration=5, window_size=2, min_calls=2)
        for _ in range(2):
            with breaker.guard():
                clock.advance(5)
        assert state_of(breaker) is State.OPEN

    async def test_async_with(self):
        breaker, _ = make(fail_max=1)
        async with breaker.guard() as guard:
            assert isinstance(guard, Guard)
            await asyncio.sleep(0)
        with pytest.raises(Boom):
            async with breaker.guard():
                raise Boom
        with pytest.raises(CircuitOpen):
            async with breaker.guard():
                raise AssertionError("never runs")
        guard = breaker.guard()
        breaker.close()
        async with guard:
            pass
        with pytest.raises(RuntimeError, match="entered only once"):
            async with guard:
                pass

    async def test_async_with_cancelled_is_ignored(self):
        breaker, _ = make(fail_max=1)

        async def block() -> None:
            async with breaker.guard():
                await asyncio.sleep(3600)

        task = asyncio.create_task(block())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state_of(breaker) is State.CLOSED
