"""``buttress demo``: two clients of a flaky service through an outage, side by side, live.

A flaky upstream service (see :mod:`buttress.demo._upstream`) runs in its own process on a free
loopback port, behind a throttled API: healthy with a few 503s and latency spikes, then down for
the middle third of the run, then healthy again. Two clients send it the same traffic (the same
seeded arrival times, ``RATE`` calls a second each, each call an ``async`` task):

* **naive**: what a service gets by default: each attempt waits up to a second, and a failed
  call is retried at once, up to 3 more times;
* **buttress**: a pipeline: a 1.5 s deadline for the whole call, retries with exponential
  backoff and jitter under a retry budget (20 % of calls + 5/s) that honour ``Retry-After``, a
  bulkhead of 24 calls in flight, and a circuit breaker on the host that opens when half of the
  calls of the last 2 s failed, and tries again after 1 s.

Every second the demo shows what each client got (calls, successes, p50/p99 latency, retries,
429s, breaker state) and the load each put on the service, live in the terminal with ``rich``
(``--no-live``: plain lines). At the end a summary compares the two on what was measured.
"""

from __future__ import annotations

__all__ = ["main", "run_scenario"]

import asyncio
import contextlib
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from buttress import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpen,
    Retry,
    RetryBudget,
    Timeout,
    WaitExponential,
    pipeline,
    timeout,
)
from buttress.demo._upstream import PHASES, phase_at

if TYPE_CHECKING:
    from buttress.storage.redis import RedisStorage

RATE = 30  # calls a second from each client
CLIENTS = ("naive", "buttress")


