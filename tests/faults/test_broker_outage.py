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
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import REQUIRE_SERVICES
from .job_stack import FEED_PATH, Stack, feed_job, running_stack
from .throwaway_rabbit import ThrowawayRabbit, available

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


@pytest.fixture
def stack(database_url: str, broker_url: str, tmp_path: Path) -> Iterator[Stack]:
    # 100 feed records a day: a two-week export is 14 pages, which the tests slow down
    with running_stack(
        database_url,
        broker_url,
        tmp_path,
        upstream={"per_day": 100},
        WORKER_CONCURRENCY="2",
        WORKER_TENANT_CONCURRENCY="2",  # one tenant: it may hold both slots
        UPSTREAM_TIMEOUT_SEC="10",
    ) as stack:
        yield stack


def job_lines(stack: Stack, job_id: str) -> list[str]:
    """The worker's log lines about one job's handling."""
    assert stack.worker is not None
    return stack.worker_lines(stack.worker, job_id)


def ready_status(stack: Stack) -> int:
    return httpx.get(stack.base_url + "/api/ready", timeout=10.0).status_code


def finished_exports(stack: Stack, job_id: str) -> list[str]:
    """The worker's lines for runs of ``job_id`` that wrote a file."""
    return [line for line in job_lines(stack, job_id) if re.search(r"\d+ rows, \d+ bytes", line)]


def assert_ran_exactly_once(stack: Stack, job_id: str, job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1, job
    assert len(finished_exports(stack, job_id)) == 1, job_lines(stack, job_id)
    # every other delivery of the job was acknowledged without touching it
    for line in job_lines(stack, job_id):
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
    stack.wait_for("/api/ready answering 503", lambda: ready_status(stack) == 503, 10.0)
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
    ready = stack.wait_for("/api/ready answering 200", lambda: ready_status(stack) == 200, 10)
    print(f"broker back -> /api/ready 200: {ready:.1f}s")
    stack.wait_for(
        "every job succeeded",
        lambda: all(j["status"] == "succeeded" for j in stack.jobs().values()),
        JOB_DEADLINE_SEC,
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
    stack.wait_for(
        "the new job succeeded",
        lambda: stack.jobs()[fresh]["status"] == "succeeded",
        JOB_DEADLINE_SEC,
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
    stack.wait_for(
        "the export under way",
        lambda: len(stack.upstream.requests_to(FEED_PATH)) >= 2,
        JOB_DEADLINE_SEC,
    )
    assert stack.jobs()[job_id]["status"] == "running"

    down = time.monotonic()
    rabbit.restart()
    back = time.monotonic()
    print(f"broker down for {back - down:.1f}s (node stopped and started)")
    # the export went on through the outage, it was not abandoned and started over
    assert stack.jobs()[job_id]["status"] in ("running", "succeeded")
    assert stack.jobs()[job_id]["attempts"] == 1

    reconnected = stack.wait_for(
        "the worker's consumer reconnected",
        lambda: "consumer connected to RabbitMQ" in stack.worker.output(),
        RECOVERY_BOUND_SEC,
    )
    print(f"broker back -> worker consuming again: {reconnected:.1f}s")
    done = stack.wait_for(
        "the job succeeded",
        lambda: stack.jobs()[job_id]["status"] == "succeeded",
        JOB_DEADLINE_SEC,
    )
    print(f"broker back -> job succeeded: {time.monotonic() - back:.1f}s ({done:.1f}s after)")

    job = stack.jobs()[job_id]
    print("\n".join(["worker lines about the job:", *job_lines(stack, job_id)]))
    assert_ran_exactly_once(stack, job_id, job)
    # The message was unacknowledged when the broker went down, so the broker handed it out
    # again once the worker reconnected (persistent, in a durable queue: not lost). That
    # duplicate was acknowledged without effect: the job was running (or done) already.
    assert len(job_lines(stack, job_id)) == 2, job_lines(stack, job_id)
    assert stack.files() == [stack.export_root / job["file_path"]]
    # every page was fetched once: the export was not restarted
    assert len(stack.upstream.requests_to(FEED_PATH)) == 14
    rows = list(csv.DictReader(io.StringIO((stack.export_root / job["file_path"]).read_text())))
    ids = [row["id"] for row in rows]
    assert len(rows) == 1400 and len(set(ids)) == len(ids)
    assert stack.worker.returncode() is None
    # the redelivered message (if the broker redelivered it) was acknowledged
    stack.wait_for(
        "both queues empty",
        lambda: rabbit.queue_depths(broker_url).get("report.jobs") == (0, 0),
        10.0,
    )
    assert_queues_drained(rabbit, broker_url)
