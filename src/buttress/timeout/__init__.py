"""Time limits and deadline propagation.

::

    @timeout(2)                         # a coroutine: cancelled at 2 s, Timeout raised
    async def fetch(url): ...

    @timeout(2, mode="thread")          # a sync call: run on a thread, stop waiting at 2 s
    def query(sql): ...

    with deadline(5):                   # cooperative: nothing interrupted, everything sees it
        retry_policy.call(connect)      # gives up before a wait or attempt past the deadline

A limit sets the *current deadline* (a context variable) for the code it runs: inner limits take
the smaller one, :class:`~buttress.Retry` does not start a wait or an attempt that cannot finish
before it, bulkheads do not wait for a slot past it, and your code can read it with
:func:`current_deadline` and :func:`remaining`. :class:`~buttress.Timeout` is also a builtin
:class:`TimeoutError`.
"""

from buttress._deadline import Deadline, current_deadline, remaining
from buttress.timeout._events import TimedOut
from buttress.timeout._limit import (
    DeadlineScope,
    TimeLimit,
    TimeoutMode,
    deadline,
    timeout,
)

__all__ = [
    "Deadline",
    "DeadlineScope",
    "TimeLimit",
    "TimedOut",
    "TimeoutMode",
    "current_deadline",
    "deadline",
    "remaining",
    "timeout",
]
