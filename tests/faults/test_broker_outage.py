"""Issue 6, items 2 and 3: RabbitMQ stopped while jobs are created, and restarted mid-export.

Real ``reportsvc`` processes (migrate, api, worker) run against the shared PostgreSQL (a fresh
database per test) and a throwaway RabbitMQ node of this module (a vhost per test), which the
tests stop and start; the shared broker is never touched. The demo upstream runs in-process,
so that a test can slow the export down.

What "exactly once" is checked by:

- ``attempts`` is 1: a worker claims a queued job with a conditional write that counts the
  attempt, so a second run (or a concurrent one) would have made it 2 or found nothing to do;
- the worker logs exactly one finished export (``detail="<n> rows, <m> bytes"``) per job; any
  other line about the job is a duplicate delivery it acknowledged without effect;
- one file per job in the export folder and no temporary left;
- both queues of the vhost are empty afterwards: a redelivered duplicate was acknowledged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from ..conftest import REQUIRE_SERVICES
from ..integration.procs import (
    Proc,
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_worker,
    user_token,
)
from .throwaway_rabbit import ThrowawayRabbit, available

FEED_PATH = "/api/v1/feed/intake-records"
# Recovery after the broker is back: a job whose message the broker never confirmed is
# published again by the next recovery pass once it is 10 s old (Policy.republish_after_sec),
# the pass runs every REPORT_RECOVERY_INTERVAL_SEC (1 s here), the worker's publisher retries
# at most 5 s apart and its consumer at most 10 s apart. Measured: see docs/operations.md.
RECOVERY_BOUND_SEC = 25.0
JOB_DEADLINE_SEC = 60.0


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayRabbit]:
    """One throwaway node for the module (starting one takes ~5 s)."""
    if not available():
        reason = "rabbitmq-server is not installed: no throwaway broker"
        if REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
        pytest.skip(f"SKIPPED FAULTS: {reason}")
    with ThrowawayRabbit(tmp_path_factory.mktemp("rabbit")) as node:
        yield node


@pytest.fixture
def broker_url(rabbit: ThrowawayRabbit) -> Iterator[str]:
    """A fresh vhost on the throwaway node, running whatever the previous test left."""
    rabbit.ensure_running()
    url = rabbit.new_vhost_url()
    yield url
    rabbit.ensure_running()
    rabbit.delete_vhost(url)


@dataclass
class Stack:
    api: Proc
    worker: Proc
    base_url: str
    database_url: str
    export_root: Path
    token: str
    upstream: Any  # adapters.demo_upstream.DemoUpstream

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )

    def jobs(self) -> dict[str, dict[str, Any]]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT id::text AS id, status, attempts, enqueued_at, file_path, sha256,"
                " error_code FROM report_jobs"
            ).fetchall()
        return {row["id"]: row for row in rows}

    def files(self) -> list[Path]:
        return sorted(p for p in self.export_root.rglob("*") if p.is_file())

    def job_lines(self, job_id: str) -> list[str]:
        """The worker's log lines about one job's handling."""
        return [
            line
            for line in self.worker.output().splitlines()
            if job_id in line and 'msg="job ' in line
        ]


@pytest.fixture
def stack(database_url: str, broker_url: str, tmp_path: Path) -> Iterator[Stack]:
    from adapters.demo_upstream import DEMO_TENANT, DemoUpstream

    # 100 feed records a day: a two-week export is 14 pages, which the tests slow down
    with DemoUpstream(per_day=100) as upstream, Procs(tmp_path / "logs") as procs:
        assert upstream.base_url is not None
        export_root = tmp_path / "exports"
        env = service_env(
            database_url,
            broker_url,
            export_root,
            upstream.base_url,
            WORKER_CONCURRENCY="2",
            UPSTREAM_TIMEOUT_SEC="10",
        )
        migrated = run_reportsvc(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        api, base_url = start_api(procs, env)
        worker = start_worker(procs, env)
        yield Stack(
            api=api,
            worker=worker,
            base_url=base_url,
            database_url=database_url,
            export_root=export_root,
            token=user_token(env, DEMO_TENANT, "tenant_admin"),
            upstream=upstream,
        )


def feed_job(start: str, end: str) -> dict[str, str]:
    from adapters.demo_upstream import DEMO_FARM_ID

    return {
        "job_type": "FEED_INTAKE_EXPORT",
        "format": "csv",
        "farm_id": DEMO_FARM_ID,
        "start_date": start,
        "end_date": end,
    }


def wait_until(what: str, check: Any, timeout: float, stack: Stack) -> float:
    """Poll ``check()`` until true; returns the seconds it took."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            pytest.fail(
                f"{what} not within {timeout}s; jobs: {stack.jobs()}\n"
                + stack.worker.describe()
                + stack.api.describe()
            )
        time.sleep(0.1)
    return time.monotonic() - began


