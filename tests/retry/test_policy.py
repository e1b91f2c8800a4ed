"""The Retry policy: decorator, call/acall, block form; sync, async, threads and processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
import math
import pickle
import threading
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from buttress import (
    Event,
    Retry,
    RetryBudget,
    RetryBudgetExhausted,
    RetryEvent,
    RetryExhausted,
    RetryFailed,
    RetryGaveUp,
    RetryScheduled,
    RetrySucceeded,
    WaitExponential,
    WaitFixed,
    WaitLinear,
    add_listener,
    retry,
    retrying,
)
from buttress.testing import FakeClock, instant_waits


class Flaky:
    """A callable failing its first ``failures`` calls with ``error``, then returning ``value``."""

    def __init__(
        self,
        failures: int,
        error: Callable[[], BaseException] = lambda: ConnectionError("down"),
        value: Any = "ok",
        clock: FakeClock | None = None,
        duration: float = 0.0,
    ) -> None:
        self.failures = failures
        self.error = error
        self.value = value
        self.calls = 0
        self.clock = clock
        self.duration = duration

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.clock is not None and self.duration:
            self.clock.advance(self.duration)
        if self.calls <= self.failures:
            raise self.error()
        return self.value


class Recorder:
    """A listener keeping every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


def notes(error: BaseException) -> list[str]:
    return list(getattr(error, "__notes__", []))


