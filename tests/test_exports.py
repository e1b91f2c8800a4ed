"""The public front: ``__all__`` lists exactly what each public package exports."""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

# Packages whose __init__ is a pure re-export front (sorting is enforced by ruff's RUF022).
FRONTS = [
    "buttress",
    "buttress.retry",
    "buttress.ratelimit",
    "buttress.storage",
    "buttress.breaker",
    "buttress.adaptive",
    "buttress.bulkhead",
    "buttress.timeout",
    "buttress.fallback",
    "buttress.pipeline",
    "buttress.chaos",
    "buttress.hedge",
]


@pytest.mark.parametrize("name", FRONTS)
class TestExportedMembers:
    def test_all_lists_every_public_name_once(self, name):
        module = importlib.import_module(name)
        public = {
            item
            for item, value in vars(module).items()
            if not item.startswith("_") and not inspect.ismodule(value)
        }
        assert len(module.__all__) == len(set(module.__all__))
        assert set(module.__all__) - {"__version__"} == public

    def test_every_exported_class_and_function_is_documented(self, name):
        module = importlib.import_module(name)
        for item in module.__all__:
            value = getattr(module, item)
            if typing.get_origin(value) is not None:
                continue  # a type alias (Python 3.10 counts Callable[...] as a class)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{name}.{item} has no docstring"


def test_testing_module_exports_are_documented() -> None:
    testing = importlib.import_module("buttress.testing")
    for item in testing.__all__:
        assert inspect.getdoc(getattr(testing, item)), item


def test_version_is_exported() -> None:
    import buttress  # noqa: PLC0415

    assert buttress.__version__.count(".") == 2
