"""The core installs on its own: a fresh venv with only farmiq-reportcore (and msgspec) in it.

Built from a copy of src/reportcore, so the build leaves nothing in the tree; installed with
the package index pip is configured with (msgspec is the one dependency it fetches).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import reportcore

CORE = Path(reportcore.__file__).parent
SERVICE_ONLY = ("litestar", "psycopg", "pika", "httpx", "uvicorn", "adapters", "entrypoints")

# another service's test: create a job over the in-memory adapters and read it back
CONSUMER = """
import datetime as dt

from reportcore import JobStatus, JobType, ReportFormat, Scope, ValidCreate, create_job
from reportcore.ports import JobQueue, JobRepository
from reportcore.testing import FakeClock, InMemoryJobRepository, InMemoryQueue

clock = FakeClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
jobs: JobRepository = InMemoryJobRepository()
queue: JobQueue = InMemoryQueue()
request = ValidCreate(
    job_type=JobType.FEED_INTAKE_EXPORT,
    format=ReportFormat.CSV,
    scope=Scope(start_date=dt.date(2026, 1, 1)),
    idempotency_key="k1",
)
created = create_job(
    request, tenant_id="t1", requested_by="u1", jobs=jobs, queue=queue, clock=clock
)
assert created.job.status is JobStatus.QUEUED and created.enqueued
stored = jobs.get(created.job.id, "t1")
assert stored is not None and stored.enqueued_at == clock.now()
print("consumer ok")
"""


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the core distribution and what it needs, nothing else."""
    root = tmp_path_factory.mktemp("core")
    source = root / "reportcore"
    shutil.copytree(CORE, source, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = root / "wheels"
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", wheels, source,
    )  # fmt: skip
    env = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    (wheel,) = wheels.glob("farmiq_reportcore-*.whl")
    _run(env / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    return env


def test_the_core_distribution_brings_msgspec_and_nothing_else(core_venv: Path) -> None:
    listed = json.loads(_run(core_venv / "bin" / "python", "-m", "pip", "list", "--format", "json"))
    names = {p["name"].lower() for p in listed} - {"pip", "setuptools"}
    assert names == {"farmiq-reportcore", "msgspec"}
    _run(core_venv / "bin" / "python", "-m", "pip", "check")


def test_importing_the_installed_core_loads_none_of_the_service(core_venv: Path) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        "import reportcore, reportcore.testing\n"
        f"names = {SERVICE_ONLY!r}\n"
        "loaded = [n for n in names if n in sys.modules]\n"
        "installed = [n for n in names if importlib.util.find_spec(n) is not None]\n"
        "print(json.dumps([reportcore.__file__, loaded, installed]))\n"
    )
    where, loaded, installed = json.loads(_run(core_venv / "bin" / "python", "-c", probe))
    assert str(core_venv) in where, "the core must come from the fresh venv"
    assert loaded == [] and installed == []


def test_a_consumer_of_the_in_memory_adapters_runs_and_passes_mypy_strict(
    core_venv: Path, tmp_path: Path
) -> None:
    (tmp_path / "consumer.py").write_text(CONSUMER, encoding="utf-8")
    assert _run(core_venv / "bin" / "python", "consumer.py", cwd=tmp_path) == "consumer ok\n"
    # mypy of this venv, reading the packages of the fresh one (py.typed shipped with them)
    _run(
        sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", "",
        "--python-executable", core_venv / "bin" / "python", "consumer.py",
        cwd=tmp_path,
    )  # fmt: skip
