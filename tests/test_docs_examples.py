"""The Python examples of every documentation page and of README.md run, as written.

The convention, for anyone writing a page:

- A block fenced with ```` ```python ```` **runs**. A page's blocks run in order, in one
  namespace, like one interactive session: a later block may use what an earlier one defined.
  The namespace is a real module (``docs_<page>``), so classes and dataclasses defined in an
  example behave as in a file. Top-level ``await`` is allowed: such a block runs on the page's
  event loop (one per page, as in ``python -m asyncio``).
- A ```` ```python ```` block whose first line starts with ``>>>`` is a **doctest**: it runs in the
  same namespace and its output must match (``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` are on;
  an exception is shown as ``Traceback (most recent call last):``, ``...``, then its last line).
- A block that cannot run here (it needs a network service, or it is a fragment with names left
  undefined on purpose) carries a marker on the line just before its fence::

      <!-- not-run: needs a Redis server and a user_id from a request -->

  The reason is required. The marker is an HTML comment, so neither GitHub nor the site shows it.
- A block that needs Redis and should run anyway carries ``<!-- requires: redis -->``. It runs
  against the test server (``BUTTRESS_REDIS_URL``, skipped or failed as the other Redis tests
  when there is none): the URL ``redis://127.0.0.1:6379/0`` in it is replaced by the test
  server's, and ``prefix="myapp"``, which such a block must use for every store, by the run's own
  prefix, so the run deletes every key it wrote.
- Blocks in any other language (``sh``, ``toml``, ``json``, none) are not Python and never run.

Pages whose examples have tests of their own are left to them: docs/bulkhead.md
(tests/bulkhead/test_docs.py, which also checks what each example prints) and docs/pipeline.md
(tests/pipeline/test_docs.py).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import doctest
import inspect
import io
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
COVERED_ELSEWHERE = {"docs/bulkhead.md", "docs/pipeline.md"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>[a-z-]+)\s*:?\s*(?P<reason>.*?)\s*-->\s*$")
_MARKERS = {"not-run", "requires"}
_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
_TEST_PREFIX = 'prefix="myapp"'


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # the 1-based line of the block's first line of code
    language: str
    code: str
    marker: str | None  # "not-run", "requires" or None
    reason: str

    @property
    def runs(self) -> bool:
        return self.language == "python" and self.marker != "not-run"

    @property
    def is_doctest(self) -> bool:
        return self.code.lstrip().startswith(">>>")

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[str]:
    """Every page whose examples this module runs, relative to the repository."""
    found = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    names = [path.relative_to(ROOT).as_posix() for path in found]
    return [name for name in names if name not in COVERED_ELSEWHERE]


def parse(page: str) -> list[Block]:
    """The fenced blocks of ``page``, with the marker (if any) on the line before each."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        language = opening["info"].strip().split(" ")[0].lower() if opening["info"] else ""
        marker, reason = _marker_before(lines, index, page)
        end = index + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page}:{index + 1}: a code fence that is never closed")
        body = [
            line[len(indent) :] if line.startswith(indent) else line
            for line in lines[index + 1 : end]
        ]
        code = "\n".join(body) + "\n"
        blocks.append(Block(page, index + 2, language, code, marker, reason))
        index = end + 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence) and set(stripped) == {fence[0]}


def _marker_before(lines: list[str], index: int, page: str) -> tuple[str | None, str]:
    previous = index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    if previous < 0:
        return None, ""
    found = _MARKER.match(lines[previous])
    if found is None or found["kind"] not in _MARKERS:
        return None, ""
    kind, reason = found["kind"], found["reason"]
    if not reason:
        raise AssertionError(f"{page}:{previous + 1}: <!-- {kind}: ... --> needs a reason")
    return kind, reason


