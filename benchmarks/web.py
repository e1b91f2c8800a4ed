"""Web throttling under load: Flask under gunicorn, FastAPI under uvicorn, with wrk on loopback.

For each framework, in one run: the app without a limiter, with buttress (memory and Redis), and
with its usual peer (Flask-Limiter, or slowapi's endpoint decorator; memory and Redis), the limit
high enough never to trip, and two floors (the headers alone, one Redis PING per request). Every
variant's server (see WORKERS) starts once on a free loopback port and stays up, idle between
its turns; each round then runs ``wrk`` (Debian's package) on every variant in a rotating order,
each run bracketed by two runs of the bare app, checking that every response was a 200. The
figure is requests per second; the ratio is "with the limiter" over the mean of the bare app's
two bracketing runs, and the median over rounds is reported.

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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks._harness import (
    Target,
    delete_run_keys,
    format_table,
    format_targets,
    print_progress,
)
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
# uvicorn's HTTP parser and event loop, named rather than left to what happens to be installed:
# with httptools and uvloop present (uvicorn[standard]) uvicorn would pick them, the bare request
# would cost about half as much and every ratio would move. h11 and asyncio are what the project's
# own install gives (uvicorn without extras), and what the earlier sessions' figures were made on.
UVICORN_STACK = ("--http", "h11", "--loop", "asyncio")


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


def _command(framework: str, port: int, workers: int | None = None) -> list[str]:
    python = sys.executable
    if framework == "flask":
        return [
            python, "-m", "gunicorn", "--workers", str(workers or WORKERS["flask"]),
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            "benchmarks.web_apps:flask_app()",
        ]  # fmt: skip
    return [
        python, "-m", "uvicorn", "--factory", "benchmarks.web_apps:fastapi_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers or WORKERS["fastapi"]),
        "--log-level", "warning", "--no-access-log", *UVICORN_STACK,
    ]  # fmt: skip


class Server:
    """One server process serving one variant.

    ``wrapper``: a command line the server runs under (``benchmarks.web_instructions`` runs it
    under valgrind); ``workers``: gunicorn's or uvicorn's worker count instead of WORKERS.
    """

    def __init__(
        self,
        framework: str,
        limiter: str,
        storage: str,
        url: str,
        prefix: str,
        *,
        wrapper: Sequence[str] = (),
        workers: int | None = None,
    ) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env["BENCH_WEB_LIMITER"] = limiter
        env["BENCH_WEB_STORAGE"] = "memory" if storage == "memory" else url
        env["BENCH_WEB_PREFIX"] = prefix
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            [*wrapper, *_command(framework, self.port, workers)],
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


def run_wrk(url: str, seconds: int, connections: int) -> Load:
    """Run wrk and read its summary."""
    out = subprocess.run(  # noqa: S603 - our own command line
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],  # noqa: S607 - on PATH
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
    # label -> per wrk run: CPU µs per request (server user, server system, Redis, the rest)
    cpu: dict[str, list[tuple[float, ...]]] = field(default_factory=dict)


# -- where the time goes: CPU per request, from /proc (Linux) ----------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_times(pid: int) -> tuple[int, int, int]:
    """A process's (parent pid, user ticks, system ticks), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text("ascii").rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]), int(fields[12])  # (after the command's name)


