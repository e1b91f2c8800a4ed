"""buttress.compat.pybreaker: the same scenarios against the real pybreaker and against the face.

The differential tests drive both with one fake clock (pybreaker's ``datetime.now`` is patched to
follow it) and compare everything a user can observe: return values, exceptions (type, message,
``__context__``), ``current_state``, ``state.name``, ``fail_counter``, ``success_counter`` and
the listener hooks called, in order. They are skipped when pybreaker is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import inspect
import pickle
import random
import re
import threading
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress import (
    BreakerStateChanged,
    ButtressError,
    CircuitOpen,
    ConfigurationError,
    Event,
    State,
    breaker_registry,
)
from buttress.compat import pybreaker as ours
from buttress.testing import FakeClock

try:
    import pybreaker as real
except ImportError:  # pragma: no cover - installed with the bench extra
    real = None  # type: ignore[assignment]

needs_pybreaker = pytest.mark.skipif(real is None, reason="pybreaker is not installed")

BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)
Trace = list[tuple[Any, ...]]


# -- the harness --------------------------------------------------------------------------------


class Recording:
    """Listener hooks that append what they see to ``log`` (for either library)."""

    def __init__(self, log: Trace) -> None:
        self.log = log

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        name = func.__name__ if func.__name__.startswith("step_") else "<block>"
        self.log.append(("before_call", name, args, kwargs))

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.log.append(("state_change", old_state and old_state.name, new_state.name))

    def failure(self, cb: Any, exc: BaseException) -> None:
        self.log.append(("failure", type(exc).__name__, str(exc)))

    def success(self, cb: Any) -> None:
        self.log.append(("success",))


class OurRecorder(Recording, ours.CircuitBreakerListener):
    pass


if real is not None:

    class RealRecorder(Recording, real.CircuitBreakerListener):
        pass


@contextlib.contextmanager
def real_time_follows(clock: FakeClock) -> Iterator[None]:
    """Make pybreaker read its time (``datetime.now``) from ``clock``."""

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return BASE + timedelta(seconds=clock.now())

    with mock.patch.object(real, "datetime", FakeDatetime):
        yield


class Excluded(Exception):
    """Excluded by type."""


class Filtered(Exception):
    """Excluded by a predicate."""


ERRORS: dict[str, type[Exception]] = {
    "boom": RuntimeError,
    "excluded": Excluded,
    "filtered": Filtered,
}


def step_ok(value: int) -> int:
    return value


def step_fail(kind: str) -> None:
    raise ERRORS[kind](kind)


def step_generator(count: int, fail: str | None) -> Generator[int, None, None]:
    yield from range(count)
    if fail:
        raise ERRORS[fail](fail)


def make(module: ModuleType, log: Trace, clock: FakeClock, **config: Any) -> Any:
    listener = OurRecorder(log) if module is ours else RealRecorder(log)
    extra = {"clock": clock} if module is ours else {}
    return module.CircuitBreaker(
        listeners=[listener],
        exclude=[Excluded, lambda error: isinstance(error, Filtered)],
        **config,
        **extra,
    )


def perform(  # noqa: PLR0911 - one return per kind of step reads best
    module: ModuleType, breaker: Any, clock: FakeClock, step: tuple[Any, ...]
) -> Any:
    """Do one step; return its result (exceptions are the caller's business)."""
    action, *args = step
    if action == "call_ok":
        return breaker.call(step_ok, *args)
    if action == "call_fail":
        return breaker.call(step_fail, *args)
    if action == "decorated_ok":
        return breaker(step_ok)(*args)
    if action == "decorated_fail":
        return breaker()(step_fail)(*args)
    if action == "calling":
        with breaker.calling():
            if args[0]:
                step_fail(args[0])
        return "block done"
    if action == "generator":
        return list(breaker.call(step_generator, *args))
    if action == "advance":
        clock.advance(args[0])
        return None
    if action in ("open", "close", "half_open"):
        return getattr(breaker, action)()
    if action == "fail_max":
        breaker.fail_max = args[0]
        return None
    if action == "success_threshold":
        breaker.success_threshold = args[0]
        return None
    raise AssertionError(step)


def drive(module: ModuleType, steps: list[tuple[Any, ...]], **config: Any) -> Trace:
    """Run ``steps`` on a fresh breaker of ``module``; return everything observable."""
    clock = FakeClock()
    log: Trace = []
    with real_time_follows(clock) if module is real else contextlib.nullcontext():
        breaker = make(module, log, clock, **config)
        trace: Trace = []
        for step in steps:
            del log[:]
            try:
                outcome: tuple[Any, ...] = ("returned", perform(module, breaker, clock, step))
            except Exception as error:
                kind = (
                    "CircuitBreakerError"
                    if isinstance(error, module.CircuitBreakerError)
                    else type(error).__name__
                )
                context = error.__context__
                outcome = ("raised", kind, str(error), context and type(context).__name__)
            trace.append(
                (
                    step,
                    outcome,
                    breaker.current_state,
                    breaker.state.name,
                    breaker.fail_counter,
                    breaker.success_counter,
                    tuple(log),
                )
            )
    return trace


def assert_same(steps: list[tuple[Any, ...]], **config: Any) -> Trace:
    expected = drive(real, steps, **config)
    actual = drive(ours, steps, **config)
    for number, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got == want, f"step {number}: {steps[number]}"
    return actual


# -- differential: hand-written scenarios --------------------------------------------------------


TRIP = [("call_fail", "boom"), ("call_fail", "boom")]


@needs_pybreaker
class TestSameAsPybreaker:
    def test_the_chapters_cycle(self):
        trace = assert_same(
            [
                ("call_ok", 1),
                *TRIP,
                ("call_ok", 2),  # rejected
                ("advance", 5),
                ("call_fail", "boom"),  # the trial fails
                ("advance", 4.5),
                ("call_ok", 3),  # still open
                ("advance", 0.5),
                ("call_ok", 4),  # the trial succeeds
                ("call_ok", 5),
            ],
            fail_max=2,
            reset_timeout=5,
        )
        outcomes = [entry[1] for entry in trace]
        assert outcomes[2] == (
            "raised",
            "CircuitBreakerError",
            "Failures threshold reached, circuit breaker opened",
            "RuntimeError",
        )
        assert outcomes[3] == (
            "raised",
            "CircuitBreakerError",
            "Timeout not elapsed yet, circuit breaker still open",
            None,
        )
        assert outcomes[5][2] == "Trial call failed, circuit breaker opened"
        assert outcomes[9] == ("returned", 4)

    def test_the_tripping_call_raises_the_original_when_asked(self):
        trace = assert_same([*TRIP, ("advance", 1), ("call_fail", "boom")], fail_max=2,
                            reset_timeout=1, throw_new_error_on_trip=False)  # fmt: skip
        assert trace[1][1] == ("raised", "RuntimeError", "boom", None)
        assert trace[3][1] == ("raised", "RuntimeError", "boom", None)

    def test_excluded_exceptions_count_as_successes(self):
        assert_same(
            [
                ("call_fail", "boom"),
                ("call_fail", "excluded"),  # resets fail_counter
                ("call_fail", "boom"),
                ("call_fail", "filtered"),
                ("call_fail", "boom"),
                *TRIP,
                ("advance", 5),
                ("call_fail", "excluded"),  # a trial ending in an excluded error closes
            ],
            fail_max=2,
            reset_timeout=5,
        )

    def test_success_threshold(self):
        assert_same(
            [*TRIP, ("advance", 5), ("call_ok", 1), ("call_ok", 2), ("call_ok", 3)],
            fail_max=2,
            reset_timeout=5,
            success_threshold=3,
        )
        assert_same(
            [*TRIP, ("advance", 5), ("call_ok", 1), ("call_fail", "boom"), ("call_ok", 2)],
            fail_max=2,
            reset_timeout=5,
            success_threshold=2,
        )

    def test_manual_control_announces_every_change(self):
        assert_same(
            [
                ("close",),
                ("call_fail", "boom"),
                ("open",),
                ("open",),
                ("call_ok", 1),
                ("half_open",),
                ("half_open",),
                ("call_ok", 2),
                ("open",),
                ("close",),
                ("call_fail", "boom"),
                ("half_open",),
                ("call_fail", "boom"),
                ("close",),
            ],
            fail_max=3,
            reset_timeout=10,
        )

    def test_decorator_calling_block_and_generators(self):
        assert_same(
            [
                ("decorated_ok", 1),
                ("decorated_fail", "boom"),
                ("calling", None),
                ("calling", "boom"),
                ("calling", "boom"),  # trips inside the block
                ("calling", None),  # rejected on entering
                ("advance", 5),
                ("generator", 3, None),
                ("generator", 2, "boom"),
                ("generator", 2, "boom"),
                ("generator", 2, "excluded"),
            ],
            fail_max=3,
            reset_timeout=5,
        )

    def test_setters(self):
        assert_same(
            [
                ("call_fail", "boom"),
                ("fail_max", 1),
                ("call_fail", "boom"),
                ("advance", 5),
                ("success_threshold", 2),
                ("call_ok", 1),
                ("call_ok", 2),
                ("fail_max", 3),
                *TRIP,
                ("call_fail", "boom"),
            ],
            fail_max=2,
            reset_timeout=5,
        )

    def test_an_open_breaker_reports_open_until_a_call_arrives(self):
        trace = assert_same([*TRIP, ("advance", 60)], fail_max=2, reset_timeout=5)
        assert trace[-1][2] == "open"


# -- differential: random scenarios --------------------------------------------------------------

STEPS = st.one_of(
    st.tuples(st.just("call_ok"), st.integers(0, 9)),
    st.tuples(st.just("call_fail"), st.sampled_from(sorted(ERRORS))),
    st.tuples(st.just("decorated_fail"), st.sampled_from(sorted(ERRORS))),
    st.tuples(st.just("calling"), st.sampled_from([None, *sorted(ERRORS)])),
    st.tuples(st.just("generator"), st.integers(0, 2), st.sampled_from([None, *sorted(ERRORS)])),
    st.tuples(st.just("advance"), st.sampled_from([0, 0.5, 1, 4.5, 5, 10])),
    st.sampled_from([("open",), ("close",), ("half_open",)]),
    st.tuples(st.just("fail_max"), st.integers(1, 3)),
    st.tuples(st.just("success_threshold"), st.integers(1, 3)),
)


@needs_pybreaker
@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(STEPS, max_size=40),
    fail_max=st.integers(1, 4),
    reset_timeout=st.sampled_from([0, 1, 5]),
    success_threshold=st.integers(1, 3),
    throw_new_error_on_trip=st.booleans(),
)
def test_random_scenarios_match_pybreaker(
    steps, fail_max, reset_timeout, success_threshold, throw_new_error_on_trip
):
    assert_same(
        steps,
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        success_threshold=success_threshold,
        throw_new_error_on_trip=throw_new_error_on_trip,
    )


