"""Small shared types and argument checks used by every policy.

Durations are seconds as ``float`` (or ``int``) or a :class:`datetime.timedelta`; every public
constructor converts them with :func:`seconds`, so a bad value is rejected when the policy is
built, with a message naming the argument.
"""

from __future__ import annotations

import math
import numbers
from datetime import timedelta
from typing import TypeAlias

__all__ = ["Duration", "check_int", "seconds", "seconds_or_none"]

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
