"""The core stays pure: standard library and msgspec only, and never the adapters or entrypoints."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reportcore

CORE = Path(reportcore.__file__).parent
REPO = CORE.parent.parent
ALLOWED_THIRD_PARTY = frozenset({"msgspec"})
DYNAMIC_IMPORTS = frozenset({"__import__", "import_module"})


def foreign_imports(source: str, filename: str = "<core>") -> list[str]:
    """Every import in ``source`` that reaches outside the stdlib, msgspec and the core itself,
    and every import done by name at run time (which an AST walk could not check)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:  # ``from .. import`` leaves the package
                found.append(f"line {node.lineno}: relative import above reportcore")
            names = [node.module] if node.level == 0 and node.module else []
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in DYNAMIC_IMPORTS:
                found.append(f"line {node.lineno}: dynamic import {name}()")
            continue
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
                found.append(f"line {node.lineno}: {name}")
    return found


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_the_core_has_modules_to_check() -> None:
    names = {path.name for path in CORE_FILES}
    assert {"__init__.py", "usecases.py", "ports.py", "jobs.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_a_core_module_imports_only_the_stdlib_and_msgspec(path: Path) -> None:
    assert foreign_imports(path.read_text(encoding="utf-8"), str(path)) == []


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import httpx", True),
        ("import os.path, psycopg", True),
        ("from adapters.memory import InMemoryQueue", True),
        ("from entrypoints import cli", True),
        ("def f():\n    import litestar", True),
        ("from .. import adapters", True),
        ("import importlib\nimportlib.import_module('pika')", True),
        ("__import__('jwt')", True),
        ("import datetime as dt\nfrom collections.abc import Mapping", False),
        ("import msgspec\nfrom msgspec import json", False),
        ("from . import lifecycle\nfrom .jobs import Job", False),
        ("from __future__ import annotations", False),
    ],
)
def test_the_import_check_flags_what_it_must(source: str, flagged: bool) -> None:
    assert bool(foreign_imports(source)) is flagged


def test_importing_the_core_loads_nothing_beyond_the_stdlib_and_msgspec() -> None:
    probe = (
        "import json, sys\n"
        "import msgspec\n"
        "before = set(sys.modules)\n"
        "import reportcore\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert loaded - set(sys.stdlib_module_names) == {"reportcore"}


def test_the_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("import-linter is a dev dependency: lint-imports must be installed")
    done = subprocess.run(
        [exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
