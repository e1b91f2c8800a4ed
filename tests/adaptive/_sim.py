"""A discrete-event simulation on a fake clock: a queueing server and clients behind a limiter.

The server has ``capacity`` workers serving one request each in ``latency`` seconds, first come
first served; a request that finds every worker busy waits in a queue, so its latency grows with
the load beyond ``capacity``. Service times vary by up to ``jitter`` (a fraction, from a seeded
random source) so that requests do not move in lockstep. A request that finds ``queue`` others
already waiting is rejected at once (a drop, answered in ``reject_latency``); one that would take
longer than ``timeout`` is given up by its client at ``timeout`` (a drop), though its worker still
spends the time on it, as a real server would.

The clients form a closed loop: each takes a permit with ``try_acquire()``, sends its request and
reports the outcome, then starts again; a client refused a permit tries again ``retry_after``
seconds later. With more clients than the server can serve, the limiter alone decides how much
reaches the server.
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from buttress.adaptive import AdaptiveConcurrency, AdaptivePermit, LimitAlgorithm
from buttress.testing import FakeClock


class Simulation:
    """An event queue over a :class:`FakeClock`: actions run in time order, the clock follows."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    @property
    def now(self) -> float:
        return self.clock.now()

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), action))

    def run_until(self, until: float) -> None:
        events = self._events
        while events and events[0][0] <= until:
            when, _, action = heapq.heappop(events)
            self.clock.advance(max(0.0, when - self.clock.now()))
            action()
        self.clock.advance(max(0.0, until - self.clock.now()))


class Server:
    """``capacity`` workers, a FIFO queue of ``queue`` places, a client ``timeout`` (see above)."""

    def __init__(
        self,
        *,
        capacity: int,
        latency: float,
        queue: int,
        timeout: float,
        reject_latency: float = 0.0001,
        jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self.jitter = jitter
        self._random = random.Random(seed)
        self.queue = queue
        self.timeout = timeout
        self.reject_latency = reject_latency
        self._workers = [0.0] * capacity  # a heap of the times each worker is next free
        self._waiting: list[float] = []  # start times of the requests still queued

    @property
    def capacity(self) -> int:
        return len(self._workers)

    def set_capacity(self, capacity: int, now: float) -> None:
        """Add idle workers, or retire the busiest ones (their accepted work still finishes)."""
        workers = sorted(self._workers)
        if capacity < len(workers):
            workers = workers[:capacity]
        else:
            workers += [now] * (capacity - len(workers))
        heapq.heapify(workers)
        self._workers = workers

    def submit(self, now: float) -> tuple[float, bool]:
        """Accept a request at ``now``: return (seconds until its client sees the end, dropped)."""
        waiting = self._waiting
        while waiting and waiting[0] <= now:
            heapq.heappop(waiting)
        if self._workers[0] > now and len(waiting) >= self.queue:
            return self.reject_latency, True
        start = max(now, heapq.heappop(self._workers))
        service = self.latency
        if self.jitter:
            service *= self._random.uniform(1 - self.jitter, 1 + self.jitter)
        finish = start + service
        heapq.heappush(self._workers, finish)
        if start > now:
            heapq.heappush(waiting, start)
        if finish - now > self.timeout:
            return self.timeout, True
        return finish - now, False


@dataclass
class Trace:
    """What the clients saw: the limit over time and each completed request."""

    limits: list[tuple[float, int]] = field(default_factory=list)
    completions: list[tuple[float, float, bool]] = field(default_factory=list)  # (at, rtt, dropped)
    refused: int = 0
    max_inflight: int = 0

    def limits_between(self, begin: float, end: float) -> list[int]:
        return [limit for at, limit in self.limits if begin <= at < end]

    def median_limit(self, begin: float, end: float) -> float:
        return statistics.median(self.limits_between(begin, end))

    def goodput(self, begin: float, end: float) -> float:
        """Successful requests per second completed in ``[begin, end)``."""
        done = sum(1 for at, _, dropped in self.completions if begin <= at < end and not dropped)
        return done / (end - begin)

    def median_rtt(self, begin: float, end: float) -> float:
        return statistics.median(
            rtt for at, rtt, dropped in self.completions if begin <= at < end and not dropped
        )


class ClosedLoop:
    """``clients`` clients sending requests through ``limiter`` to ``server`` (see above)."""

    def __init__(
        self,
        sim: Simulation,
        limiter: AdaptiveConcurrency,
        server: Server,
        *,
        clients: int,
        retry_after: float,
        sample_every: float = 0.05,
    ) -> None:
        self.sim = sim
        self.limiter = limiter
        self.server = server
        self.retry_after = retry_after
        self.sample_every = sample_every
        self.trace = Trace()
        for index in range(clients):
            # Spread the first requests a little, as real clients never start in the same instant.
            sim.at(sim.now + index * retry_after / clients, self._issue)
        sim.at(sim.now, self._sample)

    def _sample(self) -> None:
        self.trace.limits.append((self.sim.now, self.limiter.limit))
        self.sim.at(self.sim.now + self.sample_every, self._sample)

    def _issue(self) -> None:
        sim = self.sim
        permit = self.limiter.try_acquire()
        if permit is None:
            self.trace.refused += 1
            sim.at(sim.now + self.retry_after, self._issue)
            return
        self.trace.max_inflight = max(self.trace.max_inflight, self.limiter.inflight)
        delay, dropped = self.server.submit(sim.now)
        sim.at(sim.now + delay, lambda: self._complete(permit, dropped))

    def _complete(self, permit: AdaptivePermit, dropped: bool) -> None:
        rtt = self.sim.now - permit.start
        if dropped:
            permit.dropped()
        else:
            permit.success()
        self.trace.completions.append((self.sim.now, rtt, dropped))
        self._issue()


def simulate(
    algorithm: LimitAlgorithm,
    *,
    capacity: int = 20,
    latency: float = 0.01,
    queue: int = 40,
    timeout: float = 0.05,
    clients: int = 100,
    jitter: float = 0.1,
    phases: tuple[tuple[float, int], ...] = ((10.0, 20),),
) -> tuple[Trace, AdaptiveConcurrency]:
    """Run ``clients`` against a server whose capacity follows ``phases`` ((seconds, capacity)).

    Returns:
        The trace and the limiter (for its final state).
    """
    sim = Simulation()
    limiter = AdaptiveConcurrency("sim", algorithm=algorithm, clock=sim.clock)
    server = Server(capacity=capacity, latency=latency, queue=queue, timeout=timeout, jitter=jitter)
    load = ClosedLoop(sim, limiter, server, clients=clients, retry_after=latency / 4)
    end = 0.0
    for seconds, phase_capacity in phases:
        server.set_capacity(phase_capacity, sim.now)
        end += seconds
        sim.run_until(end)
    return load.trace, limiter
