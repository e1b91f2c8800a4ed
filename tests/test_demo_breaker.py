"""``buttress demo breaker``: the chapter's circuit breaker example, shortened and explained."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from buttress import State
from buttress._cli import main
from buttress.demo import DEMOS, circuit_breaker
from buttress.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent

# Seed 9 (the command line's default): two failures open the breaker at call 5; calls 6-7 are
# rejected; the trial at call 8 fails; 9-10 are rejected; the trial at call 11 succeeds.
SEED_9 = ["ok", "ok", "ok", "fail", "fail", "rejected", "rejected", "fail"]
SEED_9 += ["rejected", "rejected", "ok", "ok"]


def _unmeasured(output: str) -> str:
    """The output with what real time changes masked: clock times and measured waits."""
    output = re.sub(r"\b\d\d:\d\d:\d\d\.\d{3}\b", "HH:MM:SS.mmm", output)
    return re.sub(r"trial call in \d+\.\d\d s", "trial call in T s", output)


class TestTheDemo:
    def test_is_reproducible_apart_from_measured_times(self, capsys):
        assert main(["demo", "breaker"]) == 0
        real = capsys.readouterr().out
        circuit_breaker.main(9, clock=FakeClock())
        fake = capsys.readouterr().out
        header = "=== buttress demo breaker: the chapter's fragile function behind a circuit"
        assert real.startswith(header)
        # A run on real time makes the same calls, outcomes and state changes as on a fake clock.
        assert _unmeasured(real.split("\n", 1)[1]) == _unmeasured(fake) + "\n"

    def test_explains_the_state_changes(self, capsys):
        circuit_breaker.main(9, clock=FakeClock())
        output = capsys.readouterr().out
        assert "call  5 / FAIL / RuntimeError: This is a sample Exception" in output
        assert "breaker: closed -> open (2 failures in a row)" in output
        assert "call  6 / rejected at once: trial call in 0.30 s" in output
        explanation = output.split("What happened:", 1)[1]
        for sentence in [
            "12 calls, 0.2 s apart, to a function that fails half of the time",
            "opens after 2 failures in a row and lets one trial call through 0.5 s later",
            "Call 5 failed: 2 failures in a row, so the breaker opened for 0.5 s.",
            "Calls 6-7: rejected at once with CircuitOpen (2 calls), without running the "
            "fragile function.",
            "Call 8: the open period was over, so it went through as the trial call (half-open);"
            " it failed, so the breaker opened again for 0.5 s.",
            "Calls 9-10: rejected at once",
            "Call 11: the open period was over, so it went through as the trial call "
            "(half-open); it succeeded, so the breaker closed",
            "the breaker opened 2 times; the fragile function ran 8 times, and 4 of the 12 "
            "calls were answered at once without touching it.",
        ]:
            assert sentence in explanation

    def test_demo_chapter_runs_it_too(self, capsys, monkeypatch):
        assert DEMOS["breaker"][1] is circuit_breaker.main
        title, _ = DEMOS["breaker"]
        fast = (title, lambda seed: circuit_breaker.main(seed, clock=FakeClock()))
        monkeypatch.setitem(DEMOS, "breaker", fast)
        assert main(["demo", "chapter"]) == 0
        output = capsys.readouterr().out
        assert "=== buttress demo retry" in output
        assert "=== buttress demo breaker" in output

    def test_the_library_log_does_not_repeat_the_narration(self, capsys):
        # `buttress demo` runs the retry demo first, which turns logging on.
        root = logging.getLogger()
        handler = logging.StreamHandler(sys.stdout)
        root.addHandler(handler)
        level = root.level
        root.setLevel(logging.INFO)
        try:
            circuit_breaker.main(9, clock=FakeClock())
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
        output = capsys.readouterr().out
        assert "trial calls in" not in output  # the library's own log line
        assert logging.getLogger("buttress.breaker").level == logging.NOTSET

    def test_help_lists_it(self, capsys):
        with pytest.raises(SystemExit):
            main(["demo", "--help"])
        help_text = " ".join(capsys.readouterr().out.split())  # as argparse wraps it
        assert "breaker: the chapter's fragile function" in help_text
        assert "(outage, retry, breaker, throttling, chapter)" in help_text


class TestTheRun:
    def test_outcomes_follow_the_seed(self):
        story = circuit_breaker.run(seed=9, clock=FakeClock())
        assert story.outcomes == SEED_9
        assert story.ran == story.outcomes.count("ok") + story.outcomes.count("fail")
        assert [(number, change.old, change.new) for number, change in story.changes] == [
            (5, State.CLOSED, State.OPEN),
            (8, State.OPEN, State.HALF_OPEN),
            (8, State.HALF_OPEN, State.OPEN),
            (11, State.OPEN, State.HALF_OPEN),
            (11, State.HALF_OPEN, State.CLOSED),
        ]

    def test_calls_keep_their_schedule(self):
        clock = FakeClock()
        circuit_breaker.run(seed=9, clock=clock)
        assert clock.now() == pytest.approx(11 * circuit_breaker.DEMO_PAUSE)

    def test_the_chapters_timing_runs_until_interrupted(self):
        class Interrupting(FakeClock):
            def sleep(self, seconds):
                super().sleep(seconds)
                if self.now() >= 30:
                    raise KeyboardInterrupt

        story = circuit_breaker.run(
            seed=1,
            calls=None,
            reset_timeout=circuit_breaker.CHAPTER_RESET_TIMEOUT,
            pause=circuit_breaker.CHAPTER_PAUSE,
            clock=Interrupting(),
        )
        assert len(story.outcomes) == 30
        rejected = "".join("R" if outcome == "rejected" else "." for outcome in story.outcomes)
        assert "RRRR" in rejected  # four calls in the 5 s open period, then the trial
        assert "RRRRR" not in rejected

    def test_an_ending_while_open_is_said(self):
        story = circuit_breaker.run(seed=9, calls=7, clock=FakeClock())
        text = circuit_breaker.explain(story)
        assert "Calls 6-7: rejected at once" in text
        assert "the breaker was still open when the demo ended" in text


def test_examples_folder_runs_the_same_file():
    example = ROOT / "examples" / "circuit_breaker.py"
    assert example.is_symlink()
    assert not Path(example.readlink()).is_absolute()
    assert example.resolve() == Path(circuit_breaker.__file__).resolve()
    result = subprocess.run(  # noqa: S603 - our own example
        [sys.executable, str(example)], capture_output=True, text=True, check=True
    )
    assert "breaker: closed -> open (2 failures in a row)" in result.stdout
    assert "What happened: 12 calls" in result.stdout
