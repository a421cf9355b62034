"""The Dockerfile read as data: its stages and what each one runs (no Docker engine needed).

Only what the tests ask about is understood: ``FROM ... AS name``, ``RUN``, ``CMD``,
``ENTRYPOINT``, ``HEALTHCHECK``, ``ENV``, with backslash continuations and comments.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


@dataclass
class Stage:
    """One build stage: its name, base, and instructions as (keyword, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None

    def runs(self) -> list[str]:
        return [args for kw, args in self.instructions if kw == "RUN"]

    def env(self) -> dict[str, str]:
        """The variables its ``ENV`` instructions set (``KEY=value`` pairs, unquoted)."""
        pairs = (p for kw, args in self.instructions if kw == "ENV" for p in args.split())
        return dict(p.partition("=")[::2] for p in pairs if "=" in p)


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.split("\n"):  # Docker's line breaks: LF (a CR before it goes with strip)
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def stages(text: str | None = None) -> dict[str, Stage]:
    """The stages of the Dockerfile (or of ``text``), by name, in order."""
    out: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _logical_lines(DOCKERFILE.read_text() if text is None else text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            found = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert found, f"every stage is named: {line!r}"
            stage = Stage(name=found.group(2), base=found.group(1))
            out[stage.name] = stage
        else:
            assert stage is not None, f"{line!r} before the first FROM"
            stage.instructions.append((keyword, args.strip()))
    return out


def image_command(stage_name: str, text: str | None = None) -> list[str]:
    """What a container of ``stage_name`` runs: ENTRYPOINT + CMD, both in exec (JSON) form,
    inherited from the base stage when the stage names another one as its base."""
    all_stages = stages(text)
    entrypoint: list[str] = []
    cmd: list[str] | None = None
    name: str | None = stage_name
    while name in all_stages and (cmd is None or not entrypoint):
        stage = all_stages[name]
        if cmd is None and stage.last("CMD") is not None:
            cmd = json.loads(stage.last("CMD") or "")
        if not entrypoint and stage.last("ENTRYPOINT") is not None:
            entrypoint = json.loads(stage.last("ENTRYPOINT") or "")
        name = stage.base
    return [*entrypoint, *(cmd or [])]
