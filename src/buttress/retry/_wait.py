"""How long to wait between attempts: fixed, linear, exponential (with jitter) and random waits.

A wait is a pure function of the attempt number and the previous delay; it never sleeps. Waits
add up with ``+`` (``WaitFixed(1) + WaitRandom(0, 0.5)``). Jitter takes its random numbers from an
injectable ``rng`` (any callable returning a float in ``[0, 1)``), so tests can be exact.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, cast, get_args

from buttress._types import Duration, seconds

__all__ = [
    "Jitter",
    "Wait",
    "WaitExponential",
    "WaitFixed",
    "WaitLinear",
    "WaitRandom",
    "WaitSum",
    "as_wait",
]

Jitter = Literal["none", "full", "equal", "decorrelated"]
"""Jitter modes of :class:`WaitExponential` (AWS Architecture Blog, "Exponential Backoff And
Jitter"): ``none`` (the plain curve), ``full`` (uniform in ``[0, curve]``), ``equal`` (uniform in
``[curve/2, curve]``) and ``decorrelated`` (uniform in ``[initial, 3 * previous]``, capped)."""

_JITTERS: tuple[str, ...] = get_args(Jitter)


def _check_rng(rng: object) -> None:
    if not callable(rng):
        raise TypeError(
            f"rng must be a callable returning a float in [0, 1), such as random.Random(seed)"
            f".random, got {type(rng).__name__}"
        )


class Wait(ABC):
    """The base of every wait: a pure function from the attempt number to a delay.

    Subclass it (and implement :meth:`delay`) to write your own; instances add up with ``+``.
    """

    __slots__ = ()

    @abstractmethod
    def delay(self, attempt: int, previous: float) -> float:
        """Return the seconds to wait after attempt number ``attempt`` failed.

        Args:
            attempt: The number of the attempt that just failed (1 for the first call).
            previous: The delay this wait returned for the attempt before (0 before the first).

        Returns:
            A finite, non-negative number of seconds.
        """

    def __add__(self, other: Wait | Duration) -> Wait:
        if not isinstance(other, (Wait, int, float, timedelta)) or isinstance(other, bool):
            return NotImplemented
        return WaitSum(self, as_wait(other, "other"))

    def __radd__(self, other: Wait | Duration) -> Wait:
        if not isinstance(other, (Wait, int, float, timedelta)) or isinstance(other, bool):
            return NotImplemented
        return WaitSum(as_wait(other, "other"), self)


def as_wait(value: object, name: str = "wait") -> Wait:
    """Turn a ``wait`` argument into a :class:`Wait`: numbers and timedeltas become fixed waits.

    Raises:
        TypeError: If ``value`` is neither a :class:`Wait` nor a duration.
        ValueError: If it is a negative or non-finite duration.
    """
    if isinstance(value, Wait):
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return WaitFixed(seconds(value, name))
    raise TypeError(
        f"{name} must be a Wait (e.g. WaitExponential()) or a number of seconds, "
        f"got {type(value).__name__} ({value!r})"
    )


@dataclass(frozen=True, slots=True)
class WaitFixed(Wait):
    """Wait the same time after every failed attempt.

    Duration fields accept a ``timedelta`` and hold seconds as ``float`` once built (likewise in
    every wait).

    Args:
        seconds: The delay (``0`` retries at once without sleeping).
    """

    seconds: float | timedelta = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", seconds(self.seconds, "seconds"))

    def delay(self, attempt: int, previous: float) -> float:
        """Return the fixed delay."""
        return cast("float", self.seconds)  # normalised in __post_init__


@dataclass(frozen=True, slots=True)
class WaitLinear(Wait):
    """Wait ``initial + increment * (attempt - 1)``, capped at ``max``.

    Args:
        initial: The delay after the first failed attempt.
        increment: What each further attempt adds.
        max: The largest delay.
    """

    initial: float | timedelta = 1.0
    increment: float | timedelta = 1.0
    max: float | timedelta = 30.0

    def __post_init__(self) -> None:
        initial = seconds(self.initial, "initial")
        maximum = seconds(self.max, "max")
        if maximum < initial:
            raise ValueError(f"max ({maximum}) must be >= initial ({initial})")
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "increment", seconds(self.increment, "increment"))
        object.__setattr__(self, "max", maximum)

    def delay(self, attempt: int, previous: float) -> float:
        """Return the linear delay for ``attempt``."""
        initial, increment = cast("float", self.initial), cast("float", self.increment)
        return min(initial + increment * (attempt - 1), cast("float", self.max))


@dataclass(frozen=True, slots=True)
class WaitExponential(Wait):
    """Wait ``initial * multiplier ** (attempt - 1)``, capped at ``max``, with optional jitter.

    Args:
        initial: The delay after the first failed attempt (before jitter).
        multiplier: The growth factor per attempt (``>= 1``).
        max: The largest delay, jitter included.
        jitter: ``"full"`` (the default), ``"equal"``, ``"decorrelated"`` or ``"none"``;
            see :data:`Jitter`.
        rng: The random source for jitter: a callable returning a float in ``[0, 1)``.
    """

    initial: float | timedelta = 0.1
    multiplier: float = 2.0
    max: float | timedelta = 30.0
    jitter: Jitter = "full"
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        initial = seconds(self.initial, "initial")
        maximum = seconds(self.max, "max")
        if maximum < initial:
            raise ValueError(f"max ({maximum}) must be >= initial ({initial})")
        multiplier = self.multiplier
        if not isinstance(multiplier, (int, float)) or isinstance(multiplier, bool):
            raise TypeError(f"multiplier must be a number, got {type(multiplier).__name__}")
        if not (math.isfinite(multiplier) and multiplier >= 1):
            raise ValueError(f"multiplier must be a finite number >= 1, got {multiplier!r}")
        if self.jitter not in _JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(_JITTERS)}; got {self.jitter!r}")
        _check_rng(self.rng)
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "max", maximum)
        object.__setattr__(self, "multiplier", float(multiplier))

    def curve(self, attempt: int) -> float:
        """Return the delay for ``attempt`` before jitter: the capped exponential curve."""
        initial, maximum = cast("float", self.initial), cast("float", self.max)
        try:
            value = initial * self.multiplier ** (attempt - 1)
        except OverflowError:  # a huge attempt number: the curve is past any cap
            return maximum if initial > 0 else 0.0
        return min(value, maximum)

    def delay(self, attempt: int, previous: float) -> float:
        """Return the jittered exponential delay for ``attempt``."""
        jitter = self.jitter
        if jitter == "decorrelated":
            initial, maximum = cast("float", self.initial), cast("float", self.max)
            high = max(previous, initial) * 3.0
            return min(maximum, initial + (high - initial) * self.rng())
        base = self.curve(attempt)
        if jitter == "full":
            return base * self.rng()
        if jitter == "equal":
            half = base / 2.0
            return half + half * self.rng()
        return base


@dataclass(frozen=True, slots=True)
class WaitRandom(Wait):
    """Wait a uniformly random time between ``min`` and ``max`` (add it to another wait for jitter).

    Args:
        min: The shortest delay.
        max: The longest delay.
        rng: The random source: a callable returning a float in ``[0, 1)``.
    """

    min: float | timedelta = 0.0
    max: float | timedelta = 1.0
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        low = seconds(self.min, "min")
        high = seconds(self.max, "max")
        if high < low:
            raise ValueError(f"max ({high}) must be >= min ({low})")
        _check_rng(self.rng)
        object.__setattr__(self, "min", low)
        object.__setattr__(self, "max", high)

    def delay(self, attempt: int, previous: float) -> float:
        """Return a random delay in ``[min, max]``."""
        low, high = cast("float", self.min), cast("float", self.max)
        return low + (high - low) * self.rng()


@dataclass(frozen=True, slots=True)
class WaitSum(Wait):
    """The sum of two waits (what ``a + b`` builds).

    ``previous`` is handed to both parts unchanged, so a decorrelated part still sees the last
    total delay.
    """

    first: Wait
    second: Wait

    def __post_init__(self) -> None:
        for name in ("first", "second"):
            if not isinstance(getattr(self, name), Wait):
                raise TypeError(f"{name} must be a Wait")

    def delay(self, attempt: int, previous: float) -> float:
        """Return the sum of both parts' delays."""
        return self.first.delay(attempt, previous) + self.second.delay(attempt, previous)
