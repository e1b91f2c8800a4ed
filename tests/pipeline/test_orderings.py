"""Each ordering's behaviour on a scripted dependency, step by step (fake clock, sync and async)."""

from __future__ import annotations

import asyncio

import pytest

from buttress import (
    BulkheadFull,
    CircuitBreaker,
    CircuitOpen,
    Limiter,
    RateLimited,
    Rejected,
    Retry,
    RetryBudget,
    Timeout,
)
from buttress.breaker import State
from buttress.bulkhead import Bulkhead
from buttress.fallback import Fallback
from buttress.pipeline import Pipeline, limited
from buttress.storage import MemoryStorage
from buttress.testing import FakeClock
from buttress.timeout import TimeLimit
from tests.pipeline._script import HANG, Script, Slow

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN


def down(n: int) -> ConnectionError:
    return ConnectionError(f"down {n}")


def breaker(clock: FakeClock, **options) -> CircuitBreaker:
    options.setdefault("fail_max", 3)
    options.setdefault("reset_timeout", 10)
    return CircuitBreaker("dependency", clock=clock, registry=None, **options)


def fake_limiter(limits: str, clock: FakeClock) -> Limiter:
    # A Limiter's default memory store reads the real clock, whatever its clock= says.
    return Limiter(limits, storage=MemoryStorage(clock=clock), clock=clock)


def notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


class TestRetryOutsideBreaker:
    """Every attempt is one breaker outcome: the breaker opens mid-retry and stops it."""

    def test_breaker_opens_after_n_attempts_and_retry_stops_on_circuit_open(self):
        clock = FakeClock()
        guard = breaker(clock)
        dependency = Script(down(1), down(2), down(3), "ok", observe=lambda: guard.state)
        resilient = Pipeline(Retry(attempts=5, wait=1, on=ConnectionError, clock=clock), guard)

        with pytest.raises(CircuitOpen) as info:
            resilient.call(dependency)

        # attempts 1-3 reach the dependency with the breaker closed; the third failure opens it
        assert dependency.calls == 3
        assert dependency.seen == [CLOSED, CLOSED, CLOSED]
        assert guard.state is OPEN
        # waits after attempts 1, 2 and 3; attempt 4 is refused and not retried (on=)
        assert clock.sleeps == [1.0, 1.0, 1.0]
        assert clock.now() == 3.0
        assert info.value.retry_after == pytest.approx(9.0)  # opened at t=2 for 10 s

        clock.advance(9.0)  # the open period ends: the next call is the trial, and succeeds
        assert resilient.call(dependency) == "ok"
        assert dependency.seen[-1] is HALF_OPEN
        assert guard.state is CLOSED

    def test_a_retry_on_every_exception_spends_its_attempts_on_the_open_breaker(self):
        clock = FakeClock()
        guard = breaker(clock)
        dependency = Script(down(1), down(2), down(3))
        resilient = Pipeline(Retry(attempts=5, wait=1, clock=clock), guard)

        with pytest.raises(CircuitOpen) as info:
            resilient.call(dependency)

        assert dependency.calls == 3  # attempts 4 and 5 were refused by the breaker
        assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]
        assert "gave up after 5 attempts" in notes(info.value)

    async def test_async(self):
        clock = FakeClock()
        guard = breaker(clock)
        dependency = Script(down(1), down(2), down(3), observe=lambda: guard.state)
        resilient = Pipeline(Retry(attempts=5, wait=1, on=ConnectionError, clock=clock), guard)

        with pytest.raises(CircuitOpen):
            await resilient.acall(dependency.run)

        assert dependency.calls == 3
        assert dependency.seen == [CLOSED, CLOSED, CLOSED]
        assert clock.sleeps == [1.0, 1.0, 1.0]


