"""The ``reportsvc`` command line: help, configuration errors, tokens, and its log lines."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import openpyxl
import pytest

from entrypoints.cli import (
    ALL_REQUIRED,
    API_REQUIRED,
    MIGRATE_REQUIRED,
    TOKEN_REQUIRED,
    WORKER_REQUIRED,
    build_parser,
    main,
)
from entrypoints.runtime.logs import (
    REDACTED,
    JsonFormatter,
    RedactingFilter,
    TextFormatter,
    redact,
)
from entrypoints.runtime.serving import PortUnavailable, check_ports
from entrypoints.settings import ConfigError, Settings, load_settings
from reportcore.jobs import ReportFormat
from reportcore.jobtypes import JOB_TYPES
from tests.clock import pinned_now

SECRET = "unit-test-jwt-secret-0123456789abcdef"
COMMANDS = ("api", "worker", "migrate", "dev", "token", "export")


def test_the_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ("api", ["APP_PORT", "JWT_SECRET"]),
        ("worker", ["WORKER_CONCURRENCY", "SIGTERM"]),
        ("migrate", ["DATABASE_URL", "Idempotent"]),
        ("dev", ["--data-dir", "--port", "--host"]),
        ("token", ["--tenant", "--role", "--sub", "--ttl"]),
        (
            "export",
            [
                "--job-type",
                "--format",
                "--tenant",
                "--farm-id",
                "--barn-id",
                "--batch-id",
                "--start-date",
                "--end-date",
                "--filter",
                "--output",
                "--demo",
            ],
        ),
    ],
)
def test_every_command_has_its_own_help(
    command: str, mentions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: reportsvc {command}")
    for word in mentions:
        assert word in out


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        (["api"], {}, "DATABASE_URL"),
        (
            ["api"],
            {"DATABASE_URL": "postgresql://db/x", "RABBITMQ_URL": "amqp://mq/%2F"},
            "REPORT_DOWNLOAD_SECRET",
        ),
        (
            ["api"],
            {
                "DATABASE_URL": "postgresql://db/x",
                "RABBITMQ_URL": "amqp://mq/%2F",
                "REPORT_DOWNLOAD_SECRET": SECRET,
            },
            "JWT_SECRET",
        ),
        (["api"], {"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        (["worker"], {"DATABASE_URL": "postgresql://db/x"}, "RABBITMQ_URL"),
        (
            # a worker signs nothing: it needs no REPORT_DOWNLOAD_SECRET
            ["worker"],
            {"DATABASE_URL": "postgresql://db/x", "RABBITMQ_URL": "amqp://mq/%2F"},
            "CLOUD_FEED_SERVICE_URL",
        ),
        (
            ["worker"],
            {
                "DATABASE_URL": "postgresql://db/x",
                "RABBITMQ_URL": "amqp://mq/%2F",
                "REPORT_DOWNLOAD_SECRET": SECRET,
                "FEED_BASE_URL": "http://feed",
                "CLOUD_TELEMETRY_SERVICE_URL": "http://tel",
            },
            "CLOUD_WEIGHVISION_READMODEL_URL",
        ),
        (["worker"], {"WORKER_CONCURRENCY": "many"}, "WORKER_CONCURRENCY"),
        (["migrate"], {}, "DATABASE_URL"),
        (["token", "--role", "viewer"], {}, "JWT_SECRET"),
        (["token", "--role", "viewer"], {"JWT_SECRET": "short"}, "JWT_SECRET"),
    ],
)
def test_a_configuration_error_is_one_line_naming_the_variable_and_exit_code_2(
    command: list[str],
    env: dict[str, str],
    named: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(command, env) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"reportsvc: configuration error: {named} ")


@pytest.mark.parametrize("command", ["worker", "export"])
@pytest.mark.parametrize(
    ("variable", "content", "says"),
    [
        ("UPSTREAM_CA_BUNDLE", None, "No such file or directory"),
        ("UPSTREAM_CA_BUNDLE", "not a certificate", "NO_CERTIFICATE_OR_CRL_FOUND"),
        ("UPSTREAM_CLIENT_CERT", None, "No such file or directory"),
        ("UPSTREAM_CLIENT_CERT", "not a certificate", "PEM"),
    ],
)
def test_an_upstream_tls_file_that_cannot_be_loaded_stops_the_process_at_start(
    command: str,
    variable: str,
    content: str | None,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not every export's failure later (a missing file read as the export file's own)."""
    path = tmp_path / "upstream.pem"
    if content is not None:
        path.write_text(content)
    env = {
        "DATABASE_URL": "postgresql://db/x",
        "RABBITMQ_URL": "amqp://mq/%2F",
        "CLOUD_FEED_SERVICE_URL": "https://feed",
        "CLOUD_TELEMETRY_SERVICE_URL": "https://tel",
        "CLOUD_WEIGHVISION_READMODEL_URL": "https://wv",
        variable: str(path),
    }
    export = ["export", "--tenant", "t-1", "--job-type", "FEED_INTAKE_EXPORT"]
    argv = [command] if command == "worker" else export
    assert main(argv, env) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"reportsvc: configuration error: {variable}")
    assert str(path) in line
    assert says in line


