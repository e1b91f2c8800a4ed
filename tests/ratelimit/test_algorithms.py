"""The pure rate limiting algorithms: hand-computed scenarios and their invariants (hypothesis).

Arrival times in the property tests lie on a grid of 1/64 s, and in the "exact" domain limits and
periods are powers of two, so every number the algorithms compute is an exact binary fraction:
the properties can then be checked exactly, with no tolerance for float noise at the boundaries.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttress.ratelimit import ALGORITHMS, Decision, Rate
from buttress.ratelimit._algorithms import Log, State, decide

EXACT = ("fixed-window", "sliding-window", "token-bucket", "gcra")
TIMED = ("sliding-window", "sliding-window-counter", "token-bucket", "gcra")
GRID = 64  # arrival times are multiples of 1/64 s
EPS = 2.0**-16  # "slightly before": exact in binary, above EPSILON, far below the grid

Step = tuple[float, int, bool, int, float, float | None]
"""(now, cost, allowed, remaining, reset_after, retry_after) of one hand-computed decision."""


def live(states: Sequence[State], rates: Sequence[Rate], now: float) -> list[Any]:
    """What the states mean at ``now``: a log's entries still in the window, other states as is."""
    view: list[Any] = []
    for state, rate in zip(states, rates, strict=True):
        if isinstance(state, Log):
            view.append(tuple(entry for entry in state.entries if entry[0] > now - rate.period))
        else:
            view.append(None if state is None else tuple(state))
    return view


def fresh(rates: Sequence[Rate]) -> list[State]:
    return [None] * len(rates)


def run_steps(algorithm: str, rates: tuple[Rate, ...], steps: Sequence[Step]) -> list[State]:
    """Run hand-computed steps through ``decide``, checking every field of every decision."""
    states = fresh(rates)
    for number, (now, cost, allowed, remaining, reset, retry) in enumerate(steps):
        decision = decide(algorithm, states, rates, now, cost)
        got: tuple[Any, ...] = (
            decision.allowed,
            decision.remaining,
            decision.reset_after,
            decision.retry_after,
        )
        expected_retry = None if retry is None else pytest.approx(retry)
        want: tuple[Any, ...] = (allowed, remaining, pytest.approx(reset), expected_retry)
        assert got == want, f"step {number} at {now} (cost {cost}): {decision}"
        assert decision.degraded is False
        assert decision.limit == decision.rate.limit
    return states


class TestFixedWindow:
    def test_window_starts_at_the_first_hit(self):
        rate = (Rate(3, per=10),)
        run_steps(
            "fixed-window",
            rate,
            [
                (1005.0, 1, True, 2, 10.0, None),  # the window is [1005, 1015), not [1000, 1010)
                (1006.0, 1, True, 1, 9.0, None),
                (1007.0, 1, True, 0, 8.0, None),
                (1008.0, 1, False, 0, 7.0, 7.0),
                (1014.5, 1, False, 0, 0.5, 0.5),
                (1015.0, 1, True, 2, 10.0, None),  # a new window starts at this hit
                (1015.0, 3, False, 2, 10.0, 10.0),  # does not fit: nothing counted
                (1015.0, 2, True, 0, 10.0, None),
                (1024.999, 1, False, 0, 0.001, 0.001),
            ],
        )

    def test_a_client_may_get_twice_the_limit_around_a_boundary(self):
        # The documented weakness of fixed windows (and the reason for the other algorithms).
        rates = (Rate(5, per=10),)
        states = fresh(rates)
        assert decide("fixed-window", states, rates, 0.0, 1)  # the window is [0, 10)
        assert decide("fixed-window", states, rates, 9.5, 4)
        assert decide("fixed-window", states, rates, 10.0, 5)  # [10, 20): 9 admitted in 0.5 s
        assert not decide("fixed-window", states, rates, 10.5, 1)

    def test_an_idle_key_starts_afresh(self):
        rates = (Rate(2, per=10),)
        states = fresh(rates)
        decide("fixed-window", states, rates, 0.0, 2)
        decision = decide("fixed-window", states, rates, 1000.0, 2)
        assert decision.allowed
        assert decision.reset_after == 10.0
        assert states == [[2.0, 1010.0]]