class UpstreamError(Exception):
    """The upstream answered with an error status."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass
class Second:
    """What one client saw of the calls it started in one second of the run."""

    calls: int = 0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    attempts: int = 0
    throttled: int = 0
    rejected: int = 0  # refused by a buttress policy before reaching the network
    breaker: str = ""


@dataclass
class Tally:
    """A client's seconds, and the load it put on the upstream (from the upstream's count)."""

    seconds: list[Second]
    served: list[int]

    def second(self, index: int) -> Second:
        return self.seconds[min(index, len(self.seconds) - 1)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _attempt(client: httpx.AsyncClient, name: str, second: Second) -> None:
    """One HTTP attempt; raises ``UpstreamError`` for an error status."""
    second.attempts += 1
    response = await client.get("/", headers={"x-client": name})
    if response.status_code == 429:
        second.throttled += 1
    if response.status_code != 200:
        raise UpstreamError(response.status_code, _retry_after(response))


def _naive(client: httpx.AsyncClient) -> Callable[[Second], Awaitable[None]]:
    async def call(second: Second) -> None:
        for _ in range(3):  # a failure is retried at once, up to 3 times
            with contextlib.suppress(UpstreamError, httpx.HTTPError):
                await _attempt(client, "naive", second)
                return
        await _attempt(client, "naive", second)  # the last attempt's error is the call's

    return call


def _protected(
    client: httpx.AsyncClient, breaker: CircuitBreaker
) -> Callable[[Second], Awaitable[None]]:
    retry = Retry(
        attempts=4,
        on=(UpstreamError, httpx.HTTPError),
        wait=WaitExponential(initial=0.05, max=0.4, jitter="full"),
        budget=RetryBudget(ratio=0.2, min_per_second=5),
        pushback=lambda error: getattr(error, "retry_after", None),
        max_wait=1.0,
        name="demo-upstream",
    )

    @pipeline(
        timeout(1.5), retry, Bulkhead(24, name="demo-upstream"), breaker, name="demo-upstream"
    )
    async def call(second: Second) -> None:
        await _attempt(client, "buttress", second)

    return call


async def _drive(
    name: str,
    call: Callable[[Second], Awaitable[None]],
    arrivals: list[float],
    seconds: list[Second],
    breaker: CircuitBreaker | None,
    began: float,
) -> None:
    """Start one call at each arrival time; record what became of it in its second."""

    async def one(second: Second) -> None:
        started = time.monotonic()
        try:
            await call(second)
        except (CircuitOpen, BulkheadFull):
            second.rejected += 1
        except (UpstreamError, httpx.HTTPError, Timeout, TimeoutError):
            pass
        else:
            second.ok += 1
        second.latencies.append(time.monotonic() - started)

    tasks: set[asyncio.Task[None]] = set()
    for at in arrivals:
        delay = began + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        second = seconds[min(int(at), len(seconds) - 1)]
        second.calls += 1
        if breaker is not None:
            second.breaker = breaker.state.value
        task = asyncio.create_task(one(second), name=f"{name} call")
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)


@contextlib.contextmanager
def _upstream(seconds: float, seed: int, storage: str, prefix: str) -> Iterator[int]:
    """Run the upstream in its own process; yield its port."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - our own module, loopback only
        [
            sys.executable,
            "-m",
            "buttress.demo._upstream",
            str(port),
            str(seconds),
            str(seed),
            storage,
            prefix,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None  # noqa: S101 - set by Popen above
        line = process.stdout.readline()
        if line.strip() != "ready":
            error = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"the demo's upstream did not start: {error.strip()[-500:]}")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (NaN for none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ms_or_dash(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f}"


def _row(second: Second, served: int) -> list[str]:
    """A second's cells; latencies of the calls ended so far ("-": none has ended yet)."""
    ok = f"{100 * second.ok / second.calls:.0f}%" if second.calls else "-"
    return [
        str(second.calls),
        ok,
        _ms_or_dash(_percentile(second.latencies, 0.5)),
        _ms_or_dash(_percentile(second.latencies, 0.99)),
        str(max(0, second.attempts - second.calls)),
        str(second.throttled),
        str(served),
        second.breaker or "-",
    ]


COLUMNS = ("calls", "ok", "p50 ms", "p99 ms", "retries", "429s", "load/s", "breaker")


async def _poll_load(
    client: httpx.AsyncClient, tallies: dict[str, Tally], total: int, began: float
) -> None:
    """Read the upstream's counts once a second: the load of each client in that second."""
    before = dict.fromkeys(CLIENTS, 0)
    for index in range(total):
        await asyncio.sleep(max(0.0, began + index + 1 - time.monotonic()))
        with contextlib.suppress(httpx.HTTPError, ValueError):
            served = (await client.get("/stats")).json()["served"]
            for name in CLIENTS:
                now = int(served.get(name, 0))
                tallies[name].served[index] = now - before[name]
                before[name] = now


def _show_plain(tallies: dict[str, Tally], index: int, seconds: float) -> None:
    phase = phase_at(index + 0.5, seconds)
    parts = []
    for name in CLIENTS:
        row = dict(
            zip(
                COLUMNS, _row(tallies[name].second(index), tallies[name].served[index]), strict=True
            )
        )
        parts.append(
            f"{name}: {row['ok']:>4} ok, p99 {row['p99 ms']:>5} ms, {row['retries']:>3} retries,"
            f" {row['429s']:>3} 429s, load {row['load/s']:>3}/s"
            + (f", {row['breaker']}" if name == "buttress" else "")
        )
    print(f"t={index + 1:>2}s {phase:<9} | " + " | ".join(parts), flush=True)


SERVICE = {"healthy": "up", "outage": "DOWN", "recovered": "up again"}
LIVE_ROWS = 6  # seconds shown per client


async def _live(tallies: dict[str, Tally], total: int, seconds: float, began: float) -> None:
    """Redraw a table per client of its last seconds, until the run ends.

    A second's row fills in as its calls end (a naive call may take 4 s); the summary waits for
    all of them.
    """
    from rich import box  # noqa: PLC0415 - the live view only
    from rich.console import Group  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    def render() -> Group:
        done = min(total, int(time.monotonic() - began) + 1)
        tables = []
        for name in CLIENTS:
            title = "naive: retries at once" if name == "naive" else "buttress: a pipeline"
            table = Table(
                box=box.SIMPLE_HEAD,
                padding=(0, 1),
                pad_edge=False,
                collapse_padding=True,
                title=title,
                title_justify="left",
            )
            table.add_column("t", justify="right", no_wrap=True)
            table.add_column("service", no_wrap=True, min_width=8)
            for column in COLUMNS:
                table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
            for index in range(max(0, done - LIVE_ROWS), done):
                tally = tallies[name]
                table.add_row(
                    f"{index + 1}s",
                    SERVICE[phase_at(index + 0.5, seconds)],
                    *_row(tally.second(index), tally.served[index]),
                )
            tables.append(table)
        return Group(*tables)

    with Live(render(), refresh_per_second=4, transient=False) as live:
        while time.monotonic() - began < total + PLAIN_LAG:
            await asyncio.sleep(0.5)
            live.update(render())


PLAIN_LAG = 5.0  # seconds: a line is printed once the calls started in its second have ended


async def _plain(tallies: dict[str, Tally], total: int, seconds: float, began: float) -> None:
    for index in range(total):
        await asyncio.sleep(max(0.0, began + index + 1 + PLAIN_LAG - time.monotonic()))
        _show_plain(tallies, index, seconds)


async def run_scenario(
    seconds: float, seed: int, storage: str, live: bool, prefix: str = ""
) -> dict[str, dict[str, float]]:
    """Run the scenario for ``seconds``; return the summary figures of each client.

    Args:
        seconds: The length of the run (the outage is its middle third).
        seed: Seeds the arrivals and the upstream's faults.
        storage: ``memory://``, or a Redis URL for the throttle's and the breaker's state.
        live: Draw the live table (``rich``), else print a plain line a second.
        prefix: The key prefix on Redis (default: ``buttress-demo-<random>``); the run's keys
            are deleted when it ends.
    """
    prefix = prefix or f"buttress-demo-{uuid.uuid4().hex[:8]}"
    total = max(3, round(seconds))
    arrivals_random = random.Random(seed)
    arrivals: list[float] = []
    at = 0.0
    while True:
        at += arrivals_random.expovariate(RATE)
        if at >= total:
            break
        arrivals.append(at)
    tallies = {name: Tally([Second() for _ in range(total)], [0] * total) for name in CLIENTS}
    store = None if storage == "memory://" else _breaker_store(storage, prefix)
    breaker = CircuitBreaker(
        name=f"demo-upstream-{uuid.uuid4().hex[:6]}",
        failure_rate=0.5,
        window_type="time",
        window_size=2,
        min_calls=10,
        reset_timeout=1.0,
        record=(UpstreamError, httpx.HTTPError, TimeoutError),
        registry=None,
        storage=store,
    )
    try:
        with _upstream(float(total), seed, storage, prefix) as port:
            await _traffic(port, arrivals, tallies, breaker, total, live)
    finally:
        if store is not None:
            await store.aclose()
            _delete_keys(storage, prefix)
    return {name: _summary(tallies[name], float(total)) for name in CLIENTS}


async def _traffic(
    port: int,
    arrivals: list[float],
    tallies: dict[str, Tally],
    breaker: CircuitBreaker,
    total: int,
    live: bool,
) -> None:
    """Send both clients' calls to the upstream on ``port`` and show what happens."""
    base = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    attempt_timeout = httpx.Timeout(1.0)
    async with (
        httpx.AsyncClient(base_url=base, limits=limits, timeout=attempt_timeout) as naive,
        httpx.AsyncClient(base_url=base, limits=limits, timeout=attempt_timeout) as guarded,
        httpx.AsyncClient(base_url=base, timeout=2.0) as stats,
    ):
        await stats.get("/stats")  # the upstream's clock starts with the first request
        began = time.monotonic()
        view = (_live if live else _plain)(tallies, total, float(total), began)
        await asyncio.gather(
            _drive("naive", _naive(naive), arrivals, tallies["naive"].seconds, None, began),
            _drive(
                "buttress",
                _protected(guarded, breaker),
                arrivals,
                tallies["buttress"].seconds,
                breaker,
                began,
            ),
            _poll_load(stats, tallies, total, began),
            view,
        )


def _breaker_store(url: str, prefix: str) -> RedisStorage:
    """The breaker's store on Redis, under the run's prefix."""
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - the redis extra

    return RedisStorage.from_url(url, prefix=prefix)


def _delete_keys(url: str, prefix: str) -> None:
    """Delete the run's keys (every buttress key starts with ``{<prefix>:``)."""
    import redis  # noqa: PLC0415 - the redis extra

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{{{prefix}:*", count=500):
            client.delete(key)
    finally:
        client.close()


def _summary(tally: Tally, seconds: float) -> dict[str, float]:
    calls = sum(second.calls for second in tally.seconds)
    ok = sum(second.ok for second in tally.seconds)
    latencies = [value for second in tally.seconds for value in second.latencies]
    outage = [
        index for index in range(len(tally.seconds)) if phase_at(index + 0.5, seconds) == "outage"
    ]
    after = [
        index
        for index in range(len(tally.seconds))
        if phase_at(index + 0.5, seconds) == "recovered"
    ]
    recovered_in = float("nan")
    for index in after:
        second = tally.seconds[index]
        if second.calls and second.ok / second.calls >= 0.95:
            recovered_in = index - after[0] if after else float("nan")
            break
    return {
        "calls": calls,
        "success": ok / calls if calls else 0.0,
        "p50": _percentile(latencies, 0.5),
        "p99": _percentile(latencies, 0.99),
        "attempts": sum(second.attempts for second in tally.seconds),
        "throttled": sum(second.throttled for second in tally.seconds),
        "outage_load": statistics.fmean(tally.served[i] for i in outage) if outage else 0.0,
        "recovered_in": recovered_in,
    }


def _ms(value: float) -> str:
    return f"{1000 * value:.0f} ms"


SUMMARY_ROWS: tuple[tuple[str, str, Callable[[float], str], bool], ...] = (
    ("success rate", "success", lambda v: f"{100 * v:.1f}%", True),
    ("p50 latency", "p50", _ms, False),
    ("p99 latency", "p99", _ms, False),
    ("HTTP attempts sent", "attempts", lambda v: f"{v:,.0f}", False),
    ("429s from the throttled API", "throttled", lambda v: f"{v:,.0f}", False),
    ("load on the service while down", "outage_load", lambda v: f"{v:.0f} req/s", False),
    (
        "95% ok again after it came back",
        "recovered_in",
        lambda v: "not in this run" if math.isnan(v) else f"after {v:.0f} s",
        False,
    ),
)
"""(title, figure, format, whether more is better) of each summary row."""


def print_summary(figures: dict[str, dict[str, float]]) -> None:
    """Print the comparison table and say where to read next."""
    naive, guarded = figures["naive"], figures["buttress"]
    print()
    print(f"Summary: {naive['calls']:.0f} calls from each client, the same arrival times")
    print(f"{'':34} {'naive':>16} {'buttress':>16}")
    for title, key, fmt, higher_is_better in SUMMARY_ROWS:
        a, b = naive[key], guarded[key]
        if key == "recovered_in":  # never recovering is the worst
            a, b = (math.inf if math.isnan(a) else a), (math.inf if math.isnan(b) else b)
        better = (b > a) if higher_is_better else (b < a)
        mark = "  <- buttress better" if better else ""
        print(f"{title:34} {fmt(naive[key]):>16} {fmt(guarded[key]):>16}{mark}")
    print()
    print(
        "While the service was down, the naive client retried every failure at once, three times:"
        " its requests piled up in the service's queue, and kept it busy answering them long after"
        " it came back (a retry storm). buttress's breaker stopped sending after a few failures"
        " and tried one call a second; its retries waited, within a budget and each call's"
        " deadline, so the service had no backlog to clear when it came back."
    )
    print(
        "Read next: README.md, docs/pipeline.md (the policies and their order), docs/breaker.md,"
        " docs/ratelimit.md; the chapter's examples: buttress demo retry|breaker|throttling."
    )


def main(
    seed: int,
    *,
    seconds: float = 30.0,
    redis: str | None = None,
    live: bool = True,
    prefix: str = "",
) -> None:
    """Run the scenario and print its summary.

    Args:
        seed: Seeds the arrivals and the upstream's faults.
        seconds: The length of the run (the outage is its middle third).
        redis: A ``redis://`` URL to keep the throttle's and the breaker's state on Redis.
        live: Draw the live table (needs ``rich``); else print one plain line a second.
        prefix: The key prefix on Redis (default: ``buttress-demo-<random>``); the run's keys
            are deleted when it ends.
    """
    if live and not sys.stdout.isatty():
        live = False
    if live:
        try:
            import rich  # noqa: F401, PLC0415 - only to know whether the live view can run
        except ImportError:
            live = False
    storage = "memory://" if redis is None else redis
    print(
        f"A flaky service on loopback for {seconds:.0f} s (down from {PHASES[0][1] * seconds:.0f}"
        f" s to {PHASES[1][1] * seconds:.0f} s), {RATE} calls/s from each of two clients:"
        " naive retries, and a buttress pipeline (deadline, retry budget, bulkhead, breaker)."
    )
    with _quiet_event_loop_errors():
        figures = asyncio.run(run_scenario(seconds, seed, storage, live, prefix))
    print_summary(figures)


@contextlib.contextmanager
def _quiet_event_loop_errors() -> Iterator[None]:
    """Keep the breaker's and the pipeline's log lines out of the demo's output."""
    import logging  # noqa: PLC0415

    logger = logging.getLogger("buttress")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


if __name__ == "__main__":
    main(int(os.environ.get("BUTTRESS_DEMO_SEED", "9")))