class TestDecoratorSync:
    def test_first_attempt_success_calls_once(self):
        clock = FakeClock()
        fn = Flaky(0)
        assert retry(clock=clock)(fn)() == "ok"
        assert fn.calls == 1
        assert clock.sleeps == []

    def test_retries_until_success(self):
        clock = FakeClock()
        fn = Flaky(2)
        assert retry(attempts=3, wait=WaitFixed(2), clock=clock)(fn)() == "ok"
        assert fn.calls == 3
        assert clock.sleeps == [2.0, 2.0]

    def test_arguments_reach_every_attempt(self):
        seen = []

        @retry(attempts=3, wait=0)
        def add(a, b, *, c):
            seen.append((a, b, c))
            if len(seen) < 3:
                raise OSError
            return a + b + c

        assert add(1, 2, c=3) == 6
        assert seen == [(1, 2, 3)] * 3

    def test_gives_up_reraising_the_last_original_exception_with_a_note(self):
        clock = FakeClock()
        raised: list[ConnectionError] = []

        def fail():
            clock.advance(0.5)
            error = ConnectionError(f"down {len(raised)}")
            raised.append(error)
            raise error

        with pytest.raises(ConnectionError) as info:
            retry(attempts=3, wait=WaitFixed(1), clock=clock)(fail)()
        assert info.value is raised[-1]
        assert len(raised) == 3
        assert notes(info.value) == ["buttress: gave up after 3 attempts in 3.50 s"]

    def test_traceback_reaches_the_failing_line(self):
        def connect_to_database():
            raise ConnectionError("down")

        with pytest.raises(ConnectionError) as info:
            retry(attempts=2, wait=0)(connect_to_database)()
        names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert names[-1] == "connect_to_database"

    def test_attempts_do_not_chain_as_context(self):
        with pytest.raises(ConnectionError) as info:
            retry(attempts=3, wait=0)(Flaky(5))()
        assert info.value.__context__ is None
        assert info.value.__cause__ is None

    def test_only_listed_exception_types_are_retried(self):
        fn = Flaky(5, error=lambda: KeyError("k"))
        with pytest.raises(KeyError) as info:
            retry(attempts=3, on=ValueError, wait=0)(fn)()
        assert fn.calls == 1
        assert notes(info.value) == []

    def test_tuple_of_types_and_subclasses(self):
        fn = Flaky(2, error=ConnectionResetError)
        assert retry(attempts=3, on=(ValueError, OSError), wait=0)(fn)() == "ok"

    def test_non_retryable_error_after_retries_gets_a_note(self):
        errors = iter([ConnectionError("a"), KeyError("b")])

        def fn():
            raise next(errors)

        with pytest.raises(KeyError) as info:
            retry(attempts=5, on=ConnectionError, wait=0)(fn)()
        assert len(notes(info.value)) == 1
        assert "KeyError is not retried; raised by attempt 2" in notes(info.value)[0]

    def test_retry_if_predicate_on_the_exception(self):
        fn = Flaky(5, error=lambda: OSError(13, "denied"))
        policy = retry(attempts=3, wait=0, retry_if=lambda e: getattr(e, "errno", None) != 13)
        with pytest.raises(OSError, match="denied"):
            policy(fn)()
        assert fn.calls == 1
        transient = Flaky(2, error=lambda: OSError(11, "again"))
        assert policy(transient)() == "ok"

    @pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, GeneratorExit])
    def test_base_exceptions_are_never_retried(self, kind):
        fn = Flaky(5, error=kind)
        with pytest.raises(kind):
            retry(attempts=3, on=BaseException, wait=0)(fn)()
        assert fn.calls == 1

    def test_result_predicate_retries_then_returns(self):
        results = iter([503, 503, 200])
        policy = retry(attempts=3, wait=0, retry_if_result=lambda status: status >= 500)
        assert policy(lambda: next(results))() == 200

    def test_result_predicate_exhausted_raises_retry_exhausted(self):
        clock = FakeClock()
        policy = retry(
            attempts=3, wait=WaitFixed(1), retry_if_result=lambda r: r == 503, clock=clock
        )
        with pytest.raises(RetryExhausted) as info:
            policy(lambda: 503)()
        assert info.value.last_result == 503
        assert info.value.attempts == 3
        assert info.value.reason == "attempts"
        assert info.value.elapsed == 2.0
        assert "the last result was 503" in str(info.value)

    def test_zero_wait_never_calls_sleep(self):
        clock = FakeClock()
        assert retry(attempts=4, wait=0, clock=clock)(Flaky(3))() == "ok"
        assert clock.sleeps == []

    def test_wait_accepts_timedelta_and_linear(self):
        clock = FakeClock()
        retry(attempts=3, wait=timedelta(milliseconds=250), clock=clock)(Flaky(2))()
        retry(attempts=4, wait=WaitLinear(1, 2, 4), clock=clock)(Flaky(3))()
        assert clock.sleeps == [0.25, 0.25, 1.0, 3.0, 4.0]

    def test_wait_sum(self):
        clock = FakeClock()
        retry(attempts=3, wait=WaitFixed(1) + 0.5, clock=clock)(Flaky(2))()
        assert clock.sleeps == [1.5, 1.5]

    def test_decorrelated_jitter_sees_the_previous_backoff(self):
        clock = FakeClock()
        wait = WaitExponential(initial=1, max=100, jitter="decorrelated", rng=lambda: 1.0)
        retry(attempts=4, wait=wait, clock=clock)(Flaky(3))()
        # upper bound each time: 3 * previous (1 -> 3 -> 9 -> 27)
        assert clock.sleeps == [3.0, 9.0, 27.0]


class TestTimeout:
    def test_wait_that_would_cross_the_deadline_is_not_started(self):
        clock = FakeClock()
        fn = Flaky(10, clock=clock, duration=1.0)
        with pytest.raises(ConnectionError) as info:
            retry(attempts=None, timeout=10, wait=WaitFixed(3), clock=clock)(fn)()
        # attempts end at 1, 5, 9 s; after the third a 3 s wait would end at 12 > 10.
        assert fn.calls == 3
        assert clock.sleeps == [3.0, 3.0]
        assert clock.now() == 9.0
        assert notes(info.value) == [
            "buttress: gave up after 3 attempts in 9.00 s "
            "(the next attempt would pass the timeout of 10 s)"
        ]

    def test_attempts_and_timeout_together_first_limit_wins(self):
        clock = FakeClock()
        fn = Flaky(10)
        with pytest.raises(ConnectionError):
            retry(attempts=2, timeout=100, wait=WaitFixed(1), clock=clock)(fn)()
        assert fn.calls == 2

    def test_timeout_as_timedelta(self):
        policy = Retry(timeout=timedelta(seconds=2))
        assert policy.timeout == 2.0

    def test_gave_up_event_says_timeout(self):
        clock = FakeClock()
        events = Recorder()
        with pytest.raises(ConnectionError):
            Retry(attempts=None, timeout=5, wait=WaitFixed(2), clock=clock, listeners=[events])(
                Flaky(10)
            )()
        (gave_up,) = events.of(RetryGaveUp)
        assert gave_up.reason == "timeout"
        assert gave_up.attempt == 3  # waits end at 2 and 4; a third would end at 6 > 5


