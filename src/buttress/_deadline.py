"""The current deadline: a context variable that every policy can read.

A :class:`~buttress.timeout.TimeLimit` (or a :func:`~buttress.timeout.deadline` block) sets the
deadline of the code it runs; anything called inside, in the same thread or task (and in tasks
and worker threads started with a copy of the context), sees it through :func:`current_deadline`
and :func:`remaining`. Nested limits take the smaller deadline. Retry reads it so as not to start
a wait or an attempt that cannot finish in time; bulkheads read it so as not to queue past it.

A deadline is a point in the monotonic time of a :class:`~buttress.Clock`, kept together with
that clock, so that code using another clock (a fake one in tests) still reads the right number
of seconds left.

This module is part of the core: policies import it, it imports no policy.
"""

from __future__ import annotations

import contextvars

from buttress._clock import Clock
from buttress._errors import Timeout

__all__ = [
    "Deadline",
    "current_deadline",
    "deadline_var",
    "enter_deadline",
    "remaining",
    "reset_deadline",
]


class Deadline:
    """A point in time by which the current work must be done.

    Immutable, compared and hashed by value. A plain slotted class rather than a frozen
    dataclass: a time limit makes one per call, and a frozen dataclass costs five times as much
    to build (each field goes through ``object.__setattr__``).

    Args:
        at: The deadline, in the monotonic time of ``clock``.
        clock: The clock it is measured by.
        timeout: The length of the limit that set it, in seconds (for messages).
        name: The name of the policy that set it.
    """

    __slots__ = ("_at", "_clock", "_name", "_timeout")
    __match_args__ = ("at", "clock", "timeout", "name")

    def __init__(self, at: float, clock: Clock, timeout: float, name: str) -> None:
        self._at = at
        self._clock = clock
        self._timeout = timeout
        self._name = name

    @property
    def at(self) -> float:
        """The deadline, in the monotonic time of :attr:`clock`."""
        return self._at

    @property
    def clock(self) -> Clock:
        """The clock it is measured by."""
        return self._clock

    @property
    def timeout(self) -> float:
        """The length of the limit that set it, in seconds (for messages)."""
        return self._timeout

    @property
    def name(self) -> str:
        """The name of the policy that set it."""
        return self._name

    def _fields(self) -> tuple[float, Clock, float, str]:
        return (self._at, self._clock, self._timeout, self._name)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Deadline):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Deadline(at={self._at!r}, clock={self._clock!r}, timeout={self._timeout!r}, "
            f"name={self._name!r})"
        )

    def remaining(self) -> float:
        """Return the seconds left before the deadline (``0.0`` once it has passed)."""
        left = self._at - self._clock.now()
        return left if left > 0.0 else 0.0

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._clock.now() >= self._at

    def check(self) -> None:
        """Raise :class:`~buttress.Timeout` if the deadline has passed; do nothing otherwise.

        Raises:
            Timeout: If the deadline has passed.
        """
        if self.expired:
            raise Timeout(f"{self._name}: the deadline of {self._timeout:g} s has passed")


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "buttress_deadline", default=None
)
deadline_var = _current
"""The context variable holding the current deadline, for the inlined paths of time limits.

Whoever sets it resets it with the token, in the same context; everyone else only reads it.
"""


def current_deadline() -> Deadline | None:
    """Return the deadline of the running code, or ``None`` when no time limit applies.

    Returns:
        The innermost (that is, the earliest) :class:`Deadline` set by an enclosing time limit.
    """
    return _current.get()


def remaining() -> float | None:
    """Return the seconds left before the current deadline, or ``None`` when there is none.

    Use it to bound what a time limit cannot interrupt, e.g. a socket timeout::

        sock.settimeout(remaining())

    Returns:
        Seconds left (``0.0`` once the deadline has passed), or ``None`` without a deadline.
    """
    current = _current.get()
    return None if current is None else current.remaining()


def enter_deadline(
    timeout: float, clock: Clock, name: str
) -> tuple[Deadline, contextvars.Token[Deadline | None]]:
    """Set the deadline ``timeout`` seconds from now, unless an enclosing one comes sooner.

    Args:
        timeout: Seconds from now.
        clock: The clock the deadline is measured by.
        name: The name of the policy setting it.

    Returns:
        The deadline now in force (the new one or the enclosing one) and the token that
        :func:`reset_deadline` needs to restore the previous state.
    """
    outer = _current.get()
    # Compared in seconds left: the two may be measured by different clocks.
    if outer is not None and outer.remaining() <= timeout:
        return outer, _current.set(outer)
    mine = Deadline(clock.now() + timeout, clock, timeout, name)
    return mine, _current.set(mine)


def reset_deadline(token: contextvars.Token[Deadline | None]) -> None:
    """Restore the deadline that was in force before :func:`enter_deadline` returned ``token``."""
    _current.reset(token)