def _processes() -> list[int]:
    """The pids of this machine's processes."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def child_pids(root: int) -> list[int]:
    """The processes whose parent is ``root`` (gunicorn's workers)."""
    found = []
    for pid in _processes():
        try:
            parent = _process_times(pid)[0]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
        if parent == root:
            found.append(pid)
    return found


def _tree_times(root: int) -> tuple[int, int]:
    """User and system ticks of ``root`` and its child processes (gunicorn's workers)."""
    user = system = 0
    for pid in _processes():
        try:
            parent, pid_user, pid_system = _process_times(pid)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
        if root in (pid, parent):
            user, system = user + pid_user, system + pid_system
    return user, system


def redis_pid(url: str) -> int | None:
    """The pid of the local ``redis-server`` serving ``url``'s port, if this machine runs it.

    Redis titles its process ``redis-server <address>:<port>``.
    """
    port = f":{urlsplit(url).port or 6379}"
    for pid in _processes():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        words = command.replace(b"\0", b" ").decode(errors="replace").split()
        if (
            words
            and Path(words[0]).name == "redis-server"
            and any(word.endswith(port) for word in words[1:])
        ):
            return pid
    return None


def _busy_ticks() -> int:
    """The machine's non-idle CPU ticks so far (all cores), from ``/proc/stat``."""
    with Path("/proc/stat").open(encoding="ascii") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait


def _cpu_snapshot(server: Server, redis: int | None) -> tuple[int, int, int, int] | None:
    """Ticks so far: the server's user and system, Redis's, the machine's; ``None`` off Linux."""
    try:
        user, system = _tree_times(server.process.pid)
        redis_ticks = 0
        if redis is not None:
            _, redis_user, redis_system = _process_times(redis)
            redis_ticks = redis_user + redis_system
        return user, system, redis_ticks, _busy_ticks()
    except (OSError, ValueError, IndexError):
        return None


def _cpu_per_request(
    before: tuple[int, int, int, int] | None,
    after: tuple[int, int, int, int] | None,
    requests: float,
) -> tuple[float, ...] | None:
    """CPU µs per request between two snapshots: server user, server system, Redis, the rest."""
    if before is None or after is None or requests <= 0:
        return None
    user, system, redis, busy = (b - a for a, b in zip(before, after, strict=True))
    scale = 1e6 / _TICK / requests
    return (user * scale, system * scale, redis * scale, (busy - user - system - redis) * scale)


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
            run_wrk(server.url, 1, connections)  # warm up
        except (RuntimeError, subprocess.CalledProcessError) as error:
            results.problems.append(f"{name}: {error}")
            server.stop()
            del servers[name]
    return servers


def _sample(
    name: str,
    server: Server,
    seconds: int,
    connections: int,
    results: Results,
    redis: int | None = None,
) -> float | None:
    """One wrk run on ``server``: its requests per second, or ``None`` (a problem, recorded).

    Also records the CPU each request cost the server, Redis (``redis``: its pid) and the rest.
    """
    try:
        before = _cpu_snapshot(server, redis)
        load = run_wrk(server.url, seconds, connections)
        cpu = _cpu_per_request(before, _cpu_snapshot(server, redis), load.rps * seconds)
    except subprocess.CalledProcessError as error:
        results.problems.append(f"{name}: {error}")
        return None
    if load.non_2xx or load.errors:
        results.problems.append(
            f"{name}: {load.non_2xx} non-2xx responses, {load.errors} socket errors "
            "(sample dropped)"
        )
        return None
    results.rps.setdefault(name, []).append(load.rps)
    if cpu is not None:
        results.cpu.setdefault(name, []).append(cpu)
    return load.rps


def measure(
    frameworks: Sequence[str], rounds: int, seconds: int, connections: int, url: str
) -> Results:
    """Each round, per framework: the bare app, then each variant followed by the bare app again.

    A variant's ratio divides its rate by the mean of the bare app's runs just before and just
    after it: on a shared machine whose speed drifts over seconds, the bracketing runs see the
    same machine as the variant did.
    """
    results = Results()
    prefix = f"bench-web-{uuid.uuid4().hex[:8]}"
    servers: dict[str, Server] = {}
    redis = redis_pid(url)
    try:
        servers = _start(frameworks, url, prefix, connections, results)
        for index in range(rounds):
            for framework in frameworks:
                bare = label(framework, "none", "memory")
                if bare not in servers:
                    continue
                names = [label(framework, *variant) for variant in VARIANTS[1:]]
                names = [name for name in names if name in servers]
                shift = index % len(names) if names else 0
                print_progress(f"round {index + 1}/{rounds}: {bare}")
                before = _sample(bare, servers[bare], seconds, connections, results, redis)
                for name in names[shift:] + names[:shift]:
                    print_progress(f"round {index + 1}/{rounds}: {name}")
                    rps = _sample(name, servers[name], seconds, connections, results, redis)
                    after = _sample(bare, servers[bare], seconds, connections, results, redis)
                    bracket = [rate for rate in (before, after) if rate]
                    if rps is not None and bracket:
                        results.ratios.setdefault(name, []).append(rps / statistics.mean(bracket))
                    before = after
    finally:
        for server in servers.values():
            server.stop()
        delete_run_keys(url, prefix)
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
                        *_floor(results, framework, storage, need),
                    ],
                )
            )
    return found


