"""Small shared types and argument checks used by every policy.

Durations are seconds as ``float`` (or ``int``) or a :class:`datetime.timedelta`; every public
constructor converts them with :func:`seconds`, so a bad value is rejected when the policy is
built, with a message naming the argument.
"""

from __future__ import annotations

import math
import numbers
from datetime import timedelta
from typing import Any, TypeAlias, cast

__all__ = [
    "NO_FALLBACK",
    "Duration",
    "check_exception_types",
    "check_int",
    "check_name",
    "seconds",
    "seconds_or_none",
]

Duration: TypeAlias = "float | int | timedelta"
"""A length of time: seconds as a number, or a :class:`datetime.timedelta`."""


def seconds(value: object, name: str, *, allow_zero: bool = True) -> float:
    """Convert a duration argument to seconds, or raise naming the argument.

    Args:
        value: The value the user passed.
        name: The argument's name, used in the error message.
        allow_zero: Whether ``0`` is accepted.

    Returns:
        The duration in seconds, finite and non-negative (positive unless ``allow_zero``).

    Raises:
        TypeError: If ``value`` is not a number or a ``timedelta`` (``bool`` is refused).
        ValueError: If it is negative, NaN, infinite, or zero when zero is not allowed.
    """
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif not isinstance(value, bool) and isinstance(value, (int, float, numbers.Real)):
        result = float(value)  # int, float, Fraction, numpy scalars
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, got {type(value).__name__}"
            f" ({value!r})"
        )
    if math.isnan(result) or math.isinf(result):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return result


def seconds_or_none(value: object, name: str, *, allow_zero: bool = True) -> float | None:
    """Like :func:`seconds`, but ``None`` passes through (meaning "no limit")."""
    if value is None:
        return None
    return seconds(value, name, allow_zero=allow_zero)


def check_int(value: object, name: str, *, minimum: int) -> int:
    """Check that an argument is a whole number at least ``minimum``.

    Raises:
        TypeError: If ``value`` is not an ``int`` (``bool`` is refused).
        ValueError: If it is below ``minimum``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_name(value: object, name: str = "name") -> str:
    """Check a policy's name: a non-empty ``str``.

    Raises:
        TypeError: Otherwise, naming the argument.
    """
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str, got {value!r}")
    return value


def check_exception_types(
    value: object, name: str, *, hint: str = ""
) -> tuple[type[BaseException], ...]:
    """Check an argument naming exception types: one type or a tuple of them (not empty).

    Args:
        value: The value the user passed.
        name: The argument's name, used in the error message.
        hint: Words appended to the type error (e.g. where predicates go instead).

    Raises:
        TypeError: If anything in it is not an exception type.
        ValueError: If it is an empty tuple.
    """
    types = value if isinstance(value, tuple) else (value,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(
                f"{name} must be an exception type or a tuple of exception types, got {value!r}"
                + hint
            )
    if not types:
        raise ValueError(f"{name} must name at least one exception type")
    return cast("tuple[type[BaseException], ...]", types)


class _NoFallback:
    """The marker for "no fallback configured" (``None`` is a valid fallback value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Any = _NoFallback()
"""The default ``fallback`` of every policy: none."""
