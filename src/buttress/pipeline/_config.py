"""Pipelines described in a dict or a TOML file, built by name.

The format (TOML; the same shape as nested dicts)::

    [policies.payments]
    order = ["fallback", "timeout", "retry", "bulkhead", "breaker", "attempt_timeout"]  # optional
    allow = []                         # order rules not to warn about (optional)
    timeout = {seconds = 10, mode = "cooperative"}    # the whole call; or just: timeout = 10
    retry = {attempts = 3, wait = {initial = 0.1, max = 2}, budget = {ratio = 0.2}}
    bulkhead = {max_concurrent = 20, max_wait = 0.5}
    breaker = {fail_max = 5, reset_timeout = 30}
    attempt_timeout = 2                # each attempt
    fallback = {value = "unavailable", on = ["Rejected", "Timeout"]}

Every key is checked when the file is loaded; an unknown key or a bad value is a
:class:`~buttress.ConfigurationError` naming the pipeline, the policy and the key. Code-only
settings (predicates, handlers, listeners, a clock) are given to :meth:`Pipelines.build`.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from buttress import _errors
from buttress._clock import Clock
from buttress._errors import ConfigurationError
from buttress.breaker import CircuitBreaker
from buttress.bulkhead import Bulkhead
from buttress.fallback import Fallback
from buttress.pipeline._adapters import limited
from buttress.pipeline._pipeline import Pipeline
from buttress.pipeline._validate import RULES
from buttress.ratelimit import Limiter
from buttress.retry import Retry, RetryBudget, WaitExponential
from buttress.storage import MemoryStorage
from buttress.timeout import TimeLimit

__all__ = ["RECOMMENDED_ORDER", "Pipelines"]

RECOMMENDED_ORDER: tuple[str, ...] = (
    "fallback",
    "timeout",
    "retry",
    "limiter",
    "bulkhead",
    "breaker",
    "attempt_timeout",
)
"""The policy entries of a configured pipeline, outermost first, when it gives no ``order``."""

# What each entry accepts: key -> kind of value. Keys are the constructors' argument names.
_TIMEOUT = {"seconds": "duration", "mode": "str", "name": "str"}
_SCHEMAS: dict[str, dict[str, str]] = {
    "fallback": {"value": "any", "on": "names", "name": "str"},
    "timeout": _TIMEOUT,
    "retry": {
        "attempts": "int",
        "timeout": "duration",
        "wait": "wait",
        "max_wait": "duration",
        "on": "names",
        "budget": "budget",
        "name": "str",
    },
    "limiter": {
        "limits": "str",
        "algorithm": "str",
        "key": "str",
        "cost": "int",
        "max_wait": "duration",
        "storage": "str",
        "on_store_error": "str",
        "name": "str",
    },
    "bulkhead": {
        "max_concurrent": "int",
        "max_waiting": "int",
        "max_wait": "duration",
        "name": "str",
    },
    "breaker": {
        "fail_max": "int",
        "failure_rate": "number",
        "slow_call_rate": "number",
        "slow_call_duration": "duration",
        "window_size": "number",
        "window_type": "str",
        "window_buckets": "int",
        "min_calls": "int",
        "reset_timeout": "duration",
        "reset_timeout_multiplier": "number",
        "reset_timeout_max": "duration",
        "half_open_max_calls": "int",
        "success_threshold": "int",
        "record": "names",
        "ignore": "names",
        "storage": "str",
        "sync_interval": "duration",
        "trial_lease": "duration",
        "store_cooldown": "duration",
        "name": "str",
    },
    "attempt_timeout": _TIMEOUT,
}
_REQUIRED = {
    "fallback": "value",
    "timeout": "seconds",
    "attempt_timeout": "seconds",
    "limiter": "limits",
    "bulkhead": "max_concurrent",
}
_WAIT_KEYS = {"initial": "duration", "multiplier": "number", "max": "duration", "jitter": "str"}
_BUDGET_KEYS = {"ratio": "number", "min_per_second": "number", "ttl": "duration"}
_PIPELINE_KEYS = {"order", "allow"}
_LIMITED_KEYS = ("key", "cost", "max_wait")  # the limited() adapter's; the rest is the Limiter's
_CLOCKED = ("timeout", "attempt_timeout", "retry", "breaker", "limiter")

Spec = dict[str, Any]


class _Problem(Exception):
    """A bad value, before it is placed (pipeline, policy, key) in a ConfigurationError."""


def _exception_type(name: object) -> type[BaseException]:
    """An exception type by name: buttress's (``CircuitOpen``...) or a builtin (``OSError``)."""
    if not isinstance(name, str):
        raise _Problem(f"exception names must be str, got {type(name).__name__} ({name!r})")
    found = getattr(_errors, name, None)
    if not (isinstance(found, type) and issubclass(found, Exception)):
        found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    raise _Problem(
        f"{name!r} is not an exception type of buttress (e.g. 'Rejected', 'Timeout') or a "
        "builtin one (e.g. 'ConnectionError')"
    )