@pytest.mark.parametrize("command", ["api", "worker", "dev"])
def test_a_socks_proxy_in_the_environment_stops_the_process_at_start_without_showing_it(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """httpx needs the socksio package for it (not brought): without this check every
    process stopped at its first client with an ImportError and a traceback."""
    env = {"ALL_PROXY": "socks5://proxy-user:proxy-pass@proxy.example:1080"}
    assert main([command], env) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("reportsvc: configuration error: ")
    assert "ALL_PROXY names a socks5:// proxy: only http:// and https:// proxies" in line
    assert "proxy-pass" not in line and "proxy.example" not in line


def test_several_problems_are_named_all_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"DATABASE_URL": "mysql://db/x", "WORKER_CONCURRENCY": "many", "JWT_SECRET": "short"}
    assert main(["api"], env) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("reportsvc: configuration error: ")
    problems = line.removeprefix("reportsvc: configuration error: ").split("; ")
    assert [p.split()[0] for p in problems] == [
        # malformed first, in the order of the configuration table, then the missing ones
        "DATABASE_URL",
        "WORKER_CONCURRENCY",
        "JWT_SECRET",
        "RABBITMQ_URL",
        "REPORT_DOWNLOAD_SECRET",
    ]
    assert problems[0] == "DATABASE_URL must be a postgresql:// URL with a host, got 'mysql://db/x'"
    assert problems[3] == "RABBITMQ_URL is required but not set"


# what each required variable is set to when a test sets it
_VALID = {
    "DATABASE_URL": "postgresql://db/x",
    "RABBITMQ_URL": "amqp://mq/%2F",
    "REPORT_DOWNLOAD_SECRET": SECRET,
    "JWT_SECRET": SECRET,
    "CLOUD_FEED_SERVICE_URL": "http://feed",
    "CLOUD_TELEMETRY_SERVICE_URL": "http://telemetry",
    "CLOUD_WEIGHVISION_READMODEL_URL": "http://weighvision",
}


@pytest.mark.parametrize(
    ("command", "required"),
    [
        ("api", API_REQUIRED),
        ("worker", WORKER_REQUIRED),
        ("all", ALL_REQUIRED),
        ("migrate", MIGRATE_REQUIRED),
        ("token", TOKEN_REQUIRED),
    ],
)
def test_each_commands_help_names_exactly_the_variables_it_checks(
    command: str, required: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    sentence = re.search(r"Needs ((?:[A-Z][A-Z0-9_]+(?:, | and )?)+)\.", text)
    assert sentence is not None, text
    named = re.findall(r"[A-Z][A-Z0-9_]+", sentence.group(1))
    # what the help names is enough for the command's check ...
    load_settings({name: _VALID[name] for name in named}, required=required)
    # ... and each of them is needed: without it, the check names it
    for name in named:
        env = {other: _VALID[other] for other in named if other != name}
        with pytest.raises(ConfigError, match=f"^{name} is required but not set"):
            load_settings(env, required=required)


def test_the_worker_help_does_not_ask_for_the_download_secret_it_never_uses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    assert "REPORT_DOWNLOAD_SECRET" not in capsys.readouterr().out


def test_the_installed_script_stops_before_listening_on_a_configuration_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "api"],
        env={"PATH": "/usr/bin:/bin", "APP_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(
        "reportsvc: configuration error: DATABASE_URL is required but not set; "
        "RABBITMQ_URL is required but not set; REPORT_DOWNLOAD_SECRET is required but not set; "
        "JWT_SECRET is required but not set: "
    )
    assert done.stdout == ""


