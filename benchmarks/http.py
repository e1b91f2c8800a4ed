"""Outbound HTTP benchmark: the cost of ResilientTransport, and a retry storm against tenacity.

Two parts, against a raw asyncio HTTP/1.1 responder in a separate process on 127.0.0.1 (so that
the client, not the server, is what is measured):

* overhead: sequential GETs on one keep-alive connection, a bare ``httpx.Client`` (and
  ``AsyncClient``) against the same with ``transport=ResilientTransport()`` (defaults: retry,
  budget, per-host breaker). Rounds are interleaved and the median requests/s is reported; the
  target is at most 5% fewer requests/s.
* retry storm: the server answers 503 for ``--outage`` seconds (10 by default), then recovers.
  ``--workers`` async users each call, pause ``--think`` seconds and call again, for the whole
  run. Two clients, each with 5 attempts: tenacity around httpx (``wait_random_exponential``,
  the usual hand-wired setup) and buttress's transport (its defaults: budget and breaker).
  Printed: the calls the users made during the outage, the requests the failing server
  received (and per call), and the time from the server's recovery to the first successful
  call and to a success rate of 95% again.

Run ``python -m benchmarks http --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import tenacity

from benchmarks._harness import silence_log_output
from buttress.contrib.httpx import ResilientTransport

# --- the server (a separate process) -------------------------------------------------------------

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
_DOWN = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown"


def _reply(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def _serve(pipe: Connection) -> None:
    state: dict[str, Any] = {"fail_until": 0.0, "received": 0, "failed": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path.startswith(b"/control"):
                    seconds = float(path.partition(b"fail=")[2] or b"0")
                    state.update(fail_until=time.monotonic() + seconds, received=0, failed=0)
                    writer.write(_reply(b"{}"))
                elif path == b"/stats":
                    writer.write(_reply(json.dumps(state).encode()))
                else:
                    state["received"] += 1
                    if time.monotonic() < state["fail_until"]:
                        state["failed"] += 1
                        writer.write(_DOWN)
                    else:
                        writer.write(_OK)
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    pipe.send(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def _server_main(pipe: Connection) -> None:
    asyncio.run(_serve(pipe))


class Server:
    """The responder process; a context manager."""

    def __enter__(self) -> Server:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_server_main, args=(child,), daemon=True)
        self.process.start()
        if not parent.poll(30):
            raise RuntimeError("the benchmark server did not start")
        self.url = f"http://127.0.0.1:{parent.recv()}"
        parent.close()
        self.control = httpx.Client(base_url=self.url)
        return self

    def fail_for(self, seconds: float) -> None:
        self.control.get(f"/control?fail={seconds}")

    def stats(self) -> dict[str, Any]:
        return dict(self.control.get("/stats").json())

    def __exit__(self, *exc_info: object) -> None:
        self.control.close()
        self.process.terminate()
        self.process.join(10)


# --- overhead ------------------------------------------------------------------------------------


def _sync_rate(client: httpx.Client, url: str, count: int) -> float:
    begun = time.perf_counter()
    for _ in range(count):
        client.get(url)
    return count / (time.perf_counter() - begun)


async def _async_rate(client: httpx.AsyncClient, url: str, count: int) -> float:
    begun = time.perf_counter()
    for _ in range(count):
        await client.get(url)
    return count / (time.perf_counter() - begun)


@dataclass
class Overhead:
    mode: str
    bare: list[float] = field(default_factory=list)
    resilient: list[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        """Fewer requests/s through the transport, as a fraction of the bare client's."""
        return 1 - statistics.median(self.resilient) / statistics.median(self.bare)


