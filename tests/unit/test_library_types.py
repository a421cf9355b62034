"""docs/library.md's examples are typed as a consumer's code would be: mypy --strict passes on
every ``python`` block, read against the core in src/ (its py.typed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_library_examples import EXAMPLES, LIBRARY_DOC

SRC = LIBRARY_DOC.parents[1] / "src"


def test_every_python_block_of_the_library_page_passes_mypy_strict(tmp_path: Path) -> None:
    assert EXAMPLES
    for number, example in enumerate(EXAMPLES):
        # padded so that mypy's line numbers are those of the page
        padded = "\n" * (example.line - 1) + example.code
        (tmp_path / f"library_line{example.line}_{number}.py").write_text(padded, "utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", "",
         "--explicit-package-bases", "."],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MYPYPATH": str(SRC)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
