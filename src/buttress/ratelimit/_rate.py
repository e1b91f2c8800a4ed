"""Rates ("10 per minute") and the limit-string notation users know from ``limits``.

Accepted forms, case-insensitive, several separated by ``;`` or ``,``::

    10/minute   10 per hour   100/day; 10/hour   5 per 30 seconds   2/minute   1000 / 2 hours

Units: second, minute, hour, day, month (30 days), year (365 days), singular or plural.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from buttress._errors import ConfigurationError
from buttress._types import seconds

__all__ = ["MAX_LIMIT", "MAX_PERIOD", "MIN_PERIOD", "Rate", "parse_rates"]

_UNITS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400,
    "month": 30 * 86_400,
    "year": 365 * 86_400,
}
_UNIT_WORDS = {
    **_UNITS,
    **{f"{name}s": size for name, size in _UNITS.items()},
}

MAX_LIMIT = 2**53
"""The largest accepted limit: counts stay exact in double-precision arithmetic (Redis Lua)."""

MAX_PERIOD = 10 * 365 * 86_400.0
"""The longest accepted period: ten years. Anything longer is almost surely a typo."""

MIN_PERIOD = 0.001
"""The shortest accepted period: one millisecond (below that, clocks and networks dominate)."""

_ITEM = re.compile(
    r"""\s*(?P<limit>\d+)\s*(?:/|\bper\b)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*""",
    re.IGNORECASE | re.VERBOSE,
)


class Rate:
    """``limit`` units per ``period`` seconds: ``Rate(10, per=60)`` is "10 per minute".

    Immutable and hashable; two rates are equal when their limit, period and scope are.

    Args:
        limit: How many units (requests, or the sum of their costs) the period admits (``>= 1``).
        per: The period, in seconds or as a ``timedelta`` (1 ms to ten years).
        scope: Keeps this rate's state apart from the same rate's elsewhere on the same key
            (``""``, the default: none). The web integrations scope a route's limits by route, so
            that "10/hour" on two routes are two limits for one client, decided together with
            the application's limits in one operation. At most 200 printable characters.

    Raises:
        TypeError, ValueError: For a limit that is not a positive int or a bad period.
    """

    __slots__ = ("_hash", "limit", "period", "scope")

    limit: int
    period: float
    scope: str
    _hash: int

    def __init__(self, limit: int, per: float | timedelta = 1.0, *, scope: str = "") -> None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError(f"limit must be an int, got {type(limit).__name__} ({limit!r})")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and 2**53, got {limit}")
        period = seconds(per, "per", allow_zero=False)
        if not MIN_PERIOD <= period <= MAX_PERIOD:
            raise ValueError(
                f"per must be between 1 ms and ten years ({MAX_PERIOD:.0f} s), got {period!r} s"
            )
        if not isinstance(scope, str):
            raise TypeError(f"scope must be a str, got {type(scope).__name__} ({scope!r})")
        if len(scope) > 200 or not scope.isprintable():
            raise ValueError(f"scope must be at most 200 printable characters, got {scope!r}")
        # Plain slots set once here; decisions read them on every request, so no properties.
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "period", period)
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "_hash", hash((limit, period, scope)))

    def scoped(self, scope: str) -> Rate:
        """This rate with another ``scope``."""
        return Rate(self.limit, self.period, scope=scope)

    @property
    def per(self) -> float:
        """The period in seconds (the constructor's name for it)."""
        return self.period

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Rate is immutable; make a new one instead of setting {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Rate is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rate):
            return NotImplemented
        return (
            self.limit == other.limit and self.period == other.period and self.scope == other.scope
        )

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.scope:
            return (_scoped_rate, (self.limit, self.period, self.scope))
        return (Rate, (self.limit, self.period))

    def __repr__(self) -> str:
        if self.scope:
            return f"Rate({self.limit}, per={self.period!r}, scope={self.scope!r})"
        return f"Rate({self.limit}, per={self.period!r})"

    def __str__(self) -> str:
        """The limit notation, e.g. ``10/minute`` or ``5 per 30 seconds``; it parses back."""
        period = self.period
        for unit, size in reversed(_UNITS.items()):
            if period == size:
                return f"{self.limit}/{unit}"
            if period % size == 0:
                return f"{self.limit} per {_number(period / size)} {unit}s"
        return f"{self.limit} per {_number(period)} seconds"


def _scoped_rate(limit: int, period: float, scope: str) -> Rate:
    """Unpickle a scoped rate (pickle passes positional arguments only)."""
    return Rate(limit, period, scope=scope)


def _number(value: float) -> str:
    # repr is exact and, for the periods allowed (1 ms to ten years), never uses an exponent.
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _fail(text: str, position: int, why: str) -> ConfigurationError:
    caret = " " * position + "^"
    return ConfigurationError(
        f"invalid rate limit {text!r}: {why} at position {position}\n    {text}\n    {caret}"
    )


def parse_rates(text: str | Rate | tuple[Rate, ...] | list[Rate]) -> tuple[Rate, ...]:
    """Parse a limit string such as ``"100/day; 10/hour"`` into rates.

    :class:`Rate` objects (one, or a list/tuple) pass through, so every API taking limits takes
    either form.

    Returns:
        The rates, in the order written; never empty.

    Raises:
        ConfigurationError: (a ``ValueError``) for a malformed string, showing where it fails.
        TypeError: For anything that is neither a string nor rates.
    """
    if isinstance(text, Rate):
        return (text,)
    if isinstance(text, (list, tuple)):
        if not text or not all(isinstance(item, Rate) for item in text):
            raise TypeError("limits must be a limit string or a non-empty sequence of Rate")
        return tuple(text)
    if not isinstance(text, str):
        raise TypeError(f"limits must be a str such as '10/minute', got {type(text).__name__}")
    rates: list[Rate] = []
    position = 0
    for piece in re.split(r"[;,]", text):
        match = _ITEM.fullmatch(piece)
        if match is None:
            stripped = piece.strip()
            at = position + (piece.index(stripped) if stripped else 0)
            why = (
                "expected '<count>/<unit>' or '<count> per [n] <unit>'"
                if stripped
                else ("empty limit")
            )
            raise _fail(text, at, why)
        unit = match["unit"].lower()
        if unit not in _UNIT_WORDS:
            raise _fail(text, position + match.start("unit"), f"unknown unit {match['unit']!r}")
        count = float(match["count"]) if match["count"] else 1.0
        try:
            rates.append(Rate(int(match["limit"]), per=count * _UNIT_WORDS[unit]))
        except ValueError as error:
            raise _fail(text, position + match.start("limit"), str(error)) from None
        position += len(piece) + 1
    return tuple(rates)
