"""Issue 19: the image's default command, ``reportsvc all``, as FarmIQ's compose runs it.

The command line is read from the Dockerfile's ``CMD`` (only ``reportsvc`` is swapped for this
interpreter's module, as every process test does), the environment is the compose file's block
for the service plus ``JWT_SECRET`` (hosts made local: this machine's PostgreSQL database,
RabbitMQ vhost and a demo upstream). One process migrates the empty database, serves the API on
port 3000, runs a job to a downloaded file, and on SIGTERM hands back the job it is running and
exits 0, leaving no job ``running``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from adapters.demo_upstream import (
    DEMO_END,
    DEMO_FARM_ID,
    DEMO_START,
    DEMO_TENANT,
    DemoUpstream,
)
from tests.dockerfile import image_command

from .procs import JWT_SECRET, REPORTSVC, Procs, base_env, user_token

FEED_PATH = "/api/v1/feed/intake-records"
PAGE_SEC = 1.0
# the page in flight, the consumer's and publisher's stop ticks, closing connections
EXIT_BOUND_SEC = PAGE_SEC + 5.0
JOB = {
    "job_type": "FEED_INTAKE_EXPORT",
    "format": "csv",
    "farm_id": DEMO_FARM_ID,
    "start_date": DEMO_START,
    "end_date": DEMO_END,
}


COMPOSE_PORT = 3000


def compose_port() -> int:
    """The compose file's APP_PORT, 3000, when this machine has it free; else any free port
    (0), so that a stray listener fails no run (tests/unit/test_dockerfile.py checks 3000)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", COMPOSE_PORT))
        except OSError:
            return 0
    return COMPOSE_PORT


def compose_env(
    database_url: str, amqp_url: str, export_root: Path, feed_url: str, port: int
) -> dict[str, str]:
    """The service's environment block in FarmIQ's docker-compose.yml, plus JWT_SECRET; only
    what points at other containers is local here."""
    return base_env(
        NODE_ENV="production",  # ignored, as are the DD_* lines
        APP_PORT=str(port),
        DATABASE_URL=database_url,
        RABBITMQ_URL=amqp_url,
        REPORT_DOWNLOAD_SECRET="dev-report-secret",
        EXPORT_ROOT=str(export_root),
        WORKER_CONCURRENCY="1",
        CLOUD_FEED_SERVICE_URL=feed_url,
        DD_SERVICE="cloud-reporting-export-service",
        JWT_SECRET=JWT_SECRET,
        # the compose binds every interface; here only this machine's
        HOST="127.0.0.1",
        # one page at a time, so that the shutdown below meets an export mid-page
        UPSTREAM_CONCURRENCY="1",
    )


def _upstream_ids(feed_url: str) -> list[str]:
    """The ids the feed service holds for the job's scope, paged as the contract says."""
    params: dict[str, Any] = {
        "tenantId": DEMO_TENANT,
        "farmId": DEMO_FARM_ID,
        "start": f"{DEMO_START}T00:00:00Z",
        "end": f"{DEMO_END}T23:59:59Z",
        "limit": 100,
    }
    ids: list[str] = []
    cursor = None
    while True:
        page = httpx.get(
            feed_url + FEED_PATH, params=params | ({"cursor": cursor} if cursor else {})
        ).json()
        ids += [item["id"] for item in page["items"]]
        cursor = page.get("nextCursor")
        if not cursor:
            return ids


def _row(database_url: str, job_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "SELECT status::text, lease_owner, attempts FROM report_jobs WHERE id = %s", (job_id,)
        )
        status, owner, attempts = cur.fetchone() or (None, None, None)
    return {"status": status, "lease_owner": owner, "attempts": attempts}


def _running(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM report_jobs WHERE status = 'running'").fetchone()
    assert row is not None
    return int(row[0])


def _wait(http: httpx.Client, job_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = http.get(f"/api/v1/reports/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout}s"
        time.sleep(0.1)


def test_the_images_command_migrates_serves_runs_a_job_and_stops_cleanly_on_sigterm(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    argv = image_command("production")
    assert argv[:2] == ["reportsvc", "all"], argv
    with DemoUpstream() as upstream, Procs(tmp_path / "logs") as procs:
        assert upstream.base_url is not None
        port = compose_port()
        env = compose_env(database_url, amqp_url, tmp_path / "exports", upstream.base_url, port)
        proc = procs.start("all", [*REPORTSVC, *argv[1:]], env)
        base_url = proc.wait_for(r"msg=listening .*?url=(http://\S+)").group(1)
        if port:
            assert base_url.endswith(f":{COMPOSE_PORT}"), base_url
        output = proc.output()
        assert "schema is up to date" in output  # migrated an empty database first
        # the compose passes no telemetry or WeighVision URL: said once, at start
        assert "CLOUD_TELEMETRY_SERVICE_URL is not set" in output
        assert "CLOUD_WEIGHVISION_READMODEL_URL is not set" in output

        # the compose healthcheck: wget --spider sends HEAD
        assert httpx.head(base_url + "/api/health").status_code == 200
        assert httpx.get(base_url + "/api/health").text == "OK"

        token = user_token(env, DEMO_TENANT, "tenant_admin")
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0
        ) as http:
            # a job end to end, to a downloaded file
            created = http.post("/api/v1/reports/jobs", json=JOB)
            assert created.status_code == 201, created.text
            job = _wait(http, created.json()["id"], "succeeded", "failed")
            assert job["status"] == "succeeded", job
            link = http.get(f"/api/v1/reports/jobs/{job['id']}/download")
            assert link.status_code == 200, link.text
            body = httpx.get(base_url + link.json()["download_url"]).content
            assert hashlib.sha256(body).hexdigest() == job["sha256"]
            ids = [r["id"] for r in csv.DictReader(io.StringIO(body.decode()))]
            assert sorted(ids) == sorted(_upstream_ids(upstream.base_url))

            # a second export, slowed down, is running when SIGTERM comes
            upstream.faults.hang(PAGE_SEC, times=30, path=FEED_PATH)
            pages_before = len(upstream.requests_to(FEED_PATH))
            second = http.post("/api/v1/reports/jobs", json=JOB | {"idempotency_key": "second"})
            assert second.status_code == 201, second.text
            second_id = second.json()["id"]
            _wait(http, second_id, "running")
            deadline = time.monotonic() + 30.0
            while len(upstream.requests_to(FEED_PATH)) < pages_before + 1:
                assert time.monotonic() < deadline, "the second export never asked upstream"
                time.sleep(0.05)

        began = time.monotonic()
        proc.send(signal.SIGTERM)
        code = proc.wait(EXIT_BOUND_SEC + 30.0)
        took = time.monotonic() - began
        print(f"reportsvc all SIGTERM mid-export -> exited {code} in {took:.2f}s")
        assert code == 0, proc.describe()
        assert took <= EXIT_BOUND_SEC, proc.describe()

        handed = _row(database_url, second_id)
        assert handed["status"] == "queued" and handed["lease_owner"] is None, handed
        assert _running(database_url) == 0
        assert "job requeued" in proc.output() or "disposition=requeue" in proc.output()