class TestPushback:
    def test_uses_the_larger_of_backoff_and_server_request(self):
        clock = FakeClock()
        asked = iter([5.0, 0.1])
        policy = retry(
            attempts=3, wait=WaitFixed(1), pushback=lambda error: next(asked), clock=clock
        )
        policy(Flaky(2))()
        assert clock.sleeps == [5.0, 1.0]

    def test_receives_the_exception_or_the_result(self):
        seen: list[Any] = []

        def pushback(outcome: Any) -> float | None:
            seen.append(outcome)
            return None

        error = ConnectionError("x")
        calls = iter([error, 503, 200])

        def fn():
            item = next(calls)
            if isinstance(item, BaseException):
                raise item
            return item

        retry(attempts=3, wait=0, pushback=pushback, retry_if_result=lambda r: r == 503)(fn)()
        assert seen == [error, 503]

    def test_capped_by_max_wait(self):
        clock = FakeClock()
        policy = retry(
            attempts=2,
            wait=WaitFixed(1),
            pushback=lambda e: timedelta(hours=1),
            max_wait=30,
            clock=clock,
        )
        policy(Flaky(1))()
        assert clock.sleeps == [30.0]

    def test_bad_pushback_value_names_the_hook(self):
        policy = retry(attempts=2, wait=0, pushback=lambda e: -1)
        with pytest.raises(ValueError, match="pushback"):
            policy(Flaky(1))()


class TestBudget:
    def test_empty_budget_fails_at_once_with_the_original_exception(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10, clock=clock)  # 1 retry
        events = Recorder()
        policy = retry(attempts=5, wait=0, budget=budget, clock=clock, listeners=[events])
        first = Flaky(10)
        with pytest.raises(ConnectionError) as info:
            policy(first)()
        assert first.calls == 2  # one retry granted, the next refused
        assert notes(info.value) == [
            "buttress: gave up after 2 attempts in 0.00 s (the retry budget is exhausted)"
        ]
        assert [e.reason for e in events.of(RetryGaveUp)] == ["budget"]

    def test_budget_is_shared_between_policies(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.0, min_per_second=0.2, ttl=10, clock=clock)  # 2 retries
        a = retry(attempts=10, wait=0, budget=budget, clock=clock)
        b = retry(attempts=10, wait=0, budget=budget, clock=clock)
        fa, fb = Flaky(100), Flaky(100)
        with pytest.raises(ConnectionError):
            a(fa)()
        with pytest.raises(ConnectionError):
            b(fb)()
        assert fa.calls + fb.calls == 4  # two first attempts, two retries

    def test_first_attempts_deposit(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.5, min_per_second=0, ttl=10, clock=clock)
        policy = retry(attempts=2, wait=0, budget=budget, clock=clock)
        for _ in range(4):
            policy(Flaky(0))()
        assert budget.available() == 2

    def test_results_with_empty_budget_raise_retry_budget_exhausted(self):
        clock = FakeClock()
        budget = RetryBudget(ratio=0.0, min_per_second=0, ttl=10, clock=clock)
        policy = retry(
            attempts=3,
            wait=0,
            budget=budget,
            retry_if_result=lambda r: True,
            name="api",
            clock=clock,
        )
        with pytest.raises(RetryBudgetExhausted) as info:
            policy(lambda: 503)()
        assert isinstance(info.value, RetryExhausted)
        assert info.value.reason == "budget"
        assert info.value.name == "api"
        assert info.value.last_result == 503


