"""The documentation stays true to the code: the routes of docs/api.md are the app's, the
configuration table of docs/operations.md is settings.py's (names, aliases, defaults), the
error codes documented are the API's, every relative link resolves (anchors included), and
every ``reportsvc`` command and flag the docs name exists; and the answers docs/api.md shows
agree with themselves and with the file they describe."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from entrypoints.api import ERROR_STATUS, create_app
from entrypoints.cli import (
    API_REQUIRED,
    MIGRATE_REQUIRED,
    TOKEN_REQUIRED,
    WORKER_REQUIRED,
    build_parser,
)
from entrypoints.settings import DECLARED, Settings, shown_default
from tests.api_examples import DEMO_NOW
from tests.containers import in_memory_container

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
API_MD = DOCS / "api.md"
OPERATIONS_MD = DOCS / "operations.md"
DOCUMENTS = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
_CODE = re.compile(r"`([^`\n]+)`")


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (links and headings there are not real)."""
    return _FENCE.sub("", text)


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section, up to the next ``## ``."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text`` (header and rule rows left out)."""
    rows = []
    for line in text.split("\n"):  # Markdown lines
        if not line.startswith("|"):
            continue
        # a pipe inside code is escaped as \| in these tables
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows[1:] if rows else rows  # the first row is the header


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for match in _HEADING.finditer(_prose(path.read_text(encoding="utf-8"))):
        slug = _slug(match.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


# --- routes ---


def _app_routes() -> set[tuple[str, str]]:
    container = in_memory_container(
        Settings(jwt_secret="docs-test-jwt-secret-0123456789", download_secret="x" * 32)
    )
    schema = create_app(container).openapi_schema.to_schema()
    routes = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "head", "post", "put", "patch", "delete")
    }
    # served by Litestar's OpenAPI plugins, not listed in the document itself
    return routes | {("GET", "/api-docs"), ("GET", "/api-docs/openapi.json")}


def _documented_routes() -> set[tuple[str, str]]:
    routes = set()
    for cells in _table_rows(_prose(API_MD.read_text(encoding="utf-8")).split("\n## ")[0]):
        methods, path_cell = cells[0], cells[1]
        path = _CODE.search(path_cell)
        assert path is not None, f"route row without a path in code: {cells}"
        for method in methods.split(","):
            routes.add((method.strip(), path.group(1).split("?")[0]))
    return routes


def test_the_route_table_of_api_md_is_exactly_the_routes_the_app_serves() -> None:
    documented = _documented_routes()
    served = _app_routes()
    assert served - documented == set(), "routes missing from docs/api.md"
    assert documented - served == set(), "docs/api.md lists routes the app does not serve"


def test_every_error_code_of_the_api_is_documented_with_its_status() -> None:
    errors = _section(API_MD.read_text(encoding="utf-8"), "Errors")
    documented = {
        (code.group(1), int(cells[1]))
        for cells in _table_rows(errors)
        if (code := _CODE.search(cells[0])) and cells[1].isdigit()
    }
    for code, status in ERROR_STATUS.items():
        assert (code, status) in documented, f"{code} {status} is not in the error table"


# --- configuration ---


def _configuration_rows() -> list[list[str]]:
    """The rows of the configuration table: variable (aliases), default, meaning, read by."""
    return _table_rows(_section(OPERATIONS_MD.read_text(encoding="utf-8"), "Configuration"))


def _declared_cells(setting: str) -> list[str]:
    """The first three cells of ``setting``'s row, as its declaration in settings.py writes
    them: the variable and its aliases, the default (and what unset means), the meaning."""
    declared = DECLARED[setting]
    main, *aliases = (f"`{name}`" for name in declared.names)
    shown = shown_default(setting)
    default = "-" if shown == "-" else f"`{shown}`"
    return [
        main + (f" ({', '.join(aliases)})" if aliases else ""),
        default + (f" ({declared.default_doc})" if declared.default_doc else ""),
        declared.doc.replace("|", "\\|"),  # escaped in a table, also inside code
    ]


def test_the_configuration_table_is_the_one_the_settings_declare() -> None:
    # each setting's variables, default and meaning are written once, on its field of
    # Settings; the table shows them in that order, then the processes that read each
    documented = ["| " + " | ".join(cells[:3]) + " |" for cells in _configuration_rows()]
    declared = ["| " + " | ".join(_declared_cells(setting)) + " |" for setting in DECLARED]
    assert documented == declared, "\n".join(
        ["docs/operations.md's configuration table should start its rows with:", *declared]
    )


@pytest.mark.parametrize(
    ("command", "required"),
    [
        ("api", API_REQUIRED),
        ("worker", WORKER_REQUIRED),
        ("migrate", MIGRATE_REQUIRED),
        ("token", TOKEN_REQUIRED),
    ],
)
def test_the_table_bolds_exactly_what_each_command_requires(
    command: str, required: tuple[str, ...]
) -> None:
    read_by = {cells[0]: cells[3] for cells in _configuration_rows()}
    for setting in DECLARED:
        names, _, meaning = _declared_cells(setting)
        # required only with another setting (S3_BUCKET with FILE_STORE=s3): bold, saying so
        if "required when" not in meaning:
            assert (f"**{command}**" in read_by[names]) == (setting in required), names


# --- links ---


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for match in _LINK.finditer(_prose(document.read_text(encoding="utf-8"))):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in _anchors(path)):
            broken.append(target)
    assert broken == []


