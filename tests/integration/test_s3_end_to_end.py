"""FILE_STORE=s3 end to end: real ``api`` and ``worker`` processes whose export folders are
different and unused, sharing only one bucket of a real S3-compatible server (moto's, over
HTTP); and the S3 writer's memory on a large file, measured in a process of its own."""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from reportcore.jobs import JobType

from .procs import Procs, run_reportsvc, service_env, start_api, start_demo_upstream, start_worker
from .procs import user_token as make_token
from .s3server import CREDENTIALS, Bucket
from .test_end_to_end import demo_scope, upstream_records

DEADLINE_SEC = 60.0


def _wait_finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SEC
    while True:
        job: dict[str, Any] = http.get(f"/api/v1/reports/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def test_a_job_created_through_one_api_downloads_through_another_sharing_only_a_bucket(
    database_url: str, amqp_url: str, tmp_path: Path, s3_bucket: Bucket
) -> None:
    from reportsvc.adapters.demo_upstream import DEMO_TENANT

    with Procs(tmp_path / "logs") as procs:
        upstream = start_demo_upstream(procs)

        def env(machine: str, **extra: str) -> dict[str, str]:
            folder = tmp_path / machine / "exports"  # never created: nothing may be written
            return service_env(database_url, amqp_url, folder, upstream, **s3_bucket.env(), **extra)

        migrated = run_reportsvc(env("migrate"), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        _, url_a = start_api(procs, env("api-a"))
        _, url_b = start_api(procs, env("api-b", REPORT_DOWNLOAD_REDIRECT="1"))
        start_worker(procs, env("worker"))
        token = make_token(env("api-a"), DEMO_TENANT, "tenant_admin")
        auth = {"Authorization": f"Bearer {token}"}
        job_type = JobType.FEED_INTAKE_EXPORT
        with httpx.Client(base_url=url_a, headers=auth, timeout=10) as api_a:
            created = api_a.post(
                "/api/v1/reports/jobs",
                json={"job_type": job_type.value, "format": "csv", **demo_scope(job_type)},
            )
            assert created.status_code == 201, created.text
            done = _wait_finished(api_a, created.json()["id"])
        assert done["status"] == "succeeded", done
        # what clients see names no bucket and no machine path
        assert done["file_path"] == f"{DEMO_TENANT}/{done['id']}/report.csv"
        key = f"reports/{DEMO_TENANT}/{done['id']}/report.csv"
        assert (s3_bucket.object_keys(), s3_bucket.open_uploads()) == ([key], [])

        bodies = []
        for base in (url_a, url_b):
            with httpx.Client(base_url=base, headers=auth, timeout=10) as api:
                link = api.get(f"/api/v1/reports/jobs/{done['id']}/download").json()
            # api-b redirects to the bucket; httpx follows, without our bearer token
            got = httpx.get(base + link["download_url"], follow_redirects=True, timeout=10)
            assert got.status_code == 200, got.text
            assert got.headers["content-disposition"].endswith('filename="feed_intake_export.csv"')
            bodies.append(got)
        assert bodies[0].history == [] and [r.status_code for r in bodies[1].history] == [302]
        for body in bodies:
            assert hashlib.sha256(body.content).hexdigest() == done["sha256"]
            assert len(body.content) == done["size_bytes"]
        rows = list(csv.reader(io.StringIO(bodies[0].content.decode(), newline="")))
        expected = _upstream(upstream, job_type, demo_scope(job_type), DEMO_TENANT)
        assert len(rows) - 1 == len(expected) > 0
        for machine in ("api-a", "api-b", "worker"):
            assert not (tmp_path / machine).exists(), f"{machine} wrote to its local folder"


def _upstream(url: str, job_type: JobType, scope: dict[str, Any], tenant: str) -> list[Any]:
    class _Stack:  # what upstream_records reads of a Stack
        upstream_url = url

    stack: Any = _Stack()
    stack.tenant = tenant
    return upstream_records(stack, job_type, scope)


def test_the_workers_memory_stays_flat_while_a_large_file_goes_up(
    s3_bucket: Bucket, tmp_path: Path
) -> None:
    """160 MiB through the writer in 1 MiB writes (what the exporter hands it): peak RSS grows
    by about one part, not with the file."""
    script = textwrap.dedent(
        f"""
        import os
        from reportsvc.adapters.s3 import S3Store, create_client

        def peak_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        store = S3Store(create_client({s3_bucket.endpoint!r}, "us-east-1"), {s3_bucket.name!r})
        chunk = os.urandom(1 << 20)
        writer = store.create("t", "j", "csv")
        writer.write(chunk)
        before = peak_mb()
        for _ in range(159):
            writer.write(chunk)
        location = writer.commit()
        print(before, peak_mb(), store.size(location))
        """
    )
    env = {**CREDENTIALS, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    before, peak, size = done.stdout.split()
    assert int(size) == 160 << 20
    # one 8 MiB part buffered, its copy, and the request botocore builds from it
    assert float(peak) - float(before) < 48, (before, peak)
    assert float(peak) < 150, peak
    assert s3_bucket.open_uploads() == []