class TestFallback:
    def test_value(self):
        assert retry(attempts=2, wait=0, fallback=None)(Flaky(5))() is None
        assert retry(attempts=2, wait=0, fallback="cached")(Flaky(5))() == "cached"

    def test_callable_receives_the_final_exception(self):
        seen = []

        def fallback(error: BaseException) -> str:
            seen.append(error)
            return "fallback"

        assert retry(attempts=2, wait=0, fallback=fallback)(Flaky(5))() == "fallback"
        assert isinstance(seen[0], ConnectionError)
        assert notes(seen[0]) == ["buttress: gave up after 2 attempts in 0.00 s"]

    def test_callable_receives_retry_exhausted_for_results(self):
        seen = []

        def fallback(error: BaseException) -> str:
            seen.append(error)
            return "stale"

        policy = retry(attempts=2, wait=0, retry_if_result=lambda r: r == 503, fallback=fallback)
        result: Any = policy(lambda: 503)()
        assert result == "stale"
        assert isinstance(seen[0], RetryExhausted)
        assert seen[0].last_result == 503

    def test_not_used_for_errors_that_are_not_retried(self):
        with pytest.raises(KeyError):
            retry(attempts=2, on=OSError, wait=0, fallback="x")(Flaky(5, error=KeyError))()


class TestMethodsAndMetadata:
    def test_method(self):
        class Client:
            def __init__(self) -> None:
                self.calls = 0

            @retry(attempts=3, wait=0)
            def fetch(self, key: str) -> str:
                """Fetch a key."""
                self.calls += 1
                if self.calls < 2:
                    raise ConnectionError
                return key.upper()

        client = Client()
        assert client.fetch("a") == "A"
        assert client.calls == 2
        assert Client.fetch.__name__ == "fetch"
        assert Client.fetch.__doc__ == "Fetch a key."
        assert list(inspect.signature(Client.fetch).parameters) == ["self", "key"]

    def test_wraps_keeps_wrapped(self):
        def original():
            return 1

        decorated = retry()(original)
        assert decorated.__wrapped__ is original  # type: ignore[attr-defined]

    def test_target_name_in_events(self):
        events = Recorder()

        def connect_to_database():
            raise ConnectionError

        with pytest.raises(ConnectionError):
            retry(attempts=2, wait=0, listeners=[events], name="db")(connect_to_database)()
        assert {e.target for e in events.of(RetryEvent)} == {
            "TestMethodsAndMetadata.test_target_name_in_events.connect_to_database"
        }
        assert {e.policy for e in events.events} == {"db"}

    def test_generator_functions_are_refused(self):
        def gen():
            yield 1

        async def agen():
            yield 1

        with pytest.raises(TypeError, match="generator"):
            retry()(gen)
        with pytest.raises(TypeError, match="generator"):
            retry()(agen)

    def test_not_callable(self):
        with pytest.raises(TypeError, match="callables"):
            retry()(42)  # type: ignore[arg-type]

    def test_bare_decorator_gives_a_clear_error(self):
        with pytest.raises(TypeError, match=r"@retry\(\)"):

            @retry  # type: ignore[arg-type]
            def fn() -> None: ...


