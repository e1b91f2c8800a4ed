"""The fault-injection policy: off unless enabled, rate, seed, predicate, flag, each fault kind."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from buttress.chaos import ChaosInjected, ChaosPolicy, SyntheticResponse, active_flags, flagged
from buttress.testing import FakeClock


def ok() -> str:
    return "real"


class TestSwitching:
    def test_off_unless_enabled(self):
        chaos = ChaosPolicy(rate=1.0, error=ValueError)
        assert chaos.call(ok) == "real"
        chaos.enable()
        with pytest.raises(ValueError, match="injected"):
            chaos.call(ok)
        chaos.disable()
        assert chaos.call(ok) == "real"

    def test_rate_zero_never_injects(self):
        chaos = ChaosPolicy(rate=0.0, error=ValueError, enabled=True)
        assert all(chaos.call(ok) == "real" for _ in range(1000))
        assert chaos.injected == 0


class TestRate:
    def test_the_rate_is_kept_and_the_seed_repeats_the_run(self):
        def run(seed: int) -> list[bool]:
            chaos = ChaosPolicy(rate=0.25, result="fake", enabled=True, seed=seed)
            return [chaos.call(ok) == "fake" for _ in range(4000)]

        first, again, other = run(7), run(7), run(8)
        assert first == again
        assert first != other
        assert 0.22 < sum(first) / len(first) < 0.28


class TestMatching:
    def test_predicate_on_the_arguments(self):
        chaos = ChaosPolicy(rate=1.0, result=-1, when=lambda x: x > 10, enabled=True)

        @chaos
        def square(x: int) -> int:
            return x * x

        assert square(3) == 9
        assert square(11) == -1

    def test_flag_in_the_context(self):
        chaos = ChaosPolicy(rate=1.0, result="fake", flag="drill", enabled=True)
        assert chaos.call(ok) == "real"
        with flagged("drill") as flags:
            assert flags == {"drill"}
            assert active_flags() == {"drill"}
            assert chaos.call(ok) == "fake"
        assert active_flags() == frozenset()
        assert chaos.call(ok) == "real"

    async def test_flag_reaches_tasks_started_inside(self):
        chaos = ChaosPolicy(rate=1.0, result="fake", flag="drill", enabled=True)

        async def real() -> str:
            return "real"

        with flagged("drill"):
            task = asyncio.ensure_future(chaos.acall(real))
        assert await task == "fake"
        assert await chaos.acall(real) == "real"


class TestFaults:
    def test_latency_then_the_real_call(self):
        clock = FakeClock()
        chaos = ChaosPolicy(rate=1.0, latency=0.5, enabled=True, clock=clock)
        assert chaos.call(ok) == "real"
        assert clock.now() == 0.5

    def test_latency_range_is_drawn(self):
        clock = FakeClock()
        chaos = ChaosPolicy(rate=1.0, latency=(0.1, 0.2), enabled=True, clock=clock, seed=1)
        for _ in range(100):
            before = clock.now()
            chaos.call(ok)
            assert 0.1 <= clock.now() - before <= 0.2

    async def test_async_latency_and_error(self):
        clock = FakeClock()
        chaos = ChaosPolicy(
            rate=1.0, latency=1.0, error=ConnectionError("down"), enabled=True, clock=clock
        )

        @chaos
        async def fetch() -> str:
            return "real"

        with pytest.raises(ConnectionError, match="down"):
            await fetch()
        assert clock.now() == 1.0

    def test_an_error_instance_is_copied_per_injection(self):
        chaos = ChaosPolicy(rate=1.0, error=OSError(5, "io"), enabled=True)
        errors = []
        for _ in range(2):
            with pytest.raises(OSError, match="io") as caught:
                chaos.call(ok)
            errors.append(caught.value)
        assert errors[0] is not errors[1]
        assert errors[0].errno == 5

    def test_an_error_factory(self):
        chaos = ChaosPolicy(rate=1.0, error=lambda: TimeoutError("made"), enabled=True)
        with pytest.raises(TimeoutError, match="made"):
            chaos.call(ok)

    def test_synthetic_response_and_events(self):
        seen: list[object] = []
        chaos = ChaosPolicy(
            rate=1.0, result=SyntheticResponse(503), enabled=True, listeners=[seen.append]
        )
        result: object = chaos.call(ok)
        assert result == SyntheticResponse(503)
        event = seen[0]
        assert isinstance(event, ChaosInjected)
        assert event.fault == "result"
        assert "ok" in event.target

    def test_decide_is_the_whole_decision(self):
        chaos = ChaosPolicy(rate=1.0, latency=0.2, error=KeyError, enabled=True)
        injection = chaos.decide("any")
        assert injection is not None
        assert injection.latency == 0.2
        assert isinstance(injection.error, KeyError)
        assert injection.replaces_call

    def test_synthetic_response_pickles(self):
        response = SyntheticResponse(429, {"Retry-After": "3"}, b"slow")
        assert pickle.loads(pickle.dumps(response)) == response


class TestConfiguration:
    @pytest.mark.parametrize(
        ("options", "error", "name"),
        [
            ({"rate": 1.5, "error": ValueError}, ValueError, "rate"),
            ({"rate": "1", "error": ValueError}, TypeError, "rate"),
            ({}, ValueError, "fault"),
            ({"error": ValueError, "result": 1}, ValueError, "not both"),
            ({"error": 3}, TypeError, "error"),
            ({"latency": (2, 1)}, ValueError, "latency"),
            ({"latency": -1}, ValueError, "latency"),
            ({"latency": 1, "when": 3}, TypeError, "when"),
            ({"latency": 1, "flag": ""}, TypeError, "flag"),
            ({"latency": 1, "seed": 1.5}, TypeError, "seed"),
            ({"latency": 1, "enabled": 1}, TypeError, "enabled"),
        ],
    )
    def test_bad_arguments(self, options, error, name):
        with pytest.raises(error, match=name):
            ChaosPolicy(**options)

    @pytest.mark.parametrize(
        ("options", "name"),
        [
            ({"status": 99}, "status"),
            ({"headers": {"a": 1}}, "headers"),
            ({"content": "x"}, "content"),
        ],
    )
    def test_bad_synthetic_responses(self, options, name):
        with pytest.raises((TypeError, ValueError), match=name):
            SyntheticResponse(**options)
