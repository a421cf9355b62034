"""FILE_STORE=s3 under storage faults, with real processes and a real S3 server over HTTP (moto's),
behind a small proxy that fails it as a store does (tests/integration/s3proxy.py):

- one part upload refused: botocore retries it and the export succeeds, whole;
- one part refused on every attempt: the job fails ``STORAGE_FAILED``, its upload is aborted,
  nothing is left, the worker goes on;
- the store stopped mid-export: the part is retried, then the job fails ``STORAGE_FAILED``;
- credentials refused: ``api`` and ``worker`` stop at start with one line and exit code 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .procs import (
    Proc,
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_fake_feed,
    start_worker,
    user_token,
)
from .s3proxy import S3Proxy
from .s3server import CREDENTIALS, Bucket, moto_process, new_bucket

# about 31 MB of CSV: six parts of 5 MiB
RECORDS = 120_000
ATTEMPTS = (
    5  # at least: botocore's standard mode as the store's client is configured (adapters/s3.py)
)
TENANT = "t-faults"


@dataclass
class S3Stack:
    api_url: str
    worker: Proc
    auth: dict[str, str]

    def export(self) -> dict[str, Any]:
        """Create a feed export of every record of the fake feed and wait for its end."""
        from fake_feed import NEWEST, oldest

        body = {
            "job_type": "FEED_INTAKE_EXPORT",
            "format": "csv",
            "start_date": oldest(RECORDS).date().isoformat(),
            "end_date": NEWEST.date().isoformat(),
        }
        with httpx.Client(base_url=self.api_url, headers=self.auth, timeout=30) as api:
            created = api.post("/api/v1/reports/jobs", json=body)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + 180
            while True:
                job: dict[str, Any] = api.get(f"/api/v1/reports/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    return job
                assert time.monotonic() < deadline, job
                time.sleep(0.2)


@contextmanager
def s3_stack(
    database_url: str, amqp_url: str, tmp_path: Path, bucket: Bucket, worker_endpoint: str
) -> Iterator[S3Stack]:
    """An api over the bucket, a worker writing through ``worker_endpoint``, the fake feed."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    with Procs(tmp_path / "logs") as procs:
        feed = start_fake_feed(procs, RECORDS)
        env = service_env(
            database_url,
            amqp_url,
            tmp_path / "never-created",
            feed,
            REPORT_MAX_RANGE_DAYS="366",
            **bucket.env(),
        )
        assert run_reportsvc(env, "migrate").returncode == 0
        _, api_url = start_api(procs, env)
        worker = start_worker(procs, env | {"S3_ENDPOINT_URL": worker_endpoint})
        auth = {"Authorization": f"Bearer {user_token(env, TENANT)}"}
        yield S3Stack(api_url=api_url, worker=worker, auth=auth)


def test_a_part_refused_once_is_retried_and_the_export_is_whole(
    database_url: str, amqp_url: str, tmp_path: Path, s3_bucket: Bucket
) -> None:
    with (
        S3Proxy(s3_bucket.endpoint) as proxy,
        s3_stack(database_url, amqp_url, tmp_path, s3_bucket, proxy.url) as stack,
    ):
        proxy.refuse_part(2, times=1)
        job = stack.export()
        assert job["status"] == "succeeded", job
        tried = proxy.part_attempts
        assert tried[2] == 2 and [n for n in tried if n != 2 and tried[n] != 1] == [], tried
        data = httpx.get(
            stack.api_url + _link(stack, job["id"]), timeout=60, follow_redirects=True
        ).content
    assert hashlib.sha256(data).hexdigest() == job["sha256"]
    assert sum(1 for _ in csv.reader(io.StringIO(data.decode(), newline=""))) == RECORDS + 1
    assert s3_bucket.open_uploads() == []


def test_a_part_refused_on_every_attempt_fails_the_job_and_aborts_its_upload(
    database_url: str, amqp_url: str, tmp_path: Path, s3_bucket: Bucket
) -> None:
    with (
        S3Proxy(s3_bucket.endpoint) as proxy,
        s3_stack(database_url, amqp_url, tmp_path, s3_bucket, proxy.url) as stack,
    ):
        proxy.refuse_part(2, times=100)  # more than any retrying
        job = stack.export()
        assert job["status"] == "failed", job
        assert job["error_code"] == "STORAGE_FAILED", job
        assert "InternalError" in job["error_message"], job
        tried = proxy.part_attempts
        assert tried[1] == 1 and tried[2] >= ATTEMPTS and 3 not in tried, tried
        assert (s3_bucket.object_keys(), s3_bucket.open_uploads()) == ([], [])
        # the same worker then exports the next job, once the store takes parts again
        proxy.refuse_part(2, times=0)
        again = stack.export()
        assert again["status"] == "succeeded", again
        assert stack.worker.returncode() is None


def test_the_store_stopped_mid_export_is_retried_then_fails_the_job_storage_failed(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with moto_process(tmp_path / "moto.log") as (moto, endpoint):
        bucket = new_bucket(endpoint)
        with (
            S3Proxy(endpoint) as proxy,
            s3_stack(database_url, amqp_url, tmp_path, bucket, proxy.url) as stack,
        ):

            def stop_the_store() -> None:
                moto.terminate()
                moto.wait(10)

            proxy.on_part_stored(1, stop_the_store)
            began = time.monotonic()
            job = stack.export()
            took = time.monotonic() - began
            assert moto.returncode is not None, "the store was never stopped"
            assert job["status"] == "failed", job
            assert job["error_code"] == "STORAGE_FAILED", job
            assert "object store" in job["error_message"], job
            # part 2 was tried once per attempt, each dropped (the abort that follows, too)
            assert proxy.part_attempts.get(2, 0) >= ATTEMPTS, proxy.part_attempts
            assert proxy.dropped >= ATTEMPTS, proxy.dropped
            assert stack.worker.returncode() is None, stack.worker.describe()
            print(f"store down: job failed after {took:.1f} s")


def test_refused_credentials_stop_api_and_worker_at_start_with_one_line(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    # moto checks signatures against its own IAM users when told to: ours are unknown to it
    with moto_process(tmp_path / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="0") as (_, endpoint):
        bucket = Bucket(endpoint=endpoint, name="farmiq-reports", client=None)
        env = service_env(
            database_url, amqp_url, tmp_path / "never-created", "http://127.0.0.1:9", **bucket.env()
        )
        assert env["AWS_ACCESS_KEY_ID"] == CREDENTIALS["AWS_ACCESS_KEY_ID"]
        assert run_reportsvc(env, "migrate").returncode == 0
        for command in ("api", "worker"):
            began = time.monotonic()
            done = run_reportsvc(env, command, timeout=60)
            assert done.returncode == 1, (command, done.returncode, done.stderr)
            assert time.monotonic() - began < 30, "the refusal was retried"
            assert "Traceback" not in done.stderr, done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert last.startswith("reportsvc: the object store bucket 'farmiq-reports'"), last
            assert "403" in last, last


def _link(stack: S3Stack, job_id: str) -> str:
    link = httpx.get(f"{stack.api_url}/api/v1/reports/jobs/{job_id}/download", headers=stack.auth)
    assert link.status_code == 200, link.text
    url: str = link.json()["download_url"]
    return url