class TestSlidingWindowLog:
    def test_exact_window_and_retry_after(self):
        rates = (Rate(3, per=10),)
        run_steps(
            "sliding-window",
            rates,
            [
                (1000.0, 1, True, 2, 10.0, None),
                (1004.0, 1, True, 1, 10.0, None),
                (1008.0, 1, True, 0, 10.0, None),
                # The oldest entry (1000) leaves the window (t - 10, t] at 1010.
                (1009.0, 1, False, 0, 9.0, 1.0),
                (1010.0, 1, True, 0, 10.0, None),  # a fixed window would admit 3 here
                (1010.0, 1, False, 0, 10.0, 4.0),  # next to leave: 1004, at 1014
                # At 1014 the log holds 1008 and 1010; a cost of 2 waits for 1008 to leave.
                (1014.0, 2, False, 1, 6.0, 4.0),
                (1014.0, 1, True, 0, 10.0, None),
                (1018.0, 2, False, 1, 6.0, 2.0),  # 1008 left at 1018; 1010 leaves at 1020
                (1020.0, 2, True, 0, 10.0, None),
            ],
        )

    def test_retry_after_sums_the_oldest_costs(self):
        rates = (Rate(5, per=10),)
        states = fresh(rates)
        for now, cost in [(0.0, 2), (1.0, 1), (2.0, 2)]:
            assert decide("sliding-window", states, rates, now, cost)
        decision = decide("sliding-window", states, rates, 3.0, 4)
        # 4 units must leave: 2 (t=0) + 1 (t=1) + 2 (t=2) covers it once t=2 leaves, at 12.
        assert decision.retry_after == 9.0
        assert decision.remaining == 0
        assert decision.reset_after == 9.0
        assert not decide("sliding-window", states, rates, 11.0, 4)
        assert decide("sliding-window", states, rates, 12.0, 4)

    def test_entry_leaves_exactly_one_period_later(self):
        rates = (Rate(1, per=10),)
        states = fresh(rates)
        assert decide("sliding-window", states, rates, 5.0, 1)
        assert not decide("sliding-window", states, rates, 14.999, 1)
        assert decide("sliding-window", states, rates, 15.0, 1)


class TestSlidingWindowCounter:
    def test_weighted_estimate_and_retry_after(self):
        rates = (Rate(10, per=60),)
        run_steps(
            "sliding-window-counter",
            rates,
            [
                (30.0, 6, True, 4, 90.0, None),  # window [0, 60); counts until 120
                # In [60, 120) at 80: estimate 6 * (1 - 20/60) = 4.
                (80.0, 6, True, 0, 100.0, None),
                # 4 + 6 + 1 > 10: wait until the previous share is 3, at 90.
                (80.0, 1, False, 0, 100.0, 10.0),
                (90.0, 1, True, 0, 90.0, None),  # 3 + 6 + 1 = 10
                # 3 + 7 + 1 > 10: the previous share must fall to 2, at 100.
                (90.0, 1, False, 0, 90.0, 10.0),
                # At 100 the estimate is 2 + 7 = 9; a cost of 4 cannot fit in this window
                # (7 + 4 > 10): wait until the next one, when 7 * (1 - f) + 4 <= 10, f = 1/7.
                (100.0, 4, False, 1, 80.0, 20.0 + 60.0 / 7),
                (100.0 + 20.0 + 60.0 / 7 + 1e-9, 4, True, 0, 120.0 - 60.0 / 7, None),
                (1000.0, 10, True, 0, 80.0, None),  # long idle: fresh; counts until 1080
            ],
        )

    def test_documented_bound_twice_the_limit_is_reachable_but_not_exceeded(self):
        # A burst at the end of one window, then the limit again late in the next one.
        rates = (Rate(10, per=60),)
        states = fresh(rates)
        admitted = [
            now
            for now in [59.0] * 10 + [118.5] * 20
            if decide("sliding-window-counter", states, rates, now, 1)
        ]
        in_window = [t for t in admitted if 118.5 - 60 < t <= 118.5]
        assert 10 < len(in_window) <= 20
        assert len(in_window) == 19  # 10 + 10 * (1 - 58.5/60) = 10.25 -> 9 more

    def test_an_idle_key_starts_afresh(self):
        rates = (Rate(3, per=10),)
        states = fresh(rates)
        decide("sliding-window-counter", states, rates, 5.0, 3)
        # At 12 the estimate is 3 * (1 - 2/10) = 2.4: no room for 1 more.
        assert not decide("sliding-window-counter", states, rates, 12.0, 1)
        decision = decide("sliding-window-counter", states, rates, 20.0, 3)  # two windows on
        assert decision.allowed
        assert decision.remaining == 0


