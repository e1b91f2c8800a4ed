"""A circuit breaker shared by many processes through a store (Redis).

Every process keeps a *view* of the shared state and talks to the store only when the view cannot
answer:

- **CLOSED**: calls are admitted on the view. Outcomes are counted locally and written in one
  round trip (``sync``) that also answers the current state: at once after a failure, otherwise
  when ``sync_interval`` has passed since the last write. So a call costs at most one round trip,
  and a stream of successes costs one per ``sync_interval``.
- **OPEN**: the view holds the end of the open period (the seconds the store said were left,
  added to this process's clock, so skewed clocks agree): rejections cost no round trip until
  then. Then a call asks the store for a trial permit (``trial``).
- **HALF_OPEN**: the store holds exactly ``half_open_max_calls`` trial permits across all
  processes, each leased for ``trial_lease`` seconds, so a crashed holder cannot wedge the
  breaker. A trial's outcome goes back in one round trip (``done``). A process refused a permit
  rejects locally for ``sync_interval`` (or until the first lease lapses, if sooner).
- **FORCED_OPEN**: rejected locally, the store asked again every ``sync_interval``.

The store applies the rules on its own clock, atomically (``buttress/storage/lua/breaker.lua``).

If the store fails, the process carries on with its own in-process breaker, starting from the
last state it learned (:class:`BreakerStoreDegraded`); after ``store_cooldown`` one call tries
the store again, and when it answers the process adopts the shared state again
(:class:`BreakerStoreRecovered`). Outcomes of calls admitted while the store was down stay local.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from typing import TYPE_CHECKING, Any

from buttress._errors import CircuitOpen, StorageError
from buttress._store_circuit import StoreCircuit
from buttress.breaker._events import (
    BreakerStateChanged,
    BreakerStoreDegraded,
    BreakerStoreRecovered,
)
from buttress.breaker._machine import CLOSED, DISABLED, FORCED_OPEN, HALF_OPEN, OPEN, Rules, State

if TYPE_CHECKING:
    from buttress.breaker._breaker import BreakerMetrics, CircuitBreaker
    from buttress.storage import BreakerReply, BreakerStorage

__all__ = ["LOCAL", "PLAIN", "TRIAL", "SharedState", "Ticket", "rule_arguments"]

# What a call was admitted as: by the local breaker (the store is down), on the shared view, or
# with a trial permit.
LOCAL, PLAIN, TRIAL = 0, 1, 2
Ticket = tuple[int, int, str]  # (kind, generation, trial permit or "")

STATES: dict[str, State] = {
    "c": CLOSED,
    "o": OPEN,
    "h": HALF_OPEN,
    "f": FORCED_OPEN,
    "d": DISABLED,
}
LETTERS: dict[State, str] = {state: letter for letter, state in STATES.items()}

_REPLAY_CAP = 10_000  # successes handed to the local breaker when the store fails mid-write


def rule_arguments(rules: Rules, keep: float) -> tuple[str, ...]:
    """The rules as the store's script reads them (see ``lua/breaker.lua``)."""
    return (
        str(rules.fail_max or 0),
        repr(rules.failure_rate or 0.0),
        repr(rules.slow_call_rate or 0.0),
        rules.window_type,
        str(int(rules.window_size)) if rules.window_type == "count" else repr(rules.window_size),
        str(rules.window_buckets),
        str(rules.min_calls),
        repr(rules.reset_timeout),
        repr(rules.reset_timeout_multiplier),
        repr(rules.reset_timeout_max),
        str(rules.half_open_max_calls),
        str(rules.success_threshold),
        repr(keep),
    )


