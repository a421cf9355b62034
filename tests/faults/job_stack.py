"""A whole service for one fault test: ``migrate``, ``api`` and ``worker`` as real processes over
the shared PostgreSQL (the test's own database) and RabbitMQ (the test's own vhost), and the demo
upstream in this process, so that the test can inject its faults and see every request it got.

    with running_stack(database_url, amqp_url, tmp_path, UPSTREAM_RETRIES="2") as stack:
        job_id = stack.create(feed_job("2026-01-05", "2026-01-06"))
        job = stack.wait_status(job_id, "succeeded")
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from adapters.demo_upstream import (
    DEMO_BARN_ID,
    DEMO_FARM_ID,
    DEMO_TENANT,
    DemoUpstream,
    SeenRequest,
)

from ..integration.procs import (
    Proc,
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_worker,
    user_token,
)

JOBS = "/api/v1/reports/jobs"
FEED_PATH = "/api/v1/feed/intake-records"
KPI_PATH = "/api/v1/kpi/feeding"
TELEMETRY_PATH = "/api/v1/telemetry/readings"
WEIGHVISION_PATH = "/api/v1/weighvision/weight-aggregates"
TERMINAL = ("succeeded", "failed", "cancelled")


class TimedUpstream(DemoUpstream):
    """The demo upstream, remembering when (monotonic seconds) each request arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[tuple[float, SeenRequest]] = []

    def record(self, seen: SeenRequest) -> None:
        self.arrivals.append((time.monotonic(), seen))
        super().record(seen)

    def times_of(self, path: str) -> list[float]:
        return [at for at, seen in list(self.arrivals) if seen.path == path]


@dataclass
class Stack:
    procs: Procs
    env: dict[str, str]
    api: Proc
    worker: Proc | None
    base_url: str
    database_url: str
    export_root: Path
    token: str
    upstream: TimedUpstream
    workers: list[Proc] = field(default_factory=list)

    def http(self, **kwargs: Any) -> httpx.Client:
        """A client of the api as the tenant admin; ``kwargs`` replace its defaults."""
        defaults: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": {"Authorization": f"Bearer {self.token}"},
            "timeout": 10.0,
        }
        return httpx.Client(**(defaults | kwargs))

    def create(self, body: dict[str, Any]) -> str:
        with self.http() as http:
            answer = http.post(JOBS, json=body)
        assert answer.status_code == 201, answer.text
        job_id: str = answer.json()["id"]
        return job_id

    def jobs(self) -> dict[str, dict[str, Any]]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            rows = conn.execute("SELECT *, id::text AS id FROM report_jobs").fetchall()
        return {row["id"]: row for row in rows}

    def job(self, job_id: str) -> dict[str, Any]:
        return self.jobs()[job_id]

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.procs.procs)

    def wait_for(self, what: str, check: Callable[[], object], timeout: float) -> float:
        """Poll ``check()`` until it is true; returns the seconds it took."""
        began = time.monotonic()
        while not check():
            if time.monotonic() - began > timeout:
                try:
                    jobs: object = self.jobs()
                except psycopg.Error as exc:  # a fault test may have stopped the database
                    jobs = f"unreadable: {exc}"
                pytest.fail(f"{what} not within {timeout}s; jobs: {jobs}\n{self.describe()}")
            time.sleep(0.05)
        return time.monotonic() - began

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        wanted = statuses or TERMINAL
        self.wait_for(
            f"job {job_id} {'/'.join(wanted)}",
            lambda: self.job(job_id)["status"] in wanted,
            timeout,
        )
        return self.job(job_id)

    def files(self) -> list[Path]:
        """Every file under the export root, hidden temporaries included."""
        return sorted(p for p in self.export_root.rglob("*") if p.is_file())

    def start_worker(self) -> Proc:
        proc = start_worker(self.procs, self.env)
        self.workers.append(proc)
        return proc

    def worker_lines(self, proc: Proc, job_id: str) -> list[str]:
        """The worker's log lines about handling ``job_id``."""
        return [ln for ln in proc.output().splitlines() if job_id in ln and 'msg="job ' in ln]

    def wait_worker_lines(self, proc: Proc, job_id: str, timeout: float = 30.0) -> list[str]:
        """The worker's log lines about ``job_id``, once there is one. The worker writes its
        line after the job's row is final, so a test that has just seen the row must wait for
        the line (under load the gap is long enough to be seen)."""
        self.wait_for(
            f"{proc.name}'s line about job {job_id}",
            lambda: self.worker_lines(proc, job_id),
            timeout,
        )
        return self.worker_lines(proc, job_id)


@contextlib.contextmanager
def running_stack(
    database_url: str,
    amqp_url: str,
    tmp_path: Path,
    *,
    export_root: Path | None = None,
    upstream: dict[str, Any] | None = None,
    worker: bool = True,
    **env: str,
) -> Iterator[Stack]:
    """Migrate, then an api and (unless ``worker=False``) a worker; stopped on exit."""
    root = export_root or tmp_path / "exports"
    with (
        TimedUpstream(**(upstream or {})) as demo,
        Procs(tmp_path / "logs") as procs,
    ):
        assert demo.base_url is not None
        # one page after another unless a test asks for windows: these tests slow down and
        # count the pages of a 14-page export (windows: test_worker_crash.py, tests/unit)
        env = {"UPSTREAM_CONCURRENCY": "1"} | env
        full_env = service_env(database_url, amqp_url, root, demo.base_url, **env)
        migrated = run_reportsvc(full_env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        api, base_url = start_api(procs, full_env)
        stack = Stack(
            procs=procs,
            env=full_env,
            api=api,
            worker=None,
            base_url=base_url,
            database_url=database_url,
            export_root=root,
            token=user_token(full_env, DEMO_TENANT, "tenant_admin"),
            upstream=demo,
        )
        if worker:
            stack.worker = stack.start_worker()
        yield stack


def feed_job(start: str, end: str, fmt: str = "csv") -> dict[str, Any]:
    return {
        "job_type": "FEED_INTAKE_EXPORT",
        "format": fmt,
        "farm_id": DEMO_FARM_ID,
        "start_date": start,
        "end_date": end,
    }


def kpi_job(start: str, end: str) -> dict[str, Any]:
    return {
        "job_type": "KPI_FEEDING_EXPORT",
        "format": "csv",
        "farm_id": DEMO_FARM_ID,
        "barn_id": DEMO_BARN_ID,
        "start_date": start,
        "end_date": end,
    }


def weighvision_job(start: str, end: str) -> dict[str, Any]:
    return {
        "job_type": "WEIGHVISION_EXPORT",
        "format": "json",
        "farm_id": DEMO_FARM_ID,
        "start_date": start,
        "end_date": end,
    }


def telemetry_job(start: str, end: str) -> dict[str, Any]:
    return {
        "job_type": "TELEMETRY_EXPORT",
        "format": "csv",
        "farm_id": DEMO_FARM_ID,
        "start_date": start,
        "end_date": end,
    }
