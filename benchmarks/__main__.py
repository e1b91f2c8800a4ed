"""Command line: ``python -m benchmarks NAME [options]``, NAME one of the subcommands below.

Each benchmark takes ``--quick`` and ``--json PATH``, and those that repeat ``--rounds N``
(``--help`` lists the rest).
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

try:
    from benchmarks import (
        adaptive,
        breaker,
        breaker_redis,
        bulkhead,
        events,
        http,
        pipeline,
        ratelimit,
        ratelimit_async,
        retry,
        web,
        web_instructions,
    )
except ImportError as error:
    sys.exit(
        f"python -m benchmarks cannot import {error.name!r}: it needs buttress and the peer"
        " libraries of the 'bench' extra. Run it from the repository root after"
        " `pip install -e '.[bench]'`, or with PYTHONPATH=src and the peers installed."
    )

# name -> (module with add_arguments(parser) and run(args), one line of help)
BENCHMARKS: dict[str, tuple[ModuleType, str]] = {
    "retry": (retry, "retry decorators: success path and fail, fail, succeed"),
    "ratelimit": (
        ratelimit,
        "rate limiters in memory and on Redis: admitted, rejected, cached, 8 processes",
    ),
    "ratelimit-async": (
        ratelimit_async,
        "rate limit decisions on Redis from asyncio, 8 tasks at once, against a PING",
    ),
    "breaker": (breaker, "circuit breakers: success path and rejection while open, sync and async"),
    "breaker-redis": (
        breaker_redis,
        "circuit breakers sharing state on Redis: closed, failing and open, in PINGs",
    ),
    "web": (web, "Flask under gunicorn and FastAPI under uvicorn with wrk: limiter / no limiter"),
    "web-instructions": (
        web_instructions,
        "the web variants' servers under callgrind: user-space instructions per request",
    ),
    "adaptive": (adaptive, "adaptive concurrency limits against fixed ones: a simulated load step"),
    "pipeline": (
        pipeline,
        "timeout + retry + breaker + bulkhead as one pipeline: against its parts and tenacity",
    ),
    "events": (
        events,
        "events: success path with no listener, a no-op one, Prometheus, OpenTelemetry",
    ),
    "http": (
        http,
        "httpx with the resilient transport against bare httpx, and a retry storm vs tenacity",
    ),
    "bulkhead": (
        bulkhead,
        "bulkhead acquire/release against bare threading and asyncio semaphores",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure buttress side by side with its peers, in one run.",
    )
    commands = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module, summary) in BENCHMARKS.items():
        module.add_arguments(commands.add_parser(name, help=summary))
    args = parser.parse_args(argv)
    code: int = BENCHMARKS[args.benchmark][0].run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
