"""Every Python example in docs/bulkhead.md runs, and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "bulkhead.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_the_page_has_examples():
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[index], f"{DOC}:block{index}", "exec"), {"__name__": "__doc__"})  # noqa: S102 - our own docs
    printed = out.getvalue()
    expected = {
        0: ["charged 1 refunded 2", "full 1 1"],
        1: ["6\nNone\n1"],
        2: ["3\n5 0"],
        3: ["HELLO 0"],
        4: ["timed out: timeout: slow did not finish within 0.05 s", "True"],
        5: ["[0.0, 3.0, 6.0, 9.0]", "deadline of timeout, 10 s"],
        6: ['[]\n["ann\'s usual"] cached (503)'],
    }
    for words in expected.get(index, []):
        assert words in printed
