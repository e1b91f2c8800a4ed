"""The limit algorithms alone: their rules, their invariants (hypothesis), their arguments."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress.adaptive import AIMD, Gradient2, LimitAlgorithm, Vegas, Windowed, log10_root

Factory = Callable[..., LimitAlgorithm]


def _vegas(**kwargs: object) -> Vegas:
    return Vegas(rng=random.Random(0), **kwargs)  # type: ignore[arg-type]


def _windowed(**kwargs: object) -> Windowed:
    return Windowed(_vegas(**kwargs), size=3)


FACTORIES: dict[str, Factory] = {
    "aimd": AIMD,
    "vegas": _vegas,
    "gradient2": Gradient2,
    "windowed": _windowed,
}


def feed(algorithm: LimitAlgorithm, samples: int, rtt: float, *, start: float = 0.0) -> int:
    """``samples`` healthy samples at ``rtt`` with the limit in full use."""
    for index in range(samples):
        algorithm.on_sample(start + index * rtt, rtt, algorithm.limit, False)
    return algorithm.limit


class TestLog10Root:
    @pytest.mark.parametrize(
        ("limit", "expected"), [(0, 1), (1, 1), (9, 1), (99, 1), (100, 2), (999, 2), (1000, 3)]
    )
    def test_values(self, limit, expected):
        assert log10_root(limit) == expected


class TestProtocol:
    @pytest.mark.parametrize("name", FACTORIES)
    def test_every_algorithm_satisfies_the_protocol(self, name):
        algorithm = FACTORIES[name]()
        assert isinstance(algorithm, LimitAlgorithm)
        assert algorithm.on_sample(0.0, 0.01, algorithm.limit, False) == algorithm.limit

    @pytest.mark.parametrize("name", FACTORIES)
    @pytest.mark.parametrize(
        ("rtt", "inflight"), [(-0.1, 1), (math.nan, 1), (math.inf, 1), (0.1, -1)]
    )
    def test_bad_samples_are_refused(self, name, rtt, inflight):
        algorithm = FACTORIES[name]()
        with pytest.raises(ValueError, match=r"rtt|inflight"):
            algorithm.on_sample(0.0, rtt, inflight, False)


class TestNeverSticksAtOne:
    """Growth from the minimum must be possible (a Go port stuck at 1 forever)."""

    @pytest.mark.parametrize("name", FACTORIES)
    def test_a_lone_request_at_limit_one_grows_the_limit(self, name):
        algorithm = FACTORIES[name](initial_limit=1, min_limit=1)
        # One request in flight (itself) at limit 1: the limit is in full use.
        assert feed(algorithm, 20, 0.01) > 1

    @pytest.mark.parametrize("name", FACTORIES)
    def test_grows_from_one_to_far_above_under_steady_latency(self, name):
        algorithm = FACTORIES[name](initial_limit=1, min_limit=1)
        assert feed(algorithm, 200, 0.01) >= 20

    def test_vegas_grows_after_a_fast_rejection(self):
        # A drop answered in microseconds must not become the no-load RTT: every normal sample
        # would then look queued and the limit would shrink to the minimum for good.
        vegas = _vegas(initial_limit=10, min_limit=1)
        vegas.on_sample(0.0, 0.00001, 10, True)
        assert vegas.rtt_noload is None
        assert feed(vegas, 50, 0.01) > 10

    def test_gradient2_grows_from_one_with_smoothing(self):
        # The estimate is a float: 0.2 of a step at a time still adds up.
        gradient = Gradient2(initial_limit=1, min_limit=1, smoothing=0.05, queue_size=1)
        assert feed(gradient, 100, 0.01) > 1


class TestAIMD:
    def test_grows_by_one_while_in_use(self):
        aimd = AIMD(initial_limit=10)
        assert aimd.on_sample(0.0, 0.01, 5, False) == 11
        assert aimd.on_sample(0.0, 0.01, 6, False) == 12

    def test_does_not_grow_when_the_limit_is_not_in_use(self):
        aimd = AIMD(initial_limit=10)
        assert aimd.on_sample(0.0, 0.01, 4, False) == 10

    def test_backs_off_on_a_drop(self):
        aimd = AIMD(initial_limit=100, backoff_ratio=0.5)
        assert aimd.on_sample(0.0, 0.01, 100, True) == 50

    def test_an_rtt_above_the_timeout_is_a_drop(self):
        aimd = AIMD(initial_limit=100, backoff_ratio=0.8, timeout=0.05)
        assert aimd.on_sample(0.0, 0.05, 100, False) == 101
        assert aimd.on_sample(1.0, 0.051, 100, False) == 80

    def test_backs_off_once_per_congestion_event(self):
        aimd = AIMD(initial_limit=100, backoff_ratio=0.5)
        assert aimd.on_sample(1.0, 0.5, 100, True) == 50  # takes effect at 1.5
        assert aimd.on_sample(1.2, 0.4, 100, True) == 50  # sent before: already answered
        assert aimd.on_sample(1.5, 0.1, 100, True) == 25  # sent after: a new event

    def test_never_below_the_minimum_nor_above_the_maximum(self):
        aimd = AIMD(initial_limit=3, min_limit=2, max_limit=4)
        for index in range(5):
            aimd.on_sample(float(index), 0.01, 4, True)
        assert aimd.limit == 2
        assert feed(aimd, 10, 0.01, start=100.0) == 4


class TestVegas:
    def test_grows_fast_without_queueing(self):
        vegas = _vegas(initial_limit=10)
        vegas.on_sample(0.0, 0.01, 10, False)  # sets the no-load RTT
        assert vegas.on_sample(0.0, 0.01, 10, False) == 10 + 6  # + beta(10)

    def test_shrinks_when_the_estimated_queue_exceeds_beta(self):
        vegas = _vegas(initial_limit=50, probe_multiplier=1000)
        vegas.on_sample(0.0, 0.01, 50, False)
        # queue = 50 * (1 - 10/20) = 25 > beta = 6
        assert vegas.on_sample(0.0, 0.02, 50, False) == 49

    def test_holds_between_alpha_and_beta(self):
        vegas = _vegas(initial_limit=50, probe_multiplier=1000)
        vegas.on_sample(0.0, 0.01, 50, False)
        # queue = ceil(50 * (1 - 10/11)) = 5, in [alpha 3, beta 6]
        assert vegas.on_sample(0.0, 0.011, 50, False) == 50

    def test_shrinks_on_a_drop(self):
        vegas = _vegas(initial_limit=50)
        assert vegas.on_sample(0.0, 0.01, 50, True) == 49

    def test_probing_forgets_a_baseline_that_became_too_low(self):
        vegas = _vegas(initial_limit=10, probe_multiplier=1)
        vegas.on_sample(0.0, 0.001, 10, False)
        for index in range(20):
            vegas.on_sample(float(index), 0.01, 10, False)
        assert vegas.rtt_noload == 0.01

    def test_custom_functions_are_used(self):
        vegas = _vegas(initial_limit=10, beta=lambda limit: 1, threshold=lambda limit: 0)
        vegas.on_sample(0.0, 0.01, 10, False)
        assert vegas.on_sample(0.0, 0.01, 10, False) == 11

    def test_smoothing_blends_old_and_new(self):
        vegas = _vegas(initial_limit=10, smoothing=0.5)
        vegas.on_sample(0.0, 0.01, 10, False)
        assert vegas.on_sample(0.0, 0.01, 10, False) == 13  # 10 + 0.5 * 6


class TestGradient2:
    def test_shrinks_when_latency_rises_above_its_average(self):
        gradient = Gradient2(initial_limit=100, max_limit=1000)
        feed(gradient, 50, 0.01)
        before = gradient.limit
        assert gradient.on_sample(0.0, 0.05, before, False) < before

    def test_a_drop_is_the_worst_gradient(self):
        gradient = Gradient2(initial_limit=100, smoothing=1.0, queue_size=0)
        assert gradient.on_sample(0.0, 0.0001, 100, True) == 50
        assert gradient.long_rtt == 0.0  # the drop's RTT is not a latency

    def test_long_rtt_catches_up_fast_after_an_overload(self):
        gradient = Gradient2(long_window=1000, warmup=0)
        feed(gradient, 10, 1.0)
        slow = gradient.long_rtt
        feed(gradient, 10, 0.01)
        assert gradient.long_rtt < slow * 0.95**10

    def test_queue_size_may_be_a_function(self):
        gradient = Gradient2(initial_limit=10, smoothing=1.0, queue_size=lambda limit: limit)
        assert gradient.on_sample(0.0, 0.01, 10, False) == 20


class TestWindowed:
    def test_passes_one_averaged_sample_per_window(self):
        spy = Recorder()
        windowed = Windowed(spy, size=3)
        windowed.on_sample(2.0, 0.01, 4, False)
        windowed.on_sample(1.0, 0.02, 6, False)
        assert spy.samples == []
        windowed.on_sample(3.0, 0.03, 5, False)
        assert spy.samples == [(1.0, pytest.approx(0.02), 6, False)]  # type: ignore[comparison-overlap]

    def test_passes_a_drop_at_once_and_starts_a_new_window(self):
        spy = Recorder()
        windowed = Windowed(spy, size=2)
        windowed.on_sample(0.0, 0.01, 4, False)
        windowed.on_sample(1.0, 0.5, 3, True)
        windowed.on_sample(2.0, 0.03, 5, False)
        assert spy.samples == [(1.0, 0.5, 3, True)]
        windowed.on_sample(3.0, 0.01, 5, False)
        assert spy.samples[1] == (2.0, pytest.approx(0.02), 5, False)  # type: ignore[comparison-overlap]

    @pytest.mark.parametrize("seed", range(3))
    def test_averaging_keeps_vegas_baseline_honest(self, seed):
        # RTTs of 10 ms +- 25% that do not grow with the limit (no queue at all): alone, Vegas
        # takes the lowest RTT as its baseline and sees a queue that is not there; fed averages,
        # its baseline is nearer the truth and it settles markedly higher.
        rng = random.Random(seed)
        alone, windowed = _vegas(initial_limit=20), Windowed(_vegas(initial_limit=20), size=10)
        for index in range(2000):
            rtt = rng.uniform(0.0075, 0.0125)
            alone.on_sample(float(index), rtt, alone.limit, False)
            windowed.on_sample(float(index), rtt, windowed.limit, False)
        assert windowed.limit >= 1.2 * alone.limit

    def test_arguments(self):
        with pytest.raises(TypeError, match="algorithm"):
            Windowed(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="size"):
            Windowed(AIMD(), size=0)


class Recorder:
    def __init__(self) -> None:
        self.samples: list[tuple[float, float, int, bool]] = []

    @property
    def limit(self) -> int:
        return 1

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        self.samples.append((start, rtt, inflight, dropped))
        return 1


@st.composite
def configured(draw: st.DrawFn) -> LimitAlgorithm:
    name = draw(st.sampled_from(sorted(FACTORIES)))
    low = draw(st.integers(1, 50))
    high = draw(st.integers(low, 200))
    initial = draw(st.integers(low, high))
    return FACTORIES[name](min_limit=low, max_limit=high, initial_limit=initial)


samples = st.lists(
    st.tuples(
        st.floats(0.0, 10.0),  # rtt
        st.integers(0, 400),  # inflight
        st.booleans(),  # dropped
    ),
    max_size=200,
)


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(algorithm=configured(), samples=samples)
    def test_the_limit_stays_within_min_and_max(self, algorithm, samples):
        low = algorithm.min_limit
        high = algorithm.max_limit
        now = 0.0
        for rtt, inflight, dropped in samples:
            limit = algorithm.on_sample(now, rtt, inflight, dropped)
            now += rtt
            assert limit == algorithm.limit
            assert low <= limit <= high

    @settings(max_examples=200, deadline=None)
    @given(
        initial=st.integers(1, 500),
        ratio=st.floats(0.5, 0.99),
        history=samples,
        rtt=st.floats(0.0, 10.0),
    )
    def test_aimd_decreases_on_a_fresh_drop(self, initial, ratio, history, rtt):
        aimd = AIMD(initial_limit=initial, max_limit=1000, backoff_ratio=ratio)
        now = 0.0
        for sample_rtt, inflight, dropped in history:
            aimd.on_sample(now, sample_rtt, inflight, dropped)
            now += sample_rtt
        before = aimd.limit
        after = aimd.on_sample(now, rtt, before, True)  # started after everything before it
        assert after < before or before == 1

    @settings(max_examples=100, deadline=None)
    @given(initial=st.integers(1, 500), history=samples)
    def test_aimd_never_decreases_on_success(self, initial, history):
        aimd = AIMD(initial_limit=initial, max_limit=1000)
        now = 0.0
        for rtt, inflight, _ in history:
            before = aimd.limit
            assert aimd.on_sample(now, rtt, inflight, False) >= before
            now += rtt


class TestArguments:
    @pytest.mark.parametrize("name", FACTORIES)
    @pytest.mark.parametrize(
        ("kwargs", "argument"),
        [
            ({"min_limit": 0}, "min_limit"),
            ({"max_limit": 0}, "max_limit"),
            ({"min_limit": 5, "max_limit": 4, "initial_limit": 5}, "max_limit"),
            ({"initial_limit": 0}, "initial_limit"),
            ({"min_limit": 5, "initial_limit": 4}, "initial_limit"),
        ],
    )
    def test_bad_limits_name_the_argument(self, name, kwargs, argument):
        with pytest.raises(ValueError, match=argument):
            FACTORIES[name](**kwargs)

    @pytest.mark.parametrize(
        ("factory", "kwargs", "argument"),
        [
            (AIMD, {"backoff_ratio": 1.0}, "backoff_ratio"),
            (AIMD, {"backoff_ratio": 0.4}, "backoff_ratio"),
            (AIMD, {"timeout": 0}, "timeout"),
            (AIMD, {"timeout": -1}, "timeout"),
            (Vegas, {"smoothing": 0.0}, "smoothing"),
            (Vegas, {"smoothing": 1.5}, "smoothing"),
            (Vegas, {"probe_multiplier": 0}, "probe_multiplier"),
            (Gradient2, {"smoothing": 0.0}, "smoothing"),
            (Gradient2, {"tolerance": 0.9}, "tolerance"),
            (Gradient2, {"queue_size": -1}, "queue_size"),
            (Gradient2, {"long_window": 0}, "long_window"),
            (Gradient2, {"warmup": -1}, "warmup"),
            (Gradient2, {"smoothing": math.nan}, "smoothing"),
        ],
    )
    def test_out_of_range_values_name_the_argument(self, factory, kwargs, argument):
        with pytest.raises(ValueError, match=argument):
            factory(**kwargs)

    @pytest.mark.parametrize(
        ("factory", "kwargs", "argument"),
        [
            (AIMD, {"initial_limit": 2.5}, "initial_limit"),
            (AIMD, {"backoff_ratio": "0.9"}, "backoff_ratio"),
            (Vegas, {"alpha": 3}, "alpha"),
            (Vegas, {"decrease": None, "increase": "x"}, "increase"),
            (Vegas, {"rng": 7}, "rng"),
            (Gradient2, {"min_limit": True}, "min_limit"),
        ],
    )
    def test_wrong_types_name_the_argument(self, factory, kwargs, argument):
        with pytest.raises(TypeError, match=argument):
            factory(**kwargs)
