"""The current deadline: setting, nesting, reading, across tasks and threads; retry honours it."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable

import pytest

from buttress import Retry, RetryExhausted, Timeout
from buttress.retry import RetryGaveUp, WaitFixed
from buttress.testing import FakeClock, instant_waits
from buttress.timeout import Deadline, current_deadline, deadline, remaining


class Flaky(Exception):
    pass


def failing(calls: list[int]) -> Callable[[], None]:
    def fn() -> None:
        calls.append(1)
        raise Flaky

    return fn


def always_fail() -> None:
    raise Flaky


def notes(error: BaseException) -> list[str]:
    return list(getattr(error, "__notes__", []))


class TestDeadline:
    def test_none_by_default(self):
        assert current_deadline() is None
        assert remaining() is None

    @pytest.mark.parametrize(
        ("value", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError)]
    )
    def test_bad_seconds(self, value, error):
        with pytest.raises(error, match="seconds"):
            deadline(value)

    def test_set_for_the_block_and_restored(self):
        clock = FakeClock(100)
        with deadline(5, clock=clock, name="req") as d:
            assert isinstance(d, Deadline)
            assert current_deadline() is d
            assert (d.at, d.timeout, d.name) == (105, 5, "req")
            clock.advance(2)
            assert remaining() == 3
            assert not d.expired
            d.check()
            clock.advance(4)
            assert remaining() == 0.0
            assert d.remaining() == 0.0
            assert Deadline.expired.__get__(d)  # not narrowed by mypy from the line above
            with pytest.raises(Timeout, match="req: the deadline of 5 s has passed"):
                d.check()
        assert current_deadline() is None

    def test_nested_take_the_smaller(self):
        clock = FakeClock()
        with deadline(10, clock=clock, name="outer") as outer:
            with deadline(3, clock=clock, name="inner") as inner:
                assert current_deadline() is inner
                assert remaining() == 3
            clock.advance(8)
            with deadline(5, clock=clock, name="late") as late:
                assert late is outer  # 2 s left outside: the inner 5 s cannot extend it
                assert remaining() == 2
            assert current_deadline() is outer
        assert current_deadline() is None

    def test_a_scope_is_single_use_at_a_time(self):
        scope = deadline(1)
        with scope, pytest.raises(RuntimeError, match="already in use"), scope:
            pass
        with scope:  # reusable once left
            assert current_deadline() is not None

    async def test_tasks_inherit_it(self):
        clock = FakeClock()
        with deadline(4, clock=clock) as d:
            seen = await asyncio.create_task(asyncio.sleep(0, result=current_deadline()))
        assert seen is d

    def test_threads_see_it_through_a_copied_context(self):
        with deadline(4) as d:
            context = contextvars.copy_context()
        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(context.run(current_deadline)))
        thread.start()
        thread.join()
        assert seen == [d]


class TestRetryHonoursTheDeadline:
    def test_no_wait_that_ends_past_the_deadline(self):
        clock = FakeClock()
        calls: list[float] = []
        events: list[object] = []

        def fn() -> None:
            calls.append(clock.now())
            raise Flaky

        policy = Retry(attempts=10, wait=WaitFixed(2), clock=clock, listeners=[events.append])
        with deadline(5, clock=clock, name="request"), pytest.raises(Flaky) as info:
            policy.call(fn)
        assert calls == [0, 2, 4]  # a 4th attempt would start at 6, past the deadline at 5
        assert clock.sleeps == [2, 2]
        gave_up = [e for e in events if isinstance(e, RetryGaveUp)]
        assert gave_up[0].reason == "timeout"
        assert "would pass the deadline of request, 5 s" in notes(info.value)[0]

    def test_a_wait_ending_exactly_at_the_deadline_is_not_started(self):
        clock = FakeClock()
        calls: list[int] = []
        with deadline(4, clock=clock), pytest.raises(Flaky):
            Retry(attempts=10, wait=WaitFixed(2), clock=clock).call(failing(calls))
        assert len(calls) == 2  # at 0 and 2; a wait to 4 leaves no time for an attempt

    def test_a_passed_deadline_stops_at_once_even_with_zero_wait(self):
        clock = FakeClock()
        calls = []

        def fn() -> None:
            calls.append(1)
            clock.advance(1)
            raise Flaky

        with deadline(2.5, clock=clock), pytest.raises(Flaky):
            Retry(attempts=None, wait=0, clock=clock).call(fn)
        assert len(calls) == 3  # after the 3rd, 0 s are left

    def test_the_policys_own_timeout_still_applies_first(self):
        clock = FakeClock()
        with deadline(100, clock=clock), pytest.raises(Flaky) as info:
            Retry(attempts=None, timeout=3, wait=WaitFixed(1), clock=clock).call(always_fail)
        assert "timeout of 3 s" in notes(info.value)[0]

    def test_results_give_up_with_reason_timeout(self):
        clock = FakeClock()
        with deadline(3, clock=clock), pytest.raises(RetryExhausted) as info:
            Retry(attempts=10, wait=WaitFixed(1), retry_if_result=bool, clock=clock).call(lambda: 1)
        assert (info.value.reason, info.value.attempts) == ("timeout", 3)

    def test_without_a_deadline_nothing_changes(self):
        clock = FakeClock()
        with pytest.raises(Flaky):
            Retry(attempts=4, wait=WaitFixed(2), clock=clock).call(always_fail)
        assert clock.sleeps == [2, 2, 2]

    def test_skipped_test_waits_count_against_the_deadline(self):
        clock = FakeClock()
        calls: list[int] = []
        with instant_waits() as waits, deadline(5, clock=clock), pytest.raises(Flaky):
            Retry(attempts=10, wait=WaitFixed(2), clock=clock).call(failing(calls))
        assert waits.delays == [2, 2]
        assert len(calls) == 3

    async def test_async_retry(self):
        clock = FakeClock()
        calls: list[float] = []

        async def fn() -> None:
            calls.append(clock.now())
            raise Flaky

        with deadline(3, clock=clock), pytest.raises(Flaky):
            await Retry(attempts=10, wait=WaitFixed(1), clock=clock).acall(fn)
        assert calls == [0, 1, 2]

    def test_block_form(self):
        clock = FakeClock()
        attempts = 0

        def block() -> None:
            nonlocal attempts
            for attempt in Retry(attempts=10, wait=WaitFixed(1), clock=clock).retrying():
                with attempt:
                    attempts += 1
                    raise Flaky

        with deadline(3, clock=clock), pytest.raises(Flaky):
            block()
        assert attempts == 3


class TestDeadlineValue:
    def test_equal_by_value_hashable_and_shown(self):
        clock = FakeClock()
        one = Deadline(5.0, clock, 5.0, "req")
        assert one == Deadline(5.0, clock, 5.0, "req")
        assert one != Deadline(6.0, clock, 5.0, "req")
        assert one != (5.0, clock, 5.0, "req")
        assert len({one, Deadline(5.0, clock, 5.0, "req")}) == 1
        assert repr(one) == f"Deadline(at=5.0, clock={clock!r}, timeout=5.0, name='req')"

    def test_immutable(self):
        one = Deadline(5.0, FakeClock(), 5.0, "req")
        with pytest.raises(AttributeError):
            one.at = 6.0  # type: ignore[misc]
        with pytest.raises(AttributeError):
            one.other = 1  # type: ignore[attr-defined]
        match one:
            case Deadline(at, _, timeout, name):
                assert (at, timeout, name) == (5.0, 5.0, "req")
