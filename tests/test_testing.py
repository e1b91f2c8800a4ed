"""Tests for buttress.testing (FakeClock, instant_waits) and the pytest plugin's fixture."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import TypeVar

import pytest

import buttress._pytest_plugin
from buttress import Clock, Retry, WaitFixed, retrying, system_clock
from buttress._clock import active_wait_recorder
from buttress.testing import FakeClock, InstantWaits, instant_waits
from tests._threads import run_in_threads

T = TypeVar("T")


class Flaky:
    """Fails with ConnectionError ``failures`` times, then returns "ok".

    Each call first moves ``clock`` forward by ``duration`` (the time an attempt takes).
    """

    def __init__(self, failures: int, clock: FakeClock | None = None, duration: float = 0) -> None:
        self.failures = failures
        self.clock = clock
        self.duration = duration
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.clock is not None:
            self.clock.advance(self.duration)
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} failed")
        return "ok"

    async def run_async(self) -> str:
        await asyncio.sleep(0)
        return self()


@pytest.fixture(autouse=True)
def _waits_are_real_outside_tests() -> Iterator[None]:
    # Also checks, after each test, that every instant_waits() (and the plugin's fixture)
    # restored the state on exit.
    assert active_wait_recorder() is None
    yield
    assert active_wait_recorder() is None


def _retry_twice(name: str, delay: float, clock: FakeClock) -> str:
    """Run a call that fails twice under a policy waiting ``delay`` between attempts."""
    return Retry(attempts=3, wait=WaitFixed(delay), name=name, clock=clock).call(Flaky(2))


class TestFakeClock:
    def test_is_a_clock(self) -> None:
        assert isinstance(FakeClock(), Clock)

    def test_starts_at_zero_or_at_start(self) -> None:
        assert FakeClock().now() == 0.0
        clock = FakeClock(start=12)
        assert clock.now() == 12.0
        assert type(clock.now()) is float
        assert clock.sleeps == []

    @pytest.mark.parametrize("start", [True, "0", None, timedelta(0)], ids=repr)
    def test_rejects_a_start_that_is_not_a_number(self, start: object) -> None:
        with pytest.raises(TypeError, match=r"^start must be a number"):
            FakeClock(start)  # type: ignore[arg-type]

    @pytest.mark.parametrize("start", [math.nan, math.inf, -math.inf], ids=repr)
    def test_rejects_a_start_that_is_not_finite(self, start: float) -> None:
        # A NaN reading would make every window and timeout comparison silently false.
        with pytest.raises(ValueError, match=r"^start must be"):
            FakeClock(start)

    def test_a_negative_start_is_allowed(self) -> None:
        # Monotonic readings mean nothing in themselves: only differences matter.
        clock = FakeClock(start=-10)
        clock.sleep(4)
        assert clock.now() == -6.0

    def test_advance_moves_time_without_recording_a_sleep(self) -> None:
        clock = FakeClock(start=1)
        clock.advance(2.5)
        clock.advance(0)
        clock.advance(timedelta(milliseconds=500))
        assert clock.now() == 4.0
        assert clock.sleeps == []

    def test_sleep_records_and_advances(self) -> None:
        clock = FakeClock()
        clock.sleep(2)
        clock.sleep(0.5)
        clock.sleep(0)
        assert clock.sleeps == [2.0, 0.5, 0.0]
        assert clock.now() == 2.5

    async def test_sleep_async_records_and_advances(self) -> None:
        clock = FakeClock()
        await clock.sleep_async(3)
        await clock.sleep_async(0.25)
        assert clock.sleeps == [3.0, 0.25]
        assert clock.now() == 3.25

    async def test_sleep_async_yields_to_the_event_loop(self) -> None:
        ran: list[str] = []

        async def other() -> None:
            ran.append("other")

        task = asyncio.create_task(other())
        await FakeClock().sleep_async(60)
        assert ran == ["other"]
        await task

    @pytest.mark.parametrize(
        ("value", "error", "message"),
        [
            (-1, ValueError, r"^seconds must be >= 0"),
            (-1e-9, ValueError, r"^seconds must be >= 0"),
            (math.nan, ValueError, r"^seconds must be a finite number"),
            (math.inf, ValueError, r"^seconds must be a finite number"),
            ("1", TypeError, r"^seconds must be a number"),
            (None, TypeError, r"^seconds must be a number"),
        ],
        ids=repr,
    )
    def test_rejects_bad_durations_without_changing_anything(
        self, value: object, error: type[Exception], message: str
    ) -> None:
        clock = FakeClock(start=5)
        with pytest.raises(error, match=message):
            clock.advance(value)  # type: ignore[arg-type]
        with pytest.raises(error, match=message):
            clock.sleep(value)  # type: ignore[arg-type]
        assert clock.now() == 5.0
        assert clock.sleeps == []

    async def test_sleep_async_rejects_bad_durations(self) -> None:
        clock = FakeClock()
        with pytest.raises(ValueError, match=r"^seconds must be >= 0"):
            await clock.sleep_async(-1)
        with pytest.raises(ValueError, match=r"^seconds must be a finite number"):
            await clock.sleep_async(math.nan)
        assert clock.now() == 0.0
        assert clock.sleeps == []

    def test_concurrent_sleeps_add_up_exactly(self) -> None:
        clock = FakeClock()
        threads, sleeps_each = 8, 5000

        def work(index: int) -> None:
            # Binary fractions: every partial sum is exact, so the total must be too.
            duration = (index + 1) / 8
            for _ in range(sleeps_each):
                clock.sleep(duration)
                clock.advance(1 / 64)

        run_in_threads(threads, work)
        expected = sleeps_each * sum((index + 1) / 8 + 1 / 64 for index in range(threads))
        assert clock.now() == expected
        assert Counter(clock.sleeps) == Counter(
            {(index + 1) / 8: sleeps_each for index in range(threads)}
        )

    def test_repr_shows_the_time(self) -> None:
        assert repr(FakeClock(start=1.5)) == "FakeClock(now=1.5)"


class TestInstantWaits:
    def test_records_policy_and_delay_instead_of_sleeping(self) -> None:
        clock = FakeClock()
        with instant_waits() as waits:
            assert isinstance(waits, InstantWaits)
            assert _retry_twice("db", 2, clock) == "ok"
        assert waits.waits == [("db", 2.0), ("db", 2.0)]
        assert waits.delays == [2.0, 2.0]
        assert clock.sleeps == []
        assert clock.now() == 0.0

    def test_waits_are_real_again_after_exit(self) -> None:
        clock = FakeClock()
        with instant_waits() as waits:
            pass
        _retry_twice("db", 2, clock)
        assert waits.waits == []
        assert clock.sleeps == [2.0, 2.0]

    def test_zero_waits_are_not_recorded(self) -> None:
        clock = FakeClock()
        with instant_waits() as waits:
            _retry_twice("db", 0, clock)
        assert waits.waits == []

    def test_records_the_block_form(self) -> None:
        clock = FakeClock()
        flaky = Flaky(2)
        with instant_waits() as waits:
            for attempt in retrying(attempts=3, wait=WaitFixed(4), name="block", clock=clock):
                with attempt:
                    flaky()
        assert flaky.calls == 3
        assert waits.waits == [("block", 4.0), ("block", 4.0)]
        assert clock.sleeps == []

    def test_nested_the_innermost_receives(self) -> None:
        clock = FakeClock()
        with instant_waits() as outer:
            _retry_twice("a", 1, clock)
            with instant_waits() as inner:
                assert active_wait_recorder() is inner
                _retry_twice("b", 2, clock)
            assert active_wait_recorder() is outer
            _retry_twice("c", 3, clock)
        assert outer.waits == [("a", 1.0), ("a", 1.0), ("c", 3.0), ("c", 3.0)]
        assert inner.waits == [("b", 2.0), ("b", 2.0)]
        assert clock.sleeps == []

    def test_out_of_order_exit_keeps_the_other_active(self) -> None:
        clock = FakeClock()
        first, second = instant_waits(), instant_waits()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        try:
            assert active_wait_recorder() is second
            _retry_twice("x", 1, clock)
        finally:
            second.__exit__(None, None, None)
        assert active_wait_recorder() is None
        assert first.waits == []
        assert second.waits == [("x", 1.0), ("x", 1.0)]
        _retry_twice("y", 1, clock)
        assert clock.sleeps == [1.0, 1.0]

    def test_out_of_order_exit_of_the_innermost_restores_the_outer(self) -> None:
        first, second, third = instant_waits(), instant_waits(), instant_waits()
        first.__enter__()
        second.__enter__()
        third.__enter__()
        second.__exit__(None, None, None)
        assert active_wait_recorder() is third
        third.__exit__(None, None, None)
        assert active_wait_recorder() is first
        first.__exit__(None, None, None)
        assert active_wait_recorder() is None

    def test_exit_on_error_restores_the_state(self) -> None:
        with pytest.raises(KeyError), instant_waits():
            raise KeyError("boom")
        assert active_wait_recorder() is None

    def test_entering_an_active_record_twice_is_refused(self) -> None:
        with instant_waits() as waits:
            with pytest.raises(RuntimeError, match="already active"), waits:
                pass  # pragma: no cover - never entered
            assert active_wait_recorder() is waits
        assert active_wait_recorder() is None

    def test_a_record_may_be_reused_after_exit(self) -> None:
        clock = FakeClock()
        waits = instant_waits()
        with waits:
            _retry_twice("a", 1, clock)
        with waits:
            _retry_twice("b", 2, clock)
        assert waits.delays == [1.0, 1.0, 2.0, 2.0]
        assert clock.sleeps == []

    def test_repr_shows_the_delays(self) -> None:
        with instant_waits() as waits:
            _retry_twice("a", 1.5, FakeClock())
        assert repr(waits) == "InstantWaits(delays=[1.5, 1.5])"

    def test_many_threads_retrying_at_once_are_all_recorded(self) -> None:
        threads, calls = 16, 25

        def work(index: int) -> list[float]:
            clock = FakeClock()
            policy = Retry(attempts=4, wait=WaitFixed(index + 1), name=f"t{index}", clock=clock)
            for _ in range(calls):
                assert policy.call(Flaky(3)) == "ok"
            return clock.sleeps

        with instant_waits() as waits:
            sleeps = run_in_threads(threads, work)
        assert sleeps == [[]] * threads
        assert Counter(waits.waits) == Counter(
            {(f"t{index}", float(index + 1)): 3 * calls for index in range(threads)}
        )
        # Each thread's own waits stay in the order they happened.
        for index in range(threads):
            assert [delay for name, delay in waits.waits if name == f"t{index}"] == [
                float(index + 1)
            ] * (3 * calls)

    def test_threads_entering_and_leaving_concurrently_leave_no_recorder_behind(self) -> None:
        def work(index: int) -> None:
            for _ in range(300):
                with instant_waits():
                    pass

        run_in_threads(16, work)
        assert active_wait_recorder() is None

    async def test_works_across_asyncio_tasks(self) -> None:
        clock = FakeClock()

        async def one(index: int) -> str:
            policy = Retry(attempts=3, wait=WaitFixed(index + 1), name=f"task{index}", clock=clock)
            return await policy.acall(Flaky(2).run_async)

        with instant_waits() as waits:
            results = await asyncio.gather(*(one(index) for index in range(20)))
        assert results == ["ok"] * 20
        assert Counter(waits.waits) == Counter(
            {(f"task{index}", float(index + 1)): 2 for index in range(20)}
        )
        assert clock.now() == 0.0

    async def test_records_the_async_block_form(self) -> None:
        clock = FakeClock()
        flaky = Flaky(2)
        with instant_waits() as waits:
            async for attempt in retrying(attempts=3, wait=WaitFixed(4), name="ab", clock=clock):
                with attempt:
                    await flaky.run_async()
        assert flaky.calls == 3
        assert waits.waits == [("ab", 4.0), ("ab", 4.0)]
        assert clock.now() == 0.0

    def test_a_policy_on_the_real_clock_finishes_instantly(self) -> None:
        policy = Retry(attempts=3, wait=WaitFixed(30), name="real")
        assert policy.clock is system_clock
        outcome: list[str] = []
        with instant_waits() as waits:
            # In a thread, so that a regression fails in seconds instead of sleeping a minute.
            worker = threading.Thread(
                target=lambda: outcome.append(policy.call(Flaky(2))), daemon=True
            )
            worker.start()
            worker.join(timeout=10)
            assert not worker.is_alive()
        assert outcome == ["ok"]
        assert waits.waits == [("real", 30.0), ("real", 30.0)]

    async def test_an_async_policy_on_the_real_clock_finishes_instantly(self) -> None:
        policy = Retry(attempts=3, wait=WaitFixed(30), name="real")
        with instant_waits() as waits:
            result = await asyncio.wait_for(policy.acall(Flaky(2).run_async), timeout=10)
        assert result == "ok"
        assert waits.waits == [("real", 30.0), ("real", 30.0)]

    @pytest.mark.parametrize("attempt_seconds", [0.0, 0.5, 2.0])
    def test_skipped_waits_count_towards_the_timeout(self, attempt_seconds: float) -> None:
        def run(instant: bool) -> tuple[int, list[float], list[str]]:
            clock = FakeClock()
            flaky = Flaky(100, clock, attempt_seconds)
            # attempts is a safety net: if skipped waits did not count, the timeout never ends it.
            policy = Retry(attempts=50, timeout=10, wait=WaitFixed(3), name="t", clock=clock)
            waits = InstantWaits()
            with (
                waits if instant else contextlib.nullcontext(),
                pytest.raises(ConnectionError) as info,
            ):
                policy.call(flaky)
            delays = waits.delays if instant else clock.sleeps
            return flaky.calls, delays, getattr(info.value, "__notes__", [])

        production = run(instant=False)
        assert production[0] < 50  # the timeout, not the attempts, ended it
        assert production[1] != []
        assert "timeout" in production[2][-1]
        assert run(instant=True) == production

    async def test_skipped_waits_count_towards_the_timeout_in_async_code(self) -> None:
        async def run(instant: bool) -> tuple[int, list[float], list[str]]:
            clock = FakeClock()
            flaky = Flaky(100, clock, 1.0)
            policy = Retry(attempts=50, timeout=10, wait=WaitFixed(3), name="t", clock=clock)
            waits = InstantWaits()
            with (
                waits if instant else contextlib.nullcontext(),
                pytest.raises(ConnectionError) as info,
            ):
                await policy.acall(flaky.run_async)
            delays = waits.delays if instant else clock.sleeps
            return flaky.calls, delays, getattr(info.value, "__notes__", [])

        production = await run(instant=False)
        assert production[0] < 50
        assert production[1] != []
        assert await run(instant=True) == production


class TestPytestPlugin:
    def test_is_registered_through_the_entry_point(self, pytestconfig: pytest.Config) -> None:
        plugin = pytestconfig.pluginmanager.get_plugin("buttress")
        assert plugin is buttress._pytest_plugin

    def test_fixture_makes_waits_instant(self, buttress_instant_waits: InstantWaits) -> None:
        assert isinstance(buttress_instant_waits, InstantWaits)
        assert active_wait_recorder() is buttress_instant_waits
        clock = FakeClock()
        assert _retry_twice("fixture", 5, clock) == "ok"
        assert buttress_instant_waits.waits == [("fixture", 5.0), ("fixture", 5.0)]
        assert clock.sleeps == []

    async def test_fixture_in_async_tests(self, buttress_instant_waits: InstantWaits) -> None:
        policy = Retry(attempts=3, wait=WaitFixed(30), name="async")
        result = await asyncio.wait_for(policy.acall(Flaky(2).run_async), timeout=10)
        assert result == "ok"
        assert buttress_instant_waits.delays == [30.0, 30.0]