def _floor(results: Results, framework: str, storage: str, need: float) -> list[str]:
    """The floors of a limiter, and what they leave of the target for the limiter's own work.

    A limiter that sends the ``RateLimit-*`` headers costs at least what the headers alone cost;
    on Redis, at least that plus one round trip (the PING floor). Costs add up in time per
    request, so the floors together allow at most ``1 / (1 + sum(1 / floor - 1))``. Between that
    and the target is what the target leaves for everything else a limiter does (reading the
    key, deciding, Redis's script), as a share of a bare request's time.
    """
    headers = results.ratios.get(label(framework, "headers", "memory"))
    ping = results.ratios.get(label(framework, "ping", "redis"))
    if not headers or (storage == "redis" and not ping):
        return []
    floors = [("the 4 headers", statistics.median(headers))]
    if storage == "redis" and ping:
        floors.append(("one PING per request", statistics.median(ping)))
    lines = [f"{what} and nothing else (a floor) {ratio:.3f}" for what, ratio in floors]
    together = 1 / (1 + sum(1 / ratio - 1 for _, ratio in floors))
    if storage == "redis":
        lines.append(f"the two floors together (their costs added) {together:.3f}")
    left = 1 / need - 1 / together
    lines.append(
        f"the target leaves {left:.1%} of a bare request's time for the limiter's own work"
        if left > 0
        else f"the target is above the floors: no limiter sending the headers"
        f"{' and asking Redis' if storage == 'redis' else ''} can reach it in this run"
    )
    ours = results.ratios.get(label(framework, "buttress", storage))
    if ours:
        lines.append(
            f"buttress's own work beyond the floors: "
            f"{1 / statistics.median(ours) - 1 / together:.1%} of a bare request's time"
        )
    return lines


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
                    _quartiles(ratio),
                    str(len(rps or [])),
                ]
            )
    lines = [
        f"Web throttling, median of {rounds} rounds (req/s; ratio = / no limiter, same round;",
        "middle half: the ratios between the rounds' first and third quartiles)",
        "",
        format_table(["variant", "req/s", "ratio", "middle half", "runs"], rows),
        "",
        *_cpu_table(results, frameworks),
        *format_targets(targets(results, frameworks)),
    ]
    counted = Counter(results.problems)
    lines += [
        f"problem: {problem}" + (f" ({count} times)" if count > 1 else "")
        for problem, count in counted.items()
    ]
    return "\n".join(lines)


def _cpu_table(results: Results, frameworks: Sequence[str]) -> list[str]:
    """Where each variant's time goes: CPU µs per request, medians over its wrk runs."""
    if not results.cpu:
        return []
    rows = []
    for framework in frameworks:
        for limiter, storage in VARIANTS:
            name = label(framework, limiter, storage)
            runs = results.cpu.get(name)
            if not runs:
                continue
            parts = [statistics.median(run[i] for run in runs) for i in range(4)]
            rows.append([name, *(f"{part:.1f}" for part in parts), f"{sum(parts):.1f}"])
    return [
        "Where the time goes: CPU µs per request, all cores, median over the variant's runs",
        "(server: the gunicorn or uvicorn processes; Redis: the local redis-server process;",
        "the rest: wrk and the kernel's work outside those processes)",
        "",
        format_table(["variant", "server user", "server system", "Redis", "the rest", "all"], rows),
        "",
    ]


def _quartiles(values: list[float] | None) -> str:
    """The first and third quartiles of ``values``: how far one round's ratio may stray."""
    if not values or len(values) < 4:
        return "-"
    first, _, third = statistics.quantiles(values, n=4)
    return f"{first:.3f} to {third:.3f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks web``."""
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument(
        "--seconds", type=int, default=2, help="wrk run length, whole seconds (default 2)"
    )
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
    rounds, seconds = (1, 1) if args.quick else (args.rounds, args.seconds)
    if rounds < 1 or seconds < 1:
        print("--rounds and --seconds must be at least 1", file=sys.stderr)
        return 2
    began = time.perf_counter()
    results = measure(frameworks, rounds, seconds, args.connections, redis_url())
    print(report(results, frameworks, rounds))
    print(f"(the whole run took {time.perf_counter() - began:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps({"rps": results.rps, "ratios": results.ratios}, indent=2))
    failed = [t for t in targets(results, frameworks) if t.passed is False]
    return 1 if failed or results.problems else 0
