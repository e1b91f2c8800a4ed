"""Command line: ``python -m benchmarks NAME [options]``, NAME one of the subcommands below.

Each benchmark takes ``--rounds N``, ``--quick`` and ``--json PATH`` (``--help`` lists the rest).
"""

from __future__ import annotations

import argparse
import sys

try:
    from benchmarks import adaptive, breaker, breaker_redis, ratelimit, retry, web
except ImportError as error:
    sys.exit(
        f"python -m benchmarks cannot import {error.name!r}: it needs buttress and the peer"
        " libraries of the 'bench' extra. Run it from the repository root after"
        " `pip install -e '.[bench]'`, or with PYTHONPATH=src and the peers installed."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure buttress side by side with its peers, in one run.",
    )
    commands = parser.add_subparsers(dest="benchmark", required=True)
    retry.add_arguments(
        commands.add_parser("retry", help="retry decorators: success path and fail, fail, succeed")
    )
    ratelimit.add_arguments(
        commands.add_parser(
            "ratelimit",
            help="rate limiters in memory and on Redis: admitted, rejected, cached, 8 processes",
        )
    )
    breaker.add_arguments(
        commands.add_parser(
            "breaker",
            help="circuit breakers: success path and rejection while open, sync and async",
        )
    )
    breaker_redis.add_arguments(
        commands.add_parser(
            "breaker-redis",
            help="circuit breakers sharing state on Redis: closed, failing and open, in PINGs",
        )
    )
    web.add_arguments(
        commands.add_parser(
            "web",
            help="Flask under gunicorn and FastAPI under uvicorn with wrk: limiter / no limiter",
        )
    )
    adaptive.add_arguments(
        commands.add_parser(
            "adaptive",
            help="adaptive concurrency limits against fixed ones: a simulated load step",
        )
    )
    args = parser.parse_args(argv)
    if args.benchmark == "adaptive":
        return adaptive.run(args)
    if args.benchmark == "web":
        return web.run(args)
    if args.benchmark == "breaker-redis":
        return breaker_redis.run(args)
    if args.benchmark == "breaker":
        return breaker.run(args)
    if args.benchmark == "ratelimit":
        return ratelimit.run(args)
    return retry.run(args)


if __name__ == "__main__":
    sys.exit(main())