# -- the chapter's program, with only its import changed -----------------------------------------

CHAPTER = """
import pybreaker
from datetime import datetime
import random
from time import sleep

breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=5)

@breaker
def fragile_function():
    if not random.choice([True, False]):
        print(" / OK", end="")
    else:
        print(" / FAIL", end="")
        raise Exception("This is a sample Exception")

def main():
    while True:
        print(datetime.now().strftime("%Y-%m-%d %H:%M:%S"), end="")
        try:
            fragile_function()
        except Exception as e:
            print(" / {} {}".format(type(e), e), end="")
        finally:
            print("")
            sleep(1)
"""


class Enough(Exception):
    """Ends the chapter's endless loop."""


def run_chapter(source: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run the chapter's ``main()`` for 20 calls on ``clock``; return its lines, times masked."""
    namespace: dict[str, Any] = {"__name__": "chapter"}
    exec(compile(source, "chapter.py", "exec"), namespace)  # noqa: S102 - the book's own code
    namespace["random"] = random.Random(9)  # seeded, instead of the global generator

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if clock.now() >= 20:
            raise Enough

    namespace["sleep"] = sleep
    capsys.readouterr()
    with pytest.raises(Enough):
        namespace["main"]()
    output = capsys.readouterr().out
    output = output.replace("buttress.compat.pybreaker.", "pybreaker.")
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>", output).splitlines()


class TestTheChaptersProgram:
    def test_runs_by_changing_only_its_import(self, monkeypatch, capsys):
        clock = FakeClock()
        monkeypatch.setattr(ours, "system_clock", clock)  # the breaker's default clock
        source = CHAPTER.replace("import pybreaker", "from buttress.compat import pybreaker")
        changed = [
            new
            for old, new in zip(CHAPTER.splitlines(), source.splitlines(), strict=True)
            if old != new
        ]
        assert changed == ["from buttress.compat import pybreaker"]
        lines = run_chapter(source, clock, capsys)
        assert len(lines) == 20
        opened = "<time> / FAIL / <class 'pybreaker.CircuitBreakerError'> Failures threshold "
        assert any(line.startswith(opened) for line in lines)
        rejected = [line for line in lines if "Timeout not elapsed yet" in line]
        assert rejected
        assert all(" / OK" not in line and " / FAIL" not in line for line in rejected)
        # After five rejected seconds, one trial call: never six rejections in a row.
        runs = "".join("R" if line in rejected else "." for line in lines)
        assert "RRRR" in runs
        assert "RRRRR" not in runs

    @needs_pybreaker
    def test_prints_what_pybreaker_prints(self, monkeypatch, capsys):
        clock = FakeClock()
        monkeypatch.setattr(ours, "system_clock", clock)
        source = CHAPTER.replace("import pybreaker", "from buttress.compat import pybreaker")
        with_buttress = run_chapter(source, clock, capsys)
        clock = FakeClock()
        with real_time_follows(clock):
            with_pybreaker = run_chapter(CHAPTER, clock, capsys)
        assert with_buttress == with_pybreaker


# -- what the face adds or does differently ------------------------------------------------------


def failing(error: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise error

    return fail


def ok() -> str:
    return "ok"


class TestErrors:
    def test_circuit_breaker_error_is_also_a_buttress_circuit_open(self):
        breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=5, name="errors", clock=FakeClock())
        with pytest.raises(CircuitOpen) as info:
            breaker.call(failing(RuntimeError("x")))
        error = info.value
        assert isinstance(error, ours.CircuitBreakerError)
        assert isinstance(error, ButtressError)
        assert error.name == "errors"
        assert error.retry_after == 5
        with pytest.raises(ours.CircuitBreakerError) as rejected:
            breaker.call(ok)
        assert rejected.value.retry_after == 5

    def test_a_fresh_error_per_rejection_and_it_pickles(self):
        breaker = ours.CircuitBreaker(fail_max=1, clock=FakeClock())
        breaker.open()
        errors = []
        for _ in range(2):
            with pytest.raises(ours.CircuitBreakerError) as info:
                breaker.call(ok)
            errors.append(info.value)
        assert errors[0] is not errors[1]
        copy = pickle.loads(pickle.dumps(errors[0]))
        assert type(copy) is ours.CircuitBreakerError
        assert str(copy) == str(errors[0])
        assert copy.retry_after == errors[0].retry_after

    def test_built_like_pybreakers_error(self):
        assert str(ours.CircuitBreakerError("message")) == "message"
        assert ours.CircuitBreakerError().args == ()

    def test_the_tripping_error_keeps_the_original_traceback(self):
        breaker = ours.CircuitBreaker(fail_max=1, clock=FakeClock())
        with pytest.raises(ours.CircuitBreakerError) as info:
            breaker.call(failing(RuntimeError("x")))
        assert isinstance(info.value.__context__, RuntimeError)
        frames = [frame.name for frame in info.traceback]
        assert "fail" in frames


class TestConstruction:
    def test_state_storage_is_refused_clearly(self):
        with pytest.raises(ConfigurationError, match="state_storage is not supported"):
            ours.CircuitBreaker(state_storage=object())

    def test_storage_classes_are_missing_with_a_reason(self):
        with pytest.raises(AttributeError, match=r"planned for buttress\.CircuitBreaker"):
            _ = ours.CircuitRedisStorage  # type: ignore[attr-defined]
        with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
            _ = ours.Nope  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        ("config", "error"),
        [
            ({"fail_max": 0}, ValueError),
            ({"fail_max": 1.5}, TypeError),
            ({"success_threshold": 0}, ValueError),
            ({"reset_timeout": -1}, ValueError),
            ({"name": 3}, TypeError),
            ({"exclude": ["not callable"]}, TypeError),
        ],
    )
    def test_bad_numbers_fail_at_construction(self, config, error):
        with pytest.raises(error):
            ours.CircuitBreaker(**config)

    def test_setters_check_too(self):
        breaker = ours.CircuitBreaker()
        with pytest.raises(ValueError, match="fail_max"):
            breaker.fail_max = 0
        with pytest.raises(ValueError, match="reset_timeout"):
            breaker.reset_timeout = -1
        with pytest.raises(TypeError, match="success_threshold"):
            breaker.success_threshold = "2"  # type: ignore[assignment]

    def test_defaults_are_pybreakers(self):
        breaker = ours.CircuitBreaker()
        assert (breaker.fail_max, breaker.reset_timeout, breaker.success_threshold) == (5, 60, 1)
        assert breaker.name is None
        assert breaker.listeners == ()
        assert breaker.excluded_exceptions == ()
        assert breaker.current_state == ours.STATE_CLOSED
        assert isinstance(breaker.state, ours.CircuitClosedState)

    def test_named_breakers_register_and_unnamed_ones_do_not(self):
        named = ours.CircuitBreaker(name="compat-registry-test")
        assert breaker_registry().get("compat-registry-test") is named.breaker
        unnamed = ours.CircuitBreaker()
        assert breaker_registry().get(unnamed.breaker.name) is not unnamed.breaker

    def test_renaming_keeps_the_buttress_name(self):
        breaker = ours.CircuitBreaker(name="first")
        breaker.name = "second"
        assert breaker.name == "second"
        assert breaker.breaker.name == "first"


