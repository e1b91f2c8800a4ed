"""The storage contract of shared circuit breakers, and the reply of its one operation.

A breaker shared by several processes keeps its state in a store that applies the breaker's rules
atomically on the store's clock (see ``buttress/storage/lua/breaker.lua`` for Redis). The store
knows nothing of breakers beyond that script: the breaker sends its rules with every operation,
as strings, and reads a :class:`BreakerReply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["BREAKER_OPERATIONS", "BreakerReply", "BreakerStorage"]

# sync: record outcomes, learn the state; trial: take a HALF_OPEN trial permit (starting
# HALF_OPEN when the open period is over); done: a trial ended; force: manual control; read.
BREAKER_OPERATIONS = frozenset({"sync", "trial", "done", "force", "read"})


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class BreakerReply:
    """What the store answers to every breaker operation.

    Attributes:
        state: ``"c"`` closed, ``"o"`` open, ``"h"`` half-open, ``"f"`` forced open,
            ``"d"`` disabled.
        generation: Changes with every transition of the shared state.
        open_for: Seconds left in the open period (0 unless open).
        granted: For ``trial``: 1 a trial permit was taken, 2 the breaker admits plain calls
            (closed or disabled), 0 refused.
        calls: Calls in the shared window.
        failures: Failures among them.
        slow: Slow calls among them.
        consecutive: Failures in a row while closed.
        reason: Why this operation changed the state (``""`` when it did not).
        trial_wait: When a trial was refused in half-open: seconds until the first permit
            lapses.
    """

    state: str
    generation: int
    open_for: float
    granted: int
    calls: int
    failures: int
    slow: int
    consecutive: int
    reason: str
    trial_wait: float

    @classmethod
    def parse(cls, reply: Any) -> BreakerReply:
        """Read the script's reply (a list of ten; bytes or str, as the client decodes)."""
        return cls(
            _text(reply[0]),
            int(reply[1]),
            float(reply[2]),
            int(reply[3]),
            int(reply[4]),
            int(reply[5]),
            int(reply[6]),
            int(reply[7]),
            _text(reply[8]),
            float(reply[9]),
        )


@runtime_checkable
class BreakerStorage(Protocol):
    """What a shared circuit breaker needs of a store."""

    def breaker(
        self,
        name: str,
        operation: str,
        rules: tuple[str, ...],
        arguments: tuple[str, ...] = (),
        *,
        now: float | None = None,
    ) -> BreakerReply:
        """Run one breaker operation atomically (one round trip) and answer the state.

        Raises:
            StorageError: When the store fails or does not answer in time.
        """
        ...

    async def abreaker(
        self,
        name: str,
        operation: str,
        rules: tuple[str, ...],
        arguments: tuple[str, ...] = (),
        *,
        now: float | None = None,
    ) -> BreakerReply:
        """The coroutine form of :meth:`breaker`."""
        ...
