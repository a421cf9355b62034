"""Issue 6 item 7: cancelling a job mid-export, and retention deleting files, on real processes.

Cancel: the API's conditional write makes the job ``cancelled`` at once; the worker notices at
its next page (the page's heartbeat, or the lease keeper's renewal that found the job no
longer its own), stops asking upstream, removes its temporary file and acknowledges the
message. Bound: the heartbeat interval (1 s: the lease keeper's renewal finds the job
cancelled) plus the page in flight then (here the upstream takes 1 s a page).

Retention: a succeeded job's file is deleted by the first recovery pass after ``expires_at``
(finished + REPORT_RETENTION_SEC): at most REPORT_RETENTION_SEC + REPORT_RECOVERY_INTERVAL_SEC
after the job finished. Its download answers 410 ``REPORT_EXPIRED`` from then on (already from
``expires_at``), the job itself stays ``succeeded``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from .job_stack import FEED_PATH, JOBS, feed_job, running_stack

PAGE_SEC = 1.0  # the upstream's delay per page in the cancel test
HEARTBEAT_SEC = 1.0  # Policy.heartbeat_sec with the default 30 s lease
# the renewal that finds the job cancelled, the page in flight then, the writes and the ack,
# with room for a loaded CI machine
CANCEL_BOUND_SEC = PAGE_SEC + HEARTBEAT_SEC + 2.0
RETENTION_SEC = 2
RECOVERY_INTERVAL_SEC = 1.0  # service_env's REPORT_RECOVERY_INTERVAL_SEC


def test_cancelling_a_running_export_stops_it_within_seconds_and_leaves_no_file(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with running_stack(database_url, amqp_url, tmp_path, upstream={"per_day": 100}) as stack:
        assert stack.worker is not None
        # two weeks, 14 pages, a second each: the export is slow mid-way when cancelled
        stack.upstream.faults.hang(PAGE_SEC, times=14, path=FEED_PATH)
        job_id = stack.create(feed_job("2026-01-05", "2026-01-18"))
        stack.wait_for(
            "the export half-way through its pages",
            lambda: len(stack.upstream.times_of(FEED_PATH)) >= 3,
            30.0,
        )
        running = stack.job(job_id)
        assert running["status"] == "running", running
        temporaries = [p for p in stack.files() if p.name.endswith(".tmp")]
        assert len(temporaries) == 1 and temporaries[0].name.startswith(".report.csv.")

        with stack.http() as http:
            began = time.monotonic()
            answer = http.post(f"{JOBS}/{job_id}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "cancelled"
        asked = len(stack.upstream.times_of(FEED_PATH))

        stack.wait_for(
            "the worker stopping the export",
            lambda: any(
                "status=cancelled" in line for line in stack.worker_lines(stack.worker, job_id)
            ),
            CANCEL_BOUND_SEC + 5.0,
        )
        stopped = time.monotonic() - began
        print(f"cancel -> worker stopped the export: {stopped:.2f}s (bound {CANCEL_BOUND_SEC}s)")
        assert stopped <= CANCEL_BOUND_SEC
        assert stack.files() == [], "a partial file or temporary was left"
        # it stopped asking upstream: at most the page in flight when the cancel came
        time.sleep(PAGE_SEC + 0.5)
        assert len(stack.upstream.times_of(FEED_PATH)) <= asked + 1
        job = stack.job(job_id)
        assert job["status"] == "cancelled" and job["file_path"] is None, job
        assert job["attempts"] == 1 and job["progress_pct"] < 100, job

        # the worker takes the next job
        stack.upstream.faults.clear()
        nxt = stack.wait_status(stack.create(feed_job("2026-01-05", "2026-01-05")))
        assert nxt["status"] == "succeeded", nxt
        assert stack.files() == [Path(nxt["file_path"])]
        assert stack.worker.returncode() is None


def test_retention_deletes_the_file_and_downloads_then_answer_410_report_expired(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with running_stack(
        database_url, amqp_url, tmp_path, REPORT_RETENTION_SEC=str(RETENTION_SEC)
    ) as stack:
        job = stack.wait_status(stack.create(feed_job("2026-01-05", "2026-01-05")))
        assert job["status"] == "succeeded", job
        path = Path(job["file_path"])
        with stack.http() as http:
            link = http.get(f"{JOBS}/{job['id']}/download")
            assert link.status_code == 200, link.text
            url = link.json()["download_url"]
            before = http.get(url)
        assert before.status_code == 200 and before.content == path.read_bytes()

        stack.wait_for(
            "retention deleting the file",
            lambda: stack.job(job["id"])["file_deleted_at"] is not None,
            RETENTION_SEC + RECOVERY_INTERVAL_SEC + 10.0,
        )
        gone = stack.job(job["id"])
        after = (gone["file_deleted_at"] - gone["finished_at"]).total_seconds()
        print(f"finished -> file deleted: {after:.2f}s (retention {RETENTION_SEC}s)")
        assert RETENTION_SEC <= after <= RETENTION_SEC + RECOVERY_INTERVAL_SEC + 1.0
        # expires_at is a column of the old schema: timestamp(3) without time zone, in UTC
        expires = gone["expires_at"].replace(tzinfo=dt.UTC)
        assert abs((expires - gone["finished_at"]).total_seconds() - RETENTION_SEC) < 0.01
        assert not path.exists() and not path.parent.exists()
        assert stack.files() == []
        assert gone["status"] == "succeeded", "a terminal status never changes"

        with stack.http() as http:
            # the URL issued before: 410 in the envelope
            expired = http.get(url, headers={"x-trace-id": "trace-retention-1"})
            assert expired.status_code == 410, expired.text
            assert expired.json() == {
                "error": {
                    "code": "REPORT_EXPIRED",
                    "message": expired.json()["error"]["message"],
                    "traceId": "trace-retention-1",
                }
            }
            assert expired.headers["x-trace-id"] == "trace-retention-1"
            # asking for a new URL: 410 too, per the contract
            again = http.get(f"{JOBS}/{job['id']}/download")
            assert again.status_code == 410, again.text
            assert again.json()["error"]["code"] == "REPORT_EXPIRED"
            assert again.json()["error"]["traceId"] == again.headers["x-trace-id"]
            # the job itself is still there, succeeded, with the instant its file expired
            shown = http.get(f"{JOBS}/{job['id']}").json()
            assert shown["status"] == "succeeded" and shown["expires_at"] is not None
