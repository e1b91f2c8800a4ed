"""A scripted dependency: plays one outcome per call and records what it saw."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from buttress.testing import FakeClock


@dataclass(frozen=True)
class Slow:
    """A step that takes ``seconds`` (on the fake clock) before its ``outcome``."""

    seconds: float
    outcome: Any


class Hang:
    """A step that never finishes by itself (async only): only a cancellation ends it."""


HANG = Hang()


class Script:
    """A dependency answering call N with step N: a value, an exception to raise, or ``Slow``.

    ``observe`` is called at the start of every call and its results are kept in ``seen``
    (e.g. the breaker's state at each call), so a test can check the run step by step. A call
    past the end of the script fails the test.
    """

    def __init__(
        self,
        *steps: Any,
        clock: FakeClock | None = None,
        observe: Callable[[], Any] | None = None,
    ) -> None:
        self.steps = list(steps)
        self.clock = clock
        self.observe = observe
        self.calls = 0
        self.seen: list[Any] = []
        self.args: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def _next(self, args: tuple[Any, ...]) -> Any:
        with self._lock:
            if self.calls >= len(self.steps):
                raise AssertionError(f"unexpected call {self.calls + 1}: the script has ended")
            step = self.steps[self.calls]
            self.calls += 1
            self.args.append(args)
            if self.observe is not None:
                self.seen.append(self.observe())
        if isinstance(step, Slow):
            assert self.clock is not None, "a Slow step needs the script's clock"
            self.clock.advance(step.seconds)
            step = step.outcome
        return step

    def __call__(self, *args: Any) -> Any:
        step = self._next(args)
        if isinstance(step, BaseException):
            raise step
        assert not isinstance(step, Hang), "HANG is for async scripts"
        return step

    async def run(self, *args: Any) -> Any:
        """The async face: the same script, awaited."""
        step = self._next(args)
        await asyncio.sleep(0)
        if isinstance(step, Hang):
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        return step