def _int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"must be an integer, got {type(value).__name__} ({value!r})")
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(f"must be a number, got {type(value).__name__} ({value!r})")
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(f"must be a number of seconds, got {type(value).__name__} ({value!r})")
    return value


def _str(value: Any) -> Any:
    if not isinstance(value, str):
        raise _Problem(f"must be a string, got {type(value).__name__} ({value!r})")
    return value


def _names(value: Any) -> Any:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise _Problem(f"must be an exception name or a non-empty list of them, got {value!r}")
    return tuple(_exception_type(name) for name in names)


def _wait(value: Any) -> Any:
    if isinstance(value, Mapping):
        return WaitExponential(**_table(value, _WAIT_KEYS, "wait"))
    return _duration(value)  # a fixed wait


def _budget(value: Any) -> Any:
    if value is True:
        return {}
    if isinstance(value, Mapping):
        return _table(value, _BUDGET_KEYS, "budget")
    raise _Problem(f"must be true or a table of {sorted(_BUDGET_KEYS)}, got {value!r}")


_KINDS: dict[str, Callable[[Any], Any]] = {
    "any": lambda value: value,
    "int": _int,
    "number": _number,
    "duration": _duration,
    "str": _str,
    "names": _names,
    "wait": _wait,
    "budget": _budget,
}


def _value(kind: str, value: Any) -> Any:
    """Check (and convert) one value of the given kind; raise :class:`_Problem` if bad.

    ``None`` passes through: the policy's own "no limit" where it has one.
    """
    return value if value is None else _KINDS[kind](value)


