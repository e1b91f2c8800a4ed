"""Command line: ``python -m benchmarks retry [--rounds N] [--quick] [--json PATH]``."""

from __future__ import annotations

import argparse
import sys

try:
    from benchmarks import retry
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
    args = parser.parse_args(argv)
    return retry.run(args)


if __name__ == "__main__":
    sys.exit(main())
