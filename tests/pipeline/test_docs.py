"""The examples of docs/pipeline.md run, in order, as written."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"


def test_the_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 6
    namespace: dict[str, object] = {"__name__": "docs_pipeline"}
    for index, block in enumerate(blocks):
        code = compile(block, f"{DOCS.name}[python block {index}]", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation's examples
