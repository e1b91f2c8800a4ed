"""The rate limiting algorithms as pure logic over small state records.

Each algorithm is a set of functions of (state, rate, now, cost) that never sleep, read a clock or
touch a store: the memory store runs them under its lock, and the Redis store's Lua scripts
(``buttress/storage/lua/``) implement the very same arithmetic on the server. The conformance tests
run both against the same scenarios.

States (``None`` means "never seen", equivalent to a fresh state):

- fixed window: ``[count, window_end]``. The window starts at the first hit and lasts one period
  (Flask-Limiter's and ``limits``' semantics).
- sliding window log: :class:`Log`, the (time, cost) of every admitted request in the last period.
  Exact for every window ``(t - period, t]``; memory grows with the limit.
- sliding window counter: ``[window_index, current, previous]`` over windows aligned to the clock's
  origin. It estimates the last period's count as ``previous * (1 - elapsed/period) + current``
  (Cloudflare's method). The estimate assumes the previous window's requests were spread evenly:
  it may admit up to twice the limit in some period-long window in the worst case (a burst at the
  end of one window, then the limit again late in the next), and never more; it may also reject a
  little early. In practice Cloudflare measured 0.003% of requests decided wrongly.
- token bucket: ``[tokens, updated]``; a bucket of ``limit`` tokens refilled at ``limit/period`` per
  second. Bursts never exceed ``limit``.
- GCRA: ``[tat]``, the theoretical arrival time; emission interval ``period/limit``, burst
  ``limit``. The same admissions as the token bucket, with one number of state.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from math import floor as _floor  # one global look-up, not two: these run per request
from typing import Any, Literal, get_args

from buttress.ratelimit._decision import Decision
from buttress.ratelimit._rate import Rate

__all__ = ["ALGORITHMS", "EPSILON", "STEPS", "Algorithm", "Log", "State", "decide", "expires_at"]

Algorithm = Literal[
    "fixed-window", "sliding-window", "sliding-window-counter", "token-bucket", "gcra"
]
"""The algorithm names; ``sliding-window`` is the exact sliding window log."""

ALGORITHMS: tuple[str, ...] = get_args(Algorithm)


class Log:
    """The sliding window log of one rate: admitted (time, cost) pairs and their sum."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def purge(self, now: float, period: float) -> None:
        """Drop the entries at or before ``now - period`` (outside the window)."""
        entries, horizon = self.entries, now - period
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]


State = list[float] | Log | None

EPSILON = 1e-6
"""One microsecond. At Unix-epoch times (the Redis clock, ~1.7e9 s) a double resolves about
2.4e-7 s, so ``now + period - now`` may miss ``period`` by that much; the token bucket and GCRA
compare with this slack so that an admission due at t is never refused at t for float noise (the
error it allows is a microsecond early, far below any real clock's accuracy)."""


# -- per-algorithm arithmetic -------------------------------------------------------------------
# Each ``_x_step`` looks at a request of ``cost`` at ``now`` and returns
# (fits, remaining_after, reset_after, retry_after, after): ``remaining_after`` is what would
# remain after admitting (or what remains now, if it does not fit), ``after`` the state once the
# request is admitted (``None`` for the log, whose admission :func:`_log_take` applies in place).
# Nothing is changed that matters: admitting is the caller's choice (all or nothing). These run
# for every request: plain arithmetic, no helpers.

_Step = tuple[bool, int, float, float, State]


def _fixed_step(state: Any, rate: Rate, now: float, cost: int) -> _Step:
    if state is not None and now < state[1]:
        count, end = state[0], state[1]
    else:
        count, end = 0.0, now + rate.period
    limit = rate.limit
    if count + cost <= limit:
        return True, int(limit - count - cost), end - now, 0.0, [count + cost, end]
    return False, int(limit - count), end - now, end - now, None


def _log_step(state: Any, rate: Rate, now: float, cost: int) -> _Step:
    period, limit = rate.period, rate.limit
    if state is None:
        return True, limit - cost, period, 0.0, None
    state.purge(now, period)
    total = state.total
    if total + cost <= limit:
        return True, limit - total - cost, period, 0.0, None
    # The request fits once enough of the oldest entries have left the window.
    need, freed, retry = total + cost - limit, 0, 0.0
    for stamp, spent in state.entries:
        freed += spent
        if freed >= need:
            retry = stamp + period - now
            break
    newest = state.entries[-1][0] if state.entries else now  # empty: cost > limit, never fits
    return False, limit - total, newest + period - now, retry, None


def _log_take(state: Any, rate: Rate, now: float, cost: int) -> State:
    log: Log = state if state is not None else Log()
    log.purge(now, rate.period)
    log.entries.append((now, cost))
    log.total += cost
    return log


def _counter_step(state: Any, rate: Rate, now: float, cost: int) -> _Step:
    period, limit = rate.period, rate.limit
    index = _floor(now / period)
    current = previous = 0.0
    if state is not None:
        stored, count, before = state
        if stored == index:
            current, previous = count, before
        elif stored == index - 1:
            previous = count
    start = index * period
    # With no previous count the estimate is exactly the current one: the sum below would add
    # 0.0 (what the Lua script computes), so skipping it changes no bit.
    estimate = previous * (1.0 - (now - start) / period) + current if previous else current
    if estimate + cost <= limit:
        after = [index, current + cost, previous]
        return True, _floor(limit - estimate - cost), start + 2 * period - now, 0.0, after
    if current + cost <= limit:
        # Wait until the previous window's share has decayed enough, within this window.
        retry = start + (1.0 - (limit - current - cost) / previous) * period - now
    else:
        # This window's count becomes the previous one; wait until its share decays enough.
        fraction = 1.0 - (limit - cost) / current if current else 0.0
        retry = start + period + max(fraction, 0.0) * period - now
    # Rejected, so something was counted: this window's hits weigh until the end of the next.
    reset = start + (2.0 if current else 1.0) * period - now
    return False, max(0, _floor(limit - estimate)), reset, max(retry, 0.0), None