class TestTokenBucket:
    STEPS: tuple[Step, ...] = (
        (0.0, 4, True, 0, 2.0, None),  # 4 tokens, 2 per second
        (0.0, 1, False, 0, 2.0, 0.5),
        (0.5, 1, True, 0, 2.0, None),
        (1.0, 2, False, 1, 1.5, 0.5),  # one token back; the second comes at 1.5
        (1.5, 2, True, 0, 2.0, None),
        (100.0, 4, True, 0, 2.0, None),  # a long idle still gives only 4 tokens
        (100.0, 1, False, 0, 2.0, 0.5),
        (100.25, 1, False, 0, 1.75, 0.25),
        (100.5, 1, True, 0, 2.0, None),
        (101.0, 1, True, 0, 2.0, None),
    )

    @pytest.mark.parametrize("algorithm", ["token-bucket", "gcra"])
    def test_refill_and_burst(self, algorithm):
        run_steps(algorithm, (Rate(4, per=2),), self.STEPS)

    @pytest.mark.parametrize("algorithm", ["token-bucket", "gcra"])
    def test_steady_rate_after_the_burst(self, algorithm):
        rates = (Rate(8, per=1),)
        states = fresh(rates)
        taken = [
            tick for tick in range(8 * 128 + 1) if decide(algorithm, states, rates, tick / 128, 1)
        ]
        # A hit every 1/128 s: the 8 of the burst, then one per 1/8 s for 8 s.
        assert taken[:8] == list(range(8))
        assert len(taken) == 8 + 64
        assert all(b - a == 16 for a, b in itertools.pairwise(taken[8:]))

    def test_gcra_state_is_one_timestamp(self):
        rates = (Rate(4, per=2),)
        states = fresh(rates)
        decide("gcra", states, rates, 10.0, 3)
        assert states == [[11.5]]
        decide("gcra", states, rates, 100.0, 1)  # long idle: the arrival time restarts at now
        assert states == [[100.5]]