def measure_overhead(url: str, rounds: int, count: int) -> list[Overhead]:
    sync = Overhead("sync (httpx.Client)")
    with httpx.Client() as bare, httpx.Client(transport=ResilientTransport()) as resilient:
        _sync_rate(bare, url, count // 4)  # warm up: connections, caches
        _sync_rate(resilient, url, count // 4)
        for number in range(rounds):
            order = [(bare, sync.bare), (resilient, sync.resilient)]
            for client, samples in order if number % 2 else order[::-1]:
                samples.append(_sync_rate(client, url, count))
    asynchronous = Overhead("async (httpx.AsyncClient)")

    async def run_async() -> None:
        async with (
            httpx.AsyncClient() as bare,
            httpx.AsyncClient(transport=ResilientTransport()) as resilient,
        ):
            await _async_rate(bare, url, count // 4)
            await _async_rate(resilient, url, count // 4)
            for number in range(rounds):
                order = [(bare, asynchronous.bare), (resilient, asynchronous.resilient)]
                for client, samples in order if number % 2 else order[::-1]:
                    samples.append(await _async_rate(client, url, count))

    asyncio.run(run_async())
    return [sync, asynchronous]


# --- the retry storm -----------------------------------------------------------------------------


@dataclass
class Storm:
    name: str
    calls_in_outage: int = 0
    received_in_outage: int = 0
    healthy_rate: float = 0.0  # server requests/s before the outage
    outage_rate: float = 0.0  # server requests/s during the outage
    first_success: float | None = None
    recovered: float | None = None  # 95% of calls succeed again (over 0.5 s windows)

    @property
    def per_call(self) -> float:
        return self.received_in_outage / max(1, self.calls_in_outage)


def _tenacity_client(client: httpx.AsyncClient) -> Callable[[str], Awaitable[bool]]:
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=5),
        retry=tenacity.retry_if_exception_type(httpx.HTTPError),
        reraise=True,
    )

    async def call(url: str) -> bool:
        async def once() -> httpx.Response:
            response = await client.get(url)
            if response.status_code in (429, 502, 503, 504):
                response.raise_for_status()
            return response

        try:
            return (await retrying(once)).status_code == 200
        except Exception:
            return False

    return call


def _buttress_client(client: httpx.AsyncClient) -> Callable[[str], Awaitable[bool]]:
    async def call(url: str) -> bool:
        try:
            return (await client.get(url)).status_code == 200
        except Exception:
            return False

    return call


async def _storm(
    name: str, server: Server, workers: int, think: float, outage: float, after: float
) -> Storm:
    result = Storm(name)
    transport = ResilientTransport(attempts=5) if name == "buttress" else None
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    client = httpx.AsyncClient(transport=transport, limits=limits, timeout=5)
    call = _tenacity_client(client) if name == "tenacity" else _buttress_client(client)
    outcomes: list[tuple[float, float, bool]] = []  # (started, ended, success)
    stop = asyncio.Event()

    async def user() -> None:
        while not stop.is_set():
            started = time.monotonic()
            ok = await call(server.url)
            outcomes.append((started, time.monotonic(), ok))
            await asyncio.sleep(think)

    await asyncio.to_thread(server.fail_for, 0)  # counters from zero, server healthy
    tasks = [asyncio.ensure_future(user()) for _ in range(workers)]
    await asyncio.sleep(1.0)  # healthy warm-up
    before = await asyncio.to_thread(server.stats)
    result.healthy_rate = before["received"] / 1.0
    outage_start = time.monotonic()
    await asyncio.to_thread(server.fail_for, outage)
    await asyncio.sleep(outage)
    during = await asyncio.to_thread(server.stats)
    recovery = outage_start + outage
    result.received_in_outage = during["failed"]
    result.outage_rate = during["failed"] / outage
    await asyncio.sleep(after)
    stop.set()
    await asyncio.gather(*tasks)
    await client.aclose()
    result.calls_in_outage = sum(1 for begun, _, _ in outcomes if outage_start <= begun < recovery)
    successes = sorted(ended for begun, ended, ok in outcomes if ok and ended >= recovery)
    if successes:
        result.first_success = successes[0] - recovery
    window = 0.5
    moment = recovery
    while moment < recovery + after:
        ended = [ok for _, end, ok in outcomes if moment <= end < moment + window]
        if ended and sum(ended) / len(ended) >= 0.95:
            result.recovered = moment + window - recovery
            break
        moment += window / 5
    return result


# --- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks http``."""
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests and a 3 s outage: a smoke run"
    )
    parser.add_argument("--requests", type=int, default=0, help="requests per round (default 3000)")
    parser.add_argument("--outage", type=float, default=0.0, help="outage seconds (default 10)")
    parser.add_argument("--workers", type=int, default=20, help="concurrent users in the storm")
    parser.add_argument("--think", type=float, default=0.05, help="users' pause between calls")
    parser.add_argument("--skip-storm", action="store_true", help="measure the overhead only")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    count = args.requests or (500 if args.quick else 3000)
    outage = args.outage or (3.0 if args.quick else 10.0)
    after = max(5.0, outage / 2)
    silence_log_output()
    with Server() as server:
        print(f"... overhead: {args.rounds} rounds of {count} requests", file=sys.stderr)
        overheads = measure_overhead(server.url, args.rounds, count)
        storms: list[Storm] = []
        if not args.skip_storm:
            for name in ("tenacity", "buttress"):
                print(f"... retry storm: {name}, {outage:g} s outage", file=sys.stderr)
                storms.append(
                    asyncio.run(_storm(name, server, args.workers, args.think, outage, after))
                )
    print(report(overheads, storms, count, args, outage))
    if args.json:
        data = {
            "overhead": [
                {"mode": o.mode, "bare": o.bare, "resilient": o.resilient, "loss": o.loss}
                for o in overheads
            ],
            "storm": [
                {**storm.__dict__, "per_call": storm.per_call, "outage": outage} for storm in storms
            ],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"\nResults written to {args.json}")
    return 0


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def report(
    overheads: list[Overhead],
    storms: list[Storm],
    count: int,
    args: argparse.Namespace,
    outage: float,
) -> str:
    lines = [
        "Outbound HTTP: ResilientTransport against a bare httpx client",
        f"(sequential GETs on one keep-alive connection, {count} per round, median of "
        f"{args.rounds} interleaved rounds; Python {sys.version.split()[0]}, httpx "
        f"{httpx.__version__})",
        "",
        f"{'client':<28}{'bare req/s':>12}{'resilient req/s':>17}{'fewer':>8}  target <= 5%",
    ]
    for item in overheads:
        verdict = "ok" if item.loss <= 0.05 else "MISSED"
        lines.append(
            f"{item.mode:<28}{statistics.median(item.bare):>12.0f}"
            f"{statistics.median(item.resilient):>17.0f}{item.loss:>8.1%}  {verdict}"
        )
    if storms:
        lines += [
            "",
            f"Retry storm: the server answers 503 for {outage:g} s; {args.workers} users, "
            f"{args.think:g} s pause between calls, 5 attempts each",
            "",
            f"{'client':<10}{'healthy/s':>10}{'outage/s':>10}{'calls':>8}{'received':>10}"
            f"{'per call':>10}{'1st success':>13}{'95% again':>11}",
        ]
        for storm in storms:
            lines.append(
                f"{storm.name:<10}{storm.healthy_rate:>10.0f}{storm.outage_rate:>10.0f}"
                f"{storm.calls_in_outage:>8}{storm.received_in_outage:>10}"
                f"{storm.per_call:>10.2f}{_seconds(storm.first_success):>13}"
                f"{_seconds(storm.recovered):>11}"
            )
        lines += [
            "",
            "healthy/s, outage/s: requests the server received per second before and during the",
            "outage; calls: calls the users started during the outage; received: requests the",
            "failing server got meanwhile; 1st success / 95% again: time from the recovery to",
            "the first successful call, and to 95% of calls succeeding (0.5 s windows).",
        ]
    return "\n".join(lines)
