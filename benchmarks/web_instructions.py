"""Web throttling, counted: the servers' own instructions per request, under callgrind.

The same servers and variants as ``benchmarks.web`` (one worker each), each run under valgrind's
callgrind, driven by 8 keep-alive client connections (as wrk's 8). After a warm-up, the serving
process's counters are zeroed (``callgrind_control -z``), ``--requests`` requests are sent, and its
counters are dumped (``callgrind_control -d``): the instructions it executed per request, in user
space. The figure barely moves from run to run, whatever else the machine is doing: it shows
what a change costs when ``benchmarks.web``'s requests per second are too noisy to tell.

What it leaves out, and so what its ratio (bare ÷ variant, the requests per second the variant
would reach if time were instructions) is not: the kernel's work (sockets; for the Redis variants
the round trip's system calls, which are most of a ``PING``'s cost to a synchronous worker),
Redis's own work, the client's, and how fast each instruction runs (cache misses, contention).
The targets are judged on ``benchmarks.web``; this is the instrument for finding where the
instructions go (the floors: the four headers alone, one ``PING`` alone).

Needs valgrind (``callgrind_control`` comes with it). Takes a few minutes: every server starts
under valgrind, about 50 times slower than natively.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from benchmarks._harness import delete_run_keys, format_table, print_progress
from benchmarks.ratelimit import redis_url
from benchmarks.web import FRAMEWORKS, TARGETS, VARIANTS, Server, child_pids, label

CLIENTS = 8  # keep-alive connections at once, as benchmarks.web's wrk
WARM_UP = 200  # requests before counting


def _serving_pid(server: Server, framework: str) -> int:
    """The process that serves requests: gunicorn's one worker (a child), else the server."""
    if framework != "flask":
        return server.process.pid
    workers = child_pids(server.process.pid)
    if not workers:
        raise RuntimeError("gunicorn's worker process was not found")
    return workers[0]


def _send(port: int, requests: int) -> None:
    """``requests`` GETs of ``/`` from CLIENTS threads, each on a keep-alive connection."""
    failures: list[str] = []

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            for _ in range(count):
                connection.request("GET", "/")
                reply = connection.getresponse()
                reply.read()
                if reply.status != 200:
                    failures.append(f"status {reply.status}")
                    return
        except (OSError, http.client.HTTPException) as error:
            failures.append(f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    shares = [requests // CLIENTS + (i < requests % CLIENTS) for i in range(CLIENTS)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"requests failed: {failures[0]}")


def _control(option: str, pid: int) -> None:
    subprocess.run(  # noqa: S603 - our own command line
        ["callgrind_control", option, str(pid)],  # noqa: S607 - on PATH, with valgrind
        check=True,
        capture_output=True,
    )


def _dumped(directory: Path, pid: int, timeout: float = 60.0) -> int:
    """The instructions in the serving process's first dump (``callgrind_control -d``)."""
    path = directory / f"callgrind.{pid}.1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            found = re.search(r"^(?:summary|totals):\s+(\d+)", path.read_text(), re.MULTILINE)
            if found:
                return int(found.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump at {path}")


def count(frameworks: Sequence[str], requests: int, url: str) -> tuple[dict[str, float], list[str]]:
    """Instructions per request of each variant's serving process; and the problems met."""
    counted: dict[str, float] = {}
    problems: list[str] = []
    prefix = f"bench-webi-{uuid.uuid4().hex[:8]}"
    directory = Path(tempfile.mkdtemp(prefix="buttress-callgrind-"))
    wrapper = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={directory}/callgrind.%p",
        "--trace-children=yes",  # gunicorn's worker
        "--dump-instr=no",
        "--collect-jumps=no",
    ]
    servers: dict[str, tuple[str, Server]] = {}
    try:
        for framework in frameworks:  # all start at once: the starts under valgrind are slow
            for limiter, storage in VARIANTS:
                servers[label(framework, limiter, storage)] = (
                    framework,
                    Server(framework, limiter, storage, url, prefix, wrapper=wrapper, workers=1),
                )
        for name, (framework, server) in servers.items():
            print_progress(f"counting: {name}")
            try:
                server.wait_ready(timeout=600.0)
                _send(server.port, WARM_UP)
                pid = _serving_pid(server, framework)
                _control("-z", pid)
                _send(server.port, requests)
                _control("-d", pid)
                counted[name] = _dumped(directory, pid) / requests
            except (RuntimeError, subprocess.CalledProcessError) as error:
                problems.append(f"{name}: {error}")
            finally:
                server.stop()
    finally:
        for _, server in servers.values():
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        delete_run_keys(url, prefix)
    return counted, problems


def report(counted: dict[str, float], frameworks: Sequence[str], requests: int) -> str:
    rows = []
    for framework in frameworks:
        bare = counted.get(label(framework, "none", "memory"))
        for limiter, storage in VARIANTS:
            name = label(framework, limiter, storage)
            found = counted.get(name)
            target = TARGETS.get((framework, storage)) if limiter == "buttress" else None
            rows.append(
                [
                    name,
                    "-" if found is None else f"{found / 1000:,.1f}",
                    "-" if found is None or bare is None else f"{found / 1000 - bare / 1000:+,.1f}",
                    "-" if found is None or bare is None else f"{bare / found:.3f}",
                    "" if target is None else f"{target[0]}",
                ]
            )
    return "\n".join(
        [
            f"Web throttling: user-space instructions per request of the serving process "
            f"(callgrind; {requests} requests on {CLIENTS} keep-alive connections, one worker)",
            "ratio = bare / variant: the requests per second the variant would keep if time were",
            "instructions (kernel, Redis and the client left out: see the module's docstring)",
            "",
            format_table(
                ["variant", "k instr/req", "vs bare", "ratio", "req/s target"],
                rows,
            ),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m benchmarks web-instructions``."""
    parser.add_argument(
        "--requests", type=int, default=400, help="requests counted per variant (default 400)"
    )
    parser.add_argument(
        "--framework", choices=FRAMEWORKS, action="append", help="only this one (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="40 requests: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def run(args: argparse.Namespace) -> int:
    """Count, print the report, optionally write JSON. Returns the exit code."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt install valgrind)", file=sys.stderr)
            return 2
    requests = CLIENTS * 5 if args.quick else args.requests
    if requests < CLIENTS:
        print(f"--requests must be at least {CLIENTS}", file=sys.stderr)
        return 2
    frameworks = tuple(args.framework or FRAMEWORKS)
    began = time.perf_counter()
    counted, problems = count(frameworks, requests, redis_url())
    print(report(counted, frameworks, requests))
    for problem in problems:
        print(f"problem: {problem}")
    print(f"(the whole run took {time.perf_counter() - began:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps({"instructions_per_request": counted}, indent=2))
    return 1 if problems else 0