class Session:
    """One page's namespace and event loop, like an interactive session."""

    def __init__(self, page: str) -> None:
        self.name = "docs_" + re.sub(r"\W", "_", Path(page).stem)
        self.module = types.ModuleType(self.name)
        self.module.__file__ = str(ROOT / page)
        self.loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        sys.modules[self.name] = self.module
        try:
            yield
        finally:
            if self.loop is not None:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()
            del sys.modules[self.name]

    def run(self, block: Block, code: str) -> None:
        # Blank lines in front make tracebacks name the page's own line numbers.
        source = "\n" * (block.line - 1) + code
        compiled = compile(
            source,
            str(ROOT / block.page),
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        result = eval(compiled, self.module.__dict__)  # noqa: S307 - our own documentation
        if compiled.co_flags & inspect.CO_COROUTINE:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(result)

    def doctest(self, block: Block) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(
            block.code, self.module.__dict__, block.where, str(ROOT / block.page), block.line - 1
        )
        test.globs = self.module.__dict__  # DocTest copies its globals; share the page's instead
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        report = io.StringIO()
        result = runner.run(test, out=report.write, clear_globs=False)
        assert result.failed == 0, f"{block.where}: doctest failed\n{report.getvalue()}"


def _for_redis(block: Block, request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    assert _TEST_PREFIX in block.code, (
        f'{block.where}: a "requires: redis" block must use {_TEST_PREFIX} for its stores'
    )
    return block.code.replace(_TEST_REDIS_URL, url).replace(_TEST_PREFIX, f'prefix="{prefix}-docs"')


def pages_with_examples() -> list[str]:
    """The pages with at least one Python block that runs."""
    return [page for page in pages() if any(block.runs for block in parse(page))]


@pytest.mark.parametrize("page", pages_with_examples())
def test_page_examples_run(page: str, request: pytest.FixtureRequest) -> None:
    blocks = [block for block in parse(page) if block.runs]
    session = Session(page)
    with session.active():
        for block in blocks:
            if block.marker == "requires":
                assert block.reason == "redis", (
                    f"{block.where}: unknown requirement {block.reason!r}"
                )
                session.run(block, _for_redis(block, request))
            elif block.is_doctest:
                session.doctest(block)
            else:
                session.run(block, block.code)


def test_every_page_is_checked() -> None:
    checked = set(pages()) | COVERED_ELSEWHERE
    on_disk = {path.relative_to(ROOT).as_posix() for path in DOCS.rglob("*.md")}
    assert on_disk <= checked
    assert "README.md" in checked
    for name in COVERED_ELSEWHERE:
        assert (ROOT / name).exists(), f"{name} is listed as tested elsewhere but does not exist"


def test_markers_sit_on_python_blocks() -> None:
    for page in [*pages(), *sorted(COVERED_ELSEWHERE)]:
        for block in parse(page):
            if block.marker is not None:
                assert block.language == "python", (
                    f"{block.where}: a <!-- {block.marker} --> marker on a {block.language!r} block"
                )


class TestTheConvention:
    """The parser and the session themselves, on small made-up pages."""

    @pytest.fixture
    def page(self, tmp_path, monkeypatch):
        monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)

        def write(text: str) -> str:
            (tmp_path / "page.md").write_text(text, encoding="utf-8")
            return "page.md"

        return write

    def test_blocks_markers_and_languages(self, page):
        name = page(
            "# Title\n\n```python\nx = 1\n```\n\n<!-- not-run: needs a server -->\n"
            "```python\nconnect()\n```\n\n```sh\nls\n```\n\n  ```python\n  y = x + 1\n  ```\n"
        )
        blocks = parse(name)
        assert [(b.language, b.marker, b.runs) for b in blocks] == [
            ("python", None, True),
            ("python", "not-run", False),
            ("sh", None, False),
            ("python", None, True),
        ]
        assert blocks[0].line == 4
        assert blocks[1].reason == "needs a server"
        assert blocks[3].code == "y = x + 1\n"

    def test_a_marker_needs_a_reason(self, page):
        name = page("<!-- not-run -->\n```python\nx\n```\n")
        with pytest.raises(AssertionError, match="needs a reason"):
            parse(name)

    def test_one_namespace_top_level_await_and_line_numbers(self, page):
        name = page(
            "```python\nimport asyncio\nx = 2\n```\n\n"
            "```python\nawait asyncio.sleep(0)\ny = x * 3\n```\n\n"
            "```python\n>>> y\n6\n>>> z = y + 1\n```\n\n"
            "```python\n\nraise RuntimeError(z)\n```\n"
        )
        blocks = parse(name)
        session = Session(name)
        with session.active():
            session.run(blocks[0], blocks[0].code)
            session.run(blocks[1], blocks[1].code)
            assert session.module.__dict__["y"] == 6
            session.doctest(blocks[2])
            with pytest.raises(RuntimeError) as raised:
                session.run(blocks[3], blocks[3].code)
        assert str(raised.value) == "7"  # a name a doctest defined
        assert raised.traceback[-1].lineno + 1 == 19  # the page's own line
        assert session.loop is not None
        assert session.loop.is_closed()

    def test_a_failing_doctest_fails(self, page):
        name = page("```python\n>>> 1 + 1\n3\n```\n")
        session = Session(name)
        with session.active(), pytest.raises(AssertionError, match="doctest failed"):
            session.doctest(parse(name)[0])