class TestListenersAndExclusions:
    def test_add_and_remove(self):
        log: Trace = []
        first, second = OurRecorder(log), OurRecorder(log)
        breaker = ours.CircuitBreaker()
        breaker.add_listener(first)
        breaker.add_listeners(second)
        assert breaker.listeners == (first, second)
        breaker.remove_listener(first)
        assert tuple(breaker.listeners) == (second,)  # a fresh tuple
        breaker.call(ok)
        assert log == [("before_call", "<block>", (), {}), ("success",)]
        with pytest.raises(ValueError, match=r"x not in|not in list"):
            breaker.remove_listener(first)

    def test_hooks_receive_the_face_itself(self):
        seen = []

        class Listener(ours.CircuitBreakerListener):
            def state_change(self, cb, old_state, new_state):
                seen.append((cb, old_state.name, new_state.name))

        breaker = ours.CircuitBreaker(listeners=[Listener()])
        breaker.open()
        assert seen == [(breaker, "closed", "open")]
        assert breaker.state.name == "open"
        assert "CircuitOpenState" in repr(breaker.state)

    def test_excluded_exceptions_can_change(self):
        breaker = ours.CircuitBreaker(fail_max=1, clock=FakeClock())
        breaker.add_excluded_exceptions(KeyError, ValueError)
        assert breaker.excluded_exceptions == (KeyError, ValueError)
        assert not breaker.is_system_error(KeyError("k"))
        breaker.remove_excluded_exception(KeyError)
        assert breaker.is_system_error(KeyError("k"))
        with pytest.raises(ValueError, match="x"):
            breaker.call(failing(ValueError("x")))
        assert breaker.current_state == "closed"

    def test_a_raising_before_call_hook_propagates_and_frees_the_trial(self):
        class Refuse(ours.CircuitBreakerListener):
            def before_call(self, cb, func, *args, **kwargs):
                raise PermissionError("no")

        clock = FakeClock()
        breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=1, clock=clock)
        breaker.open()
        clock.advance(1)
        refuse = Refuse()
        breaker.add_listener(refuse)
        with pytest.raises(PermissionError):
            breaker.call(ok)
        assert breaker.current_state == "half-open"
        assert breaker.fail_counter == 0
        breaker.remove_listener(refuse)
        assert breaker.call(ok) == "ok"  # the trial slot was freed
        assert breaker.current_state == "closed"

    def test_changes_made_on_the_buttress_breaker_reach_the_hooks(self):
        log: Trace = []
        breaker = ours.CircuitBreaker(listeners=[OurRecorder(log)])
        breaker.breaker.force_open()
        assert breaker.current_state == "open"
        assert log == [("state_change", "closed", "open")]
        with pytest.raises(ours.CircuitBreakerError, match="forced open"):
            breaker.call(ok)


