"""Helpers for the time limit tests."""

from __future__ import annotations

import asyncio


def cancelling() -> int:
    """The current task's pending cancellation requests.

    Python 3.10 does not count them (``Task.cancelling`` is 3.11+): 0 there.
    """
    counter = getattr(asyncio.current_task(), "cancelling", None)
    return 0 if counter is None else int(counter())