class TestBreakerOutsideRetry:
    """The breaker sees one outcome per call, whatever the retries inside did."""

    def test_one_outcome_per_call(self):
        clock = FakeClock()
        guard = breaker(clock, fail_max=2)

        def consecutive() -> int:
            return guard.metrics().consecutive_failures

        dependency = Script(
            *(down(n) for n in range(3)),  # call 1: three failures, one breaker failure
            down(3),
            down(4),
            "ok",  # call 2: succeeds on its third attempt: one breaker success
            *(down(n) for n in range(5, 8)),  # call 3
            *(down(n) for n in range(8, 11)),  # call 4: the second failure in a row opens it
            observe=consecutive,
        )
        resilient = Pipeline(guard, Retry(attempts=3, wait=0, clock=clock))

        with pytest.raises(ConnectionError, match="down 2"):
            resilient.call(dependency)
        assert (dependency.calls, consecutive(), guard.state) == (3, 1, CLOSED)
        assert dependency.seen == [0, 0, 0]  # the breaker learns nothing between attempts

        assert resilient.call(dependency) == "ok"
        assert (dependency.calls, consecutive(), guard.state) == (6, 0, CLOSED)

        with pytest.raises(ConnectionError, match="down 7"):
            resilient.call(dependency)
        assert (dependency.calls, consecutive(), guard.state) == (9, 1, CLOSED)

        with pytest.raises(ConnectionError, match="down 10"):
            resilient.call(dependency)
        assert (dependency.calls, guard.state) == (12, OPEN)

        with pytest.raises(CircuitOpen):  # refused without calling the dependency or retrying
            resilient.call(dependency)
        assert dependency.calls == 12

    async def test_async(self):
        clock = FakeClock()
        guard = breaker(clock, fail_max=1)
        dependency = Script(down(1), down(2), "ok", down(3), down(4), down(5))
        resilient = Pipeline(guard, Retry(attempts=3, wait=0, clock=clock))

        assert await resilient.acall(dependency.run) == "ok"
        assert guard.state is CLOSED
        with pytest.raises(ConnectionError, match="down 5"):
            await resilient.acall(dependency.run)
        assert guard.state is OPEN
        with pytest.raises(CircuitOpen):
            await resilient.acall(dependency.run)
        assert dependency.calls == 6


class TestTimeoutAndRetry:
    """A timeout outside a retry bounds the whole call; inside, each attempt."""

    def test_outside_the_retry_it_is_the_total_retries_stop_before_the_deadline(self):
        clock = FakeClock()
        dependency = Script(*(down(n) for n in range(10)))
        resilient = Pipeline(
            TimeLimit(5, mode="cooperative", name="total", clock=clock),
            Retry(attempts=10, wait=2, clock=clock),
        )

        with pytest.raises(ConnectionError) as info:
            resilient.call(dependency)

        # t=0 attempt 1, t=2 attempt 2, t=4 attempt 3; a wait to t=6 would pass the deadline
        assert dependency.calls == 3
        assert clock.sleeps == [2.0, 2.0]
        assert "deadline of total" in notes(info.value)

    def test_inside_the_retry_each_attempt_gets_its_own_deadline(self):
        clock = FakeClock()
        dependency = Script(*(down(n) for n in range(4)))
        resilient = Pipeline(
            Retry(attempts=4, wait=2, clock=clock),
            TimeLimit(5, mode="cooperative", name="attempt", clock=clock),
        )

        with pytest.raises(ConnectionError):
            resilient.call(dependency)

        assert dependency.calls == 4  # the attempt limit, not the timeout, ended it
        assert clock.sleeps == [2.0, 2.0, 2.0]

    def test_a_slow_attempt_uses_up_the_total(self):
        clock = FakeClock()
        dependency = Script(Slow(4, down(1)), "ok", clock=clock)
        resilient = Pipeline(
            TimeLimit(5, mode="cooperative", clock=clock),
            Retry(attempts=3, wait=2, clock=clock),
        )

        with pytest.raises(ConnectionError, match="down 1"):  # 1 s left: no room for a wait
            resilient.call(dependency)
        assert dependency.calls == 1
        assert clock.sleeps == []

    async def test_async_attempt_timeout_is_retried(self):
        dependency = Script(HANG, "ok")
        resilient = Pipeline(Retry(attempts=3, wait=0, on=TimeoutError), TimeLimit(0.05))

        assert await resilient.acall(dependency.run) == "ok"
        assert dependency.calls == 2

    async def test_async_total_timeout_ends_the_retrying(self):
        dependency = Script(HANG, "ok")
        resilient = Pipeline(TimeLimit(0.05), Retry(attempts=3, wait=0, on=TimeoutError))

        with pytest.raises(Timeout):
            await resilient.acall(dependency.run)
        assert dependency.calls == 1  # the cancellation is not retried


