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
        help="run the chapter's examples and explain what happened",
        description="Run the chapter's examples with buttress. Scenarios: "
        + "; ".join(f"{name}: {title}" for name, (title, _) in DEMOS.items()),
    )
    demo.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"scenarios to run ({', '.join(DEMOS)}); all when omitted",
    )
    demo.add_argument("--seed", type=int, default=9, help="random seed (default: 9)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from buttress.demo import DEMOS, run  # noqa: PLC0415 - keeps `--version` light

        unknown = [name for name in args.names if name not in DEMOS]
        if unknown:
            parser.error(
                f"unknown demo {', '.join(map(repr, unknown))}; choose from {', '.join(DEMOS)}"
            )
        run(args.names, args.seed)
        return 0
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
