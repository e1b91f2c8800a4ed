"""The ``buttress`` command line and the chapter's example it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from buttress import __version__
from buttress._cli import main
from buttress.demo import retry_database_connection

ROOT = Path(__file__).resolve().parent.parent


def _untimed(output: str) -> str:
    """The output with measured elapsed times ("in 0.11 s") masked."""
    return re.sub(r"\bin \d+\.\d+ s\b", "in T s", output)


class TestCommandLine:
    def test_version(self, capsys):
        with pytest.raises(SystemExit) as info:
            main(["--version"])
        assert info.value.code == 0
        assert capsys.readouterr().out.strip() == f"buttress {__version__}"

    def test_no_command_prints_help_and_fails(self, capsys):
        assert main([]) == 2
        assert "demo" in capsys.readouterr().err

    def test_unknown_demo_is_refused(self, capsys):
        with pytest.raises(SystemExit) as info:
            main(["demo", "nope"])
        assert info.value.code == 2
        assert "unknown demo 'nope'" in capsys.readouterr().err

    def test_demo_retry_is_reproducible_and_explains(self, capsys):
        assert main(["demo", "retry"]) == 0
        first = capsys.readouterr().out
        assert main(["demo", "retry"]) == 0
        second = capsys.readouterr().out
        assert "What happened: 5 connections were requested" in first
        assert "1 failed all 3 attempts" in first
        # Same attempts, waits and outcomes; only measured elapsed times may differ by a few ms.
        assert _untimed(first) == _untimed(second)

    def test_demo_chapter_runs_the_three_chapter_scenarios(self, capsys):
        assert main(["demo", "chapter"]) == 0
        out = capsys.readouterr().out
        for name in ("retry", "breaker", "throttling"):
            assert f"=== buttress demo {name}" in out

    def test_installed_console_script(self):
        script = Path(sys.executable).parent / "buttress"
        result = subprocess.run(  # noqa: S603 - our own console script
            [str(script), "--version"], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == f"buttress {__version__}"


class TestChapterExample:
    def test_outcome_follows_the_seed(self):
        outcome = retry_database_connection.run(seed=9)
        assert outcome.attempts_per_call == [3, 2, 2, 3, 1]
        assert outcome.succeeded == [True, True, True, False, True]

    def test_examples_folder_runs_the_same_file(self):
        example = ROOT / "examples" / "retry_database_connection.py"
        assert example.resolve() == Path(retry_database_connection.__file__).resolve()
        result = subprocess.run(  # noqa: S603 - our own example
            [sys.executable, str(example)], capture_output=True, text=True, check=True
        )
        assert "--> Failure after all attempts: Temporary Database Error" in result.stdout
        assert "gave up after 3 attempts" in result.stdout