def _table(value: Mapping[str, Any], keys: Mapping[str, str], what: str) -> dict[str, Any]:
    """Check a nested table (``wait``, ``budget``) and build it, naming ``what.key`` if bad."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in keys:
            raise _Problem(f"{what}: unknown key {key!r}; expected one of {sorted(keys)}")
        try:
            out[key] = _value(keys[key], item)
        except _Problem as problem:
            raise _Problem(f"{what}.{key} {problem}") from None
    return out


class Pipelines:
    """Named pipelines from configuration: load them once, use them by name.

    Build one with :meth:`from_dict` or :meth:`from_toml`; every key and value is checked and
    every pipeline is built (and its order checked) when loading, so that a bad file fails at
    start-up, not at the first call. :meth:`get` returns the pipeline built at loading (its
    policies, e.g. its breaker, shared by everyone who gets it); :meth:`build` makes a new one,
    with new policies and code-only settings.
    """

    __slots__ = ("_built", "_lock", "_specs")

    def __init__(self, specs: Mapping[str, Spec]) -> None:
        self._specs = dict(specs)
        self._lock = threading.Lock()
        self._built: dict[str, Pipeline] = {}
        for name in self._specs:
            self._built[name] = self._make(name, None, {}, validate=True)

    def __repr__(self) -> str:
        return f"Pipelines({sorted(self._specs)})"

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        """The names of the configured pipelines, sorted."""
        return sorted(self._specs)

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipelines:
        """Load pipelines from ``{"policies": {name: {entry: settings, ...}, ...}}``.

        Args:
            data: The configuration, shaped like the TOML format (see the module docstring).

        Returns:
            The loaded :class:`Pipelines`.

        Raises:
            ConfigurationError: For an unknown key or a bad value, naming the pipeline, the
                policy and the key; also for a value a policy refuses when it is built.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"configuration must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"policies"})
        if unknown:
            raise ConfigurationError(
                f"unknown top-level keys {unknown}: pipelines go under 'policies'"
            )
        policies = data.get("policies", {})
        if not isinstance(policies, Mapping):
            raise ConfigurationError("'policies' must be a table of pipelines")
        specs: dict[str, Spec] = {}
        for name, table in policies.items():
            specs[name] = _parse_pipeline(name, table)
        return cls(specs)

    @classmethod
    def from_toml(cls, source: str | bytes | os.PathLike[str]) -> Pipelines:
        """Load pipelines from TOML: the text itself, or a file given as a path object.

        Reading TOML uses :mod:`tomllib` (Python 3.11+), or the ``tomli`` package on 3.10.

        Args:
            source: TOML text (``str`` or UTF-8 ``bytes``), or a :class:`pathlib.Path` (any
                ``os.PathLike``) of a file.

        Returns:
            The loaded :class:`Pipelines`.

        Raises:
            ConfigurationError: For TOML that does not parse, or as :meth:`from_dict` does;
                also on Python 3.10 without ``tomli``.
            OSError: If the file cannot be read.
        """
        loads = _toml_loads()
        if isinstance(source, os.PathLike):
            text = Path(source).read_text(encoding="utf-8")
        elif isinstance(source, bytes):
            text = source.decode("utf-8")
        elif isinstance(source, str):
            text = source
        else:
            raise TypeError(
                f"source must be TOML text or a path object, got {type(source).__name__}"
            )
        try:
            data = loads(text)
        except ValueError as error:  # tomllib.TOMLDecodeError is a ValueError
            hint = ""
            if isinstance(source, str) and "\n" not in source and source.endswith(".toml"):
                hint = " (to read a file, pass a pathlib.Path)"
            raise ConfigurationError(f"the TOML does not parse: {error}{hint}") from error
        return cls.from_dict(data)

    # -- using ----------------------------------------------------------------------------------

    def _spec(self, name: str) -> Spec:
        spec = self._specs.get(name)
        if spec is None:
            raise KeyError(f"no pipeline named {name!r}; configured: {self.names()}")
        return spec

    def get(self, name: str) -> Pipeline:
        """The pipeline ``name`` as built when loading (the same object at every call).

        Returns:
            The :class:`~buttress.pipeline.Pipeline`.

        Raises:
            KeyError: If no pipeline has that name.
        """
        self._spec(name)
        return self._built[name]

    def build(
        self,
        name: str,
        *,
        clock: Clock | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Pipeline:
        """Build a new pipeline ``name`` (new policies), adding code-only settings.

        Args:
            name: The configured pipeline.
            clock: A clock for every policy that takes one (a ``FakeClock`` in tests).
            overrides: Per policy entry, arguments added to (or replacing) the configured
                ones, e.g. ``{"retry": {"retry_if": is_transient}, "fallback": {"handler":
                cached}}``.

        Returns:
            The new :class:`~buttress.pipeline.Pipeline` (its order is not checked again).

        Raises:
            KeyError: If no pipeline has that name.
            ConfigurationError: For an override of a policy the pipeline does not have, or one
                its policy refuses.
        """
        spec = self._spec(name)
        extra = dict(overrides or {})
        for entry in extra:
            if entry not in spec["entries"]:
                raise ConfigurationError(
                    f"pipeline {name!r}: overrides name {entry!r}, which it does not have; "
                    f"it has {sorted(spec['entries'])}"
                )
        return self._make(name, clock, extra, validate=False)

    def _make(
        self,
        name: str,
        clock: Clock | None,
        overrides: Mapping[str, Mapping[str, Any]],
        *,
        validate: bool,
    ) -> Pipeline:
        spec = self._specs[name]
        policies = [
            _build_entry(name, entry, spec["entries"][entry], clock, overrides.get(entry, {}))
            for entry in spec["order"]
        ]
        return Pipeline(*policies, name=name, validate=validate, allow=spec["allow"], _stacklevel=4)


def _toml_loads() -> Callable[[str], dict[str, Any]]:
    """``tomllib.loads`` (3.11+) or ``tomli.loads`` (3.10), or a clear error."""
    for module in ("tomllib", "tomli"):
        found = importlib.util.find_spec(module)
        if found is not None:
            loads = importlib.import_module(module).loads
            return cast("Callable[[str], dict[str, Any]]", loads)
    raise ConfigurationError(
        "reading TOML needs Python 3.11+ (tomllib) or the tomli package on Python 3.10 "
        "(pip install tomli); or load the configuration yourself and use Pipelines.from_dict()"
    )


def _where(pipeline: str, entry: str | None = None, key: str | None = None) -> str:
    where = f"pipeline {pipeline!r}"
    if entry is not None:
        where += f", policy {entry!r}"
    if key is not None:
        where += f", key {key!r}"
    return where


def _parse_pipeline(name: object, table: object) -> Spec:
    """Check one pipeline's table; return its spec (entries checked, order and allow)."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"pipeline names must be non-empty strings, got {name!r}")
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{_where(name)}: must be a table, got {type(table).__name__}")
    entries: dict[str, dict[str, Any]] = {}
    for entry, settings in table.items():
        if entry in _PIPELINE_KEYS:
            continue
        if entry not in _SCHEMAS:
            raise ConfigurationError(
                f"{_where(name)}: unknown key {entry!r}; expected policies "
                f"{sorted(_SCHEMAS)} or {sorted(_PIPELINE_KEYS)}"
            )
        entries[entry] = _parse_entry(name, entry, settings)
    order = _parse_order(name, table.get("order"), entries)
    allow = table.get("allow", [])
    if not isinstance(allow, (list, tuple)) or not all(isinstance(a, str) for a in allow):
        raise ConfigurationError(f"{_where(name, key='allow')}: must be a list of rule ids")
    unknown = sorted(set(allow) - RULES.keys())
    if unknown:
        raise ConfigurationError(
            f"{_where(name, key='allow')}: unknown rules {unknown}; known: {sorted(RULES)}"
        )
    return {"entries": entries, "order": order, "allow": tuple(allow)}


def _parse_order(name: str, order: object, entries: Mapping[str, Any]) -> tuple[str, ...]:
    if order is None:
        return tuple(entry for entry in RECOMMENDED_ORDER if entry in entries)
    where = _where(name, key="order")
    if not isinstance(order, (list, tuple)) or not all(isinstance(e, str) for e in order):
        raise ConfigurationError(f"{where}: must be a list of policy names, got {order!r}")
    for entry in order:
        if entry not in entries:
            raise ConfigurationError(
                f"{where}: {entry!r} is not configured in this pipeline "
                f"(configured: {sorted(entries)})"
            )
    if len(set(order)) != len(order):
        raise ConfigurationError(f"{where}: names a policy twice: {list(order)}")
    missing = sorted(set(entries) - set(order))
    if missing:
        raise ConfigurationError(f"{where}: leaves out configured policies {missing}")
    return tuple(order)


def _parse_entry(pipeline: str, entry: str, settings: object) -> dict[str, Any]:
    """Check one policy's settings against its schema; return the constructor's arguments."""
    if entry in ("timeout", "attempt_timeout") and not isinstance(settings, Mapping):
        settings = {"seconds": settings}  # the short form: timeout = 10
    if not isinstance(settings, Mapping):
        raise ConfigurationError(
            f"{_where(pipeline, entry)}: must be a table, got {type(settings).__name__}"
        )
    schema = _SCHEMAS[entry]
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in schema:
            raise ConfigurationError(
                f"{_where(pipeline, entry, key)}: unknown key; expected one of {sorted(schema)}"
            )
        try:
            out[key] = _value(schema[key], value)
        except _Problem as problem:
            raise ConfigurationError(f"{_where(pipeline, entry, key)}: {problem}") from None
        except (TypeError, ValueError) as error:  # a nested table a constructor refused
            raise ConfigurationError(f"{_where(pipeline, entry, key)}: {error}") from error
    required = _REQUIRED.get(entry)
    if required is not None and required not in out:
        raise ConfigurationError(f"{_where(pipeline, entry, required)}: is required")
    return out


def _build_entry(
    pipeline: str,
    entry: str,
    settings: Mapping[str, Any],
    clock: Clock | None,
    overrides: Mapping[str, Any],
) -> object:
    """Make the policy of one entry; a refused value is a ConfigurationError naming it."""
    kwargs = dict(settings)
    if entry == "fallback" and "handler" in overrides:
        kwargs.pop("value", None)
    kwargs.update(overrides)
    kwargs.setdefault("name", f"{pipeline}.{entry}")
    if clock is not None and entry in _CLOCKED:
        kwargs.setdefault("clock", clock)
    try:
        return _MAKERS[entry](kwargs, clock)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"{_where(pipeline, entry)}: {error}") from error


def _make_timeout(kwargs: dict[str, Any], _: Clock | None) -> object:
    return TimeLimit(kwargs.pop("seconds"), **kwargs)


def _make_retry(kwargs: dict[str, Any], clock: Clock | None) -> object:
    budget = kwargs.get("budget")
    if isinstance(budget, Mapping):
        settings = dict(budget)
        if clock is not None:
            settings["clock"] = clock
        kwargs["budget"] = RetryBudget(**settings)
    return Retry(**kwargs)


def _make_limiter(kwargs: dict[str, Any], clock: Clock | None) -> object:
    adapter = {key: kwargs.pop(key) for key in _LIMITED_KEYS if key in kwargs}
    adapter.setdefault("key", kwargs["name"])
    if clock is not None and "storage" not in kwargs:
        # The default "memory://" store reads the real clock; the one given is for everything.
        kwargs["storage"] = MemoryStorage(clock=clock)
    limiter = Limiter(kwargs.pop("limits"), **kwargs)
    return limited(limiter, **adapter)


def _make_breaker(kwargs: dict[str, Any], _: Clock | None) -> object:
    return CircuitBreaker(**kwargs)


def _make_bulkhead(kwargs: dict[str, Any], _: Clock | None) -> object:
    return Bulkhead(kwargs.pop("max_concurrent"), **kwargs)


def _make_fallback(kwargs: dict[str, Any], _: Clock | None) -> object:
    value = kwargs.pop("value", None) if "handler" in kwargs else kwargs.pop("value")
    if "handler" in kwargs:
        return Fallback(**kwargs)
    return Fallback(value, **kwargs)


_MAKERS: dict[str, Callable[[dict[str, Any], Clock | None], object]] = {
    "fallback": _make_fallback,
    "timeout": _make_timeout,
    "retry": _make_retry,
    "limiter": _make_limiter,
    "bulkhead": _make_bulkhead,
    "breaker": _make_breaker,
    "attempt_timeout": _make_timeout,
}
