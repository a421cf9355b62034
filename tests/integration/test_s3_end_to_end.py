"""FILE_STORE=s3 end to end, the issue's acceptance: real ``api`` and ``worker`` processes, two of
each, whose export folders are different and never created, sharing only one bucket of a real
S3-compatible server (moto's, over HTTP). Every job created through either api downloads, whole
and correct, through either api, streamed and redirected to a presigned URL of the bucket."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

from reportcore.jobs import JobType

from .procs import Procs, run_reportsvc, service_env, start_api, start_demo_upstream, start_worker
from .procs import user_token as make_token
from .s3server import Bucket
from .test_end_to_end import demo_scope, upstream_records

JOBS = "/api/v1/reports/jobs"
JOB_COUNT = 200
DEADLINE_SEC = 240.0
TERMINAL = ("succeeded", "failed", "cancelled")


def _scope_of(n: int) -> tuple[JobType, dict[str, Any]]:
    """Job ``n``'s type and scope: the four job types over one or two days of the demo data."""
    job_type = list(JobType)[n % len(JobType)]
    scope = demo_scope(job_type)
    first = dt.date.fromisoformat(scope["start_date"]) + dt.timedelta(days=(n // 4) % 13)
    last = min(first + dt.timedelta(days=(n // 52) % 2), dt.date.fromisoformat(scope["end_date"]))
    return job_type, scope | {"start_date": first.isoformat(), "end_date": last.isoformat()}


def _wait_all_terminal(database_url: str, ids: Iterable[str]) -> None:
    """Poll the jobs table (one query a second) until every job has ended."""
    wanted = list(ids)
    deadline = time.monotonic() + DEADLINE_SEC
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT status, count(*) FROM report_jobs WHERE id::text = ANY(%s) GROUP BY 1",
                (wanted,),
            ).fetchall()
            counts = dict(rows)
            if sum(counts.get(s, 0) for s in TERMINAL) == len(wanted):
                return
            assert time.monotonic() < deadline, f"jobs not ended in {DEADLINE_SEC}s: {counts}"
            time.sleep(1.0)


def _in_parallel(work: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(work, items))


def _download(base: str, auth: Mapping[str, str], job_id: str) -> httpx.Response:
    """The file of ``job_id`` through the api at ``base``: its download link, then the link
    without our bearer token (a redirect to the bucket is followed)."""
    link = httpx.get(f"{base}{JOBS}/{job_id}/download", headers=auth, timeout=30)
    assert link.status_code == 200, link.text
    got = httpx.get(base + link.json()["download_url"], follow_redirects=True, timeout=30)
    assert got.status_code == 200, (job_id, got.status_code, got.text[:300])
    return got


def test_two_apis_and_two_workers_sharing_only_a_bucket_serve_200_jobs_with_and_without_redirect(
    database_url: str, amqp_url: str, tmp_path: Path, s3_bucket: Bucket
) -> None:
    from adapters.demo_upstream import DEMO_TENANT

    with Procs(tmp_path / "logs") as procs:
        upstream = start_demo_upstream(procs)

        def env(machine: str, **extra: str) -> dict[str, str]:
            folder = tmp_path / machine / "exports"  # never created: nothing may be written
            return service_env(database_url, amqp_url, folder, upstream, **s3_bucket.env(), **extra)

        migrated = run_reportsvc(env("migrate"), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        api_a, url_a = start_api(procs, env("api-a"))
        api_b, url_b = start_api(procs, env("api-b"))
        workers = [start_worker(procs, env(f"worker-{n}", WORKER_CONCURRENCY="4")) for n in (1, 2)]
        auth = {"Authorization": f"Bearer {make_token(env('api-a'), DEMO_TENANT)}"}

        def create(n: int) -> str:
            job_type, scope = _scope_of(n)
            body = {"job_type": job_type.value, "format": "csv", **scope}
            answer = httpx.post((url_a, url_b)[n % 2] + JOBS, json=body, headers=auth, timeout=30)
            assert answer.status_code == 201, answer.text
            job_id: str = answer.json()["id"]
            return job_id

        ids = _in_parallel(create, range(JOB_COUNT))
        assert len(set(ids)) == JOB_COUNT
        _wait_all_terminal(database_url, ids)

        # what the upstream served for each distinct scope, fetched as the contract says
        expected_rows: dict[str, int] = {}
        for job_type, scope in {
            repr(_scope_of(n)): _scope_of(n) for n in range(JOB_COUNT)
        }.values():
            stack: Any = type("UpstreamAt", (), {"upstream_url": upstream, "tenant": DEMO_TENANT})
            expected_rows[repr((job_type, scope))] = len(upstream_records(stack, job_type, scope))
        assert min(expected_rows.values()) > 0

        def job(job_id: str) -> dict[str, Any]:
            got: dict[str, Any] = httpx.get(f"{url_b}{JOBS}/{job_id}", headers=auth).json()
            return got

        jobs = _in_parallel(job, ids)
        failed = [j for j in jobs if j["status"] != "succeeded"]
        assert failed == [], failed
        keys = sorted(f"reports/{DEMO_TENANT}/{j['id']}/report.csv" for j in jobs)
        assert (s3_bucket.object_keys(), s3_bucket.open_uploads()) == (keys, [])
        # both workers took a share of the jobs
        for worker in workers:
            assert any(j["id"] in worker.output() for j in jobs), worker.describe()

        def check(bases: tuple[str, str], redirected: bool) -> None:
            def one(pair: tuple[int, dict[str, Any]]) -> None:
                n, done = pair
                for base in bases:
                    got = _download(base, auth, done["id"])
                    assert [r.status_code for r in got.history] == ([302] if redirected else [])
                    assert got.headers["content-disposition"].startswith("attachment;")
                    assert len(got.content) == done["size_bytes"]
                    assert hashlib.sha256(got.content).hexdigest() == done["sha256"]
                    rows = list(csv.reader(io.StringIO(got.content.decode(), newline="")))
                    assert len(rows) - 1 == expected_rows[repr(_scope_of(n))], done

            _in_parallel(one, enumerate(jobs))

        check((url_a, url_b), redirected=False)
        assert api_a.stop() == 0 and api_b.stop() == 0
        _, url_c = start_api(procs, env("api-a", REPORT_DOWNLOAD_REDIRECT="1"))
        _, url_d = start_api(procs, env("api-b", REPORT_DOWNLOAD_REDIRECT="1"))
        check((url_c, url_d), redirected=True)

    for machine in ("api-a", "api-b", "worker-1", "worker-2"):
        assert not (tmp_path / machine).exists(), f"{machine} wrote to its local folder"
