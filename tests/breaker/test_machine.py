"""The pure breaker rules: times and outcomes in, admissions and transitions out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from buttress.breaker._machine import Machine, Rules, State, Transition
from buttress.breaker._window import Totals

T0 = 1000.0


def rules(**changes: Any) -> Rules:
    base = Rules(
        fail_max=3,
        failure_rate=None,
        slow_call_rate=None,
        slow_call_duration=None,
        window_type="count",
        window_size=10,
        window_buckets=10,
        min_calls=10,
        reset_timeout=30.0,
        reset_timeout_multiplier=1.0,
        reset_timeout_max=30.0,
        half_open_max_calls=1,
        success_threshold=1,
    )
    return dataclasses.replace(base, **changes)


def no_clock() -> float:
    raise AssertionError("the machine read its clock although it was given the time")


def machine_for(**changes: Any) -> Machine:
    """A machine that must use the times it is given (every call below passes one)."""
    return Machine(rules(**changes), no_clock)


def state_of(machine: Machine) -> State:
    """The state, read through a call so that type checkers do not narrow it between reads."""
    return machine.state


def admit(machine: Machine, now: float = T0) -> int:
    generation, _ = machine.acquire(now)
    assert generation >= 0, "expected the call to be admitted"
    return generation


def fail(machine: Machine, now: float = T0, slow: bool = False) -> Transition | None:
    return machine.record(admit(machine, now), True, slow, now)


def succeed(machine: Machine, now: float = T0, slow: bool = False) -> Transition | None:
    return machine.record(admit(machine, now), False, slow, now)


def tripped(machine: Machine, now: float = T0) -> Transition:
    """Trip a fail_max machine by failing until it opens."""
    for _ in range(100):
        transition = fail(machine, now)
        if transition is not None:
            return transition
    raise AssertionError("the machine never tripped")


class TestState:
    def test_values_and_str(self):
        assert [state.value for state in State] == [
            "closed",
            "open",
            "half_open",
            "forced_open",
            "disabled",
        ]
        assert str(State.HALF_OPEN) == "half_open"
        assert State("open") is State.OPEN
        assert isinstance(State.OPEN, str)


class TestRules:
    def test_frozen(self):
        with pytest.raises(dataclasses.FrozenInstanceError):
            rules().fail_max = 4  # type: ignore[misc]


class TestAdmission:
    def test_closed_admits_with_the_current_generation(self):
        machine = machine_for()
        assert state_of(machine) is State.CLOSED
        generation, transition = machine.acquire(T0)
        assert (generation, transition) == (machine.generation, None)

    def test_open_rejects_until_the_reset_timeout(self):
        machine = machine_for(fail_max=1)
        tripped(machine)
        assert machine.acquire(T0) == (-1, None)
        assert machine.acquire(T0 + 29.999) == (-1, None)
        assert state_of(machine) is State.OPEN

    def test_the_first_call_after_the_reset_timeout_is_a_trial(self):
        machine = machine_for(fail_max=1)
        tripped(machine)
        before = machine.generation
        generation, transition = machine.acquire(T0 + 30)
        assert generation >= 0
        assert transition == Transition(State.OPEN, State.HALF_OPEN, "the reset timeout passed")
        assert state_of(machine) is State.HALF_OPEN
        assert generation != before  # a new generation

    def test_half_open_admits_at_most_half_open_max_calls(self):
        machine = machine_for(fail_max=1, half_open_max_calls=2)
        tripped(machine)
        first, _ = machine.acquire(T0 + 30)
        second, _ = machine.acquire(T0 + 30)
        assert first >= 0
        assert second >= 0
        assert machine.acquire(T0 + 30) == (-1, None)
        assert machine.retry_after(T0 + 30) == 0.0

    def test_forced_open_rejects_forever_and_disabled_admits(self):
        machine = machine_for()
        machine.force(State.FORCED_OPEN, "test", T0)
        assert machine.acquire(T0 + 1e9) == (-1, None)
        machine.force(State.DISABLED, "test", T0)
        generation, transition = machine.acquire(T0)
        assert generation >= 0
        assert transition is None


class TestRetryAfter:
    def test_per_state(self):
        machine = machine_for(fail_max=1)
        assert machine.retry_after(T0) == 0.0
        tripped(machine)
        assert machine.retry_after(T0) == 30.0
        assert machine.retry_after(T0 + 12.5) == 17.5
        assert machine.retry_after(T0 + 100) == 0.0  # never negative
        machine.force(State.FORCED_OPEN, "test", T0)
        assert machine.retry_after(T0) is None
        machine.force(State.DISABLED, "test", T0)
        assert machine.retry_after(T0) == 0.0


class TestRecordClosed:
    def test_fail_max_counts_failures_in_a_row(self):
        machine = machine_for(fail_max=3)
        assert fail(machine) is None
        assert fail(machine) is None
        assert succeed(machine) is None  # resets the count
        assert fail(machine) is None
        assert fail(machine) is None
        assert machine.consecutive == 2
        transition = fail(machine)
        assert transition == Transition(State.CLOSED, State.OPEN, "3 failures in a row", 30.0)
        assert state_of(machine) is State.OPEN
        assert machine.consecutive == 0

    def test_failure_rate_once_min_calls_are_recorded(self):
        machine = machine_for(fail_max=None, failure_rate=0.5, window_size=10, min_calls=4)
        assert fail(machine) is None
        assert fail(machine) is None
        assert fail(machine) is None  # 3 of 3 failed, but fewer than min_calls
        transition = succeed(machine)  # the success completing min_calls trips: 3 of 4
        assert transition is not None
        assert transition.new is State.OPEN
        assert transition.reason == "failure rate 75% >= 50% over 4 calls"

    def test_a_success_after_a_success_completing_min_calls_trips(self):
        # No failures in a row when the deciding call comes: only the window can trip it.
        machine = machine_for(fail_max=None, failure_rate=0.3, window_size=10, min_calls=3)
        assert fail(machine) is None
        assert succeed(machine) is None
        transition = succeed(machine)  # 1 of 3 failed: 33% >= 30%
        assert transition is not None
        assert transition.reason == "failure rate 33% >= 30% over 3 calls"

    def test_failure_rate_below_the_threshold_does_not_trip(self):
        machine = machine_for(fail_max=None, failure_rate=0.6, window_size=4, min_calls=4)
        for _ in range(20):
            assert succeed(machine) is None
            assert succeed(machine) is None
            assert fail(machine) is None  # 1 or 2 failures in any 4 in a row: < 60%
        assert state_of(machine) is State.CLOSED

    def test_the_rate_threshold_is_inclusive(self):
        machine = machine_for(fail_max=None, failure_rate=0.5, window_size=4, min_calls=4)
        succeed(machine)
        succeed(machine)
        fail(machine)
        transition = fail(machine)
        assert transition is not None
        assert transition.reason == "failure rate 50% >= 50% over 4 calls"

    def test_slow_call_rate(self):
        machine = machine_for(
            fail_max=None,
            slow_call_rate=0.5,
            slow_call_duration=1.0,
            window_size=4,
            min_calls=2,
        )
        assert succeed(machine, slow=False) is None
        transition = succeed(machine, slow=True)
        assert transition is not None
        assert transition.reason == "slow-call rate 50% >= 50% over 2 calls"

    def test_time_window_rate(self):
        machine = machine_for(
            fail_max=None,
            failure_rate=0.5,
            window_type="time",
            window_size=10.0,
            window_buckets=10,
            min_calls=3,
        )
        fail(machine, T0)
        fail(machine, T0 + 1)
        machine_totals = machine.totals(T0 + 1)
        assert machine_totals == Totals(2, 2, 0)
        # Ten seconds later both failures have left: one success is 1 call, 0 failures.
        assert succeed(machine, T0 + 12) is None
        assert machine.totals(T0 + 12) == Totals(1, 0, 0)
        assert state_of(machine) is State.CLOSED

    def test_windows_record_only_when_a_rate_is_configured(self):
        machine = machine_for(fail_max=5)
        fail(machine)
        succeed(machine)
        assert machine.totals(T0) == Totals(0, 0, 0)


class TestRecordHalfOpen:
    def open_then_half_open(self, **changes: Any) -> tuple[Machine, int]:
        machine = machine_for(fail_max=1, **changes)
        tripped(machine)
        generation, transition = machine.acquire(T0 + 30)
        assert transition is not None
        return machine, generation

    def test_success_threshold_successes_close(self):
        machine, generation = self.open_then_half_open(success_threshold=2)
        assert machine.record(generation, False, False, T0 + 30) is None
        generation, _ = machine.acquire(T0 + 30)
        transition = machine.record(generation, False, False, T0 + 30)
        assert transition == Transition(State.HALF_OPEN, State.CLOSED, "2 trial call(s) succeeded")
        assert state_of(machine) is State.CLOSED
        assert machine.retry_after(T0 + 30) == 0.0

    def test_a_failure_reopens(self):
        machine, generation = self.open_then_half_open(success_threshold=2)
        transition = machine.record(generation, True, False, T0 + 31)
        assert transition == Transition(State.HALF_OPEN, State.OPEN, "a trial call failed", 30.0)
        assert machine.retry_after(T0 + 31) == 30.0

    def test_slow_trial_successes_still_count_as_successes(self):
        machine, generation = self.open_then_half_open()
        transition = machine.record(generation, False, True, T0 + 30)
        assert transition is not None
        assert transition.new is State.CLOSED

    def test_release_frees_the_slot_without_an_outcome(self):
        machine, generation = self.open_then_half_open()
        assert machine.acquire(T0 + 30) == (-1, None)
        machine.release(generation)
        assert state_of(machine) is State.HALF_OPEN
        again, _ = machine.acquire(T0 + 30)
        assert again == generation

    def test_a_stale_release_frees_nothing(self):
        machine, generation = self.open_then_half_open()
        machine.record(generation, True, False, T0 + 30)  # reopens
        new, _ = machine.acquire(T0 + 60)
        assert new >= 0
        machine.release(generation)  # the old trial: not this generation's slot
        assert machine.acquire(T0 + 60) == (-1, None)


class TestClockReading:
    """Without the time of an outcome, the machine reads its clock only to start an open period."""

    def test_a_trip_reads_the_clock(self):
        readings: list[float] = []

        def now() -> float:
            readings.append(5000.0)
            return 5000.0

        machine = Machine(rules(fail_max=2), now)
        generation, _ = machine.acquire(T0)
        assert machine.record(generation, True, False, None) is None
        assert machine.record(generation, False, False, None) is None
        assert machine.record(generation, True, False, None) is None
        assert readings == []  # nothing needed the time yet
        transition = machine.record(generation, True, False, None)
        assert transition is not None
        assert readings == [5000.0]
        assert machine.retry_after(5000.0) == 30.0

    def test_a_failed_trial_reads_the_clock(self):
        machine = Machine(rules(fail_max=1), lambda: 7000.0)
        machine.force(State.HALF_OPEN, "trial", T0)
        generation, _ = machine.acquire(T0)
        assert machine.record(generation, True, False, None) is not None
        assert machine.retry_after(7000.0) == 30.0

    def test_a_success_completing_min_calls_reads_the_clock_when_it_trips(self):
        machine = Machine(
            rules(fail_max=None, failure_rate=0.5, window_size=2, min_calls=2), lambda: 9000.0
        )
        generation, _ = machine.acquire(T0)
        assert machine.record(generation, True, False, None) is None
        assert machine.record(generation, False, False, None) is not None
        assert machine.retry_after(9000.0) == 30.0


class TestGrowth:
    def test_many_trips_in_a_row_stay_at_the_cap(self):
        # A long outage: hundreds of failed trials in a row. The growth must not overflow.
        machine = machine_for(
            fail_max=1, reset_timeout=1.0, reset_timeout_multiplier=10.0, reset_timeout_max=60.0
        )
        periods = set()
        for _ in range(400):
            transition = machine.force(State.OPEN, "again", T0)
            assert transition is not None
            periods.add(transition.open_for)
        assert 60.0 in periods
        assert max(p for p in periods if p is not None) == 60.0

    def test_the_open_period_grows_on_trips_in_a_row_and_is_capped(self):
        machine = machine_for(
            fail_max=1, reset_timeout=10.0, reset_timeout_multiplier=2.0, reset_timeout_max=35.0
        )
        now = T0
        periods = [tripped(machine, now).open_for]
        for _ in range(4):
            now = machine.open_until
            generation, _ = machine.acquire(now)
            transition = machine.record(generation, True, False, now)
            assert transition is not None
            periods.append(transition.open_for)
        assert periods == [10.0, 20.0, 35.0, 35.0, 35.0]

    def test_closing_resets_the_growth(self):
        machine = machine_for(
            fail_max=1,
            reset_timeout=10.0,
            reset_timeout_multiplier=3.0,
            reset_timeout_max=100.0,
        )
        tripped(machine)
        generation, _ = machine.acquire(T0 + 10)
        assert machine.record(generation, True, False, T0 + 10) is not None  # 30 s now
        generation, _ = machine.acquire(T0 + 40)
        assert machine.record(generation, False, False, T0 + 40) is not None  # closed
        assert tripped(machine, T0 + 50).open_for == 10.0


class TestGeneration:
    def test_an_outcome_from_an_earlier_state_is_not_counted(self):
        machine = machine_for(fail_max=1)
        old = admit(machine)
        machine.force(State.OPEN, "by hand", T0)
        trial, _ = machine.acquire(T0 + 30)
        assert machine.record(old, True, False, T0 + 30) is None  # admitted while CLOSED
        assert state_of(machine) is State.HALF_OPEN
        assert machine.record(trial, False, False, T0 + 30) is not None
        assert state_of(machine) is State.CLOSED
        assert machine.record(old, True, False, T0 + 30) is None
        assert state_of(machine) is State.CLOSED
        assert machine.consecutive == 0

    def test_every_transition_starts_a_new_generation(self):
        machine = machine_for()
        seen = {machine.generation}
        for state in [State.OPEN, State.HALF_OPEN, State.FORCED_OPEN, State.DISABLED, State.CLOSED]:
            assert machine.force(state, "by hand", T0) is not None
            assert machine.generation not in seen
            seen.add(machine.generation)


class TestForce:
    def test_transitions_and_reasons(self):
        machine = machine_for(reset_timeout=5.0, reset_timeout_max=5.0)
        assert machine.force(State.OPEN, "opened", T0) == Transition(
            State.CLOSED, State.OPEN, "opened", 5.0
        )
        assert machine.retry_after(T0) == 5.0
        assert machine.force(State.HALF_OPEN, "trial", T0) == Transition(
            State.OPEN, State.HALF_OPEN, "trial"
        )
        assert machine.force(State.FORCED_OPEN, "held", T0) == Transition(
            State.HALF_OPEN, State.FORCED_OPEN, "held"
        )
        assert machine.force(State.DISABLED, "off", T0) == Transition(
            State.FORCED_OPEN, State.DISABLED, "off"
        )
        assert machine.force(State.CLOSED, "on", T0) == Transition(
            State.DISABLED, State.CLOSED, "on"
        )

    @pytest.mark.parametrize("state", [State.FORCED_OPEN, State.DISABLED])
    def test_the_same_state_again_changes_nothing(self, state):
        machine = machine_for()
        assert machine.force(state, "once", T0) is not None
        generation = machine.generation
        assert machine.force(state, "twice", T0) is None
        assert machine.generation == generation

    def test_half_open_again_restarts_the_trials(self):
        machine = machine_for(half_open_max_calls=1, success_threshold=2)
        machine.force(State.HALF_OPEN, "trial", T0)
        first = admit(machine)
        assert machine.record(first, False, False, T0) is None  # 1 of 2 successes
        held = admit(machine)
        transition = machine.force(State.HALF_OPEN, "again", T0)
        assert transition == Transition(State.HALF_OPEN, State.HALF_OPEN, "again")
        fresh = admit(machine)  # the slot of the earlier trial was given back
        assert fresh != held
        assert machine.record(held, False, False, T0) is None  # an earlier trial: not counted
        assert machine.record(fresh, False, False, T0) is None  # 1 of 2 again
        assert state_of(machine) is State.HALF_OPEN
        assert machine.record(admit(machine), False, False, T0) is not None
        assert state_of(machine) is State.CLOSED

    def test_opening_again_is_another_trip(self):
        machine = machine_for(
            reset_timeout=1.0, reset_timeout_multiplier=2.0, reset_timeout_max=8.0
        )
        periods = [machine.force(State.OPEN, "again", T0) for _ in range(5)]
        assert [p.open_for for p in periods if p is not None] == [1.0, 2.0, 4.0, 8.0, 8.0]

    def test_closing_when_closed_forgets_the_window_and_counts(self):
        machine = machine_for(fail_max=3, failure_rate=0.9, window_size=10, min_calls=10)
        fail(machine)
        fail(machine)
        assert machine.totals(T0) == Totals(2, 2, 0)
        assert machine.force(State.CLOSED, "reset", T0) is None
        assert machine.totals(T0) == Totals(0, 0, 0)
        assert machine.consecutive == 0
        fail(machine)
        fail(machine)
        assert state_of(machine) is State.CLOSED  # two, not four, in a row

    def test_disabled_records_but_never_trips(self):
        machine = machine_for(fail_max=1, failure_rate=0.5, window_size=4, min_calls=1)
        machine.force(State.DISABLED, "off", T0)
        for _ in range(10):
            assert fail(machine) is None
        assert state_of(machine) is State.DISABLED
        assert machine.totals(T0) == Totals(4, 4, 0)
