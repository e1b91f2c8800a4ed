"""Each algorithm behind an AdaptiveConcurrency, against a simulated server on a fake clock.

The server (see ``_sim.py``) has 20 workers at 10 ms per request, so it serves at most 2000
requests per second, and its latency grows as soon as more than 20 requests are in flight; a
queue of 40 and a client timeout of 50 ms turn heavier overload into drops. One hundred clients
send requests in a closed loop, far more than the server can take, so the limit alone decides
what reaches it. The capacity then falls to 5 workers for 10 s and comes back.

The bands are each algorithm's known equilibrium, with a margin: Vegas keeps between ``alpha``
and ``beta`` requests queued (3 to 6 at these limits); AIMD, given a timeout of 1.5 times the
base latency, grows until requests time out; Gradient2 tolerates some queueing through its
additive allowance (4 per update), which dominates at small capacities.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from buttress.adaptive import AIMD, Gradient2, LimitAlgorithm, Vegas, Windowed
from tests.adaptive._sim import Trace, simulate

CAPACITY, DEGRADED, LATENCY = 20, 5, 0.01
PHASES = ((10.0, CAPACITY), (10.0, DEGRADED), (10.0, CAPACITY))
HEALTHY, OVERLOADED, RECOVERED = (5.0, 10.0), (15.0, 20.0), (25.0, 30.0)
FULL_RATE = CAPACITY / LATENCY  # requests per second the healthy server can complete

ALGORITHMS: dict[str, Callable[[int], LimitAlgorithm]] = {
    "aimd": lambda initial: AIMD(initial_limit=initial, timeout=1.5 * LATENCY),
    "vegas": lambda initial: Vegas(initial_limit=initial, rng=random.Random(1)),
    "gradient2": lambda initial: Gradient2(initial_limit=initial),
    "windowed-vegas": lambda initial: Windowed(
        Vegas(initial_limit=initial, rng=random.Random(1)), size=10
    ),
}

# The settled limit's median must lie in [capacity * low, capacity * high + extra].
BANDS: dict[str, tuple[float, float, float]] = {
    "aimd": (1.0, 2.5, 0.0),
    "vegas": (1.0, 1.5, 6.0),  # beta: the most requests Vegas leaves queued
    "gradient2": (1.0, 2.0, 16.0),  # four times the additive allowance
    "windowed-vegas": (1.0, 1.5, 6.0),
}

_runs: dict[tuple[str, int], Trace] = {}


def run(name: str, initial: int = 1) -> Trace:
    """The three-phase run of ``name``, simulated once per test session."""
    key = (name, initial)
    if key not in _runs:
        _runs[key] = simulate(ALGORITHMS[name](initial), phases=PHASES)[0]
    return _runs[key]


def in_band(name: str, limit: float, capacity: int) -> bool:
    low, high, extra = BANDS[name]
    return capacity * low <= limit <= capacity * high + extra


@pytest.mark.parametrize("name", ALGORITHMS)
class TestAgainstASimulatedServer:
    def test_the_limit_settles_near_capacity_when_latency_rises_with_load(self, name):
        trace = run(name)
        median = trace.median_limit(*HEALTHY)
        assert in_band(name, median, CAPACITY), median
        assert trace.goodput(*HEALTHY) >= 0.85 * FULL_RATE

    def test_the_limit_follows_the_capacity_down(self, name):
        trace = run(name)
        median = trace.median_limit(*OVERLOADED)
        assert in_band(name, median, DEGRADED), median
        assert median < 0.7 * trace.median_limit(*HEALTHY)
        assert trace.goodput(*OVERLOADED) >= 0.6 * DEGRADED / LATENCY

    def test_the_limit_grows_back_when_the_server_recovers(self, name):
        trace = run(name)
        regrown = [at for at, limit in trace.limits if at >= 20.0 and limit >= 0.8 * CAPACITY]
        assert regrown
        assert regrown[0] - 20.0 < 1.0
        median = trace.median_limit(*RECOVERED)
        assert in_band(name, median, CAPACITY), median
        assert trace.goodput(*RECOVERED) >= 0.85 * FULL_RATE

    def test_it_never_sticks_at_one(self, name):
        # Starting at the minimum of 1 with a healthy server, the limit must grow.
        trace = run(name, initial=1)
        reached = [at for at, limit in trace.limits if limit >= 0.8 * CAPACITY]
        assert reached
        assert reached[0] < 1.0

    def test_the_start_does_not_matter_once_settled(self, name):
        high = run(name, initial=100)
        assert in_band(name, high.median_limit(*HEALTHY), CAPACITY)


class TestLatencyAlone:
    """A server that never drops: only the latency can tell a limit it is too high."""

    @pytest.mark.parametrize("name", ["vegas", "gradient2", "windowed-vegas"])
    def test_delay_based_algorithms_settle_on_latency_alone(self, name):
        trace, _ = simulate(
            ALGORITHMS[name](1), queue=10**6, timeout=1e9, phases=((5.0, CAPACITY),)
        )
        assert not any(dropped for _, _, dropped in trace.completions)
        median = trace.median_limit(2.5, 5.0)
        assert in_band(name, median, CAPACITY), median
        assert trace.median_rtt(2.5, 5.0) < 2 * LATENCY

    def test_aimd_without_a_timeout_cannot_see_latency(self):
        # The reason AIMD takes a timeout: with no drop it grows while the limit is in use, here
        # to twice the 100 clients, and every request waits in the server's queue.
        trace, limiter = simulate(
            AIMD(initial_limit=1), queue=10**6, timeout=1e9, phases=((5.0, CAPACITY),)
        )
        assert limiter.limit >= 100
        assert trace.median_rtt(2.5, 5.0) > 4 * LATENCY
