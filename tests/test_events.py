"""Tests for events, listeners and the logging listener in buttress._events."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from buttress import Event, LoggingListener, Subscription, add_listener, remove_listener
from buttress._events import check_listeners, emit, global_listeners
from buttress.retry import RetryFailed, RetryGaveUp, RetryScheduled, RetrySucceeded


@dataclass(frozen=True, slots=True)
class Ping(Event):
    """A test event with its own logger and level."""

    logger_name: ClassVar[str] = "buttress.tests"

    number: int = 0

    @property
    def log_level(self) -> int:
        return logging.INFO

    def describe(self) -> str:
        return f"ping {self.number} from {self.policy}"


class Recorder:
    """A listener that appends (label, event) to a shared log."""

    def __init__(self, label: str, log: list[tuple[str, object]]) -> None:
        self.label = label
        self.log = log

    def __call__(self, event: Event) -> None:
        self.log.append((self.label, event))


class LogToList(logging.Handler):
    def __init__(self, log: list[tuple[str, object]]) -> None:
        super().__init__(logging.DEBUG)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.append(("logging", record.__dict__.get("buttress_event")))


def _broken(event: Event) -> None:
    raise RuntimeError("listener bug")


@pytest.fixture(autouse=True)
def _no_leaked_listeners() -> Iterator[None]:
    assert global_listeners() == ()
    yield
    leaked = global_listeners()
    for listener in leaked:
        remove_listener(listener)
    assert leaked == ()


@pytest.fixture
def log_to_list() -> Iterator[list[tuple[str, object]]]:
    """Capture records of the buttress.tests logger (at DEBUG) into a list."""
    log: list[tuple[str, object]] = []
    logger = logging.getLogger("buttress.tests")
    handler = LogToList(log)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield log
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class TestEvent:
    def test_base_event_defaults(self) -> None:
        event = Event("db")
        assert event.policy == "db"
        assert event.logger_name == "buttress"
        assert event.log_level == logging.DEBUG
        assert event.describe() == "Event in db"

    def test_events_are_immutable(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            Ping("p").policy = "q"  # type: ignore[misc]


class TestGlobalListeners:
    def test_add_returns_a_subscription_and_registers(self) -> None:
        listener = Recorder("a", [])
        subscription = add_listener(listener)
        try:
            assert isinstance(subscription, Subscription)
            assert global_listeners() == (listener,)
        finally:
            subscription.remove()
        assert global_listeners() == ()

    def test_subscription_as_context_manager_restores_state(self) -> None:
        first, second = Recorder("a", []), Recorder("b", [])
        with add_listener(first):
            before = global_listeners()
            with add_listener(second) as subscription:
                assert isinstance(subscription, Subscription)
                assert global_listeners() == (first, second)
            assert global_listeners() == before == (first,)
        assert global_listeners() == ()

    def test_subscription_removes_on_error(self) -> None:
        with pytest.raises(KeyError), add_listener(Recorder("a", [])):
            raise KeyError("boom")
        assert global_listeners() == ()

    def test_remove_twice_is_harmless(self) -> None:
        first, second = Recorder("a", []), Recorder("b", [])
        with add_listener(second):
            subscription = add_listener(first)
            subscription.remove()
            subscription.remove()
            assert global_listeners() == (second,)
        assert global_listeners() == ()

    def test_removing_twice_does_not_remove_another_registration_of_the_same_listener(
        self,
    ) -> None:
        listener = Recorder("a", [])
        first = add_listener(listener)
        second = add_listener(listener)
        first.remove()
        first.remove()
        assert global_listeners() == (listener,)
        second.remove()
        assert global_listeners() == ()

    def test_removal_out_of_order(self) -> None:
        first, second, third = Recorder("a", []), Recorder("b", []), Recorder("c", [])
        subscriptions = [add_listener(first), add_listener(second), add_listener(third)]
        subscriptions[1].remove()
        assert global_listeners() == (first, third)
        subscriptions[0].remove()
        assert global_listeners() == (third,)
        subscriptions[2].remove()

    def test_remove_listener_ignores_unknown_listeners(self) -> None:
        listener = Recorder("a", [])
        with add_listener(listener):
            remove_listener(Recorder("b", []))
            assert global_listeners() == (listener,)

    def test_remove_listener_accepts_an_equal_bound_method(self) -> None:
        log: list[tuple[str, object]] = []
        owner = Recorder("a", log)
        add_listener(owner.__call__)
        # A new bound-method object each time: removal must match by equality.
        remove_listener(owner.__call__)
        assert global_listeners() == ()

    @pytest.mark.parametrize("value", [None, 1, "listener", [print]], ids=repr)
    def test_add_rejects_non_callables(self, value: object) -> None:
        with pytest.raises(TypeError, match=r"^listener must be callable"):
            add_listener(value)  # type: ignore[arg-type]
        assert global_listeners() == ()


class TestEmit:
    def test_order_is_logging_then_global_then_local(
        self, log_to_list: list[tuple[str, object]]
    ) -> None:
        log = log_to_list
        event = Ping("p", 1)
        with add_listener(Recorder("global-1", log)), add_listener(Recorder("global-2", log)):
            emit(event, [Recorder("local-1", log), Recorder("local-2", log)])
        assert log == [
            ("logging", event),
            ("global-1", event),
            ("global-2", event),
            ("local-1", event),
            ("local-2", event),
        ]

    def test_events_arrive_in_emission_order(self) -> None:
        log: list[tuple[str, object]] = []
        events = [Ping("p", number) for number in range(5)]
        with add_listener(Recorder("global", log)):
            for event in events:
                emit(event, [Recorder("local", log)])
        assert [event for label, event in log if label == "global"] == events
        assert [event for label, event in log if label == "local"] == events

    def test_a_raising_listener_is_logged_and_others_still_receive(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        log: list[tuple[str, object]] = []
        event = Ping("p", 7)
        with add_listener(_broken), add_listener(Recorder("global", log)):
            emit(event, [_broken, Recorder("local", log)])
        assert log == [("global", event), ("local", event)]
        errors = [record for record in caplog.records if record.name == "buttress.events"]
        assert len(errors) == 2
        for record in errors:
            assert record.levelno == logging.ERROR
            assert record.exc_info is not None
            assert isinstance(record.exc_info[1], RuntimeError)
            assert "_broken" in record.getMessage()
            assert "Ping" in record.getMessage()

    def test_a_listener_raising_a_base_exception_is_not_swallowed(self) -> None:
        def interrupt(event: Event) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            emit(Ping("p"), [interrupt])

    def test_no_listeners_is_fine(self) -> None:
        emit(Ping("p"), ())


class TestCheckListeners:
    @pytest.mark.parametrize(
        "listeners",
        [[print, len], (print,), [], iter([print]), {print: 1}],
        ids=["list", "tuple", "empty", "iterator", "dict-keys"],
    )
    def test_freezes_iterables_of_callables_into_a_tuple(self, listeners: object) -> None:
        result = check_listeners(listeners)  # type: ignore[arg-type]
        assert isinstance(result, tuple)
        assert all(callable(item) for item in result)

    def test_keeps_order(self) -> None:
        a, b = Recorder("a", []), Recorder("b", [])
        assert check_listeners([b, a]) == (b, a)

    @pytest.mark.parametrize("listener", [print, Recorder("a", []), LoggingListener(), Recorder])
    def test_rejects_a_bare_callable(self, listener: object) -> None:
        with pytest.raises(TypeError, match=r"^listeners must be an iterable of callables"):
            check_listeners(listener)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["print", b"print"], ids=repr)
    def test_rejects_strings(self, value: object) -> None:
        with pytest.raises(TypeError, match=r"^listeners must be an iterable of callables"):
            check_listeners(value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [[1], [print, None], ["print"]], ids=repr)
    def test_rejects_non_callable_items(self, value: object) -> None:
        with pytest.raises(TypeError, match=r"^listeners must contain callables, got"):
            check_listeners(value)  # type: ignore[arg-type]

    def test_names_the_argument(self) -> None:
        with pytest.raises(TypeError, match=r"^on_retry must contain callables"):
            check_listeners([3], "on_retry")  # type: ignore[list-item]

    @pytest.mark.parametrize("value", [None, 3, 2.5], ids=repr)
    def test_rejects_non_iterables_naming_the_argument(self, value: object) -> None:
        # Retry(listeners=None) must say what is wrong with which argument, not only
        # "'NoneType' object is not iterable".
        with pytest.raises(TypeError, match=r"listeners"):
            check_listeners(value)  # type: ignore[arg-type]


class TestLoggingListener:
    def test_logs_on_the_events_logger_at_its_level(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="buttress")
        event = Ping("p", 3)
        LoggingListener()(event)
        [record] = caplog.records
        assert record.name == "buttress.tests"
        assert record.levelno == logging.INFO
        assert record.getMessage() == "ping 3 from p"
        assert record.__dict__["buttress_event"] is event

    def test_does_not_log_below_the_loggers_level(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="buttress.tests")
        LoggingListener()(Ping("p"))
        assert caplog.records == []

    def test_the_built_in_listener_always_receives(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="buttress")
        event = Ping("p", 4)
        emit(event, ())
        assert [record.__dict__["buttress_event"] for record in caplog.records] == [event]

    @pytest.mark.parametrize(
        ("event", "level"),
        [
            (Event("db"), logging.DEBUG),
            (RetryScheduled("db", "fetch", 1, 0.0, 0.0, 0.5, OSError("down")), logging.INFO),
            (RetrySucceeded("db", "fetch", 1, 0.0, 0.0), logging.DEBUG),
            (RetrySucceeded("db", "fetch", 2, 0.5, 0.5), logging.INFO),
            (RetryGaveUp("db", "fetch", 3, 1.0, 1.0, "attempts", OSError("x")), logging.WARNING),
            (RetryFailed("db", "fetch", 1, 0.0, 0.0, KeyError("k")), logging.DEBUG),
        ],
        ids=lambda value: type(value).__name__ if isinstance(value, Event) else "",
    )
    def test_levels_and_loggers_of_the_standard_events(
        self, caplog: pytest.LogCaptureFixture, event: Event, level: int
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="buttress")
        LoggingListener()(event)
        [record] = caplog.records
        assert record.levelno == level
        assert record.name == event.logger_name
        assert record.getMessage() == event.describe()
        assert record.__dict__["buttress_event"] is event

    def test_retry_events_use_the_retry_logger(self) -> None:
        assert RetryScheduled.logger_name == "buttress.retry"
        assert RetryGaveUp.logger_name == "buttress.retry"

    def test_retry_event_descriptions(self) -> None:
        scheduled = RetryScheduled("db", "fetch", 2, 1.0, 0.5, 1.25, ConnectionError("refused"))
        assert scheduled.describe() == (
            "db fetch: attempt 2 failed with ConnectionError: refused; retrying in 1.25 s"
        )
        by_result = RetryScheduled("db", "fetch", 1, 0.0, 0.0, 0.1, None, 503)
        assert "failed with result 503;" in by_result.describe()
        assert RetrySucceeded("db", "fetch", 1, 0.0, 0.0).describe() == (
            "db fetch: succeeded after 1 attempt in 0.00 s"
        )
        gave_up = RetryGaveUp("db", "fetch", 3, 2.5, 2.0, "budget", TimeoutError())
        assert gave_up.describe() == (
            "db fetch: gave up after 3 attempts in 2.50 s (the retry budget is exhausted); "
            "last failure: TimeoutError"
        )
        failed = RetryFailed("db", "fetch", 1, 0.0, 0.0, KeyError("k"))
        assert failed.describe() == "db fetch: attempt 1 raised KeyError: 'k', which is not retried"


class TestNothingPrintedByDefault:
    def test_the_buttress_logger_has_a_null_handler(self) -> None:
        handlers = logging.getLogger("buttress").handlers
        assert any(isinstance(handler, logging.NullHandler) for handler in handlers)

    def test_importing_buttress_adds_the_null_handler_and_prints_nothing(self) -> None:
        # A fresh interpreter: logging is unconfigured there, so without the NullHandler the
        # warning below would reach logging.lastResort and be printed on stderr.
        script = textwrap.dedent(
            """
            import logging
            before = list(logging.getLogger("buttress").handlers)
            import buttress
            from buttress._events import emit
            after = logging.getLogger("buttress").handlers
            assert before == [], before
            assert [type(h) for h in after] == [logging.NullHandler], after
            emit(buttress.RetryGaveUp("db", "f", 3, 1.0, 1.0, "attempts", OSError("x")), ())
            logging.getLogger("buttress.retry").warning("a direct warning")
            """
        )
        result = subprocess.run(  # noqa: S603 - our own interpreter running a literal script
            [sys.executable, "-c", script], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        assert result.stderr == ""