class TestDifferences:
    """The documented, deliberate differences from pybreaker."""

    def test_no_lock_is_held_while_calls_run(self):
        breaker = ours.CircuitBreaker()
        barrier = threading.Barrier(2, timeout=5)
        results = []

        def meet() -> None:
            results.append(breaker.call(barrier.wait))

        threads = [threading.Thread(target=meet) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [0, 1]  # both were inside the breaker at once

    def test_half_open_admits_one_trial_and_rejects_the_rest(self):
        clock = FakeClock()
        breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=1, clock=clock)
        breaker.open()
        clock.advance(1)
        inside, release = threading.Event(), threading.Event()

        def trial() -> str:
            inside.set()
            release.wait(5)
            return "trial"

        results: list[str] = []
        worker = threading.Thread(target=lambda: results.append(breaker.call(trial)))
        worker.start()
        assert inside.wait(5)
        with pytest.raises(ours.CircuitBreakerError, match="Trial call in progress"):
            breaker.call(ok)
        release.set()
        worker.join()
        assert results == ["trial"]
        assert breaker.current_state == "closed"

    @pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
    def test_interrupts_are_neither_failures_nor_successes(self, error):
        log: Trace = []
        breaker = ours.CircuitBreaker(fail_max=1, listeners=[OurRecorder(log)])
        with pytest.raises(type(error)):
            breaker.call(failing(error))
        assert breaker.current_state == "closed"
        assert breaker.fail_counter == 0
        assert log == [("before_call", "<block>", (), {})]

    def test_a_generator_dropped_before_it_started_frees_the_trial(self):
        clock = FakeClock()
        breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=1, clock=clock)
        breaker.open()
        clock.advance(1)
        generator = breaker.call(step_generator, 2, None)
        with pytest.raises(ours.CircuitBreakerError):
            breaker.call(ok)
        del generator
        gc.collect()
        assert breaker.call(ok) == "ok"
        assert breaker.current_state == "closed"

    def test_a_generator_closed_early_is_not_judged(self):
        breaker = ours.CircuitBreaker(fail_max=1)
        generator = breaker.call(step_generator, 3, None)
        assert next(generator) == 0
        generator.close()
        assert breaker.current_state == "closed"
        assert breaker.fail_counter == 0

    def test_half_open_when_half_open_restarts_the_trial_count(self):
        clock = FakeClock()
        log: Trace = []
        breaker = ours.CircuitBreaker(
            fail_max=1, reset_timeout=1, success_threshold=2, listeners=[OurRecorder(log)],
            clock=clock,
        )  # fmt: skip
        breaker.open()
        clock.advance(1)
        breaker.call(ok)
        assert (breaker.current_state, breaker.success_counter) == ("half-open", 1)
        del log[:]
        breaker.half_open()
        assert log == [("state_change", "half-open", "half-open")]  # announced, as pybreaker does
        assert breaker.success_counter == 0  # restarted, as in pybreaker
        breaker.call(ok)
        assert breaker.current_state == "half-open"

    def test_a_new_reset_timeout_applies_from_the_next_trip(self):
        clock = FakeClock()
        breaker = ours.CircuitBreaker(fail_max=1, reset_timeout=10, clock=clock)
        breaker.open()
        breaker.reset_timeout = 1
        assert breaker.reset_timeout == 1
        clock.advance(1)
        with pytest.raises(ours.CircuitBreakerError):
            breaker.call(ok)  # pybreaker would let this trial through
        breaker.open()
        clock.advance(1)
        assert breaker.call(ok) == "ok"