def ready_status(stack: Stack) -> int:
    return httpx.get(stack.base_url + "/api/ready", timeout=10.0).status_code


def finished_exports(stack: Stack, job_id: str) -> list[str]:
    """The worker's lines for runs of ``job_id`` that wrote a file."""
    return [line for line in stack.job_lines(job_id) if re.search(r"\d+ rows, \d+ bytes", line)]


def assert_ran_exactly_once(stack: Stack, job_id: str, job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1, job
    assert len(finished_exports(stack, job_id)) == 1, stack.job_lines(job_id)
    # every other delivery of the job was acknowledged without touching it
    for line in stack.job_lines(job_id):
        if line not in finished_exports(stack, job_id):
            assert "disposition=ack" in line, line
            assert re.search(r"status=(running|succeeded)", line), line
    path = stack.export_root / job["file_path"]
    assert path.is_file(), (job, stack.files())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == job["sha256"]


def assert_queues_drained(rabbit: ThrowawayRabbit, url: str) -> None:
    from adapters.rabbitmq import DEAD_LETTER_QUEUE, QUEUE

    depths = rabbit.queue_depths(url)
    assert depths.get(QUEUE) == (0, 0), depths
    assert depths.get(DEAD_LETTER_QUEUE) == (0, 0), depths


# --- item 2: the broker is stopped while jobs are created ---


def test_jobs_created_while_the_broker_is_stopped_each_run_once_when_it_is_back(
    stack: Stack, rabbit: ThrowawayRabbit, broker_url: str
) -> None:
    assert ready_status(stack) == 200
    rabbit.stop_app()

    # readiness tells a load balancer; liveness must not (a restart would not help)
    wait_until("/api/ready answering 503", lambda: ready_status(stack) == 503, 10.0, stack)
    assert httpx.get(stack.base_url + "/api/health", timeout=10.0).status_code == 200

    ranges = [
        ("2026-01-05", "2026-01-06"),
        ("2026-01-07", "2026-01-09"),
        ("2026-01-10", "2026-01-10"),
    ]
    created: list[str] = []
    with stack.http() as http:
        for start, end in ranges:
            began = time.monotonic()
            answer = http.post("/api/v1/reports/jobs", json=feed_job(start, end))
            took = time.monotonic() - began
            assert answer.status_code == 201, answer.text
            assert answer.json()["status"] == "queued"
            # a refused connection fails the publish at once; the client does not wait it out
            assert took < 3.0, took
            created.append(answer.json()["id"])

    # stored, not published, and nothing ran while the broker was down
    time.sleep(2.0)
    jobs = stack.jobs()
    assert set(jobs) == set(created)
    for job_id in created:
        assert jobs[job_id]["status"] == "queued"
        assert jobs[job_id]["enqueued_at"] is None
        assert jobs[job_id]["attempts"] == 0
    assert ready_status(stack) == 503

    rabbit.start_app()
    back = time.monotonic()
    # the probe connects afresh each time (no backoff of its own), so ready follows at once
    ready = wait_until("/api/ready answering 200", lambda: ready_status(stack) == 200, 10, stack)
    print(f"broker back -> /api/ready 200: {ready:.1f}s")
    wait_until(
        "every job succeeded",
        lambda: all(j["status"] == "succeeded" for j in stack.jobs().values()),
        JOB_DEADLINE_SEC,
        stack,
    )
    recovered = time.monotonic() - back
    print(f"broker back -> all {len(created)} jobs succeeded: {recovered:.1f}s")
    assert recovered < RECOVERY_BOUND_SEC

    jobs = stack.jobs()
    for job_id in created:
        assert_ran_exactly_once(stack, job_id, jobs[job_id])
    assert len(stack.files()) == len(created), stack.files()
    assert "recovery pass" in stack.worker.output()  # they went by recovery, not by hand

    # the API's own publisher is connected again: a new create is published at once
    with stack.http() as http:
        answer = http.post("/api/v1/reports/jobs", json=feed_job("2026-01-11", "2026-01-11"))
    assert answer.status_code == 201, answer.text
    fresh = answer.json()["id"]
    assert stack.jobs()[fresh]["enqueued_at"] is not None
    wait_until(
        "the new job succeeded",
        lambda: stack.jobs()[fresh]["status"] == "succeeded",
        JOB_DEADLINE_SEC,
        stack,
    )
    assert_ran_exactly_once(stack, fresh, stack.jobs()[fresh])
    assert stack.worker.returncode() is None and stack.api.returncode() is None
    assert_queues_drained(rabbit, broker_url)


# --- item 3: the broker restarts while a worker is mid-export ---


def test_a_broker_restart_mid_export_neither_loses_nor_repeats_the_job(
    stack: Stack, rabbit: ThrowawayRabbit, broker_url: str
) -> None:
    from adapters.demo_upstream import DEMO_END, DEMO_START

    # 14 pages a second apart: the export outlasts the restart
    stack.upstream.faults.hang(1.0, times=14, path=FEED_PATH)
    with stack.http() as http:
        answer = http.post("/api/v1/reports/jobs", json=feed_job(DEMO_START, DEMO_END))
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    wait_until(
        "the export under way",
        lambda: len(stack.upstream.requests_to(FEED_PATH)) >= 2,
        JOB_DEADLINE_SEC,
        stack,
    )
    assert stack.jobs()[job_id]["status"] == "running"

    down = time.monotonic()
    rabbit.restart()
    back = time.monotonic()
    print(f"broker down for {back - down:.1f}s (node stopped and started)")
    # the export went on through the outage, it was not abandoned and started over
    assert stack.jobs()[job_id]["status"] in ("running", "succeeded")
    assert stack.jobs()[job_id]["attempts"] == 1

    reconnected = wait_until(
        "the worker's consumer reconnected",
        lambda: "consumer connected to RabbitMQ" in stack.worker.output(),
        RECOVERY_BOUND_SEC,
        stack,
    )
    print(f"broker back -> worker consuming again: {reconnected:.1f}s")
    done = wait_until(
        "the job succeeded",
        lambda: stack.jobs()[job_id]["status"] == "succeeded",
        JOB_DEADLINE_SEC,
        stack,
    )
    print(f"broker back -> job succeeded: {time.monotonic() - back:.1f}s ({done:.1f}s after)")

    job = stack.jobs()[job_id]
    print("\n".join(["worker lines about the job:", *stack.job_lines(job_id)]))
    assert_ran_exactly_once(stack, job_id, job)
    # The message was unacknowledged when the broker went down, so the broker handed it out
    # again once the worker reconnected (persistent, in a durable queue: not lost). That
    # duplicate was acknowledged without effect: the job was running (or done) already.
    assert len(stack.job_lines(job_id)) == 2, stack.job_lines(job_id)
    assert stack.files() == [stack.export_root / job["file_path"]]
    # every page was fetched once: the export was not restarted
    assert len(stack.upstream.requests_to(FEED_PATH)) == 14
    rows = list(csv.DictReader(io.StringIO((stack.export_root / job["file_path"]).read_text())))
    ids = [row["id"] for row in rows]
    assert len(rows) == 1400 and len(set(ids)) == len(ids)
    assert stack.worker.returncode() is None
    # the redelivered message (if the broker redelivered it) was acknowledged
    wait_until(
        "both queues empty",
        lambda: rabbit.queue_depths(broker_url).get("report.jobs") == (0, 0),
        10.0,
        stack,
    )
    assert_queues_drained(rabbit, broker_url)