class TestSeveralRates:
    def test_binding_rate_and_all_or_nothing(self):
        rates = (Rate(2, per=1), Rate(3, per=60))
        states = fresh(rates)
        first = decide("fixed-window", states, rates, 0.0, 1)
        assert (first.allowed, first.rate, first.remaining, first.reset_after) == (
            True,
            rates[0],
            1,
            1.0,
        )
        decide("fixed-window", states, rates, 0.0, 1)
        rejected = decide("fixed-window", states, rates, 0.0, 1)
        assert not rejected.allowed
        assert (rejected.rate, rejected.limit, rejected.retry_after) == (rates[0], 2, 1.0)
        assert states[1] == [2.0, 60.0]  # the hour limit was not charged for the rejection
        second = decide("fixed-window", states, rates, 1.0, 1)
        assert (second.allowed, second.rate, second.remaining, second.reset_after) == (
            True,
            rates[1],
            0,
            59.0,
        )
        blocked = decide("fixed-window", states, rates, 1.0, 1)
        assert (blocked.allowed, blocked.rate, blocked.retry_after) == (False, rates[1], 59.0)
        assert states[0] == [1.0, 2.0]  # the second limit admitted it, yet nothing was counted

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_rejection_by_one_rate_consumes_nothing_from_the_others(self, algorithm):
        rates = (Rate(100, per=60), Rate(1, per=1))
        states = fresh(rates)
        assert decide(algorithm, states, rates, 10.0, 1)
        before = live(copy.deepcopy(states), rates, 10.0)
        for _ in range(50):
            assert not decide(algorithm, states, rates, 10.0, 1)
        assert live(states, rates, 10.0) == before
        assert decide(algorithm, states, rates, 10.0, 1, consume=False).remaining == 0
        decision = decide(algorithm, states, rates, 10.0, 1, consume=False)
        assert decision.rate == rates[1]

    def test_the_latest_retry_binds_when_several_reject(self):
        rates = (Rate(1, per=10), Rate(1, per=20))
        states = fresh(rates)
        decide("fixed-window", states, rates, 0.0, 1)
        decision = decide("fixed-window", states, rates, 5.0, 1)
        assert (decision.rate, decision.retry_after, decision.limit) == (rates[1], 15.0, 1)

    def test_a_tie_in_remaining_binds_the_latest_reset(self):
        rates = (Rate(5, per=10), Rate(5, per=60))
        decision = decide("fixed-window", fresh(rates), rates, 0.0, 1)
        assert (decision.rate, decision.remaining, decision.reset_after) == (rates[1], 4, 60.0)


class TestPeekAndCost:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_peek_changes_nothing(self, algorithm):
        rates = (Rate(3, per=10),)
        states = fresh(rates)
        for _ in range(5):
            decision = decide(algorithm, states, rates, 1.0, 1, consume=False)
            assert (decision.allowed, decision.remaining) == (True, 2)
        assert states == [None]
        decide(algorithm, states, rates, 1.0, 2)
        before = live(copy.deepcopy(states), rates, 2.0)
        peeked = decide(algorithm, states, rates, 2.0, 1, consume=False)
        assert live(states, rates, 2.0) == before
        assert peeked == decide(algorithm, states, rates, 2.0, 1)
        assert not decide(algorithm, states, rates, 2.0, 1, consume=False)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_weighted_cost(self, algorithm):
        rates = (Rate(10, per=64),)
        states = fresh(rates)
        first = decide(algorithm, states, rates, 0.0, 4)
        assert (first.allowed, first.remaining) == (True, 6)
        second = decide(algorithm, states, rates, 0.0, 6)
        assert (second.allowed, second.remaining) == (True, 0)
        third = decide(algorithm, states, rates, 0.0, 1)
        assert not third.allowed
        assert third.retry_after is not None
        assert third.retry_after > 0

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_a_cost_that_does_not_fit_leaves_room_for_a_smaller_one(self, algorithm):
        rates = (Rate(10, per=64),)
        states = fresh(rates)
        decide(algorithm, states, rates, 0.0, 7)
        big = decide(algorithm, states, rates, 0.0, 4)
        assert (big.allowed, big.remaining) == (False, 3)
        assert decide(algorithm, states, rates, 0.0, 3).allowed


# -- properties ----------------------------------------------------------------------------------

EXACT_LIMITS = st.sampled_from([1, 2, 4, 8, 16])
EXACT_PERIODS = st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
ANY_LIMITS = st.integers(min_value=1, max_value=20)
ANY_PERIODS = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 10.0, 60.0])

Arrival = tuple[float, int]
History = tuple[tuple[Rate, ...], list[Arrival]]


