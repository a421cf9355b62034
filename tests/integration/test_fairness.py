"""Issue 26, row 14 through real processes (``api`` and ``worker`` over PostgreSQL and
RabbitMQ, the demo upstream in this process): one tenant's backlog neither takes every create
nor delays another tenant's job by more than the job the worker is running.

- at ``WORKER_CONCURRENCY=1``, a tenant's one job created behind another tenant's backlog of 30
  runs right after the job running when it was created (the old worker ran the whole backlog
  first: the queue is first in, first out);
- 300 concurrent creates of one tenant against ``REPORT_MAX_UNFINISHED_JOBS=100``: exactly 100
  are stored, the rest are 429 ``TOO_MANY_JOBS`` with ``Retry-After``, a replay still answers
  200, and another tenant still creates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from adapters.demo_upstream import DemoUpstream
from reportcore.jobs import JobType

from .procs import Procs, run_reportsvc, service_env, start_api, start_worker, user_token
from .test_end_to_end import demo_scope

KPI_PATH = "/api/v1/kpi/feeding"
PAGE_SEC = 0.5  # each KPI job is one upstream request, answered this late
BACKLOG = 30
DEADLINE_SEC = 120.0
BUSY, QUIET = "tenant-busy", "tenant-quiet"


def body(**extra: Any) -> dict[str, Any]:
    job_type = JobType.KPI_FEEDING_EXPORT
    return {"job_type": job_type.value, "format": "csv", **demo_scope(job_type), **extra}


def client(env: dict[str, str], base_url: str, tenant: str) -> httpx.Client:
    token = user_token(env, tenant, "tenant_admin")
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=base_url, headers=headers, timeout=30.0)


def statuses(database_url: str, tenant: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM report_jobs WHERE tenant_id = %s GROUP BY 1",
            (tenant,),
        ).fetchall()
    return {status: count for status, count in rows}


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SEC
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_another_tenants_job_waits_for_the_running_job_not_for_the_backlog(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with DemoUpstream() as upstream, Procs(tmp_path / "logs") as procs:
        upstream.faults.hang(PAGE_SEC, times=10_000, path=KPI_PATH)
        assert upstream.base_url is not None
        env = service_env(
            database_url,
            amqp_url,
            tmp_path / "exports",
            upstream.base_url,
            WORKER_CONCURRENCY="1",
        )
        assert run_reportsvc(env, "migrate").returncode == 0
        _, base_url = start_api(procs, env)
        start_worker(procs, env)
        with client(env, base_url, BUSY) as busy, client(env, base_url, QUIET) as quiet:
            for _ in range(BACKLOG):
                assert busy.post("/api/v1/reports/jobs", json=body()).status_code == 201
            wait_until(lambda: statuses(database_url, BUSY).get("running") == 1, "a busy job")
            done_before = statuses(database_url, BUSY).get("succeeded", 0)
            answer = quiet.post("/api/v1/reports/jobs", json=body())
            assert answer.status_code == 201, answer.text
            lone = answer.json()["id"]
            wait_until(
                lambda: quiet.get(f"/api/v1/reports/jobs/{lone}").json()["status"] == "succeeded",
                "the quiet tenant's job",
            )
            done_after = statuses(database_url, BUSY).get("succeeded", 0)
            # and the backlog still runs to its end, each job once
            wait_until(
                lambda: statuses(database_url, BUSY) == {"succeeded": BACKLOG}, "the backlog"
            )
    # the old worker ran the whole backlog first (done_after == 30): first in, first out
    assert done_after <= done_before + 2, (done_before, done_after)
    assert done_after < BACKLOG


def test_a_tenant_creating_300_jobs_at_once_gets_100_and_429s_beyond(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with Procs(tmp_path / "logs") as procs:
        # no worker: nothing finishes, so the cap is what stops the creates
        env = service_env(
            database_url,
            amqp_url,
            tmp_path / "exports",
            "http://127.0.0.1:9",
            REPORT_MAX_UNFINISHED_JOBS="100",
        )
        assert run_reportsvc(env, "migrate").returncode == 0
        _, base_url = start_api(procs, env)
        with client(env, base_url, BUSY) as busy, client(env, base_url, QUIET) as quiet:
            first = busy.post("/api/v1/reports/jobs", json=body(idempotency_key="first"))
            assert first.status_code == 201

            def create(n: int) -> httpx.Response:
                return busy.post("/api/v1/reports/jobs", json=body(idempotency_key=f"k{n}"))

            with ThreadPoolExecutor(max_workers=16) as pool:
                answers = list(pool.map(create, range(300)))
            replay = busy.post("/api/v1/reports/jobs", json=body(idempotency_key="first"))
            other = quiet.post("/api/v1/reports/jobs", json=body())
    codes = [a.status_code for a in answers]
    assert (codes.count(201), codes.count(429)) == (99, 201), "100 with the first"
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["retry-after"] == "30"
    assert refused.json()["error"]["code"] == "TOO_MANY_JOBS"
    assert refused.json()["error"]["traceId"] == refused.headers["x-trace-id"]
    assert statuses(database_url, BUSY) == {"queued": 100}
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert other.status_code == 201, "another tenant is not held by this one's cap"