class TestFallbackOutermost:
    """A fallback outside everything answers rejections and timeouts, nothing else."""

    def make(self, clock: FakeClock) -> tuple[Pipeline, CircuitBreaker, Bulkhead]:
        guard = breaker(clock, fail_max=5, ignore=Rejected)
        slots = Bulkhead(1)
        resilient = Pipeline(
            Fallback("cached", on=(Rejected, Timeout)),
            slots,
            guard,
            TimeLimit(0.05, clock=clock),
        )
        return resilient, guard, slots

    async def test_async(self):
        clock = FakeClock()
        resilient, guard, slots = self.make(clock)
        dependency = Script("fresh", HANG, ValueError("bad request"), "fresh again")

        assert await resilient.acall(dependency.run) == "fresh"
        guard.open()
        assert await resilient.acall(dependency.run) == "cached"  # CircuitOpen
        guard.close()
        permit = slots.try_acquire()
        assert permit is not None
        assert await resilient.acall(dependency.run) == "cached"  # BulkheadFull
        permit.release()
        assert dependency.calls == 1
        assert await resilient.acall(dependency.run) == "cached"  # Timeout of the hung call
        with pytest.raises(ValueError, match="bad request"):  # not selected: passes through
            await resilient.acall(dependency.run)
        assert await resilient.acall(dependency.run) == "fresh again"
        assert slots.stats().in_use == 0

    def test_sync(self):
        clock = FakeClock()
        guard = breaker(clock, ignore=Rejected)
        slots = Bulkhead(1)
        resilient = Pipeline(Fallback("cached", on=(Rejected, Timeout)), slots, guard)
        dependency = Script("fresh", "fresh again")

        guard.open()
        assert resilient.call(dependency) == "cached"
        guard.close()
        with slots.acquire():
            assert resilient.call(dependency) == "cached"
        assert resilient.call(dependency) == "fresh"
        assert dependency.calls == 1

    def test_the_rejections_reach_the_fallback_as_themselves(self):
        clock = FakeClock()
        seen: list[BaseException] = []
        guard = breaker(clock)
        slots = Bulkhead(1)

        def remember(error: BaseException) -> str:
            seen.append(error)
            return "cached"

        resilient = Pipeline(Fallback(handler=remember, on=Rejected), slots, guard)
        guard.open()
        resilient.call(Script())
        guard.close()
        with slots.acquire():
            resilient.call(Script())
        assert [type(error) for error in seen] == [CircuitOpen, BulkheadFull]


class TestRetryOutsideLimiter:
    """A retry that honours the limiter's retry_after waits exactly that long."""

    def test_pushback_waits_for_the_window(self):
        clock = FakeClock()
        limiter = fake_limiter("2/second", clock)
        dependency = Script("a", "b", "c")
        resilient = Pipeline(
            Retry(
                attempts=3,
                wait=0,
                on=RateLimited,
                pushback=lambda error: error.retry_after,
                budget=RetryBudget(clock=clock),
                clock=clock,
            ),
            limited(limiter, key="api"),
        )

        assert [resilient.call(dependency) for _ in range(2)] == ["a", "b"]
        assert clock.sleeps == []
        assert resilient.call(dependency) == "c"  # refused at t=0, retried at the next window
        assert clock.sleeps == [pytest.approx(1.0)]
        assert dependency.calls == 3

    async def test_async_refusal_without_retry(self):
        clock = FakeClock()
        resilient = Pipeline(limited(fake_limiter("1/minute", clock), key="api"))
        dependency = Script("a")

        assert await resilient.acall(dependency.run) == "a"
        with pytest.raises(RateLimited) as info:
            await resilient.acall(dependency.run)
        assert info.value.retry_after == pytest.approx(60.0)
        assert dependency.calls == 1


def test_the_same_policies_serve_two_pipelines():
    clock = FakeClock()
    guard = breaker(clock, fail_max=2)
    reads = Pipeline(Retry(attempts=2, wait=0, clock=clock), guard)
    writes = Pipeline(guard)
    dependency = Script(down(1), down(2), "never")

    with pytest.raises(ConnectionError):
        reads.call(dependency)  # two attempts: two failures of the shared breaker
    assert guard.state is OPEN
    with pytest.raises(CircuitOpen):
        writes.call(dependency)
    assert dependency.calls == 2


def test_asyncio_timeout_does_not_leak_a_bulkhead_slot():
    slots = Bulkhead(2)
    resilient = Pipeline(TimeLimit(0.02), slots)

    async def main() -> None:
        dependency = Script(HANG, HANG, "ok")
        results = await asyncio.gather(
            *(resilient.acall(dependency.run) for _ in range(3)), return_exceptions=True
        )
        # two calls hang and time out holding both slots; the third finds no slot
        assert sorted(type(result).__name__ for result in results) == [
            "BulkheadFull",
            "Timeout",
            "Timeout",
        ]
        assert await resilient.acall(dependency.run) == "ok"

    asyncio.run(main())
    assert slots.stats().in_use == 0
