"""Concurrency limit algorithms as pure state machines: samples in, a limit out.

Each algorithm keeps a floating-point *estimate* and answers :meth:`LimitAlgorithm.on_sample`
with the new integer limit. None of them reads a clock, sleeps or locks: the caller measures the
round-trip time (RTT) and serialises the calls (:class:`~buttress.AdaptiveConcurrency` feeds them
under its lock). The ideas are those of Netflix's concurrency-limits library; the code and a few
rules are our own (marked "unlike Netflix" below).

- :class:`AIMD` reacts to *loss* only: +1 while the limit is in use and nothing is dropped, times
  ``backoff_ratio`` on a drop (or an RTT above ``timeout``).
- :class:`Vegas` compares each RTT with the lowest RTT seen (the no-load RTT) to estimate how many
  requests are queued downstream, and keeps that queue between ``alpha`` and ``beta``.
- :class:`Gradient2` compares the latest RTT with a long exponential average of RTTs and shrinks
  the limit in proportion when latency rises, always allowing ``queue_size`` more.

Three things keep a limit from sticking at its minimum (a known failure of a Go port): the
estimate is a float, so small increments accumulate instead of being truncated away; ``inflight``
counts the sampled request itself, so a lone request at limit 1 shows the limit in full use; and
the RTT of a dropped request (often a fast rejection) never becomes a latency baseline, which
would otherwise make every later sample look queued.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from buttress._types import Duration, check_int, seconds_or_none

__all__ = ["AIMD", "Gradient2", "LimitAlgorithm", "Vegas", "Windowed", "log10_root"]


@runtime_checkable
class LimitAlgorithm(Protocol):
    """What :class:`~buttress.AdaptiveConcurrency` needs of a limit algorithm.

    An algorithm is a state machine; it need not be thread-safe (its owner serialises calls), and
    one instance belongs to one limiter.
    """

    @property
    def limit(self) -> int:
        """The current concurrency limit (at least 1)."""
        ...

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        """Take one finished request into account and return the new limit.

        Args:
            start: When the request started (the owner's clock, in seconds).
            rtt: How long it took, in seconds (``>= 0``).
            inflight: Requests in flight when it started, itself included (``>= 1`` normally).
            dropped: Whether it was dropped: timed out, rejected by the server for overload.

        Returns:
            The new limit.
        """
        ...


def log10_root(limit: int) -> int:
    """The integer part of ``log10(limit)``, at least 1: Vegas's default step size.

    Args:
        limit: The current limit.

    Returns:
        ``max(1, floor(log10(limit)))``: 1 up to 99, 2 up to 999, ...
    """
    return max(1, int(math.log10(limit))) if limit > 0 else 1


def _check_limits(
    min_limit: object, max_limit: object, initial_limit: object
) -> tuple[int, int, int]:
    low = check_int(min_limit, "min_limit", minimum=1)
    high = check_int(max_limit, "max_limit", minimum=1)
    if high < low:
        raise ValueError(f"max_limit must be >= min_limit ({low}), got {high}")
    initial = check_int(initial_limit, "initial_limit", minimum=1)
    if not low <= initial <= high:
        raise ValueError(f"initial_limit must be in [min_limit, max_limit] = [{low}, {high}]")
    return low, high, initial


def _check_fraction(
    value: object, name: str, low: float, high: float, *, low_open: bool, high_open: bool
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    number = float(value)
    too_low = number <= low if low_open else number < low
    too_high = number >= high if high_open else number > high
    if math.isnan(number) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


def _check_callable(value: object, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def _check_sample(rtt: float, inflight: int) -> None:
    # Cheap guards: a negative or NaN RTT would poison every average that follows.
    if not rtt >= 0 or rtt == math.inf:
        raise ValueError(f"rtt must be a finite number of seconds >= 0, got {rtt!r}")
    if inflight < 0:
        raise ValueError(f"inflight must be >= 0, got {inflight!r}")


class _Bounded:
    """What every limit algorithm here has: its bounds, checked once with the initial limit."""

    __slots__ = ("_max", "_min")

    def __init__(self, min_limit: object, max_limit: object, initial_limit: object) -> None:
        self._min, self._max, _ = _check_limits(min_limit, max_limit, initial_limit)

    @property
    def min_limit(self) -> int:
        """The lowest limit."""
        return self._min

    @property
    def max_limit(self) -> int:
        """The highest limit."""
        return self._max


class AIMD(_Bounded):
    """Additive increase, multiplicative decrease: a loss-based limit.

    On every sample that was not dropped, while the limit is in use (``inflight * 2 >= limit``),
    the limit grows by 1; on a drop, or an RTT above ``timeout``, it becomes
    ``limit * backoff_ratio`` (at least 1 less, never below ``min_limit``). It ignores latency
    otherwise, so it needs a downstream that drops or times out when overloaded.

    Unlike Netflix, and like TCP, it backs off once per congestion event: a drop of a request
    that started before the last backoff took effect does not back off again (one overload
    drops many requests at once, and backing off for each would collapse the limit).

    Args:
        initial_limit: The limit before any sample.
        min_limit: The lowest limit.
        max_limit: The highest limit.
        backoff_ratio: The factor applied on a drop, in ``[0.5, 1)``.
        timeout: An RTT above this many seconds counts as a drop; ``None`` counts only drops.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range (the message names it).
    """

    __slots__ = ("_backoff_at", "_backoff_ratio", "_limit", "_timeout")

    def __init__(
        self,
        *,
        initial_limit: int = 10,
        min_limit: int = 1,
        max_limit: int = 1000,
        backoff_ratio: float = 0.9,
        timeout: Duration | None = None,
    ) -> None:
        super().__init__(min_limit, max_limit, initial_limit)
        self._limit = int(initial_limit)
        self._backoff_ratio = _check_fraction(
            backoff_ratio, "backoff_ratio", 0.5, 1.0, low_open=False, high_open=True
        )
        self._timeout = seconds_or_none(timeout, "timeout", allow_zero=False)
        self._backoff_at = -math.inf

    @property
    def limit(self) -> int:
        """The current limit."""
        return self._limit

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        """Grow by 1 while in use and healthy, back off on a drop (see the class).

        Args:
            start: When the request started (to back off once per congestion event).
            rtt: Its round-trip time in seconds.
            inflight: Requests in flight when it started, itself included.
            dropped: Whether it was dropped.

        Returns:
            The new limit.

        Raises:
            ValueError: If ``rtt`` or ``inflight`` is negative.
        """
        _check_sample(rtt, inflight)
        limit = self._limit
        if dropped or (self._timeout is not None and rtt > self._timeout):
            if start < self._backoff_at:
                return limit  # sent before the last backoff: that backoff already answered it
            self._backoff_at = start + rtt
            limit = max(self._min, min(limit - 1, int(limit * self._backoff_ratio)))
        elif inflight * 2 >= limit:
            limit = min(self._max, limit + 1)
        self._limit = limit
        return limit

    def __repr__(self) -> str:
        return f"AIMD(limit={self._limit}, min_limit={self._min}, max_limit={self._max})"


class Vegas(_Bounded):
    """A delay-based limit after TCP Vegas: keep a small queue downstream.

    The lowest RTT seen is taken as the no-load RTT; the queue downstream is estimated as
    ``limit * (1 - rtt_noload / rtt)``. While the limit is in use (``inflight * 2 >= limit``):
    a queue of at most ``threshold(limit)`` grows the limit by ``beta(limit)`` (fast start), a
    queue below ``alpha(limit)`` grows it with ``increase``, one above ``beta(limit)`` shrinks it
    with ``decrease``; in between it stays. A drop always shrinks it with ``decrease``. The new
    value is blended with the old by ``smoothing``.

    Every ``probe_multiplier * limit`` samples (times a random jitter in ``[0.5, 1)``, so that
    instances do not probe together) the no-load RTT is reset to the current sample, so that a
    baseline that became too low (the downstream got slower for good) is forgotten. Unlike
    Netflix, dropped samples never set the no-load RTT: a fast rejection is no measure of an
    unloaded downstream, and would make every later sample look queued.

    Args:
        initial_limit: The limit before any sample.
        min_limit: The lowest limit.
        max_limit: The highest limit.
        smoothing: The weight of the new value, in ``(0, 1]`` (1: no smoothing).
        alpha: Queue size below which the limit grows, as a function of the limit
            (default ``3 * log10_root(limit)``).
        beta: Queue size above which the limit shrinks (default ``6 * log10_root(limit)``).
        threshold: Queue size at or below which the limit grows fast, by ``beta(limit)``
            (default ``log10_root(limit)``).
        increase: The slow growth step, from the current estimate to the next
            (default ``limit + log10_root(limit)``).
        decrease: The shrink step (default ``limit - log10_root(limit)``).
        probe_multiplier: How often the no-load RTT is probed, in multiples of the limit.
        rng: The random source of the probe jitter (pass ``random.Random(seed)`` for a
            reproducible run).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range (the message names it).
    """

    __slots__ = (
        "_alpha",
        "_beta",
        "_decrease",
        "_estimate",
        "_increase",
        "_jitter",
        "_probe_count",
        "_probe_multiplier",
        "_rng",
        "_rtt_noload",
        "_smoothing",
        "_threshold",
    )

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        smoothing: float = 1.0,
        alpha: Callable[[int], float] | None = None,
        beta: Callable[[int], float] | None = None,
        threshold: Callable[[int], float] | None = None,
        increase: Callable[[float], float] | None = None,
        decrease: Callable[[float], float] | None = None,
        probe_multiplier: int = 30,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(min_limit, max_limit, initial_limit)
        initial = int(initial_limit)
        self._smoothing = _check_fraction(
            smoothing, "smoothing", 0.0, 1.0, low_open=True, high_open=False
        )
        self._alpha = _default_alpha if alpha is None else alpha
        self._beta = _default_beta if beta is None else beta
        self._threshold = log10_root if threshold is None else threshold
        self._increase = _default_increase if increase is None else increase
        self._decrease = _default_decrease if decrease is None else decrease
        for value, name in (
            (self._alpha, "alpha"),
            (self._beta, "beta"),
            (self._threshold, "threshold"),
            (self._increase, "increase"),
            (self._decrease, "decrease"),
        ):
            _check_callable(value, name)
        self._probe_multiplier = check_int(probe_multiplier, "probe_multiplier", minimum=1)
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
        self._rng = random.Random() if rng is None else rng
        self._estimate = float(initial)
        self._rtt_noload: float | None = None
        self._probe_count = 0
        self._jitter = self._rng.uniform(0.5, 1.0)

    @property
    def limit(self) -> int:
        """The current limit."""
        return int(self._estimate)

    @property
    def rtt_noload(self) -> float | None:
        """The no-load RTT the queue is estimated against (``None`` before a usable sample)."""
        return self._rtt_noload

    def on_sample(  # noqa: PLR0911 - one return per rule of the algorithm reads best
        self, start: float, rtt: float, inflight: int, dropped: bool
    ) -> int:
        """Move the limit to keep the estimated downstream queue in ``[alpha, beta]``.

        Args:
            start: When the request started (unused by Vegas).
            rtt: Its round-trip time in seconds.
            inflight: Requests in flight when it started, itself included.
            dropped: Whether it was dropped.

        Returns:
            The new limit.

        Raises:
            ValueError: If ``rtt`` or ``inflight`` is negative.
        """
        _check_sample(rtt, inflight)
        estimate = self._estimate
        self._probe_count += 1
        if self._probe_count >= self._jitter * self._probe_multiplier * estimate:
            # Forget the baseline now and then: the downstream may have become slower for good.
            self._probe_count = 0
            self._jitter = self._rng.uniform(0.5, 1.0)
            if not dropped and rtt > 0:
                self._rtt_noload = rtt
                return int(estimate)
        if dropped:
            return self._set(self._decrease(estimate))
        noload = self._rtt_noload
        if rtt > 0 and (noload is None or rtt < noload):
            self._rtt_noload = rtt  # a new baseline: nothing to compare with yet
            return int(estimate)
        if inflight * 2 < estimate:
            return int(estimate)  # the limit is not in use: no evidence to grow on
        queue = math.ceil(estimate * (1.0 - noload / rtt)) if noload and rtt > 0 else 0
        limit = int(estimate)
        if queue <= self._threshold(limit):
            return self._set(estimate + self._beta(limit))
        if queue < self._alpha(limit):
            return self._set(self._increase(estimate))
        if queue > self._beta(limit):
            return self._set(self._decrease(estimate))
        return limit

    def _set(self, target: float) -> int:
        target = max(float(self._min), min(float(self._max), target))
        estimate = (1.0 - self._smoothing) * self._estimate + self._smoothing * target
        self._estimate = estimate
        return int(estimate)

    def __repr__(self) -> str:
        return (
            f"Vegas(limit={self.limit}, min_limit={self._min}, max_limit={self._max},"
            f" rtt_noload={self._rtt_noload!r})"
        )


def _default_alpha(limit: int) -> float:
    return 3 * log10_root(limit)


def _default_beta(limit: int) -> float:
    return 6 * log10_root(limit)


def _default_increase(estimate: float) -> float:
    return estimate + log10_root(int(estimate))


def _default_decrease(estimate: float) -> float:
    return estimate - log10_root(int(estimate))


class Gradient2(_Bounded):
    """A delay-based limit that follows the gradient of latency against its long-term average.

    Each sample's RTT (the short-term RTT) is compared with an exponential average of RTTs over
    about ``long_window`` samples (the long-term RTT)::

        gradient = clamp(tolerance * long_rtt / short_rtt, 0.5, 1.0)
        target   = limit * gradient + queue_size(limit)
        limit    = limit * (1 - smoothing) + target * smoothing

    so the limit shrinks in proportion when latency rises above ``tolerance`` times its usual
    level, and otherwise grows by ``queue_size`` (scaled by ``smoothing``). It does not change
    while the limit is not in use (``inflight < limit / 2``). When the long-term RTT is more than
    twice the short one (latency fell after a long overload), the long-term RTT decays by 5% per
    sample instead of waiting for the average. Unlike Netflix, a dropped sample counts as the
    worst gradient (0.5) and does not enter the RTT averages, since its RTT is a timeout or a fast
    rejection rather than a latency.

    Because the baseline is an average, sustained overload slowly becomes the new normal: the
    limit creeps up until drops or timeouts push it back. Prefer :class:`Vegas` when the no-load
    latency is stable and an overloaded downstream does not drop requests.

    Args:
        initial_limit: The limit before any sample.
        min_limit: The lowest limit (at least 1).
        max_limit: The highest limit.
        smoothing: The weight of the new value, in ``(0, 1]``.
        tolerance: How much slower than usual a sample may be before the limit shrinks (``>= 1``).
            Netflix's later versions default to 1.5; in our simulations that let the limit climb
            until the server's queue overflowed, so the default here is 1.0.
        queue_size: The additive allowance, a number or a function of the limit (default 4).
        long_window: The number of samples the long-term RTT averages over (``>= 1``).
        warmup: Samples averaged plainly before the long-term average starts decaying.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range (the message names it).
    """

    __slots__ = (
        "_count",
        "_decay",
        "_estimate",
        "_long_rtt",
        "_queue_size",
        "_short_rtt",
        "_smoothing",
        "_tolerance",
        "_warmup",
    )

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        smoothing: float = 0.2,
        tolerance: float = 1.0,
        queue_size: float | Callable[[int], float] = 4,
        long_window: int = 600,
        warmup: int = 10,
    ) -> None:
        super().__init__(min_limit, max_limit, initial_limit)
        initial = int(initial_limit)
        self._smoothing = _check_fraction(
            smoothing, "smoothing", 0.0, 1.0, low_open=True, high_open=False
        )
        self._tolerance = _check_fraction(
            tolerance, "tolerance", 1.0, math.inf, low_open=False, high_open=True
        )
        if callable(queue_size):
            self._queue_size: Callable[[int], float] = queue_size
        else:
            size = _check_fraction(
                queue_size, "queue_size", 0.0, math.inf, low_open=False, high_open=True
            )
            self._queue_size = lambda _limit: size
        self._decay = 2.0 / (check_int(long_window, "long_window", minimum=1) + 1)
        self._warmup = check_int(warmup, "warmup", minimum=0)
        self._estimate = float(initial)
        self._short_rtt = 0.0
        self._long_rtt = 0.0
        self._count = 0

    @property
    def limit(self) -> int:
        """The current limit."""
        return int(self._estimate)

    @property
    def long_rtt(self) -> float:
        """The long-term average RTT in seconds (0 before the first usable sample)."""
        return self._long_rtt

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        """Move the limit by the gradient of the latest RTT against the long-term RTT.

        Args:
            start: When the request started (unused by Gradient2).
            rtt: Its round-trip time in seconds.
            inflight: Requests in flight when it started, itself included.
            dropped: Whether it was dropped.

        Returns:
            The new limit.

        Raises:
            ValueError: If ``rtt`` or ``inflight`` is negative.
        """
        _check_sample(rtt, inflight)
        estimate = self._estimate
        if dropped:
            gradient = 0.5
        else:
            long_rtt = self._average(rtt)
            self._short_rtt = rtt
            if rtt > 0 and long_rtt > 2 * rtt:
                # Latency fell well below its average (an overload ended): catch up faster.
                self._long_rtt = long_rtt * 0.95
            if inflight * 2 < estimate:
                return int(estimate)  # the limit is not in use: no evidence either way
            gradient = 1.0 if rtt <= 0 else self._tolerance * long_rtt / rtt
            gradient = max(0.5, min(1.0, gradient))
        target = estimate * gradient + self._queue_size(int(estimate))
        estimate = estimate * (1.0 - self._smoothing) + target * self._smoothing
        self._estimate = max(float(self._min), min(float(self._max), estimate))
        return int(self._estimate)

    def _average(self, rtt: float) -> float:
        count = self._count = self._count + 1
        if count <= self._warmup or count == 1:
            self._long_rtt += (rtt - self._long_rtt) / count  # a plain mean while warming up
        else:
            self._long_rtt += (rtt - self._long_rtt) * self._decay
        return self._long_rtt

    def __repr__(self) -> str:
        return (
            f"Gradient2(limit={self.limit}, min_limit={self._min}, max_limit={self._max},"
            f" long_rtt={self._long_rtt!r})"
        )


class Windowed:
    """Feed another algorithm one aggregated sample per window of samples.

    Latency varies from request to request; an algorithm fed single samples reacts to that noise
    (Vegas takes its baseline from the lowest RTT ever seen, which noise makes too low, and then
    sees a queue that is not there). ``Windowed`` averages the RTTs of ``size`` successful samples
    and passes the average on, with the highest ``inflight`` of the window, as one sample. A drop
    is passed on at once (and ends the window): overload must not wait for a window to fill.

    Args:
        algorithm: The algorithm to feed.
        size: Samples per window (``>= 1``; 1 passes every sample through).

    Raises:
        TypeError: If ``algorithm`` is not a limit algorithm or ``size`` not an int.
        ValueError: If ``size`` is below 1.
    """

    __slots__ = ("_algorithm", "_count", "_inflight", "_size", "_start", "_total")

    def __init__(self, algorithm: LimitAlgorithm, *, size: int = 10) -> None:
        if not isinstance(algorithm, LimitAlgorithm):
            raise TypeError(
                f"algorithm must provide on_sample() and limit, got {type(algorithm).__name__}"
            )
        self._algorithm = algorithm
        self._size = check_int(size, "size", minimum=1)
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._total = 0.0
        self._inflight = 0
        self._start = math.inf

    @property
    def algorithm(self) -> LimitAlgorithm:
        """The algorithm fed."""
        return self._algorithm

    @property
    def limit(self) -> int:
        """The fed algorithm's limit."""
        return self._algorithm.limit

    @property
    def min_limit(self) -> int:
        """The fed algorithm's lowest limit (1 if it does not say)."""
        return int(getattr(self._algorithm, "min_limit", 1))

    @property
    def max_limit(self) -> int:
        """The fed algorithm's highest limit (``sys.maxsize`` if it does not say)."""
        return int(getattr(self._algorithm, "max_limit", sys.maxsize))

    def on_sample(self, start: float, rtt: float, inflight: int, dropped: bool) -> int:
        """Add a sample to the window; pass the window on when full, a drop at once.

        Args:
            start: When the request started.
            rtt: Its round-trip time in seconds.
            inflight: Requests in flight when it started, itself included.
            dropped: Whether it was dropped.

        Returns:
            The fed algorithm's limit.

        Raises:
            ValueError: If ``rtt`` or ``inflight`` is negative.
        """
        _check_sample(rtt, inflight)
        if dropped:
            self._reset()
            return self._algorithm.on_sample(start, rtt, inflight, True)
        self._count += 1
        self._total += rtt
        self._inflight = max(self._inflight, inflight)
        self._start = min(self._start, start)
        if self._count < self._size:
            return self._algorithm.limit
        average, most, first = self._total / self._count, self._inflight, self._start
        self._reset()
        return self._algorithm.on_sample(first, average, most, False)

    def __repr__(self) -> str:
        return f"Windowed({self._algorithm!r}, size={self._size})"