@st.composite
def histories(draw: st.DrawFn, *, exact: bool = True, max_rates: int = 1) -> History:
    """Some rates and a sorted list of (time, cost) arrivals on the 1/64 s grid."""
    count = draw(st.integers(min_value=1, max_value=max_rates))
    limits, periods = (EXACT_LIMITS, EXACT_PERIODS) if exact else (ANY_LIMITS, ANY_PERIODS)
    rates = tuple(Rate(draw(limits), per=draw(periods)) for _ in range(count))
    smallest = min(rate.limit for rate in rates)
    ticks = int(max(rate.period for rate in rates) * GRID)
    gaps = st.one_of(
        st.just(0), st.integers(0, 8), st.integers(0, ticks), st.integers(0, 3 * ticks)
    )
    costs = st.one_of(st.just(1), st.integers(1, smallest))
    steps = draw(st.lists(st.tuples(gaps, costs), min_size=1, max_size=50))
    now = 1000 + draw(st.integers(0, ticks)) / GRID
    arrivals: list[Arrival] = []
    for gap, cost in steps:
        now += gap / GRID
        arrivals.append((now, cost))
    return rates, arrivals


Record = tuple[float, int, Decision, list[State], list[State]]
"""(now, cost, decision, states before, states after) of one decision of a history."""


def replay(algorithm: str, rates: tuple[Rate, ...], arrivals: list[Arrival]) -> list[Record]:
    states = fresh(rates)
    records: list[Record] = []
    for now, cost in arrivals:
        before = copy.deepcopy(states)
        decision = decide(algorithm, states, rates, now, cost)
        records.append((now, cost, decision, before, copy.deepcopy(states)))
    return records


def admitted(records: list[Record]) -> list[Arrival]:
    return [(now, cost) for now, cost, decision, _, _ in records if decision.allowed]


