"""Web throttling under load: Flask under gunicorn, FastAPI under uvicorn, with wrk on loopback.

For each framework, in one run: the app without a limiter, with buttress (memory and Redis), and
with its usual peer (Flask-Limiter, or slowapi's endpoint decorator; memory and Redis), the limit
high enough never to trip, and two floors (the headers alone, one Redis PING per request). Every
variant's server (see WORKERS) starts once on a free loopback port and stays up, idle between
its turns; each round then runs ``wrk`` (Debian's package) on every variant in a rotating order,
checking that every response was a 200. The figure is requests per second; the ratio is "with
the limiter" over "without" in the same round, and the median over rounds is reported.

Run ``python -m benchmarks web --help`` for the options. Needs ``wrk`` on the PATH (``./dev bench
web`` installs it with apt when it can).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from benchmarks._harness import Target, format_table, format_targets, print_progress
from benchmarks.ratelimit import redis_url

FRAMEWORKS = ("flask", "fastapi")
PEERS = {"flask": "Flask-Limiter", "fastapi": "slowapi"}
# (limiter, storage) -> label
VARIANTS: tuple[tuple[str, str], ...] = (
    ("none", "memory"),
    ("buttress", "memory"),
    ("buttress", "redis"),
    ("peer", "memory"),
    ("peer", "redis"),
    ("headers", "memory"),  # the floor for a limiter that sends the RateLimit-* headers
    ("ping", "redis"),  # the floor for a limiter that asks Redis once per request
)
TARGETS = {  # (framework, storage) -> the ratio buttress must reach, and the issue's peer figure
    ("flask", "memory"): (0.93, 0.76),
    ("flask", "redis"): (0.80, 0.54),
    ("fastapi", "memory"): (0.95, 0.81),
    ("fastapi", "redis"): (0.85, 0.48),
}


# Server processes: gunicorn's sync workers wait for Redis one request at a time, so a deployment
# runs several (gunicorn suggests 2 x cores + 1); uvicorn's event loop overlaps the waits itself.
# The same count is used with and without a limiter.
WORKERS = {"flask": 4, "fastapi": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def label(framework: str, limiter: str, storage: str) -> str:
    if limiter == "none":
        return f"{framework}, no limiter"
    if limiter == "ping":
        return f"{framework} + one PING per request (floor)"
    if limiter == "headers":
        return f"{framework} + the 4 headers only (floor)"
    name = "buttress" if limiter == "buttress" else PEERS[framework]
    return f"{framework} + {name}, {storage}"


def _command(framework: str, port: int) -> list[str]:
    python = sys.executable
    if framework == "flask":
        return [
            python, "-m", "gunicorn", "--workers", str(WORKERS["flask"]),
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            "benchmarks.web_apps:flask_app()",
        ]  # fmt: skip
    return [
        python, "-m", "uvicorn", "--factory", "benchmarks.web_apps:fastapi_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS["fastapi"]),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


class Server:
    """One server process serving one variant."""

    def __init__(self, framework: str, limiter: str, storage: str, url: str, prefix: str) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env["BENCH_WEB_LIMITER"] = limiter
        env["BENCH_WEB_STORAGE"] = "memory" if storage == "memory" else url
        env["BENCH_WEB_PREFIX"] = prefix
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            _command(framework, self.port),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                lines = [line for line in stderr.splitlines() if line.strip()]
                raise RuntimeError(f"server exited: {' | '.join(lines[-2:])}")
            try:
                with urllib.request.urlopen(self.url, timeout=1) as reply:  # noqa: S310 - loopback
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError("server did not answer in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self.process.stderr is not None:
            self.process.stderr.close()


@dataclass
class Load:
    rps: float
    non_2xx: int
    errors: int


def run_wrk(url: str, seconds: float, connections: int) -> Load:
    """Run wrk and read its summary."""
    out = subprocess.run(  # noqa: S603 - our own command line
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],  # noqa: S607 - on PATH
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    return Load(
        rps,
        int(non.group(1)) if non else 0,
        sum(int(n) for n in errors.groups()) if errors else 0,
    )


@dataclass
class Results:
    rps: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _start(
    frameworks: Sequence[str], url: str, prefix: str, connections: int, results: Results
) -> dict[str, Server]:
    """Start every variant's server at once, wait for each and warm it up; drop those that fail.

    They stay up for the whole run, idle between their wrk runs: a round then costs only its
    measurements, so a run can afford more (shorter) rounds, which is what tames a noisy machine.
    """
    servers: dict[str, Server] = {}
    for framework in frameworks:
        for limiter, storage in VARIANTS:
            servers[label(framework, limiter, storage)] = Server(
                framework, limiter, storage, url, prefix
            )
    for name, server in list(servers.items()):
        print_progress(f"starting: {name}")
        try:
            server.wait_ready(timeout=60.0)
            run_wrk(server.url, 1.0, connections)  # warm up
        except (RuntimeError, subprocess.CalledProcessError) as error:
            results.problems.append(f"{name}: {error}")
            server.stop()
            del servers[name]
    return servers


def measure(
    frameworks: Sequence[str], rounds: int, seconds: float, connections: int, url: str
) -> Results:
    results = Results()
    prefix = f"bench-web-{uuid.uuid4().hex[:8]}"
    servers: dict[str, Server] = {}
    try:
        servers = _start(frameworks, url, prefix, connections, results)
        for index in range(rounds):
            for framework in frameworks:
                names = [label(framework, *variant) for variant in VARIANTS]
                names = [name for name in names if name in servers]
                shift = index % len(names) if names else 0
                round_rps: dict[str, float] = {}
                for name in names[shift:] + names[:shift]:
                    print_progress(f"round {index + 1}/{rounds}: {name}")
                    try:
                        load = run_wrk(servers[name].url, seconds, connections)
                    except subprocess.CalledProcessError as error:
                        results.problems.append(f"{name}: {error}")
                        continue
                    if load.non_2xx or load.errors:
                        results.problems.append(
                            f"{name}: {load.non_2xx} non-2xx responses, {load.errors} socket "
                            "errors (sample dropped)"
                        )
                        continue
                    round_rps[name] = load.rps
                    results.rps.setdefault(name, []).append(load.rps)
                base = round_rps.get(label(framework, "none", "memory"))
                for name, rps in round_rps.items():
                    if base and "no limiter" not in name:
                        results.ratios.setdefault(name, []).append(rps / base)
    finally:
        for server in servers.values():
            server.stop()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    return results


def targets(results: Results, frameworks: Sequence[str]) -> list[Target]:
    found = []
    for framework in frameworks:
        for storage in ("memory", "redis"):
            need, issue_peer = TARGETS[(framework, storage)]
            ours = results.ratios.get(label(framework, "buttress", storage))
            peer = results.ratios.get(label(framework, "peer", storage))
            ours_m = statistics.median(ours) if ours else None
            peer_m = statistics.median(peer) if peer else None
            found.append(
                Target(
                    f"{framework}, {storage}: req/s with buttress / without >= {need}",
                    None if ours_m is None else ours_m >= need,
                    [
                        f"buttress {ours_m:.3f}"
                        if ours_m is not None
                        else "buttress: not measured",
                        f"{PEERS[framework]} {peer_m:.3f} (the issue's figure: {issue_peer})"
                        if peer_m is not None
                        else f"{PEERS[framework]}: not measured",
                        *_floor(results, framework, storage),
                    ],
                )
            )
    return found


def _floor(results: Results, framework: str, storage: str) -> list[str]:
    """The floor of a limiter: its headers alone (memory), one PING per request (Redis)."""
    if storage == "redis":
        floor, what = results.ratios.get(label(framework, "ping", "redis")), "one PING per request"
    else:
        floor, what = results.ratios.get(label(framework, "headers", "memory")), "the 4 headers"
    if not floor:
        return []
    return [f"{what} and nothing else (a floor) {statistics.median(floor):.3f}"]


def report(results: Results, frameworks: Sequence[str], rounds: int) -> str:
    rows = []
    for framework in frameworks:
        for limiter, storage in VARIANTS:
            name = label(framework, limiter, storage)
            rps = results.rps.get(name)
            ratio = results.ratios.get(name)
            rows.append(
                [
                    name,
                    f"{statistics.median(rps):,.0f}" if rps else "-",
                    f"{statistics.median(ratio):.3f}" if ratio else ("1" if rps else "-"),
                    str(len(rps or [])),
                ]
            )
    lines = [
        f"Web throttling, median of {rounds} rounds (req/s; ratio = / no limiter, same round)",
        "",
        format_table(["variant", "req/s", "ratio", "runs"], rows),
        "",
        *format_targets(targets(results, frameworks)),
    ]
    lines += [f"problem: {problem}" for problem in results.problems]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks web``."""
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--seconds", type=float, default=2.0, help="wrk run length (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument(
        "--framework", choices=FRAMEWORKS, action="append", help="only this one (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s runs: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def run(args: argparse.Namespace) -> int:
    """Measure, print the report, optionally write JSON. Returns the exit code."""
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt install wrk)", file=sys.stderr)
        return 2
    frameworks = tuple(args.framework or FRAMEWORKS)
    rounds, seconds = (1, 1.0) if args.quick else (args.rounds, args.seconds)
    began = time.perf_counter()
    results = measure(frameworks, rounds, seconds, args.connections, redis_url())
    print(report(results, frameworks, rounds))
    print(f"(the whole run took {time.perf_counter() - began:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps({"rps": results.rps, "ratios": results.ratios}, indent=2))
    failed = [t for t in targets(results, frameworks) if t.passed is False]
    return 1 if failed or results.problems else 0
