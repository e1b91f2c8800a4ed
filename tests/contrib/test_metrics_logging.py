"""Structured logs: the logging listener's flat ``buttress_*`` fields on every record."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pytest

from buttress import CircuitBreaker, Retry
from buttress._events import event_fields
from buttress.ratelimit import Limiter
from buttress.retry import RetryScheduled, WaitFixed
from buttress.testing import FakeClock


def fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key.startswith("buttress_") and key != "buttress_event"
    }


class TestRecords:
    def test_a_retry_record(self, caplog: pytest.LogCaptureFixture) -> None:
        policy = Retry(attempts=2, wait=WaitFixed(1), name="db", clock=FakeClock())
        calls = iter([ConnectionError("refused"), None])

        def call() -> int:
            error = next(calls)
            if error is not None:
                raise error
            return 1

        with caplog.at_level(logging.INFO, "buttress.retry"):
            policy.call(call)
        scheduled, succeeded = caplog.records
        assert fields(scheduled) == {
            "buttress_policy": "db",
            "buttress_target": "TestRecords.test_a_retry_record.call",
            "buttress_attempt": 1,
            "buttress_elapsed": 0.0,
            "buttress_waited": 0.0,
            "buttress_delay": 1.0,
            "buttress_error_type": "ConnectionError",
            "buttress_error_message": "refused",
            "buttress_event_type": "RetryScheduled",
        }
        assert isinstance(scheduled.__dict__["buttress_event"], RetryScheduled)
        assert fields(succeeded)["buttress_event_type"] == "RetrySucceeded"
        assert fields(succeeded)["buttress_attempt"] == 2

    def test_states_are_plain_strings(self, caplog: pytest.LogCaptureFixture) -> None:
        breaker = CircuitBreaker("pay", fail_max=1, clock=FakeClock(), registry=None)
        with caplog.at_level(logging.INFO, "buttress.breaker"), pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
        (record,) = (r for r in caplog.records if r.getMessage().startswith("pay: closed"))
        assert record.__dict__["buttress_old"] == "closed"
        assert type(record.__dict__["buttress_new"]) is str
        assert record.__dict__["buttress_open_for"] == 30.0

    def test_a_decision_is_flattened(self, caplog: pytest.LogCaptureFixture) -> None:
        # Decisions are built only for listeners (never for logging alone): give it one.
        seen: list[object] = []
        limiter = Limiter("1/minute", name="api", listeners=[seen.append], clock=FakeClock())
        with caplog.at_level(logging.DEBUG, "buttress.ratelimit"):
            limiter.hit("client-1")
        (record,) = caplog.records
        got = fields(record)
        assert got["buttress_key"] == "client-1"
        assert got["buttress_decision_allowed"] is True
        assert got["buttress_decision_rate"] == "1/minute"
        assert "buttress_decision_retry_after" not in got  # None is left out

    def test_every_field_is_json(self, caplog: pytest.LogCaptureFixture) -> None:
        breaker = CircuitBreaker("json", fail_max=1, clock=FakeClock(), registry=None)
        with caplog.at_level(logging.DEBUG, "buttress"), pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
        assert caplog.records
        for record in caplog.records:
            json.dumps(fields(record))

    def test_nothing_is_built_when_the_logger_is_off(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, "buttress.retry"):
            Retry(attempts=1, name="quiet").call(lambda: 1)
        assert caplog.records == []


@dataclass
class UserResult:
    status: int
    body: str


class TestEventFields:
    def test_a_user_result_is_its_repr_never_flattened(self) -> None:
        event = RetryScheduled("r", "f", 1, 0.0, 0.0, 1.0, None, UserResult(503, "x" * 500))
        got = event_fields(event)
        assert isinstance(got["buttress_result"], str)
        assert got["buttress_result"].startswith("UserResult(status=503")
        assert len(got["buttress_result"]) == 200
        assert got["buttress_result"].endswith("...")
        assert "buttress_result_status" not in got

    def test_prefix_and_separator(self) -> None:
        error = KeyError("k")
        event = RetryScheduled("r", "f", 2, 1.0, 0.5, 1.0, error)
        assert event_fields(event, "x.", ".") == {
            "x.policy": "r",
            "x.target": "f",
            "x.attempt": 2,
            "x.elapsed": 1.0,
            "x.waited": 0.5,
            "x.delay": 1.0,
            "x.error.type": "KeyError",
            "x.error.message": "'k'",
        }

    def test_a_qualified_exception_name(self) -> None:
        event = RetryScheduled("r", "f", 1, 0.0, 0.0, 1.0, json.JSONDecodeError("bad", "", 0))
        assert event_fields(event)["buttress_error_type"] == "json.decoder.JSONDecodeError"
