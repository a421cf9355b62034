"""The SQL files the repositories read: ``-- name:`` blocks of statements, and each engine's
migrations (``adapters/sql/<engine>/NNNN_name.sql``)."""

from __future__ import annotations

import re
from importlib import resources

_NAMED = re.compile(r"^-- name: ([a-z_]+)\s*$")
_MIGRATION_FILE = re.compile(r"^(\d{4}_[a-z0-9_]+)\.sql$")


def sql_file(*parts: str) -> str:
    """The text of ``adapters/sql/<parts...>``."""
    return resources.files("adapters").joinpath("sql", *parts).read_text(encoding="utf-8")


def named_blocks(text: str) -> dict[str, str]:
    """The ``-- name: x`` blocks of a .sql file, comment lines and trailing ``;`` dropped."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAMED.match(line)
        if match:
            current = blocks.setdefault(match.group(1), [])
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";").strip() for name, lines in blocks.items()}


def migrations(engine: str) -> list[tuple[str, str]]:
    """Every migration shipped in ``adapters/sql/<engine>``, as (name, SQL), in order."""
    found = []
    for entry in resources.files("adapters").joinpath("sql", engine).iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((match.group(1), entry.read_text(encoding="utf-8")))
    return sorted(found)
