"""The fronts of buttress.bulkhead, buttress.timeout and buttress.fallback, as in test_exports."""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

FRONTS = ["buttress.bulkhead", "buttress.timeout", "buttress.fallback"]


@pytest.mark.parametrize("name", FRONTS)
def test_all_lists_every_public_name_once_sorted(name):
    module = importlib.import_module(name)
    public = {
        item
        for item, value in vars(module).items()
        if not item.startswith("_") and not inspect.ismodule(value)
    }
    assert len(module.__all__) == len(set(module.__all__))
    assert set(module.__all__) == public


@pytest.mark.parametrize("name", FRONTS)
def test_every_exported_class_and_function_is_documented(name):
    module = importlib.import_module(name)
    for item in module.__all__:
        value = getattr(module, item)
        if typing.get_origin(value) is not None:
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{item} has no docstring"
