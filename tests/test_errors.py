"""Tests for the exception tree in buttress._errors."""

from __future__ import annotations

import copy
import pickle
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest

import buttress
from buttress import _errors
from buttress._errors import (
    BulkheadFull,
    ButtressError,
    CircuitOpen,
    ConfigurationError,
    RateLimited,
    Rejected,
    RetryBudgetExhausted,
    RetryExhausted,
    StorageError,
    Timeout,
)

EXCEPTION_NAMES = sorted(
    name
    for name in _errors.__all__
    if isinstance(getattr(_errors, name), type)
    and issubclass(getattr(_errors, name), BaseException)
)


def _add_note(error: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:  # PEP 678 on 3.10: the attribute is what add_note would set
        error.__notes__ = [*getattr(error, "__notes__", ()), note]  # type: ignore[attr-defined]


EXAMPLES: dict[str, Callable[[], ButtressError]] = {
    "ButtressError": lambda: ButtressError("root"),
    "Rejected": lambda: Rejected("refused", name="api", retry_after=1.5),
    "RateLimited": lambda: RateLimited("slow down", name="limiter", retry_after=0.25),
    "CircuitOpen": lambda: CircuitOpen("open", name="breaker", retry_after=30.0),
    "BulkheadFull": lambda: BulkheadFull("full", name="pool"),
    "RetryExhausted": lambda: RetryExhausted(
        "results kept failing",
        last_result={"status": 503},
        attempts=3,
        elapsed=1.25,
        reason="timeout",
    ),
    "RetryBudgetExhausted": lambda: RetryBudgetExhausted(
        "budget empty", last_result=[1, 2], attempts=2, elapsed=0.5, name="fetch"
    ),
    "Timeout": lambda: Timeout("too slow"),
    "StorageError": lambda: StorageError("redis is down"),
    "ConfigurationError": lambda: ConfigurationError("bad config"),
}
"""How to build one instance of every exception, each with non-default data."""

HIERARCHY: dict[type[BaseException], tuple[type[BaseException], ...]] = {
    ButtressError: (Exception,),
    Rejected: (ButtressError,),
    RateLimited: (Rejected, ButtressError),
    CircuitOpen: (Rejected, ButtressError),
    BulkheadFull: (Rejected, ButtressError),
    RetryBudgetExhausted: (Rejected, RetryExhausted, ButtressError),
    RetryExhausted: (ButtressError,),
    Timeout: (ButtressError, TimeoutError, OSError),
    StorageError: (ButtressError,),
    ConfigurationError: (ButtressError, ValueError),
}


def _data(error: BaseException) -> dict[str, Any]:
    return {
        "type": type(error),
        "args": error.args,
        "str": str(error),
        "dict": dict(error.__dict__),
        "notes": getattr(error, "__notes__", None),
    }


class TestTree:
    @pytest.mark.parametrize("cls", HIERARCHY, ids=lambda cls: cls.__name__)
    def test_class_has_its_bases(self, cls: type[BaseException]) -> None:
        for base in HIERARCHY[cls]:
            assert issubclass(cls, base)

    def test_every_exception_is_covered_here(self) -> None:
        assert sorted(cls.__name__ for cls in HIERARCHY) == EXCEPTION_NAMES
        assert sorted(EXAMPLES) == EXCEPTION_NAMES
        for name, build in EXAMPLES.items():
            assert type(build()).__name__ == name

    @pytest.mark.parametrize(
        ("cls", "not_a"),
        [
            (Rejected, RetryExhausted),
            (RetryExhausted, Rejected),
            (RateLimited, RetryExhausted),
            (Timeout, Rejected),
            (ConfigurationError, Rejected),
            (StorageError, Rejected),
        ],
    )
    def test_siblings_are_distinct(self, cls: type[BaseException], not_a: type) -> None:
        assert not issubclass(cls, not_a)

    def test_builtin_handlers_catch_the_dual_exceptions(self) -> None:
        with pytest.raises(TimeoutError):
            raise Timeout("late")
        with pytest.raises(ValueError, match="nope"):
            raise ConfigurationError("nope")

    def test_every_exception_is_exported_from_the_package(self) -> None:
        for name in EXCEPTION_NAMES:
            assert getattr(buttress, name) is getattr(_errors, name)

    def test_rejected_data_defaults_to_none(self) -> None:
        error = RateLimited("slow down")
        assert error.name is None
        assert error.retry_after is None
        assert str(error) == "slow down"

    def test_retry_budget_exhausted_carries_both_kinds_of_data(self) -> None:
        error = RetryBudgetExhausted("m", last_result=None, attempts=4, elapsed=2.0, name="p")
        assert (error.name, error.retry_after) == ("p", None)
        assert (error.last_result, error.attempts, error.elapsed) == (None, 4, 2.0)
        assert error.reason == "budget"
        assert error.args == ("m",)


class TestDocstring:
    def test_draws_every_exception(self) -> None:
        doc = _errors.__doc__
        assert doc is not None
        missing = [name for name in EXCEPTION_NAMES if not re.search(rf"\b{name}\b", doc)]
        assert missing == []

    def test_drawing_matches_the_real_hierarchy(self) -> None:
        doc = _errors.__doc__
        assert doc is not None
        tree = doc.split("::", 1)[1].split("\n\n")[1]
        # Each line is "<indent and box drawing> Name  description"; the depth is the column of
        # the name, four characters per level.
        parents: list[str] = []
        drawn = []
        for line in tree.splitlines():
            match = re.search(r"[A-Za-z]", line)
            assert match is not None, line
            depth = (match.start() - 4) // 4
            name = line[match.start() :].split()[0]
            drawn.append(name)
            del parents[depth:]
            if parents:
                assert issubclass(getattr(_errors, name), getattr(_errors, parents[-1])), name
            parents.append(name)
        assert sorted(drawn) == EXCEPTION_NAMES


class TestPickle:
    @pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
    @pytest.mark.parametrize("name", EXAMPLES)
    def test_round_trip_keeps_type_message_and_data(self, name: str, protocol: int) -> None:
        error = EXAMPLES[name]()
        restored = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert _data(restored) == _data(error)

    @pytest.mark.parametrize("name", EXAMPLES)
    def test_round_trip_keeps_notes(self, name: str) -> None:
        error = EXAMPLES[name]()
        _add_note(error, "buttress: gave up after 3 attempts in 1.25 s")
        _add_note(error, "second note")
        restored = pickle.loads(pickle.dumps(error))
        assert restored.__notes__ == [
            "buttress: gave up after 3 attempts in 1.25 s",
            "second note",
        ]
        assert _data(restored) == _data(error)

    @pytest.mark.parametrize("name", EXAMPLES)
    def test_copy_and_deepcopy(self, name: str) -> None:
        error = EXAMPLES[name]()
        assert _data(copy.copy(error)) == _data(error)
        assert _data(copy.deepcopy(error)) == _data(error)

    def test_named_data_survives(self) -> None:
        error = RetryExhausted(
            "m", last_result=("x", 1), attempts=7, elapsed=3.5, reason="attempts"
        )
        restored = pickle.loads(pickle.dumps(error))
        assert isinstance(restored, RetryExhausted)
        assert restored.last_result == ("x", 1)
        assert restored.attempts == 7
        assert restored.elapsed == 3.5
        assert restored.reason == "attempts"

        limited = pickle.loads(pickle.dumps(RateLimited("r", name="api", retry_after=2.0)))
        assert isinstance(limited, RateLimited)
        assert (limited.name, limited.retry_after) == ("api", 2.0)

    def test_restored_exception_can_be_raised_and_caught_by_base(self) -> None:
        restored = pickle.loads(pickle.dumps(CircuitOpen("open", name="b", retry_after=1.0)))
        with pytest.raises(Rejected) as info:
            raise restored
        assert info.value.retry_after == 1.0

    def test_user_subclass_with_extra_data_pickles(self) -> None:
        class _Custom(RateLimited):
            def __init__(self, message: str, *, tenant: str) -> None:
                super().__init__(message, name="limiter")
                self.tenant = tenant

        # Local classes cannot be pickled by reference; copying uses the same reduction.
        error = _Custom("quota", tenant="acme")
        clone = copy.copy(error)
        assert isinstance(clone, _Custom)
        assert (clone.tenant, clone.name, clone.args) == ("acme", "limiter", ("quota",))