def _export_option_help(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Each option of ``reportsvc export --help`` -> its help text, on one line."""
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    found = re.findall(r"^  (--[a-z-]+)[^\n]*?(?:  +|\n {20,})(\S.*?)(?=^  -|\Z)", out, re.M | re.S)
    return {flag: " ".join(text.split()) for flag, text in found}


def test_export_help_lists_the_job_types_and_formats_of_the_core(
    capsys: pytest.CaptureFixture[str],
) -> None:
    helps = _export_option_help(capsys)
    listed = re.findall(r"[A-Z][A-Z_]+_EXPORT", helps["--job-type"])
    assert listed == list(JOB_TYPES)
    assert re.findall(r"\b(csv|json|xlsx)\b", helps["--format"].split(";")[0]) == [
        str(f) for f in ReportFormat
    ]


def test_export_help_says_what_each_scope_flag_is_and_which_job_types_require_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    helps = _export_option_help(capsys)
    for flag in ("--farm-id", "--barn-id", "--batch-id", "--start-date", "--end-date"):
        field = flag.removeprefix("--").replace("-", "_")
        required_by = [t for t, spec in JOB_TYPES.items() if field in spec.required_scope]
        assert re.findall(r"[A-Z][A-Z_]+_EXPORT", helps[flag]) == required_by, flag
        assert ("UUID" if field.endswith("_id") else "YYYY-MM-DD") in helps[flag], flag


# --- a port in use (issue: said in one line, before anything starts) ---

# nothing listens on port 1: a command that got as far as connecting would say so instead
_UNREACHABLE = {
    "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
    "REPORT_DOWNLOAD_SECRET": SECRET,
    "JWT_SECRET": SECRET,
    "CLOUD_FEED_SERVICE_URL": "http://127.0.0.1:1",
    "CLOUD_TELEMETRY_SERVICE_URL": "http://127.0.0.1:1",
    "CLOUD_WEIGHVISION_READMODEL_URL": "http://127.0.0.1:1",
    "HOST": "127.0.0.1",
    "WORKER_HTTP_HOST": "127.0.0.1",
    "APP_PORT": "0",  # a free port: only the port the test takes is in use
    "WORKER_HTTP_PORT": "0",
}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port this test listens on (another process's server, as an operator would meet it)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["api"], "APP_PORT"),
        (["api"], "PORT"),
        (["all"], "APP_PORT"),
        (["all"], "WORKER_HTTP_PORT"),
        (["worker"], "WORKER_HTTP_PORT"),
        (["dev", "--data-dir", "{tmp}"], "APP_PORT"),
        (["dev", "--data-dir", "{tmp}", "--port", "{port}"], "--port"),
    ],
)
def test_a_port_in_use_is_one_line_naming_it_before_anything_starts(
    argv: list[str], variable: str, taken_port: int, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", **_UNREACHABLE}
    if variable == "PORT":
        del env["APP_PORT"]  # APP_PORT wins over its alias
    if not variable.startswith("--"):
        env[variable] = str(taken_port)
    args = [a.format(tmp=tmp_path, port=taken_port) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "reportsvc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a command that started anyway (a worker retrying the broker) runs on
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert (
        done.stderr
        == f"reportsvc: port {taken_port} is in use ({variable}): Address already in use\n"
    )


def test_two_settings_naming_one_port_are_a_configuration_error_naming_both() -> None:
    """It said `port N is in use (WORKER_HTTP_PORT)`, exit 1: the port was free, the clash
    was between the two settings, and APP_PORT went unnamed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.raises(ConfigError, match=f"^APP_PORT and WORKER_HTTP_PORT are both port {free}: "):
        check_ports([("127.0.0.1", free, "APP_PORT"), ("127.0.0.1", free, "WORKER_HTTP_PORT")])
    check_ports([("127.0.0.1", free, "APP_PORT")])  # and let go: the server binds it next


def test_one_port_of_two_settings_that_another_process_holds_is_in_use() -> None:
    """One port on two addresses, the second held by another process: that is no clash of
    the settings (the first address alone binds), and the second is named as in use."""
    with socket.socket() as held:
        held.bind(("127.0.0.2", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PortUnavailable, match=f"^port {port} is in use \\(WORKER_HTTP_PORT\\)"):
            check_ports([("127.0.0.1", port, "APP_PORT"), ("127.0.0.2", port, "WORKER_HTTP_PORT")])


def test_all_with_app_port_equal_to_worker_http_port_names_both_and_exits_2() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        **_UNREACHABLE,
        "APP_PORT": str(free),
        "WORKER_HTTP_PORT": str(free),
    }
    done = subprocess.run(
        [sys.executable, "-m", "reportsvc", "all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(
        f"reportsvc: configuration error: APP_PORT and WORKER_HTTP_PORT are both port {free}: "
    ), done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("host", ["999.1.1.1", "8.8.8.8"])
def test_a_free_port_on_a_host_this_machine_has_not_is_caught_before_anything_starts(
    host: str,
) -> None:
    """`dev --host 999.1.1.1 --port 0` skipped the check (port 0): the worker started, then
    uvicorn logged an ERROR and the process exited 3 with no reportsvc line."""
    with pytest.raises(PortUnavailable, match=f"^cannot listen on {host}:0 \\(--port\\)"):
        check_ports([(host, 0, "--port")])
    check_ports([("127.0.0.1", 0, "--port")])


def _decode(token: str, **kwargs: str) -> dict[str, object]:
    return jwt.decode(
        token,
        kwargs.get("secret", SECRET),
        algorithms=["HS256"],
        audience=kwargs.get("audience", "farmiq-api"),
        issuer=kwargs.get("issuer", "farmiq"),
    )


def test_token_prints_a_jwt_the_api_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "--tenant", "t-1", "--role", "tenant_admin", "--role", "viewer"]
    before = int(dt.datetime.now(dt.UTC).timestamp())
    assert main([*argv, "--sub", "user-7", "--ttl", "120"], {"JWT_SECRET": SECRET}) == 0
    token = capsys.readouterr().out.strip()
    claims = _decode(token)
    assert claims["sub"] == "user-7"
    assert claims["tenant_id"] == "t-1"
    assert claims["roles"] == ["tenant_admin", "viewer"]
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == 120
    assert before <= claims["iat"] <= before + 5
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(token, secret="another-secret-0123456789abcdef-0123")


def test_token_uses_the_configured_issuer_and_audience(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"JWT_SECRET": SECRET, "JWT_ISSUER": "iss-x", "JWT_AUDIENCE": "aud-x"}
    assert main(["token", "--role", "platform_admin"], env) == 0
    claims = _decode(capsys.readouterr().out.strip(), issuer="iss-x", audience="aud-x")
    assert claims["roles"] == ["platform_admin"]
    assert "tenant_id" not in claims


def test_token_needs_at_least_one_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["token", "--tenant", "t-1"], {"JWT_SECRET": SECRET})
    assert done.value.code == 2
    assert "--role" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--role", "bogus", "--tenant", "t-1"], "--role: invalid choice: 'bogus'"),
        (["--role", "viewer", "--tenant", "a b/../x"], "--tenant must be 1..128"),
        (["--role", "viewer", "--tenant", "t-1", "--ttl", "100000000000000"], "--ttl must be"),
        # str.isdigit() takes Arabic-Indic digits, which the variables refuse
        (["--role", "viewer", "--tenant", "t-1", "--ttl", "\u0663"], "--ttl: must be a whole"),
    ],
    ids=["unknown role", "malformed tenant", "ttl past ten years", "ttl in other digits"],
)
def test_token_refuses_what_the_api_would_refuse(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each printed a token (exit 0) that the API then answered 401 or 403 on every route."""
    try:
        code = main(["token", *argv], {"JWT_SECRET": SECRET})
    except SystemExit as done:  # argparse's own refusal
        code = int(str(done.code))
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert says in captured.err


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--job-type", "NOPE_EXPORT"], "job_type"),
        (["--job-type", "FEED_INTAKE_EXPORT", "--format", "xml"], "format"),
        (["--job-type", "KPI_FEEDING_EXPORT"], "requires barn_id"),
        (["--job-type", "FEED_INTAKE_EXPORT", "--farm-id", "farm-1"], "farm_id must be a UUID"),
        (
            [
                "--job-type",
                "FEED_INTAKE_EXPORT",
                "--start-date",
                "2026-02-01",
                "--end-date",
                "2026-01-01",
            ],
            "end_date must be on or after start_date",
        ),
        (["--job-type", "FEED_INTAKE_EXPORT", "--filter", "colour=red"], "unknown filter"),
        (["--job-type", "FEED_INTAKE_EXPORT", "--filter", "source"], "key=value"),
    ],
)
def test_export_refuses_an_invalid_request_in_one_line_with_exit_code_2(
    extra: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--tenant", "t-1", *extra], {}) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("reportsvc: ")
    assert says in lines[0]


def test_export_needs_the_upstream_url_of_its_job_type(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--tenant", "t-1", "--job-type", "TELEMETRY_EXPORT"]
    assert main(argv, {"CLOUD_FEED_SERVICE_URL": "http://feed"}) == 2
    err = capsys.readouterr().err
    assert err == (
        "reportsvc: configuration error: CLOUD_TELEMETRY_SERVICE_URL is required but not set\n"
    )


def _reportsvc(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        # the demo's data window follows its "now": the tests' clock, never the day they run
        env={"PATH": "/usr/bin:/bin", "DEMO_NOW": pinned_now().isoformat(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.clock
def test_export_demo_asks_its_demo_upstream_directly_whatever_proxy_the_environment_names(
    tmp_path: Path,
) -> None:
    """The demo upstream runs in the process, on loopback: a proxy (here one that refuses
    every connection) could never reach it."""
    output = tmp_path / "intake.csv"
    done = _reportsvc(
        "export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--output", str(output),
        HTTP_PROXY="http://127.0.0.1:9", ALL_PROXY="http://127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert output.stat().st_size > 0


@pytest.mark.clock
def test_export_demo_writes_the_file_and_prints_rows_bytes_and_sha256(tmp_path: Path) -> None:
    output = tmp_path / "intake.csv"
    done = _reportsvc(
        "export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--output", str(output)
    )
    assert done.returncode == 0, done.stderr
    # httpx's line per upstream page is off: on a terminal it broke the progress bar
    assert done.stderr == ""
    content = output.read_bytes()
    # counted as a client reads it: a quoted note may hold a line break
    header, *rows = csv.reader(io.StringIO(content.decode(), newline=""))
    assert header[:7] == [
        "id", "tenant_id", "farm_id", "barn_id", "batch_id", "device_id", "source"
    ]  # fmt: skip
    assert done.stdout == (
        f"{output}: rows={len(rows)} bytes={len(content)} "
        f"sha256={hashlib.sha256(content).hexdigest()}\n"
    )
    # no dates: the demo's last 7 days up to its now, newest first
    occurred = [dt.datetime.fromisoformat(row[header.index("occurred_at")]) for row in rows]
    now = pinned_now()
    assert rows and occurred == sorted(occurred, reverse=True)
    assert now - dt.timedelta(days=7) <= occurred[-1] and occurred[0] <= now
    assert [p.name for p in tmp_path.iterdir()] == ["intake.csv"], "a temporary file was left"


@pytest.mark.clock
def test_export_is_bounded_as_a_workers_export_is(tmp_path: Path) -> None:
    # issue 26, item 1: the one-shot export has the rows limit of a job (the demo's week of
    # feed intake is 168 records)
    output = tmp_path / "intake.csv"
    done = _reportsvc(
        "export",
        "--demo",
        "--job-type",
        "FEED_INTAKE_EXPORT",
        "--output",
        str(output),
        REPORT_MAX_EXPORT_ROWS="50",
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("reportsvc: export failed: EXPORT_LIMIT_EXCEEDED: ")
    assert "(REPORT_MAX_EXPORT_ROWS)" in done.stderr
    assert list(tmp_path.iterdir()) == [], "a partial file was left"


def test_export_that_cannot_write_its_file_fails_in_one_line_with_exit_code_1(
    tmp_path: Path,
) -> None:
    output = tmp_path / "missing-folder" / "intake.csv"
    done = _reportsvc(
        "export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--output", str(output)
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"reportsvc: cannot write {output}: ")
    assert done.stderr.count("\n") == 1


def test_dev_refuses_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["dev", "--port", "70000"])
    assert done.value.code == 2
    assert "0..65535" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d.write_bytes(b"a file, not a folder"), "File exists"),
        (lambda d: (d.mkdir(), (d / "secrets.json").write_bytes(b"garbage")), "JSON is malformed"),
        (
            lambda d: (d.mkdir(), (d / "jobs.sqlite3").write_bytes(b"garbage " * 100)),
            "file is not a database",
        ),
        (
            lambda d: (
                d.mkdir(),
                sqlite3.connect(d / "jobs.sqlite3").execute("PRAGMA user_version = 999"),
            ),
            "has schema version 999",
        ),
    ],
    ids=["a file", "bad secrets", "no database", "a newer database"],
)
def test_dev_names_a_data_folder_it_cannot_use_in_one_line_not_a_traceback(
    make: Callable[[Path], object],
    reason: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    make(data)
    assert main(["dev", "--data-dir", str(data), "--port", "0"], {}) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reportsvc: configuration error: --data-dir {data} cannot be used: ")
    assert reason in err and "Traceback" not in err and err.count("\n") == 1


def test_the_dev_banner_is_valid_shell_carrying_the_token_and_the_create_body() -> None:
    from entrypoints.dev import banner

    body = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "filters": {"source": "it's"}}
    text = banner("http://127.0.0.1:5129", "aaa.bbb.ccc", "t-demo", Path("/data dir"), body)
    shell = "\n".join(
        line for line in text.split("\n") if re.match(r"^(export|JOB=|URL=|curl|#)", line)
    )
    assert "export TOKEN=aaa.bbb.ccc" in shell
    assert "export BASE=http://127.0.0.1:5129" in shell
    checked = subprocess.run(["bash", "-n"], input=shell, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    create = next(line for line in shell.splitlines() if line.startswith("JOB="))
    words = shlex.split(create.split("|")[0])
    assert json.loads(words[words.index("-d") + 1]) == body
    assert 'curl -s -o report.csv "$BASE$URL"' in shell


# --- the processes' log lines ---

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSIsInRlbmFudF9pZCI6InQxIn0."
    "c2lnbmF0dXJlLXBhcnQtMTIzNDU2Nzg5MA"
)


@pytest.mark.parametrize(
    ("text", "secret_part"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        (f"decoded {JWT} for u1", JWT),
        ('GET /api/v1/reports/jobs/j1/file?token=eyJ0ZW5hbnQ.c2ln HTTP/1.1" 200', "eyJ0ZW5hbnQ"),
        ("url=/file?token=abc.def&x=1", "abc.def"),
        ("connecting to postgresql://report:s3cr3t-pw@db:5432/reports", "s3cr3t-pw"),
        ("amqp://guest:hunter2@mq:5672/%2F unreachable", "hunter2"),
    ],
)
def test_anything_shaped_like_a_secret_is_redacted(text: str, secret_part: str) -> None:
    out = redact(text)
    assert secret_part not in out
    assert REDACTED in out


def test_the_configured_secrets_are_redacted_wherever_they_appear() -> None:
    assert redact("key is my-plain-secret-value!", ["my-plain-secret-value"]) == (
        f"key is {REDACTED}!"
    )


def _emit(formatter: logging.Formatter, *secrets: str, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.cli.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        try:
            raise ValueError("boom with sv-token-123456789")
        except ValueError:
            logger.error("job %s failed\nsecond line", "j-1", exc_info=True, extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_text_record_is_one_key_value_line_without_secrets() -> None:
    out = _emit(
        TextFormatter(), "sv-token-123456789", job_id="j-1", note="token=abc", ids=["a", "b"]
    )
    assert out.count("\n") == 1
    assert "ids=a,b" in out
    assert "level=ERROR" in out
    assert 'msg="job j-1 failed\\nsecond line"' in out
    assert "job_id=j-1" in out
    assert "exc=" in out and "ValueError" in out
    assert "sv-token-123456789" not in out
    assert "token=abc" not in out


def test_a_json_record_is_one_object_per_line_without_secrets() -> None:
    out = _emit(JsonFormatter(), "sv-token-123456789", job_id="j-1", rows=3)
    assert out.count("\n") == 1
    record = json.loads(out)
    assert record["level"] == "ERROR"
    assert record["msg"] == "job j-1 failed\nsecond line"
    assert record["job_id"] == "j-1"
    assert record["rows"] == 3
    assert "ValueError" in record["exc"]
    assert "sv-token-123456789" not in out


def test_setup_logging_takes_the_level_and_the_secrets_from_settings() -> None:
    from entrypoints.runtime.logs import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    settings = Settings(log_level="WARNING", jwt_secret="jwt-secret-value-0123456789")
    try:
        setup_logging(settings, stream=stream)
        logging.getLogger("x").info("hidden")
        logging.getLogger("x").warning("secret jwt-secret-value-0123456789 here")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out = stream.getvalue()
    assert "hidden" not in out
    assert "jwt-secret-value-0123456789" not in out
    assert REDACTED in out


def test_a_librarys_warning_is_a_json_log_record_not_a_raw_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PyJWT warns at the first token signed or checked with a key under 32 bytes (we take 16,
    as FarmIQ's identity service may): printed raw on stderr, it broke LOG_FORMAT=json."""
    import warnings

    import jwt

    from entrypoints.runtime.logs import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    # captured by an earlier test and then restored by a catch_warnings of pytest's, the capture
    # would be a no-op here: start from none, as a process does
    logging.captureWarnings(False)
    try:
        setup_logging(Settings(log_format="json"), stream=stream)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            jwt.encode({"sub": "u"}, "sixteen-chars-ok", algorithm="HS256")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    lines = stream.getvalue().splitlines()
    assert lines and all(json.loads(line) for line in lines)
    assert "InsecureKeyLengthWarning" in stream.getvalue()
    assert capsys.readouterr().err == ""


def test_all_without_jwt_secret_stops_before_migrating_and_says_what_to_add(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "APP_PORT": "3000",
        # nothing listens here: the check comes before any connection
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1",
        "REPORT_DOWNLOAD_SECRET": "dev-report-secret",
    }
    assert main(["all"], env=env) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("reportsvc: configuration error: JWT_SECRET is required but not set: ")
    assert "HS256 key" in line and "identity service" in line and "16 characters" in line


@pytest.mark.parametrize(
    "otel",
    [{"OTEL_TRACES_EXPORTER": "zipkin"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}],
    ids=["exporter", "protocol"],
)
def test_all_with_a_bad_otel_variable_stops_before_migrating(
    otel: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's default command changed the schema, then stopped on the typo."""
    migrated: list[str] = []
    monkeypatch.setattr("entrypoints.cli._migrate", lambda url: migrated.append(url) or [])
    env = {
        "APP_PORT": "0",
        "WORKER_HTTP_PORT": "0",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1",
        "REPORT_DOWNLOAD_SECRET": "dev-report-secret",
        "JWT_SECRET": "jwt-secret-value-0123456789",
        "OTEL_TRACES_EXPORTER": "otlp",
        **otel,
    }
    assert main(["all"], env=env) == 2
    assert migrated == []
    assert "reportsvc: configuration error: OTEL_" in capsys.readouterr().err


class _Stopped(Exception):
    """Raised where a test has seen what it came for, before anything is served."""


@pytest.mark.parametrize(
    ("log_format", "said"),
    [
        ("json", '{"msg":"schema is up to date","applied":2}'),
        ("text", 'msg="schema is up to date" applied=2'),
    ],
)
def test_all_says_the_schema_is_up_to_date_as_a_log_record(
    log_format: str,
    said: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain print() on stdout: under LOG_FORMAT=json the one line of `all` no log
    collector could parse."""
    monkeypatch.setattr("entrypoints.cli._migrate", lambda url: ["0001_a", "0002_b"])

    def stop(settings: Settings) -> None:  # the next step of the start
        raise _Stopped

    monkeypatch.setattr("entrypoints.worker.warn_unconfigured_upstreams", stop)
    env = {**_UNREACHABLE, "JWT_SECRET": SECRET, "LOG_FORMAT": log_format}
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        with pytest.raises(_Stopped):
            main(["all"], env=env)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    if log_format == "json":
        record = json.loads(line)
        assert {k: record[k] for k in ("msg", "applied", "level")} == {
            **json.loads(said),
            "level": "INFO",
        }
    else:
        assert line.startswith("ts=") and line.endswith(f"logger=reportsvc {said}"), line


_PASSWORD = "pw-s3cret-9f2c"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # refused: libpq adds a line asking whether the server runs
        (f"postgresql://u:{_PASSWORD}@127.0.0.1:1/db", ["port 1 failed", "Is the server"]),
        # a token libpq cannot read is quoted back, and here that is the password
        (f"postgresql://u:{_PASSWORD}%ZZ@127.0.0.1:1/db", ["invalid percent-encoded token"]),
        # an unencoded "@": the password's tail becomes part of the host libpq looks up
        (f"postgresql://u:{_PASSWORD}@tail-{_PASSWORD}@127.0.0.1:1/db", ["127.0.0.1"]),
    ],
    ids=["refused", "percent", "at-sign"],
)
def test_migrate_failing_says_why_in_one_line_without_the_password(
    url: str, says: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """psycopg's text spans lines: `migrate failed: {exc}` broke an operator's log line in
    two, and libpq's quote of a token it could not read printed the password."""
    assert main(["migrate"], env={"DATABASE_URL": url}) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("reportsvc: migrate failed: ")
    assert all(said in line for said in says), line
    assert _PASSWORD not in line and "tail-" not in line, line


def test_migrate_failing_keeps_every_line_of_the_error_joined(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    said = (
        'connection failed: connection to server at "10.0.0.1", port 5432 failed: timeout\n'
        'connection to server at "10.0.0.2", port 5432 failed: FATAL:  no pg_hba.conf entry\n'
        "DETAIL:  the role has no password set\n\tHINT:  ask the administrator\n"
    )

    def failing(url: str) -> list[str]:
        raise psycopg.OperationalError(said)

    monkeypatch.setattr("adapters.postgres.migrate", failing)
    env = {"DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}
    assert main(["migrate"], env=env) == 1
    assert capsys.readouterr().err == (
        'reportsvc: migrate failed: connection failed: connection to server at "10.0.0.1", '
        'port 5432 failed: timeout; connection to server at "10.0.0.2", port 5432 failed: '
        "FATAL:  no pg_hba.conf entry; DETAIL:  the role has no password set; HINT:  ask the "
        "administrator\n"
    )


def test_token_leaves_out_the_claims_that_are_not_required(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "cli-test-jwt-secret-0123456789abcdef"
    env = {"JWT_SECRET": secret, "JWT_ISSUER": "", "JWT_AUDIENCE": ""}
    assert main(["token", "--tenant", str(uuid.uuid4()), "--role", "viewer"], env=env) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), secret, algorithms=["HS256"])
    assert "iss" not in claims and "aud" not in claims and "exp" in claims


# --- export options as flags (issue 18) ---

CLI = (sys.executable, "-m", "entrypoints.cli")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--csv-delimiter", ":"], "csv.delimiter"),
        (["--csv-line-ending", "cr"], "csv.line_ending"),
        (["--columns", "id,weight"], "unknown column 'weight'"),
        (["--columns", "id,id"], "named twice"),
        (["--timezone", "Mars/Base"], "unknown time zone"),
        (["--compression", "zip"], "compression"),
        (["--format", "xlsx", "--compression", "gzip"], "compression applies to csv and json"),
        (["--format", "json", "--csv-bom"], "csv options apply to format csv only"),
    ],
)
def test_export_refuses_a_bad_option_flag_in_one_line_with_exit_code_2(
    extra: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", "--tenant", "t-1", "--job-type", "FEED_INTAKE_EXPORT", *extra]
    assert main(argv, {}) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and says in lines[0], lines


@pytest.mark.clock
def test_export_demo_with_option_flags_writes_the_file_they_ask_for(tmp_path: Path) -> None:
    done = _reportsvc(
        "export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--output", str(tmp_path / "f"),
        "--compression", "gzip", "--csv-delimiter", "tab", "--csv-bom", "--csv-line-ending", "lf",
        "--columns", "occurred_at,id,quantity_kg", "--timezone", "Asia/Bangkok",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = gzip.decompress((tmp_path / "f").read_bytes()).decode()
    assert text.startswith("\ufeffoccurred_at\tid\tquantity_kg\n")
    _, *rows = csv.reader(io.StringIO(text[1:], newline=""), delimiter="\t")
    assert rows and all(row[0].endswith("+07:00") for row in rows)
    assert f"rows={len(rows)} " in done.stdout


@pytest.mark.clock
def test_export_demo_as_xlsx_writes_a_workbook_named_for_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--format", "xlsx"],
        env={"PATH": "/usr/bin:/bin", "DEMO_NOW": pinned_now().isoformat()},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    book = openpyxl.load_workbook(tmp_path / "feed_intake_export.xlsx", read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    assert rows[0][:3] == ("id", "tenant_id", "farm_id")
    assert f"rows={len(rows) - 1} " in done.stdout


@pytest.mark.clock
@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGTERM, 143, "stopped (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
)
def test_export_stopped_by_a_signal_leaves_no_file_and_says_so_in_one_line(
    signum: int,
    code: int,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM ended the process where it stood: the hidden temporary beside --output and
    the workbook's folder under TMPDIR stayed; Ctrl+C printed a KeyboardInterrupt traceback."""
    from adapters.upstream import HttpRecordSource

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pages = HttpRecordSource.pages

    def signalled_after_a_page(self: HttpRecordSource, request: Any) -> Any:
        for n, page in enumerate(pages(self, request)):
            if n == 1:
                signal.raise_signal(signum)
            yield page

    monkeypatch.setattr(HttpRecordSource, "pages", signalled_after_a_page)
    before = signal.getsignal(signal.SIGTERM)
    output = tmp_path / "out" / "t.xlsx"
    output.parent.mkdir()
    argv = ["export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--format", "xlsx"]
    assert (
        main([*argv, "--output", str(output)], env={"DEMO_NOW": pinned_now().isoformat()}) == code
    )
    assert capsys.readouterr().err == f"reportsvc: {said}\n"
    assert list(output.parent.iterdir()) == [], "a temporary was left beside the output"
    assert list(scratch.iterdir()) == [], "the workbook's temporary folder was left"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("kind", ["fifo", "folder", "-"])
def test_export_refuses_an_output_that_is_no_regular_file(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file is written beside its name and renamed into place: /dev/stdout, a FIFO or a
    folder was replaced by a regular file (as root, /dev/stdout itself)."""
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    given = "-" if kind == "-" else str(target)
    argv = ["export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--output", given]
    assert main(argv, env={}) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"reportsvc: --output {given} ")
    if kind != "-":
        assert target.exists() and not target.is_file()


@pytest.mark.clock
def test_export_through_a_symbolic_link_replaces_the_file_it_names(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_bytes(b"old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    argv = ["export", "--demo", "--job-type", "FEED_INTAKE_EXPORT", "--output", str(link)]
    assert main(argv, env={"DEMO_NOW": pinned_now().isoformat()}) == 0
    assert link.is_symlink() and link.resolve() == real
    assert real.read_bytes().startswith(b"id,tenant_id,")


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("::1", "http://[::1]:8080"),
        ("localhost", "http://localhost:8080"),
    ],
)
def test_the_url_shown_for_a_listening_host_is_one_curl_takes(host: str, url: str) -> None:
    """`dev --host ::1` printed export BASE=http://::1:43675, which curl refuses (rc 3)."""
    from entrypoints.runtime.serving import listening_url

    assert listening_url(host, 8080) == url


def test_dev_reads_none_of_the_settings_it_brings_itself(tmp_path: Path) -> None:
    """docs/operations.md: dev ignores DATABASE_URL, RABBITMQ_URL, EXPORT_ROOT and the
    upstream URLs; each stopped it (exit 2), a database URL's password shown."""
    from entrypoints.dev import dev_settings

    env = {
        "DATABASE_URL": "mysql://u:pw@h/db",
        "RABBITMQ_URL": "amqp://h/?heartbeat=x",
        "EXPORT_ROOT": "  ",
        "FILE_STORE": "s3",
        "FEED_SERVICE_URL": "ftp://feed",
        "LOG_LEVEL": "WARNING",  # the rest is read as ever
    }
    settings = dev_settings(env, tmp_path, "127.0.0.1", 0)
    assert settings.database_url is None and settings.file_store == "filesystem"
    assert settings.export_root == str(tmp_path / "exports")
    assert settings.log_level == "WARNING"
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        dev_settings({"LOG_LEVEL": "LOUD"}, tmp_path, "127.0.0.1", 0)