# --- the CLI ---


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("reportsvc has no subcommands")


# `reportsvc <word>` anywhere, also right after another "reportsvc" (an image name)
_COMMAND = re.compile(r"(?=(?<![\w-])reportsvc ([a-z][a-z-]*)([^`\n|)]*))")


def test_every_reportsvc_command_and_flag_named_in_the_docs_exists() -> None:
    commands = _subcommands()
    unknown = []
    for document in DOCUMENTS:
        for match in _COMMAND.finditer(document.read_text(encoding="utf-8")):
            name, rest = match.group(1), match.group(2)
            if name == "reportsvc":
                continue
            if name not in commands:
                unknown.append(f"{document.name}: reportsvc {name}")
                continue
            options = {s for a in commands[name]._actions for s in a.option_strings}
            for flag in re.findall(r"(?<!\S)--[a-z][a-z-]*", rest):
                if flag not in options:
                    unknown.append(f"{document.name}: reportsvc {name} {flag}")
    assert unknown == []


def test_every_reportsvc_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in _subcommands():
        assert f"`reportsvc {name}`" in readme


def test_the_readme_shows_the_curl_lines_reportsvc_dev_prints() -> None:
    from entrypoints.dev import banner, sample_request

    printed = banner(
        "http://127.0.0.1:5129", "TOKEN", "farmiq-demo", Path(".dev-data"), sample_request()
    ).splitlines()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = _section(readme, "From clone to a downloaded file in five minutes")
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", shown, re.S)
        for line in block.splitlines()
        if "curl " in line
    ]
    assert len(lines) == 4
    assert [line for line in lines if line not in printed] == []
    assert "export BASE=http://127.0.0.1:5129" in printed


# --- the examples of api.md ---

# a `curl -i` answer: status line, headers, then its body in the same block or, pretty-printed,
# in a ```json block right after it
_ANSWER = re.compile(
    r"^```\n(HTTP/1\.1 [^\n]*\n.*?)^```[ \t]*\n(?:```json\n(.*?)^```)?", re.S | re.M
)


def _answers() -> list[tuple[str, dict[str, str], bytes | None]]:
    """(status line, headers, body as sent or ``None`` when not shown) of each answer shown;
    a pretty-printed JSON body is sent compact, in the same key order."""
    answers = []
    for match in _ANSWER.finditer(API_MD.read_text(encoding="utf-8")):
        head, blank, body = match.group(1).partition("\n\n")
        status, *lines = head.rstrip("\n").split("\n")
        headers = dict(line.split(": ", 1) for line in lines)
        sent: bytes | None = None
        if match.group(2) is not None:
            value = json.loads(match.group(2))
            sent = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        elif blank:
            sent = body.rstrip("\n").encode()
        answers.append((status, headers, sent))
    return answers


def test_every_whole_body_shown_is_as_long_as_its_content_length() -> None:
    checked = []
    for status, headers, sent in _answers():
        if "content-length" in headers and sent is not None and "…" not in sent.decode():
            assert len(sent) == int(headers["content-length"]), (status, sent[:80])
            checked.append(status)
    assert len(checked) >= 10, checked  # health, ready, create, get, download, 206, 416, ...


def _documented_job() -> dict[str, Any]:
    """The succeeded job of the examples (its file is the one downloaded below it)."""
    jobs = [
        json.loads(sent)
        for _, _, sent in _answers()
        if sent is not None
        and sent.startswith(b"{")
        and "…" not in sent.decode()  # shortened
        and b'"status":"succeeded"' in sent
    ]
    [job] = [j for j in jobs if j.get("file_name")]
    return job


def test_the_file_examples_are_of_the_documented_job_s_file() -> None:
    job = _documented_job()
    files = [(s, h, b) for s, h, b in _answers() if h.get("etag") == f'"{job["sha256"]}"']
    assert len(files) == 3  # GET, a Range, HEAD
    for status, headers, _ in files:
        whole = headers.get("content-range", f"bytes 0-/{headers['content-length']}")
        assert whole.rsplit("/", 1)[1] == str(job["size_bytes"]), status
    [past_end] = [h for s, h, _ in _answers() if s.startswith("HTTP/1.1 416")]
    assert past_end["content-range"] == f"bytes */{job['size_bytes']}"


def test_the_documented_job_s_row_count_size_and_sha256_are_those_of_its_file(
    tmp_path: Path,
) -> None:
    job = _documented_job()
    output = tmp_path / job["file_name"]
    scope = [f"--{f.replace('_', '-')}={job[f]}" for f in ("farm_id", "start_date", "end_date")]
    done = subprocess.run(
        [sys.executable, "-m", "reportsvc", "export", "--demo", "--job-type", job["job_type"],
         "--format", job["format"], *scope, "--output", str(output)],
        # the demo upstream as it was in the documented run (tests/api_examples.py)
        env={"PATH": "/usr/bin:/bin", "DEMO_NOW": DEMO_NOW},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    content = output.read_bytes()
    assert hashlib.sha256(content).hexdigest() == job["sha256"], "not the documented file"
    assert len(content) == job["size_bytes"]
    # counted as a client reads it: a quoted cell may hold a line break
    _, *rows = csv.reader(io.StringIO(content.decode(), newline=""))
    assert job["row_count"] == len(rows)
    [ranged] = [b for s, _, b in _answers() if s.startswith("HTTP/1.1 206")]
    assert ranged == content[:100]