def _bucket_step(state: Any, rate: Rate, now: float, cost: int) -> _Step:
    limit, period = rate.limit, rate.period
    if state is None:
        tokens = float(limit)
    else:  # min(limit, tokens + max(refill, 0)), spelled out
        tokens, updated = state
        refill = (now - updated) * limit / period
        if refill > 0.0:
            tokens += refill
        if tokens > limit:
            tokens = float(limit)
    per_token = period / limit
    slack = EPSILON / per_token  # the tokens one microsecond brings: absorbs float noise
    if tokens + slack >= cost:
        left = tokens - cost if tokens > cost else 0.0
        return True, int(left + slack), (limit - left) * per_token, 0.0, [left, now]
    return (
        False,
        int(tokens + slack),
        (limit - tokens) * per_token,
        (cost - tokens) * per_token,
        None,
    )


def _gcra_step(state: Any, rate: Rate, now: float, cost: int) -> _Step:
    period, limit = rate.period, rate.limit
    interval = period / limit
    tat = state[0] if state is not None and state[0] > now else now
    new_tat = tat + cost * interval
    if new_tat - now <= period + EPSILON:
        remaining = _floor((now + period - new_tat + EPSILON) / interval)
        # cost * period / limit, not cost * interval: the rounding the Redis script uses too.
        return True, remaining, new_tat - now, 0.0, [tat + cost * period / limit]
    remaining = _floor((now + period - tat + EPSILON) / interval)
    return False, remaining, tat - now, new_tat - period - now, None


_StepFn = Callable[[Any, Rate, float, int], _Step]
_TakeFn = Callable[[Any, Rate, float, int], State]

STEPS: dict[str, tuple[_StepFn, _TakeFn | None]] = {
    "fixed-window": (_fixed_step, None),
    "sliding-window": (_log_step, _log_take),
    "sliding-window-counter": (_counter_step, None),
    "token-bucket": (_bucket_step, None),
    "gcra": (_gcra_step, None),
}
"""Algorithm name -> (step, take): ``take`` applies an admission in place when the step cannot
return the state after it (the log); ``None`` means use the step's ``after``."""


def decide(
    algorithm: str,
    states: list[State],
    rates: tuple[Rate, ...],
    now: float,
    cost: int,
    *,
    consume: bool = True,
) -> Decision:
    """Decide a request of ``cost`` at ``now`` against every rate, all or nothing.

    When every rate admits it and ``consume`` is true, ``states`` is updated in place (each item
    replaced by its new state); otherwise nothing changes.
    """
    step, take = STEPS[algorithm]
    if len(rates) == 1:  # the common case, without the bookkeeping of several rates
        rate = rates[0]
        fits, remaining, reset, retry, after = step(states[0], rate, now, cost)
        if fits and consume:
            states[0] = after if take is None else take(states[0], rate, now, cost)
        return Decision(
            fits,
            rate.limit,
            remaining if remaining > 0 else 0,
            reset if reset > 0.0 else 0.0,
            None if fits else (retry if retry > 0.0 else 0.0),
            rate,
        )
    views = [step(states[i], rates[i], now, cost) for i in range(len(rates))]
    allowed = True
    for item in views:
        if not item[0]:
            allowed = False
            break
    if allowed:
        if consume:
            for index, rate in enumerate(rates):
                states[index] = (
                    views[index][4] if take is None else take(states[index], rate, now, cost)
                )
        # The binding limit: the least remaining; on a tie, the latest reset.
        binding = 0
        for index in range(1, len(views)):
            if (views[index][1], -views[index][2]) < (views[binding][1], -views[binding][2]):
                binding = index
    else:
        # The binding limit: of those that reject, the one admitting latest.
        binding = -1
        for index, item in enumerate(views):
            if not item[0] and (binding < 0 or item[3] > views[binding][3]):
                binding = index
    _, remaining, reset, retry, _ = views[binding]
    rate = rates[binding]
    return Decision(
        allowed,
        rate.limit,
        remaining if remaining > 0 else 0,
        reset if reset > 0.0 else 0.0,
        None if allowed else (retry if retry > 0.0 else 0.0),
        rate,
    )


def expires_at(algorithm: str, state: State, rate: Rate) -> float:
    """Return the time after which ``state`` is the same as a fresh state (for sweeping)."""
    if state is None:
        return -math.inf
    if isinstance(state, Log):
        return state.entries[-1][0] + rate.period if state.entries else -math.inf
    if algorithm == "fixed-window":
        return state[1]
    if algorithm == "sliding-window-counter":
        return (state[0] + 2) * rate.period
    if algorithm == "token-bucket":
        return state[1] + (rate.limit - state[0]) * rate.period / rate.limit
    return state[0]  # gcra: the theoretical arrival time