class TestAsync:
    async def test_call_async_counts_failures_and_trips(self):
        async def boom() -> None:
            await asyncio.sleep(0)
            raise RuntimeError("async boom")

        async def fine(value: int) -> int:
            await asyncio.sleep(0)
            return value

        breaker = ours.CircuitBreaker(fail_max=2, reset_timeout=1, clock=FakeClock())
        assert await breaker.call_async(fine, 3) == 3
        with pytest.raises(RuntimeError):
            await breaker.call_async(boom)
        with pytest.raises(ours.CircuitBreakerError, match="Failures threshold reached"):
            await breaker.call_async(boom)
        with pytest.raises(ours.CircuitBreakerError, match="Timeout not elapsed"):
            await breaker.call_async(fine, 4)

    async def test_decorated_coroutine_functions_are_protected_when_awaited(self):
        breaker = ours.CircuitBreaker(fail_max=1, clock=FakeClock())

        @breaker
        async def boom(value: int) -> int:
            raise RuntimeError(value)

        assert inspect.iscoroutinefunction(boom)
        with pytest.raises(ours.CircuitBreakerError):
            await boom(1)
        assert breaker.current_state == "open"

    async def test_pybreakers_async_flag_is_accepted(self):
        breaker = ours.CircuitBreaker(clock=FakeClock())

        @breaker(__pybreaker_call_async=True)
        async def fine() -> str:
            return "fine"

        assert await fine() == "fine"
        with pytest.raises(TypeError, match="unexpected"):
            breaker(nope=True)

    async def test_cancellation_is_not_a_failure(self):
        breaker = ours.CircuitBreaker(fail_max=1, clock=FakeClock())
        task = asyncio.ensure_future(breaker.call_async(asyncio.sleep, 10))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert breaker.current_state == "closed"
        assert breaker.fail_counter == 0


