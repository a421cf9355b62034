"""Issue 26, item 3: no export failure ends as an undocumented code. Every code a job can fail
with (every ``ExportFailure`` of the core) is a row of docs/api.md's export failure table."""

from __future__ import annotations

import re
from pathlib import Path

from reportcore import errors

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _failure_codes() -> set[str]:
    found: set[str] = set()
    todo: list[type[errors.ExportFailure]] = [errors.ExportFailure]
    while todo:
        kind = todo.pop()
        found.add(kind.code)
        todo.extend(kind.__subclasses__())
    return found


def test_every_code_a_job_can_fail_with_is_in_the_export_failure_table() -> None:
    text = API_MD.read_text(encoding="utf-8")
    section = text.split("### Export failure codes", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))
    assert _failure_codes() == documented
    assert "EXPORT_LIMIT_EXCEEDED" in documented
