"""docs/library.md cannot rot: each of its ``python`` blocks runs here as it stands.

A block is run alone, in a fresh namespace, and checks itself with ``assert``s; a failure points
at the line of docs/library.md it happened on.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

LIBRARY_DOC = Path(__file__).resolve().parents[2] / "docs" / "library.md"

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^#{1,6} +(.+)$", re.MULTILINE)


class Example(msgspec.Struct, frozen=True):
    """One python block of the page: the section it is in, its first line, its code."""

    section: str
    line: int
    code: str


def examples(text: str) -> list[Example]:
    """Every ``python`` fenced block of ``text``, with its section heading and line."""
    found = []
    for fence in _FENCE.finditer(text):
        if fence.group(1) != "python":
            continue
        before = text[: fence.start()]
        headings = _HEADING.findall(before)
        first_line = before.count("\n") + 2  # the line after the opening fence
        found.append(Example(headings[-1] if headings else "top", first_line, fence.group(2)))
    return found


def run(example: Example) -> None:
    """Run one block; line numbers in a traceback are those of the page."""
    padded = "\n" * (example.line - 1) + example.code
    code = compile(padded, str(LIBRARY_DOC), "exec")
    exec(code, {"__name__": "library_example"})


EXAMPLES = examples(LIBRARY_DOC.read_text(encoding="utf-8"))


def test_the_page_shows_each_promised_use_with_runnable_code() -> None:
    sections = {example.section for example in EXAMPLES}
    assert sections >= {
        "Validating a create request",
        "Signing and verifying a download URL",
        "Running an exporter from your own records into your own file",
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"line{e.line}")
def test_every_python_block_of_the_library_page_runs(example: Example) -> None:
    run(example)


def test_a_block_whose_claim_is_false_fails_at_its_line_of_the_page() -> None:
    page = "# Title\n\n## Broken\n\nSome prose.\n\n```python\nx = 1\nassert x == 2\n```\n"
    (example,) = examples(page)
    assert (example.section, example.line) == ("Broken", 8)
    with pytest.raises(AssertionError) as failure:
        run(example)
    assert failure.traceback[-1].lineno + 1 == 9  # pytest counts lines from 0
