"""Fairness between tenants: how long one tenant's job waits behind another tenant's backlog.

Method. As bench/api.py: a fresh PostgreSQL database and RabbitMQ vhost, ``reportsvc migrate``,
then one ``reportsvc api`` and one ``reportsvc worker`` (``WORKER_CONCURRENCY`` from
``--concurrency``, default 1: the default of the service) as real processes. The upstream is
the demo upstream in this process, answering each KPI request ``--page-ms`` late (a KPI export
is one request, so a job takes about that long). First the quiet tenant's one job runs alone
(``alone_s``: created to finished, from the job's own ``created_at`` and ``finished_at``).
Then the busy tenant creates ``--backlog`` jobs (16 clients at once), and once they are
created and the first is running the quiet tenant creates one more: ``behind_backlog_s`` is
its wait from created to finished, ``busy_jobs_done_first`` how many of the backlog finished
before it, and ``backlog_s`` the time from the first busy create until the backlog finished.

    .venv/bin/python bench/fairness.py                   # backlog 100, ~35 s before the fix
    .venv/bin/python bench/fairness.py --concurrency 4
    .venv/bin/python bench/fairness.py --smoke           # backlog 10, ~10 s
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import JOBS, service  # bench/, the script's own folder
from common import figure, parser
from tests.integration.procs import start_api, start_worker, user_token

from adapters.demo_upstream import (
    DEMO_BARN_ID,
    DEMO_END,
    DEMO_FARM_ID,
    DEMO_START,
    DemoUpstream,
)

KPI_PATH = "/api/v1/kpi/feeding"
BUSY, QUIET = "tenant-busy", "tenant-quiet"
BODY = {
    "job_type": "KPI_FEEDING_EXPORT",
    "format": "csv",
    "farm_id": DEMO_FARM_ID,
    "barn_id": DEMO_BARN_ID,
    "start_date": DEMO_START,
    "end_date": DEMO_END,
}
TIMEOUT_SEC = 600.0


def statuses(database_url: str, tenant: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM report_jobs WHERE tenant_id = %s GROUP BY 1",
            (tenant,),
        ).fetchall()
    return {status: count for status, count in rows}


def took(database_url: str, job_id: str) -> float:
    """created_at to finished_at of a finished job, seconds."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at) FROM report_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None and row[0] is not None, job_id
    return float(row[0])


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SEC
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def finished(http: httpx.Client, job_id: str) -> bool:
    status = http.get(f"{JOBS}/{job_id}").json()["status"]
    if status in ("failed", "cancelled"):
        raise SystemExit(f"job {job_id} ended {status}")
    return bool(status == "succeeded")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--backlog", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--page-ms", type=float, default=300.0)
    args = p.parse_args()
    backlog = 10 if args.smoke else args.backlog
    with DemoUpstream() as upstream:
        upstream.faults.hang(args.page_ms / 1000, times=1_000_000, path=KPI_PATH)
        assert upstream.base_url is not None
        with service(upstream.base_url, WORKER_CONCURRENCY=str(args.concurrency)) as (procs, env):
            database_url = env["DATABASE_URL"]
            _, base_url = start_api(procs, env)
            start_worker(procs, env)
            clients = {
                tenant: httpx.Client(
                    base_url=base_url,
                    headers={"Authorization": f"Bearer {user_token(env, tenant)}"},
                    timeout=30.0,
                )
                for tenant in (BUSY, QUIET)
            }
            busy, quiet = clients[BUSY], clients[QUIET]
            try:
                alone = quiet.post(JOBS, json=BODY).json()["id"]
                wait_for(lambda: finished(quiet, alone), "the job alone")
                began = time.monotonic()
                with ThreadPoolExecutor(16) as pool:
                    codes = list(
                        pool.map(lambda _: busy.post(JOBS, json=BODY).status_code, range(backlog))
                    )
                if set(codes) != {201}:
                    raise SystemExit(f"the backlog's creates answered {sorted(set(codes))}")
                wait_for(lambda: statuses(database_url, BUSY).get("running", 0) > 0, "a busy job")
                lone = quiet.post(JOBS, json=BODY).json()["id"]
                wait_for(lambda: finished(quiet, lone), "the job behind the backlog")
                done_first = statuses(database_url, BUSY).get("succeeded", 0)
                wait_for(
                    lambda: statuses(database_url, BUSY) == {"succeeded": backlog}, "the backlog"
                )
                backlog_s = time.monotonic() - began
            finally:
                for http in clients.values():
                    http.close()
            figure("worker_concurrency", args.concurrency)
            figure("backlog_jobs", backlog)
            figure("alone_s", took(database_url, alone), "s")
            figure("behind_backlog_s", took(database_url, lone), "s")
            figure("busy_jobs_done_first", done_first)
            figure("backlog_s", backlog_s, "s")


if __name__ == "__main__":
    main()
