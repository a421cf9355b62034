"""Issue 6 item 5: the upstream misbehaves for real (the in-process demo upstream answers 5xx, 429
with Retry-After, hangs past UPSTREAM_TIMEOUT_SEC, drops connections, refuses with a 4xx, sends a
page that is not JSON) while real ``reportsvc`` api and worker processes run the jobs.

Transient faults are retried inside the source, per page, with backoff; what is left fails the
job, and the job-level retry policy says which failures get a new attempt:

- **final** (``failed`` on the first attempt, never run again): ``UPSTREAM_UNAVAILABLE`` (the
  page's retries are spent), ``UPSTREAM_REJECTED`` (a 4xx other than 429),
  ``UPSTREAM_BAD_RESPONSE``, ``STORAGE_FAILED``: running the export again would meet the same
  answer, and the page-level retries already covered the transient ones;
- **a new attempt** (``running -> queued``, ``attempts`` + 1): only a lost worker (its lease ran
  out: killed, or stalled) and a worker that hands its job back on SIGTERM (test_shutdown.py);
  after ``REPORT_MAX_ATTEMPTS`` lost leases the job fails with ``WORKER_LOST``.

A page the upstream is slow to give must not pass for a lost worker: the worker renews the lease
from a thread while the source waits and retries, so here, with a lease (2 s) much shorter than
the outage (5.5 s), the job still fails once, on its first attempt, with UPSTREAM_UNAVAILABLE.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from pathlib import Path

from .job_stack import (
    FEED_PATH,
    KPI_PATH,
    TELEMETRY_PATH,
    WEIGHVISION_PATH,
    feed_job,
    kpi_job,
    running_stack,
    telemetry_job,
    weighvision_job,
)

TIMEOUT_SEC = 0.5  # UPSTREAM_TIMEOUT_SEC
RETRIES = 3  # UPSTREAM_RETRIES: tries after the first, per page
BACKOFF_BASE_SEC = 0.5  # UpstreamConfig.backoff_base_sec
BACKOFF_MAX_SEC = 8.0  # UpstreamConfig.backoff_max_sec
LEASE_SEC = 2.0  # REPORT_LEASE_SEC, shorter than a persistent outage takes to give up


def outage_bound_sec(timeout: float, retries: int, base: float, cap: float) -> float:
    """The longest a page can take before the job fails ``UPSTREAM_UNAVAILABLE``: every try
    waits out the timeout (the worst case: an upstream that hangs), and between tries the
    backoff sleeps at most ``min(cap, base * 2**n)`` (full jitter draws below it)."""
    return (retries + 1) * timeout + sum(min(cap, base * 2**n) for n in range(retries))


# measured from the claim (started_at) to the failure (finished_at): a connect per try, the
# claim's and the failure's writes
OVERHEAD_SEC = 1.5


def env() -> dict[str, str]:
    return {
        "UPSTREAM_TIMEOUT_SEC": str(TIMEOUT_SEC),
        "UPSTREAM_RETRIES": str(RETRIES),
        "REPORT_LEASE_SEC": str(LEASE_SEC),
        "WORKER_CONCURRENCY": "3",
        "WORKER_TENANT_CONCURRENCY": "3",  # one tenant: it may hold every slot
    }


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_transient_5xx_429_timeouts_and_drops_are_retried_and_the_file_is_correct(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    # 100 records a day: two weeks are 14 pages. A fault with after=2 lets two requests
    # through once the one before it is spent (the retry of that page among them)
    with running_stack(
        database_url, amqp_url, tmp_path, upstream={"per_day": 100}, **env()
    ) as stack:
        faults = stack.upstream.faults
        faults.status(503, path=FEED_PATH)  # request 0
        faults.status(429, retry_after=1, path=FEED_PATH, after=2)  # request 3
        faults.hang(3.0, path=FEED_PATH, after=2)  # request 6: the client gives up at 0.5 s
        faults.drop(path=FEED_PATH, after=2)  # request 10
        faults.status(502, times=2, path=FEED_PATH, after=2)  # requests 14 and 15
        injected = faults.pending

        job_id = stack.create(feed_job("2026-01-05", "2026-01-18"))
        job = stack.wait_status(job_id)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1 and job["error_code"] is None
        assert faults.pending == 0

        times = stack.upstream.times_of(FEED_PATH)
        # every faulty answer was followed by one more try of the same page
        assert len(times) == 14 + injected, len(times)
        # Retry-After: 1 was honoured; the timed-out try waited the timeout out
        assert times[4] - times[3] >= 0.95, times[3:5]
        assert times[7] - times[6] >= TIMEOUT_SEC, times[6:8]
        # a retry never waits longer than the capped backoff (plus a timeout for the hang)
        for before, after in ((0, 1), (10, 11), (14, 15), (15, 16)):
            assert times[after] - times[before] < BACKOFF_MAX_SEC, (before, after, times)

        # the file is the one a fault-free run writes, byte for byte
        clean_id = stack.create(feed_job("2026-01-05", "2026-01-18"))
        clean = stack.wait_status(clean_id)
        assert clean["status"] == "succeeded", clean
        assert job["sha256"] == clean["sha256"] and job["size_bytes"] == clean["size_bytes"]
        path = Path(job["file_path"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == job["sha256"]
        ids = [row["id"] for row in rows_of(path)]
        assert len(ids) == 1400 and len(set(ids)) == 1400
        assert stack.files() == sorted([path, Path(clean["file_path"])])
        assert stack.worker is not None and stack.worker.returncode() is None


def test_an_outage_a_4xx_and_a_malformed_page_each_fail_the_job_once_with_their_code(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with running_stack(database_url, amqp_url, tmp_path, **env()) as stack:
        faults = stack.upstream.faults
        faults.hang(30.0, times=100, path=TELEMETRY_PATH)  # an upstream that never answers
        faults.status(403, times=100, path=KPI_PATH)
        faults.malformed(times=100, path=WEIGHVISION_PATH)

        outage = stack.create(telemetry_job("2026-01-05", "2026-01-06"))
        rejected = stack.create(kpi_job("2026-01-05", "2026-01-06"))
        malformed = stack.create(weighvision_job("2026-01-05", "2026-01-06"))

        job = stack.wait_status(outage, timeout=30.0)
        assert job["status"] == "failed", job
        assert job["error_code"] == "UPSTREAM_UNAVAILABLE", job
        assert TELEMETRY_PATH in job["error_message"]
        assert f"gave up after {RETRIES + 1} tries" in job["error_message"], job
        assert len(stack.upstream.times_of(TELEMETRY_PATH)) == RETRIES + 1
        took = (job["finished_at"] - job["started_at"]).total_seconds()
        bound = outage_bound_sec(TIMEOUT_SEC, RETRIES, BACKOFF_BASE_SEC, BACKOFF_MAX_SEC)
        print(f"persistent outage: failed {took:.2f}s after the claim (bound {bound:.1f}s)")
        assert (RETRIES + 1) * TIMEOUT_SEC <= took <= bound + OVERHEAD_SEC
        assert bound > LEASE_SEC  # the lease keeper is what kept this a single attempt

        job = stack.wait_status(rejected)
        assert job["status"] == "failed" and job["error_code"] == "UPSTREAM_REJECTED", job
        assert "403" in job["error_message"] and KPI_PATH in job["error_message"]
        assert len(stack.upstream.times_of(KPI_PATH)) == 1, "a 4xx is not retried"

        job = stack.wait_status(malformed)
        assert job["status"] == "failed" and job["error_code"] == "UPSTREAM_BAD_RESPONSE", job
        assert WEIGHVISION_PATH in job["error_message"]
        assert len(stack.upstream.times_of(WEIGHVISION_PATH)) == 1

        # the job-level policy: these are final. Three recovery passes (1 s apart) later, each
        # was claimed once, was never queued again, and its message was handled once
        jobs = stack.jobs()
        time.sleep(3.0)  # watching that nothing happens: there is no event to wait for
        for job_id in (outage, rejected, malformed):
            assert stack.job(job_id)["status"] == "failed"
            assert stack.job(job_id)["attempts"] == 1, stack.job(job_id)
            assert stack.job(job_id)["updated_at"] == jobs[job_id]["updated_at"]
            assert stack.worker is not None
            lines = stack.worker_lines(stack.worker, job_id)
            assert len(lines) == 1 and "status=failed" in lines[0], lines
        # nothing written, not even a temporary
        assert stack.files() == []
        assert stack.worker is not None and stack.worker.returncode() is None
        # and the worker still exports once the upstream behaves
        faults.clear()
        fine = stack.wait_status(stack.create(kpi_job("2026-01-05", "2026-01-06")))
        assert fine["status"] == "succeeded", fine