class SharedState:
    """One process's view of a shared breaker, its unwritten outcomes and its store's health.

    Owned by a :class:`~buttress.CircuitBreaker` made with ``storage=``; see the module
    docstring for the protocol.
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        store: BreakerStorage,
        sync_interval: float,
        trial_lease: float,
        store_cooldown: float,
    ) -> None:
        rules = breaker.rules
        self._breaker = breaker
        self.store = store
        self.name = breaker.name
        self.sync_interval = sync_interval
        self.trial_lease = trial_lease
        # Keys live a day past their last write, and always past an open period or a window.
        window = rules.window_size if rules.window_type == "time" else 0.0
        keep = max(86_400.0, 2 * rules.reset_timeout_max, 2 * window, 2 * trial_lease)
        self.rules = rule_arguments(rules, keep)
        self._lease = repr(trial_lease)
        self._clock = breaker.clock
        name = breaker.name
        self.circuit = StoreCircuit(
            1,
            store_cooldown,
            breaker.clock,
            lambda error, retry_in: BreakerStoreDegraded(name, error, retry_in),
            lambda down_for: BreakerStoreRecovered(name, down_for),
            breaker.listeners,
        )
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)  # numbers the round trips, to apply replies in order
        self._applied = 0
        self._permits = itertools.count()
        self._permit_prefix = f"{os.getpid()}-{os.urandom(6).hex()}-"
        # The view (known after the first reply).
        self.known = False
        self.state: State = CLOSED
        self.generation = -1
        self.open_until = -math.inf  # on this process's clock
        self.recheck_at = -math.inf  # HALF_OPEN refused / FORCED_OPEN: ask again from then
        self.last_sync = -math.inf
        # Outcomes not yet written: successes, failures, slow successes, slow failures, failures
        # since the last success, whether there was a success.
        self._pending = [0, 0, 0, 0, 0, 0]

    # -- admission ------------------------------------------------------------------------------

    def cached(self, now: float) -> Ticket | None:
        """Admit or reject on the view alone; ``None`` when the store must be asked.

        Raises:
            CircuitOpen: When the view rejects.
        """
        circuit = self.circuit
        if circuit.down:
            if not circuit.available():
                return self.local()
            return None  # this call tries the store again
        if not self.known:
            return None
        state = self.state
        if state is CLOSED or state is DISABLED:
            return (PLAIN, self.generation, "")
        if state is OPEN:
            if now < self.open_until:
                raise self.rejection(now)
            return None
        if now < self.recheck_at:
            raise self.rejection(now)
        return None

    def next_sequence(self) -> int:
        """Number a round trip (replies are applied in this order)."""
        return next(self._sequence)

    def trial_request(self) -> tuple[int, tuple[str, ...]]:
        """A round trip's number and the arguments of a ``trial`` asking for a new permit."""
        permit = f"{self._permit_prefix}{next(self._permits)}"
        return next(self._sequence), (permit, self._lease)

    def admitted(self, reply: BreakerReply, now: float, sequence: int, permit: str) -> Ticket:
        """Apply a ``trial`` reply: admit with it, or reject.

        Raises:
            CircuitOpen: When the store refused.
        """
        self.store_answered()
        self.apply(reply, now, sequence)
        if reply.granted == 1:
            return (TRIAL, reply.generation, permit)
        if reply.granted == 2:
            return (PLAIN, reply.generation, "")
        raise self.rejection(now)

    def local(self) -> Ticket:
        """Admit by the local breaker (raises :class:`CircuitOpen` when it rejects)."""
        return (LOCAL, self._breaker._admit(), "")  # noqa: SLF001 - the owner's own protocol

    def rejection(self, now: float) -> CircuitOpen:
        """The exception for a call the view rejects (its event emitted)."""
        state = self.state
        if state is OPEN:
            retry_after: float | None = max(0.0, self.open_until - now)
            why = f"open; trial calls in {retry_after:.2f} s"
        elif state is FORCED_OPEN:
            retry_after, why = None, "forced open"
        else:
            retry_after, why = max(0.0, self.recheck_at - now), "half-open, trial calls busy"
        breaker = self._breaker
        error = CircuitOpen(
            f"circuit breaker {self.name!r} is {why} (shared)",
            name=self.name,
            retry_after=retry_after,
        )
        breaker._call_event("rejected", state, None, error)  # noqa: SLF001 - the owner's protocol
        return error

    # -- outcomes -------------------------------------------------------------------------------

    def outcome(
        self, ticket: Ticket, failure: bool, slow: bool, now: float
    ) -> tuple[int, str, tuple[str, ...]] | None:
        """Count the outcome of a PLAIN call; return a ``sync`` to send, if one is due."""
        _, generation, _ = ticket
        with self._lock:
            if generation != self.generation:
                return None  # admitted under an earlier state
            pending = self._pending
            pending[(2 if slow else 0) + failure] += 1
            if failure:
                pending[4] += 1
            else:
                pending[4] = 0
                pending[5] = 1
            if not failure and now - self.last_sync < self.sync_interval:
                return None
            return self._take(now)

    def flush(self, now: float) -> tuple[int, str, tuple[str, ...]] | None:
        """A ``sync`` of whatever is pending (for a clean shutdown or a test), if anything is."""
        with self._lock:
            if not any(self._pending[:4]):
                return None
            return self._take(now)

    def _take(self, now: float) -> tuple[int, str, tuple[str, ...]]:
        pending, self._pending = self._pending, [0, 0, 0, 0, 0, 0]
        self.last_sync = now  # the other threads need not write before the next interval
        return next(self._sequence), "sync", (str(self.generation), *map(str, pending))

    def trial_done(self, ticket: Ticket, failure: bool | None) -> tuple[int, str, tuple[str, ...]]:
        """The ``done`` round trip reporting a trial call's outcome (``None``: ignored)."""
        _, generation, permit = ticket
        verdict = "i" if failure is None else "f" if failure else "s"
        return next(self._sequence), "done", (str(generation), permit, verdict)

    def force(self, state: State) -> tuple[int, str, tuple[str, ...]]:
        """The ``force`` round trip putting the shared state in ``state``."""
        return next(self._sequence), "force", (LETTERS[state],)

    # -- replies and faults ---------------------------------------------------------------------

    def store_answered(self) -> None:
        """Note that the store answered (the breaker rejoins the shared state if it had left)."""
        self.circuit.succeeded()

    def apply(self, reply: BreakerReply, now: float, sequence: int) -> None:
        """Learn the shared state from a reply (unless a later round trip already answered)."""
        with self._lock:
            if sequence < self._applied:
                return
            self._applied = sequence
            old = self.state if self.known else None
            new = STATES[reply.state]
            if reply.generation != self.generation:
                self._pending = [0, 0, 0, 0, 0, 0]  # the outcomes of another state
            self.known = True
            self.state = new
            self.generation = reply.generation
            self.open_until = now + reply.open_for if new is OPEN else -math.inf
            if new is FORCED_OPEN:
                self.recheck_at = now + self.sync_interval
            elif new is HALF_OPEN and reply.granted == 0:
                self.recheck_at = now + min(self.sync_interval, max(0.0, reply.trial_wait))
            else:
                self.recheck_at = -math.inf
            self.last_sync = max(self.last_sync, now)
        if old is not None and (new is not old or reply.reason):
            self._breaker._changed_shared(  # noqa: SLF001 - the owner's protocol
                BreakerStateChanged(
                    self.name,
                    old,
                    new,
                    reply.reason or "changed by another process",
                    reply.open_for if new is OPEN else None,
                )
            )

    def lost(self, error: StorageError, arguments: tuple[str, ...] | None = None) -> None:
        """The store failed: carry on with the local breaker from the last state learned.

        ``arguments``: those of a ``sync`` that did not get through; its outcomes are handed to
        the local breaker, so that failures seen just before the outage still count.
        """
        first = not self.circuit.down
        self.circuit.failed(error)
        if not first:
            return
        machine = self._breaker._machine  # noqa: SLF001 - the owner's own machine
        state = self.state if self.known else CLOSED
        if state is HALF_OPEN:
            state = OPEN  # trial permits were the store's: wait a period, then trial locally
            until = self._clock.now()
        else:
            until = self.open_until
        machine.adopt(state, until)
        if arguments is not None and state is CLOSED:
            successes, failures, slow_successes, slow_failures = map(int, arguments[1:5])
            replay = [(False, True)] * slow_successes
            replay += [(False, False)] * min(successes, _REPLAY_CAP)
            replay += [(True, True)] * slow_failures + [(True, False)] * failures
            for failure, slow in replay:  # failures last: they ended the batch
                transition = machine.record(machine.generation, failure, slow, None)
                self._breaker._changed(transition)  # noqa: SLF001 - the owner's protocol

    def metrics(self, reply: BreakerReply, now: float) -> BreakerMetrics:
        """The metrics a ``read`` reply describes."""
        from buttress.breaker._breaker import BreakerMetrics  # noqa: PLC0415 - a cycle

        state = STATES[reply.state]
        calls = reply.calls
        retry_after: float | None = 0.0
        if state is OPEN:
            retry_after = max(0.0, reply.open_for)
        elif state is FORCED_OPEN:
            retry_after = None
        return BreakerMetrics(
            name=self.name,
            state=state,
            calls=calls,
            failures=reply.failures,
            slow=reply.slow,
            failure_rate=reply.failures / calls if calls else 0.0,
            slow_rate=reply.slow / calls if calls else 0.0,
            consecutive_failures=reply.consecutive,
            retry_after=retry_after,
        )

    def describe(self) -> dict[str, Any]:
        """The view, for debugging and tests."""
        return {
            "known": self.known,
            "state": self.state,
            "generation": self.generation,
            "store_down": self.circuit.down,
            "pending": list(self._pending),
        }
