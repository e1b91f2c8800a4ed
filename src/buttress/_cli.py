"""The ``buttress`` command line: ``buttress demo [NAME]`` and ``buttress --version``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from buttress._version import __version__


def _parser() -> argparse.ArgumentParser:
    from buttress.demo import DEMOS  # noqa: PLC0415 - only the demo command needs it

    parser = argparse.ArgumentParser(
        prog="buttress", description="Resilience patterns for Python services."
    )
    parser.add_argument("--version", action="version", version=f"buttress {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="an outage, live: a naive client and a buttress one side by side; or the chapter's"
        " examples",
        description="Without NAME: a flaky service goes down for a while, and two clients (naive"
        " retries, and a buttress pipeline) call it side by side, live; a summary compares them."
        " With NAMEs, run those scenarios: outage; "
        + "; ".join(f"{name}: {title}" for name, (title, _) in DEMOS.items())
        + "; chapter: those three.",
    )
    demo.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"scenarios to run (outage, {', '.join(DEMOS)}, chapter); outage when omitted",
    )
    demo.add_argument("--seed", type=int, default=9, help="random seed (default: 9)")
    demo.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="length of the outage scenario, 10 to 600 (default: 30; down the middle third)",
    )
    demo.add_argument(
        "--redis",
        metavar="URL",
        help="keep the outage scenario's throttle and breaker on this Redis (redis://...)",
    )
    demo.add_argument(
        "--no-live", action="store_true", help="plain lines instead of the live table"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(parser, args)
    parser.print_help(sys.stderr)
    return 2


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from buttress.demo import CHAPTER, DEMOS, run  # noqa: PLC0415 - keeps `--version` light

    known = ("outage", *DEMOS, "chapter")
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(
            f"unknown demo {', '.join(map(repr, unknown))}; choose from {', '.join(known)}"
        )
    if not 10 <= args.seconds <= 600:
        parser.error(f"--seconds must be between 10 and 600, got {args.seconds:g}")
    if args.redis is not None and not args.redis.startswith(("redis://", "rediss://", "unix://")):
        parser.error(f"--redis must be a redis://, rediss:// or unix:// URL, got {args.redis!r}")
    for name in args.names or ["outage"]:
        if name == "outage":
            from buttress.demo import outage  # noqa: PLC0415 - needs httpx (the demo extra)

            print("=== buttress demo outage ===")
            outage.main(args.seed, seconds=args.seconds, redis=args.redis, live=not args.no_live)
            print()
        else:
            run(list(CHAPTER) if name == "chapter" else [name], args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