class TestEvents:
    def test_fail_fail_succeed_sequence(self):
        clock = FakeClock()
        events = Recorder()
        error = ConnectionError("x")
        fn = Flaky(2, error=lambda: error, clock=clock, duration=0.25)
        retry(attempts=3, wait=WaitFixed(1), clock=clock, listeners=[events], name="db")(fn)()
        scheduled = events.of(RetryScheduled)
        assert [(e.attempt, e.delay, e.error) for e in scheduled] == [
            (1, 1.0, error),
            (2, 1.0, error),
        ]
        assert [e.elapsed for e in scheduled] == [0.25, 1.5]
        assert [e.waited for e in scheduled] == [0.0, 1.0]
        (done,) = events.of(RetrySucceeded)
        assert (done.attempt, done.elapsed, done.waited) == (3, 2.75, 2.0)
        assert len(events.events) == 3

    def test_gave_up_event_carries_statistics(self):
        clock = FakeClock()
        events = Recorder()
        with pytest.raises(ConnectionError):
            retry(attempts=2, wait=WaitFixed(3), clock=clock, listeners=[events])(Flaky(5))()
        (gave_up,) = events.of(RetryGaveUp)
        assert (gave_up.attempt, gave_up.waited, gave_up.elapsed, gave_up.reason) == (
            2,
            3.0,
            3.0,
            "attempts",
        )
        assert isinstance(gave_up.error, ConnectionError)

    def test_failed_event_for_non_retryable(self):
        events = Recorder()
        with pytest.raises(KeyError):
            retry(on=OSError, listeners=[events])(Flaky(1, error=KeyError))()
        (failed,) = events.events
        assert isinstance(failed, RetryFailed)
        assert isinstance(failed.error, KeyError)

    def test_result_failures_are_scheduled_with_the_result(self):
        events = Recorder()
        results = iter([503, 200])
        retry(attempts=2, wait=0, retry_if_result=lambda r: r == 503, listeners=[events])(
            lambda: next(results)
        )()
        (scheduled,) = events.of(RetryScheduled)
        assert scheduled.error is None
        assert scheduled.result == 503

    def test_global_listener_sees_every_policy(self):
        events = Recorder()
        with add_listener(events):
            retry(name="a")(Flaky(0))()
            retry(name="b", wait=0)(Flaky(1))()
        retry(name="c")(Flaky(0))()
        assert [(type(e).__name__, e.policy) for e in events.events] == [
            ("RetrySucceeded", "a"),
            ("RetryScheduled", "b"),
            ("RetrySucceeded", "b"),
        ]

    def test_retries_are_logged_on_buttress_retry(self, caplog):
        caplog.set_level("INFO", logger="buttress.retry")
        with pytest.raises(ConnectionError):
            retry(attempts=2, wait=0, name="db")(Flaky(5))()
        messages = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
        assert messages[0][:2] == ("buttress.retry", "INFO")
        assert "attempt 1 failed with ConnectionError: down; retrying in 0.00 s" in messages[0][2]
        assert messages[1][:2] == ("buttress.retry", "WARNING")
        assert "gave up after 2 attempts" in messages[1][2]

    def test_statistics_are_per_call_under_threads(self):
        """One policy, many threads: each call's events describe that call alone."""
        events = Recorder()
        lock = threading.Lock()

        def locked(event: Event) -> None:
            with lock:
                events(event)

        policy = Retry(attempts=10, wait=0, listeners=[locked])
        barrier = threading.Barrier(8)
        failures_by_thread = {}

        def work(failures: int) -> None:
            fn = Flaky(failures)
            fn.__qualname__ = f"fn{failures}"  # type: ignore[attr-defined]
            wrapped = policy(fn)
            barrier.wait()
            for _ in range(50):
                fn.calls = 0
                assert wrapped() == "ok"
            failures_by_thread[failures] = fn.calls

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        succeeded = events.of(RetrySucceeded)
        assert len(succeeded) == 8 * 50
        for event in succeeded:
            assert event.attempt == int(event.target[2:]) + 1


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"attempts": 0}, ValueError, "attempts must be >= 1"),
            ({"attempts": -3}, ValueError, "attempts"),
            ({"attempts": 1.5}, TypeError, "attempts must be an int"),
            ({"attempts": True}, TypeError, "attempts"),
            ({"timeout": -1}, ValueError, "timeout"),
            ({"timeout": 0}, ValueError, "timeout must be > 0"),
            ({"timeout": math.nan}, ValueError, "timeout"),
            ({"timeout": "10"}, TypeError, "timeout"),
            ({"wait": -1}, ValueError, "wait"),
            ({"wait": math.inf}, ValueError, "wait"),
            ({"wait": "exp"}, TypeError, "wait must be a Wait"),
            ({"on": "ValueError"}, TypeError, "on must be an exception type"),
            ({"on": [ValueError]}, TypeError, "on must be an exception type"),
            ({"on": (ValueError, int)}, TypeError, "on must be"),
            ({"on": ()}, ValueError, "on must name at least one"),
            ({"on": lambda e: True}, TypeError, "retry_if="),
            ({"retry_if": 3}, TypeError, "retry_if must be callable"),
            ({"retry_if_result": "x"}, TypeError, "retry_if_result"),
            ({"pushback": 1.0}, TypeError, "pushback"),
            ({"max_wait": -1}, ValueError, "max_wait"),
            ({"budget": 0.2}, TypeError, "budget must be a RetryBudget"),
            ({"name": ""}, TypeError, "name"),
            ({"listeners": print}, TypeError, "listeners must be an iterable"),
            ({"listeners": [1]}, TypeError, "listeners must contain callables"),
            ({"clock": object()}, TypeError, "clock must provide now"),
        ],
    )
    def test_bad_arguments_are_refused_at_construction(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            Retry(**kwargs)

    def test_replace_revalidates(self):
        policy = Retry(attempts=3, timeout=timedelta(seconds=5))
        changed = dataclasses.replace(policy, attempts=7)
        assert (changed.attempts, changed.timeout) == (7, 5.0)
        with pytest.raises(ValueError, match="attempts"):
            dataclasses.replace(policy, attempts=0)

    def test_policy_is_frozen(self):
        policy = Retry()
        with pytest.raises(dataclasses.FrozenInstanceError):
            policy.attempts = 5  # type: ignore[misc]


class TestCall:
    def test_call_sync(self):
        fn = Flaky(1)
        assert Retry(wait=0).call(fn, 1, key="v") == "ok"
        assert fn.calls == 2

    def test_call_refuses_coroutine_functions(self):
        async def coro() -> None: ...

        with pytest.raises(TypeError, match="acall"):
            Retry().call(coro)  # type: ignore[unused-coroutine]

    async def test_acall(self):
        attempts = 0

        async def fetch(x: int) -> int:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise ConnectionError
            return x * 2

        assert await Retry(wait=0).acall(fetch, 21) == 42
        assert attempts == 3


class AsyncFlaky:
    def __init__(self, failures: int, error: Callable[[], BaseException] = ConnectionError):
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls <= self.failures:
            raise self.error()
        return "ok"


class TestAsync:
    async def test_detected_and_retried(self):
        clock = FakeClock()
        fn = AsyncFlaky(2)

        @retry(attempts=3, wait=WaitFixed(1), clock=clock)
        async def call() -> str:
            return await fn()

        assert inspect.iscoroutinefunction(call)
        assert await call() == "ok"
        assert fn.calls == 3
        assert clock.sleeps == [1.0, 1.0]

    async def test_gives_up_with_note(self):
        fn = AsyncFlaky(5)

        @retry(attempts=2, wait=0)
        async def call() -> str:
            return await fn()

        with pytest.raises(ConnectionError) as info:
            await call()
        assert notes(info.value)[0].startswith("buttress: gave up after 2 attempts in ")
        assert info.value.__context__ is None

    async def test_cancelled_error_from_the_call_is_not_retried(self):
        fn = AsyncFlaky(5, error=asyncio.CancelledError)

        @retry(attempts=3, on=BaseException, wait=0)
        async def call() -> str:
            return await fn()

        with pytest.raises(asyncio.CancelledError):
            await call()
        assert fn.calls == 1

    async def test_cancellation_during_a_wait_propagates_at_once(self):
        started = asyncio.Event()
        fn = AsyncFlaky(5)

        @retry(attempts=3, wait=WaitFixed(60))
        async def call() -> str:
            started.set()
            return await fn()

        task = asyncio.create_task(call())
        await started.wait()
        await asyncio.sleep(0.01)  # the first attempt failed; the task sleeps 60 s now
        loop = asyncio.get_running_loop()
        begun = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - begun < 1.0
        assert fn.calls == 1

    async def test_waits_do_not_block_the_loop(self):
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        fn = AsyncFlaky(2)

        @retry(attempts=3, wait=WaitFixed(0.05))
        async def call() -> str:
            return await fn()

        background = asyncio.create_task(ticker())
        try:
            assert await call() == "ok"
        finally:
            background.cancel()
        assert ticks >= 10

    async def test_result_predicate_and_async_fallback(self):
        async def status() -> int:
            return 503

        async def fallback(error: BaseException) -> int:
            assert isinstance(error, RetryExhausted)
            return 299

        policy = retry(attempts=2, wait=0, retry_if_result=lambda r: r >= 500, fallback=fallback)
        assert await policy(status)() == 299

    async def test_timeout_with_fake_clock(self):
        clock = FakeClock()
        fn = AsyncFlaky(10)

        @retry(attempts=None, timeout=4, wait=WaitFixed(1.5), clock=clock)
        async def call() -> str:
            return await fn()

        with pytest.raises(ConnectionError) as info:
            await call()
        assert fn.calls == 3  # waits end at 1.5 and 3.0; the next would end at 4.5
        assert "timeout of 4 s" in notes(info.value)[0]

    async def test_many_tasks_share_one_policy(self):
        policy = Retry(attempts=5, wait=WaitFixed(0.001))
        flakies = [AsyncFlaky(n % 4) for n in range(50)]

        async def run(fn: AsyncFlaky) -> str:
            return await policy.acall(fn)

        results = await asyncio.gather(*(run(fn) for fn in flakies))
        assert results == ["ok"] * 50
        assert [fn.calls for fn in flakies] == [n % 4 + 1 for n in range(50)]


class TestBlockForm:
    def test_success_at_once(self):
        calls = 0
        for attempt in retrying(attempts=3, wait=0):
            with attempt:
                calls += 1
        assert calls == 1

    def test_retries_until_success(self):
        clock = FakeClock()
        numbers = []
        for attempt in Retry(attempts=5, wait=WaitFixed(2), clock=clock).retrying():
            with attempt:
                numbers.append(attempt.number)
                if attempt.number < 3:
                    raise ConnectionError
        assert numbers == [1, 2, 3]
        assert clock.sleeps == [2.0, 2.0]

    def test_gives_up_with_the_original_exception(self):
        clock = FakeClock()
        raised = []
        with pytest.raises(ConnectionError) as info:  # noqa: PT012 - the block form is the point
            for attempt in retrying(attempts=3, wait=WaitFixed(1), clock=clock):
                with attempt:
                    raised.append(ConnectionError(attempt.number))
                    raise raised[-1]
        assert info.value is raised[-1]
        assert notes(info.value) == ["buttress: gave up after 3 attempts in 2.00 s"]

    def test_non_retryable_propagates_at_once(self):
        calls = 0
        with pytest.raises(KeyError):  # noqa: PT012
            for attempt in retrying(attempts=3, on=OSError, wait=0):
                with attempt:
                    calls += 1
                    raise KeyError
        assert calls == 1

    def test_keyboard_interrupt_propagates(self):
        calls = 0
        with pytest.raises(KeyboardInterrupt):  # noqa: PT012
            for attempt in retrying(attempts=3, on=BaseException, wait=0):
                with attempt:
                    calls += 1
                    raise KeyboardInterrupt
        assert calls == 1

    def test_attempt_must_be_used_as_context_manager(self):
        with pytest.raises(RuntimeError, match="context manager"):
            for _attempt in retrying(attempts=3):
                pass

    def test_attempt_entered_twice(self):
        with pytest.raises(RuntimeError, match="only once"):  # noqa: PT012
            for attempt in retrying(attempts=3):
                with attempt:
                    pass
                with attempt:
                    pass

    def test_fallback_and_result_predicate_are_refused(self):
        with pytest.raises(TypeError, match="fallback"):
            Retry(fallback=1).retrying()
        with pytest.raises(TypeError, match="retry_if_result"):
            Retry(retry_if_result=bool).retrying()

    def test_each_iteration_is_a_fresh_call(self):
        attempts = Retry(attempts=2, wait=0).retrying()
        for _ in range(2):
            numbers = []
            for attempt in attempts:
                with attempt:
                    numbers.append(attempt.number)
                    if attempt.number == 1:
                        raise OSError
            assert numbers == [1, 2]

    def test_events_name_the_block(self):
        events = Recorder()
        for attempt in retrying(attempts=2, wait=0, listeners=[events]):
            with attempt:
                if attempt.number == 1:
                    raise OSError
        assert [type(e).__name__ for e in events.events] == ["RetryScheduled", "RetrySucceeded"]
        assert {e.target for e in events.of(RetryEvent)} == {"<block>"}

    def test_instant_waits_apply(self):
        with instant_waits() as waits:
            for attempt in retrying(attempts=3, wait=WaitFixed(30)):
                with attempt:
                    if attempt.number < 3:
                        raise OSError
        assert waits.delays == [30.0, 30.0]

    async def test_async_for(self):
        clock = FakeClock()
        numbers = []
        async for attempt in retrying(attempts=4, wait=WaitFixed(1), clock=clock):
            with attempt:
                numbers.append(attempt.number)
                await asyncio.sleep(0)
                if attempt.number < 3:
                    raise ConnectionError
        assert numbers == [1, 2, 3]
        assert clock.sleeps == [1.0, 1.0]

    async def test_async_for_gives_up(self):
        with pytest.raises(ConnectionError) as info:  # noqa: PT012
            async for attempt in retrying(attempts=2, wait=0):
                with attempt:
                    raise ConnectionError
        assert notes(info.value)[0].startswith("buttress: gave up after 2 attempts")

    async def test_async_for_cancellation_during_wait(self):
        entered = asyncio.Event()

        async def body() -> None:
            async for attempt in retrying(attempts=3, wait=WaitFixed(60)):
                with attempt:
                    entered.set()
                    raise ConnectionError

        task = asyncio.create_task(body())
        await entered.wait()
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- real processes -----------------------------------------------------------------------------

_process_calls = 0


@retry(attempts=3, wait=0)
def flaky_in_worker(x: int) -> tuple[int, int]:
    """Fails the first call made in each worker process, then answers."""
    global _process_calls  # noqa: PLW0603 - per-process state is the point
    _process_calls += 1
    if _process_calls == 1:
        raise ConnectionError("first call in this process")
    return x * 2, _process_calls


@retry(attempts=2, wait=0)
def always_fails_in_worker() -> None:
    raise ConnectionError("down")


class TestProcesses:
    def test_decorated_functions_run_in_a_process_pool(self):
        with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(flaky_in_worker, range(6)))
        assert [value for value, _ in results] == [0, 2, 4, 6, 8, 10]

    def test_gave_up_exception_crosses_the_process_boundary_with_its_note(self):
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            future = pool.submit(always_fails_in_worker)
            with pytest.raises(ConnectionError) as info:
                future.result()
        assert any(n.startswith("buttress: gave up after 2 attempts") for n in notes(info.value))

    def test_policy_pickles(self):
        policy = Retry(attempts=4, timeout=3, wait=WaitFixed(1), name="db")
        copy = pickle.loads(pickle.dumps(policy))
        assert (copy.attempts, copy.timeout, copy.wait, copy.name) == (4, 3.0, WaitFixed(1), "db")