def used_in(arrivals: list[Arrival], low: float, high: float) -> int:
    """Units admitted at times in (low, high]."""
    return sum(cost for now, cost in arrivals if low < now <= high)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestInvariants:
    @PROPERTY
    @given(histories(max_rates=2))
    def test_fixed_window_never_admits_more_than_the_limit_in_one_window(self, history):
        rates, arrivals = history
        records = replay("fixed-window", rates, arrivals)
        for rate in rates:
            end, count = -1.0, 0
            for now, cost, decision, before, _ in records:
                opens = now >= end
                if len(rates) == 1:  # rejected only when the current window is full
                    assert decision.allowed == (opens or count + cost <= rate.limit)
                    assert before[0] is None or opens == (now >= before[0][1])  # type: ignore[index]
                if not decision.allowed:
                    continue
                if opens:  # a window opens at the first admitted hit after the last one ended
                    end, count = now + rate.period, 0
                count += cost
                assert count <= rate.limit, f"{rate} window ending {end}: {count}"

    @PROPERTY
    @given(histories(max_rates=2))
    def test_sliding_log_never_admits_more_than_the_limit_in_any_window(self, history):
        rates, arrivals = history
        records = replay("sliding-window", rates, arrivals)
        taken = admitted(records)
        # The busiest window (t - period, t] ends at an admitted arrival: checking those is enough.
        for rate in rates:
            for now, _ in taken:
                assert used_in(taken, now - rate.period, now) <= rate.limit
        # And it is exact: a request is rejected only if it would overflow some window.
        earlier: list[Arrival] = []
        for now, cost, decision, _, _ in records:
            overflows = any(
                used_in(earlier, now - rate.period, now) + cost > rate.limit for rate in rates
            )
            assert decision.allowed == (not overflows)
            if decision.allowed:
                earlier.append((now, cost))

    @PROPERTY
    @given(histories(max_rates=2), st.sampled_from(["token-bucket", "gcra"]))
    def test_bucket_and_gcra_never_burst_beyond_the_limit(self, history, algorithm):
        rates, arrivals = history
        taken = admitted(replay(algorithm, rates, arrivals))
        for rate in rates:
            for first, (start, _) in enumerate(taken):
                total = 0
                for now, cost in taken[first:]:
                    total += cost
                    assert total <= rate.limit + (now - start) * rate.limit / rate.period

    @PROPERTY
    @given(histories())
    def test_bucket_matches_an_exact_model_and_gcra_matches_the_bucket(self, history):
        (rate,), arrivals = history
        bucket, gcra = replay("token-bucket", (rate,), arrivals), replay("gcra", (rate,), arrivals)
        tokens, updated = Fraction(rate.limit), Fraction(0)
        for (now, cost, decision, _, _), (_, _, twin, _, _) in zip(bucket, gcra, strict=True):
            exact_now = Fraction(now)
            level = min(
                Fraction(rate.limit),
                tokens + (exact_now - updated) * rate.limit / Fraction(rate.period),
            )
            assert decision.allowed == (level >= cost)
            if decision.allowed:
                tokens, updated = level - cost, exact_now
            assert (twin.allowed, twin.remaining, twin.reset_after, twin.retry_after) == (
                decision.allowed,
                decision.remaining,
                decision.reset_after,
                decision.retry_after,
            )

    @PROPERTY
    @given(histories(max_rates=2))
    def test_sliding_counter_stays_within_its_documented_bound(self, history):
        rates, arrivals = history
        taken = admitted(replay("sliding-window-counter", rates, arrivals))
        for rate in rates:
            for now, _ in taken:
                assert used_in(taken, now - rate.period, now) <= 2 * rate.limit
            windows: dict[int, int] = {}
            for now, cost in taken:  # and never more than the limit in one aligned window
                index = int(now // rate.period)
                windows[index] = windows.get(index, 0) + cost
                assert windows[index] <= rate.limit

    @PROPERTY
    @given(histories(max_rates=2, exact=False), st.sampled_from(TIMED))
    def test_invariants_hold_off_the_exact_domain(self, history, algorithm):
        # Limits and periods that are not powers of two: float rounding may move a boundary by
        # an ulp, never more than that. (The fixed window only counts: nothing to round.)
        rates, arrivals = history
        taken = admitted(replay(algorithm, rates, arrivals))
        for rate in rates:
            slack = 1e-9 * rate.limit
            for first, (start, _) in enumerate(taken):
                if algorithm == "sliding-window":
                    assert used_in(taken, start - rate.period, start) <= rate.limit
                elif algorithm == "sliding-window-counter":
                    assert used_in(taken, start - rate.period, start) <= 2 * rate.limit
                else:
                    total = 0
                    for now, cost in taken[first:]:
                        total += cost
                        bound = rate.limit + (now - start) * rate.limit / rate.period
                        assert total <= bound + slack


class TestDecisionHonesty:
    @PROPERTY
    @given(histories(max_rates=2), st.sampled_from(ALGORITHMS))
    def test_peek_equals_hit_and_a_rejection_changes_nothing(self, history, algorithm):
        rates, arrivals = history
        states = fresh(rates)
        for now, cost in arrivals:
            before = live(copy.deepcopy(states), rates, now)
            peeked = decide(algorithm, states, rates, now, cost, consume=False)
            assert live(states, rates, now) == before
            decision = decide(algorithm, states, rates, now, cost)
            assert peeked == decision
            if not decision.allowed:
                assert live(states, rates, now) == before
                assert decision.retry_after is not None
            else:
                assert decision.retry_after is None

    @PROPERTY
    @given(histories(max_rates=2), st.sampled_from(ALGORITHMS))
    def test_all_or_nothing_matches_each_rate_alone(self, history, algorithm):
        # Each rate's state after a multi-rate history equals that rate alone fed the admitted
        # requests; and a rejection is always some single rate's rejection.
        rates, arrivals = history
        states = fresh(rates)
        alone: list[list[State]] = [[None] for _ in rates]
        for now, cost in arrivals:
            decision = decide(algorithm, states, rates, now, cost)
            verdicts = [
                decide(algorithm, single, (rate,), now, cost, consume=decision.allowed).allowed
                for single, rate in zip(alone, rates, strict=True)
            ]
            assert decision.allowed == all(verdicts)
            for index, rate in enumerate(rates):
                assert live([states[index]], [rate], now) == live(alone[index], [rate], now)

    @PROPERTY
    @given(histories(max_rates=2), st.sampled_from(EXACT))
    def test_retry_after_is_exact(self, history, algorithm):
        rates, arrivals = history
        for now, cost, decision, before, _ in replay(algorithm, rates, arrivals):
            if decision.allowed:
                continue
            retry = decision.retry_after
            assert retry is not None
            assert retry > 0
            at = decide(algorithm, copy.deepcopy(before), rates, now + retry, cost, consume=False)
            assert at.allowed, f"rejected again at now + retry_after ({now} + {retry}): {at}"
            if retry > EPS:
                early = decide(
                    algorithm, copy.deepcopy(before), rates, now + retry - EPS, cost, consume=False
                )
                assert not early.allowed, f"admitted before retry_after ({now} + {retry})"

    @PROPERTY
    @given(histories(max_rates=2))
    def test_sliding_counter_retry_after_is_honest_up_to_rounding(self, history):
        # Its retry_after divides by the counts, so it is exact only up to float rounding.
        rates, arrivals = history
        algorithm = "sliding-window-counter"
        for now, cost, decision, before, _ in replay(algorithm, rates, arrivals):
            if decision.allowed:
                continue
            retry = decision.retry_after
            assert retry is not None
            late = now + retry + 1e-9
            assert decide(algorithm, copy.deepcopy(before), rates, late, cost, consume=False)
            # Admissions may come up to EPSILON (1 µs) early: the slack that absorbs float noise.
            if retry > 1e-5:
                early = now + retry - 1e-5
                assert not decide(
                    algorithm, copy.deepcopy(before), rates, early, cost, consume=False
                )

    @PROPERTY
    @given(histories(max_rates=2, exact=False), st.sampled_from(ALGORITHMS))
    def test_retry_after_is_honest_up_to_rounding_off_the_exact_domain(self, history, algorithm):
        rates, arrivals = history
        for now, cost, decision, before, _ in replay(algorithm, rates, arrivals):
            if decision.allowed:
                continue
            retry = decision.retry_after
            assert retry is not None
            late = now + retry + 1e-9
            assert decide(algorithm, copy.deepcopy(before), rates, late, cost, consume=False)
            # Admissions may come up to EPSILON (1 µs) early: the slack that absorbs float noise.
            if retry > 1e-5:
                early = now + retry - 1e-5
                assert not decide(
                    algorithm, copy.deepcopy(before), rates, early, cost, consume=False
                )

    @PROPERTY
    @given(histories(), st.sampled_from(ALGORITHMS))
    def test_reset_after_is_when_the_quota_is_whole_again(self, history, algorithm):
        (rate,), arrivals = history
        for now, _, decision, _, after in replay(algorithm, (rate,), arrivals):
            reset = decision.reset_after
            whole = decide(algorithm, copy.deepcopy(after), (rate,), now + reset, 1, consume=False)
            assert whole.remaining == rate.limit - 1, f"not whole at now + {reset}: {whole}"
            if reset > EPS:
                partial = decide(
                    algorithm, copy.deepcopy(after), (rate,), now + reset - EPS, 1, consume=False
                )
                assert partial.remaining < rate.limit - 1 or not partial.allowed

    @PROPERTY
    @given(histories(), st.sampled_from(ALGORITHMS))
    def test_remaining_is_exact(self, history, algorithm):
        # ``remaining`` more unit requests at the same instant are admitted, and not one more.
        (rate,), arrivals = history
        for now, _, decision, _, after in replay(algorithm, (rate,), arrivals):
            states = copy.deepcopy(after)
            for number in range(decision.remaining):
                assert decide(algorithm, states, (rate,), now, 1), f"unit {number + 1} rejected"
            assert not decide(algorithm, states, (rate,), now, 1).allowed
