"""``buttress demo throttling``: the chapter's Flask app, served for real and queried."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from buttress._cli import main
from buttress.demo import DEMOS, throttling_flaskapp

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^GET (/\S+)\s+#(\d+)\s+-> (\d{3}) ", re.MULTILINE)

# The chapter: the 11th request an hour to /limited and the 3rd a minute to /more_limited fail.
EXPECTED = [("/limited", n, 200) for n in range(1, 11)] + [("/limited", 11, 429)]
EXPECTED += [("/more_limited", 1, 200), ("/more_limited", 2, 200), ("/more_limited", 3, 429)]


def answers(output: str) -> list[tuple[str, int, int]]:
    return [(path, int(number), int(status)) for path, number, status in LINE.findall(output)]


class TestTheDemo:
    def test_prints_each_status_with_its_headers(self, capsys):
        threads = threading.active_count()
        throttling_flaskapp.main(0)
        output = capsys.readouterr().out
        assert answers(output) == EXPECTED
        lines = output.splitlines()
        first = next(line for line in lines if "/limited      #1 " in line)
        assert "RateLimit-Limit: 10  RateLimit-Remaining: 9  RateLimit-Reset: 36" in first
        assert "Retry-After" not in first
        eleventh = next(line for line in lines if "/limited      #11" in line)
        assert "429 Too Many Requests" in eleventh
        assert re.search(r"RateLimit-Remaining: 0 .* Retry-After: 3[56]\d\d$", eleventh)
        third = next(line for line in lines if "/more_limited #3 " in line)
        assert re.search(r"RateLimit-Limit: 2 .* Retry-After: (59|60)$", third)
        assert threading.active_count() == threads  # the server thread is gone

    def test_explains_the_429s(self, capsys):
        throttling_flaskapp.main(0)
        explanation = capsys.readouterr().out.split("What happened:", 1)[1]
        for sentence in [
            "/limited has no limit of its own, so the default limits apply to it: 100 per day "
            "and 10 per hour, per client address. Requests 1-10 were admitted",
            "request 11 got 429 Too Many Requests, with Retry-After",
            "/more_limited has its own limit, @limiter.limit('2/minute'), which replaces the "
            "defaults. Requests 1-2 were admitted; request 3 got 429",
        ]:
            assert sentence in explanation

    def test_the_server_is_shut_down(self, capsys):
        throttling_flaskapp.main(0)
        output = capsys.readouterr().out
        found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", output)
        assert found is not None
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", int(found.group(1))))

    def test_is_a_registered_demo(self, capsys):
        assert DEMOS["throttling"][1] is throttling_flaskapp.main
        assert main(["demo", "throttling"]) == 0
        output = capsys.readouterr().out
        assert output.startswith("=== buttress demo throttling: the chapter's Flask app")
        assert answers(output) == EXPECTED

    def test_without_flask_it_says_what_to_install(self, capsys, monkeypatch):
        monkeypatch.setitem(sys.modules, "flask", None)  # import flask now raises ImportError
        throttling_flaskapp.main(0)
        assert capsys.readouterr().out == ("This demo needs Flask: pip install 'buttress[flask]'\n")

    def test_the_example_file_runs_it(self):
        example = ROOT / "examples" / "throttling_flaskapp.py"
        assert example.is_symlink()
        assert example.resolve() == Path(throttling_flaskapp.__file__).resolve()
        result = subprocess.run(  # noqa: S603 - our own example, with this interpreter
            [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True
        )
        assert answers(result.stdout) == EXPECTED
        assert result.stderr == ""
