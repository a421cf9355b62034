"""One version everywhere: ``reportsvc --version``, the OpenAPI document, the upstream
``User-Agent`` and tracing's ``service.version`` all say the installed distribution's version;
and ``python -m reportsvc`` is the console script."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.upstream.client import user_agent
from entrypoints.api import create_app
from entrypoints.cli import main
from entrypoints.settings import Settings
from tests.containers import in_memory_container

VERSION = importlib.metadata.version("farmiq-reportsvc")
SCRIPT = Path(sys.executable).with_name("reportsvc")  # the venv's console script


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )


def test_version_prints_the_name_and_the_installed_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"reportsvc {VERSION}\n"


@pytest.mark.parametrize("argv", [["--version"], ["migrate"], ["worker", "--help"]])
def test_python_m_reportsvc_answers_as_the_console_script_does(argv: list[str]) -> None:
    as_module = _run(sys.executable, "-m", "reportsvc", *argv)
    as_script = _run(str(SCRIPT), *argv)
    assert (as_module.returncode, as_module.stdout, as_module.stderr) == (
        as_script.returncode,
        as_script.stdout,
        as_script.stderr,
    )
    assert as_module.stdout or as_module.stderr


def test_the_openapi_document_states_the_package_version() -> None:
    container = in_memory_container(
        Settings(jwt_secret="version-test-jwt-secret-0123456789", download_secret="x" * 32)
    )
    schema = create_app(container).openapi_schema.to_schema()
    assert schema["info"]["version"] == VERSION


def test_the_upstream_user_agent_states_the_package_version() -> None:
    assert user_agent() == f"farmiq-reportsvc/{VERSION}"


def test_traces_state_the_package_version() -> None:
    from entrypoints.runtime.otel import _resource

    assert _resource("worker").attributes["service.version"] == VERSION