class TestOnTheButtressBreaker:
    def test_events_metrics_and_state_come_from_buttress(self):
        events: list[Event] = []
        breaker = ours.CircuitBreaker(fail_max=2, reset_timeout=3, clock=FakeClock())
        buttress_breaker = breaker.breaker
        buttress_breaker.listeners = (*buttress_breaker.listeners, events.append)
        for _ in range(2):
            with contextlib.suppress(RuntimeError, ours.CircuitBreakerError):
                breaker.call(failing(RuntimeError("x")))
        changes = [event for event in events if isinstance(event, BreakerStateChanged)]
        assert [(change.old, change.new) for change in changes] == [(State.CLOSED, State.OPEN)]
        assert changes[0].reason == "2 failures in a row"
        assert buttress_breaker.metrics().retry_after == 3
        assert buttress_breaker.rules.fail_max == breaker.fail_max == 2


def test_exports_are_complete_and_documented():
    module = importlib.import_module("buttress.compat.pybreaker")
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", module.__name__) == module.__name__
        and name not in {"annotations", "P", "R", "T", "TYPE_CHECKING"}
    }
    assert set(module.__all__) == public | {"STATE_CLOSED", "STATE_HALF_OPEN", "STATE_OPEN"}
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value):
            assert inspect.getdoc(value), name
