"""The chapter's circuit breaker example, written with buttress: a fragile function.

The book protects ``fragile_function()``, which fails half of the time, with
``pybreaker.CircuitBreaker(fail_max=2, reset_timeout=5)`` and calls it once a second forever,
printing the time and the outcome of each call. After two failures in a row the breaker opens:
the calls of the next five seconds fail at once with an error, without running the function. Then
one trial call goes through: if it succeeds the breaker closes, if it fails it opens again.

With buttress the breaker is :class:`buttress.CircuitBreaker` with the same two numbers; a
rejected call raises :class:`buttress.CircuitOpen`, which says how long until the trial call
(``retry_after``), and every state change is an event saying why it happened. (The chapter's
code itself also runs unchanged on buttress: replace ``import pybreaker`` with
``from buttress.compat import pybreaker``.)

``buttress demo breaker`` and ``python examples/circuit_breaker.py`` run a shortened version,
calls 0.2 s apart and a 0.5 s open period instead of 1 s and 5 s, which takes about two seconds,
then explain the state changes it showed; ``python examples/circuit_breaker.py --chapter`` runs
the chapter's timing until Ctrl-C. The failures are seeded, so every run makes the same calls
with the same outcomes.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from buttress import BreakerStateChanged, CircuitBreaker, CircuitOpen, Clock, Event, State
from buttress import system_clock as _system_clock

FAIL_MAX = 2
"""Failures in a row that open the breaker (the chapter's ``fail_max=2``)."""

CHAPTER_RESET_TIMEOUT = 5.0
CHAPTER_PAUSE = 1.0
DEMO_RESET_TIMEOUT = 0.5
DEMO_PAUSE = 0.2
DEMO_CALLS = 12


@dataclass
class Story:
    """What a run did: each call's outcome and the breaker's state changes (from its events).

    Attributes:
        outcomes: Per call, ``"ok"``, ``"fail"`` or ``"rejected"``.
        changes: ``(call number, event)`` for every state change.
        ran: How many times the fragile function actually ran.
    """

    outcomes: list[str] = field(default_factory=list)
    changes: list[tuple[int, BreakerStateChanged]] = field(default_factory=list)
    ran: int = 0

    def __call__(self, event: Event) -> None:
        """Listen to the breaker (a listener is any callable taking one event)."""
        if isinstance(event, BreakerStateChanged):
            self.changes.append((len(self.outcomes) + 1, event))  # during the call under way


def run(
    seed: int = 9,
    calls: int | None = DEMO_CALLS,
    reset_timeout: float = DEMO_RESET_TIMEOUT,
    pause: float = DEMO_PAUSE,
    clock: Clock = _system_clock,
) -> Story:
    """Call the fragile function ``calls`` times (forever if ``None``, until Ctrl-C).

    Calls start ``pause`` seconds apart on ``clock`` (on a fixed schedule, so that the time a
    call takes does not shift the later ones); each prints its time and outcome, and the state
    changes it caused.

    Returns:
        What happened.
    """
    rng = random.Random(seed)
    story = Story()
    breaker = CircuitBreaker(
        "fragile", fail_max=FAIL_MAX, reset_timeout=reset_timeout, listeners=[story], clock=clock
    )

    @breaker
    def fragile_function() -> None:
        story.ran += 1
        if not rng.choice([True, False]):
            print(" / OK", end="")
        else:
            print(" / FAIL", end="")
            raise RuntimeError("This is a sample Exception")

    start = clock.now()
    numbers = itertools.count(1) if calls is None else range(1, calls + 1)
    with contextlib.suppress(KeyboardInterrupt):  # the chapter's endless loop ends with Ctrl-C
        for number in numbers:
            print(f"{datetime.now():%H:%M:%S.%f}"[:-3], f"call {number:>2}", end="")
            seen = len(story.changes)
            try:
                fragile_function()
                story.outcomes.append("ok")
            except CircuitOpen as error:
                story.outcomes.append("rejected")
                print(f" / rejected at once: trial call in {error.retry_after or 0:.2f} s", end="")
            except RuntimeError as error:
                story.outcomes.append("fail")
                print(f" / {type(error).__name__}: {error}", end="")
            finally:
                print()
            for _, change in story.changes[seen:]:
                print(f"             breaker: {change.old} -> {change.new} ({change.reason})")
            if number != calls:
                clock.sleep(max(0.0, start + number * pause - clock.now()))
    return story


def _calls(first: int, last: int) -> str:
    return f"call {first}" if first == last else f"calls {first}-{last}"


def explain(
    story: Story,
    reset_timeout: float = DEMO_RESET_TIMEOUT,
    pause: float = DEMO_PAUSE,
) -> str:
    """Say in plain words what the breaker did in a run."""
    total = len(story.outcomes)
    lines = [
        f"What happened: {total} calls, {pause:g} s apart, to a function that fails half of the "
        f"time, through a breaker that opens after {FAIL_MAX} failures in a row and lets one "
        f"trial call through {reset_timeout:g} s later (the chapter: calls 1 s apart, 5 s).",
    ]
    by_call: dict[int, list[BreakerStateChanged]] = {}
    for number, change in story.changes:
        by_call.setdefault(number, []).append(change)
    rejected: list[int] = []  # the calls rejected in the current open period

    def flush(still_open: bool = False) -> None:
        if rejected:
            end = "; the breaker was still open when the demo ended" if still_open else ""
            lines.append(
                f"  {_calls(rejected[0], rejected[-1]).capitalize()}: rejected at once with "
                f"CircuitOpen ({len(rejected)} call{'s' * (len(rejected) > 1)}), without running "
                f"the fragile function{end}."
            )
            rejected.clear()

    opened = 0
    for number, outcome in enumerate(story.outcomes, start=1):
        if outcome == "rejected":
            rejected.append(number)
            continue
        flush()
        for change in by_call.get(number, []):
            if change.new is State.OPEN:
                opened += 1
            if change.old is State.CLOSED and change.new is State.OPEN:
                lines.append(
                    f"  Call {number} failed: {change.reason}, so the breaker opened for "
                    f"{change.open_for or 0:g} s."
                )
            elif change.old is State.HALF_OPEN and change.new is State.OPEN:
                lines.append(
                    f"  Call {number}: the open period was over, so it went through as the trial "
                    f"call (half-open); it failed, so the breaker opened again for "
                    f"{change.open_for or 0:g} s."
                )
            elif change.old is State.HALF_OPEN and change.new is State.CLOSED:
                lines.append(
                    f"  Call {number}: the open period was over, so it went through as the trial "
                    "call (half-open); it succeeded, so the breaker closed: calls run as usual."
                )
    flush(still_open=True)
    skipped = story.outcomes.count("rejected")
    lines.append(
        f"  In all the breaker opened {opened} time{'s' * (opened != 1)}; the fragile function "
        f"ran {story.ran} times, and {skipped} of the {total} calls were answered at once "
        "without touching it."
    )
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_breaker_log() -> Iterator[None]:
    # The demo prints the state changes itself; when logging is configured (``buttress demo``
    # runs the retry demo first, which turns it on), the library would log them a second time,
    # in the middle of a printed line.
    logger = logging.getLogger("buttress.breaker")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main(seed: int = 9, clock: Clock = _system_clock) -> None:
    """Run the shortened example and explain the state changes it showed."""
    with _quiet_breaker_log():
        story = run(seed, clock=clock)
    print()
    print(explain(story))


def chapter(seed: int = 9) -> None:
    """Run the chapter's timing (calls 1 s apart, open for 5 s) until Ctrl-C, then explain."""
    with _quiet_breaker_log():
        story = run(seed, calls=None, reset_timeout=CHAPTER_RESET_TIMEOUT, pause=CHAPTER_PAUSE)
    print()
    print(explain(story, reset_timeout=CHAPTER_RESET_TIMEOUT, pause=CHAPTER_PAUSE))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=9, help="random seed (default: 9)")
    parser.add_argument(
        "--chapter", action="store_true", help="the chapter's timing (1 s, 5 s), until Ctrl-C"
    )
    options = parser.parse_args()
    (chapter if options.chapter else main)(options.seed)
