"""Issue 4 acceptance: real ``reportsvc`` processes over real PostgreSQL, RabbitMQ and HTTP.

``migrate``, ``api`` and ``worker`` run as subprocesses against a demo upstream subprocess,
each test in its own database, vhost and export folder. The expected rows are read straight
from the demo upstream, independently of the exporter.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest

from reportcore.jobs import JobType
from reportcore.jobtypes import JOB_TYPES

from .procs import (
    Proc,
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_demo_upstream,
    start_worker,
    user_token,
)

JOB_DEADLINE_SEC = 60.0


@dataclass
class Stack:
    """A running deployment: API, worker, demo upstream, and a token of the demo tenant."""

    api: Proc
    worker: Proc
    base_url: str
    upstream_url: str
    export_root: Path
    env: dict[str, str]
    token: str
    tenant: str

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )


@pytest.fixture
def stack(database_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Stack]:
    from adapters.demo_upstream import DEMO_TENANT

    with Procs(tmp_path / "logs") as procs:
        upstream = start_demo_upstream(procs)
        export_root = tmp_path / "exports"
        env = service_env(database_url, amqp_url, export_root, upstream)
        migrated = run_reportsvc(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        api, base_url = start_api(procs, env)
        worker = start_worker(procs, env)
        yield Stack(
            api=api,
            worker=worker,
            base_url=base_url,
            upstream_url=upstream,
            export_root=export_root,
            env=env,
            token=user_token(env, DEMO_TENANT, "tenant_admin"),
            tenant=DEMO_TENANT,
        )


def demo_scope(job_type: JobType) -> dict[str, Any]:
    """A scope of the demo data that every job type accepts and that has records."""
    from adapters.demo_upstream import (
        DEMO_BARN_ID,
        DEMO_BATCH_ID,
        DEMO_END,
        DEMO_FARM_ID,
        DEMO_START,
    )

    scope: dict[str, Any] = {"start_date": DEMO_START, "end_date": DEMO_END}
    if job_type is not JobType.TELEMETRY_EXPORT:
        scope["farm_id"] = DEMO_FARM_ID
    if job_type in (JobType.KPI_FEEDING_EXPORT, JobType.TELEMETRY_EXPORT):
        scope["barn_id"] = DEMO_BARN_ID
    if job_type is JobType.WEIGHVISION_EXPORT:
        scope["batch_id"] = DEMO_BATCH_ID
    return scope


def upstream_records(stack: Stack, job_type: JobType, scope: dict[str, Any]) -> list[Any]:
    """What the demo upstream holds for ``scope``, fetched as the contract describes it."""
    params: dict[str, Any] = {"tenantId": stack.tenant}
    for key, name in (("farm_id", "farmId"), ("barn_id", "barnId"), ("batch_id", "batchId")):
        if key in scope:
            params[name] = scope[key]
    start, end = scope["start_date"], scope["end_date"]
    with httpx.Client(base_url=stack.upstream_url, timeout=10.0) as up:
        if job_type is JobType.FEED_INTAKE_EXPORT:
            params |= {"start": f"{start}T00:00:00Z", "end": f"{end}T23:59:59Z", "limit": 100}
            items: list[Any] = []
            cursor = None
            while True:
                page = up.get(
                    "/api/v1/feed/intake-records",
                    params=params | ({"cursor": cursor} if cursor else {}),
                ).json()
                items += page["items"]
                cursor = page.get("nextCursor")
                if not cursor:
                    return items
        if job_type is JobType.KPI_FEEDING_EXPORT:
            params |= {"startDate": start, "endDate": end}
            return list(up.get("/api/v1/kpi/feeding", params=params).json()["items"])
        if job_type is JobType.TELEMETRY_EXPORT:
            params |= {"from": f"{start}T00:00:00Z", "to": f"{end}T23:59:59Z", "limit": 10000}
            readings = up.get("/api/v1/telemetry/readings", params=params).json()
            assert len(readings) < 10000, "the demo telemetry outgrew one request"
            return list(readings)
        params |= {"start": start, "end": end}
        return list(up.get("/api/v1/weighvision/weight-aggregates", params=params).json()["items"])


def create(stack: Stack, job_type: JobType, fmt: str, **extra: Any) -> dict[str, Any]:
    with stack.http() as http:
        answer = http.post(
            "/api/v1/reports/jobs",
            json={"job_type": job_type.value, "format": fmt, **demo_scope(job_type), **extra},
        )
    assert answer.status_code == 201, answer.text
    job: dict[str, Any] = answer.json()
    assert job["status"] == "queued"
    return job


def wait_finished(stack: Stack, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_DEADLINE_SEC
    with stack.http() as http:
        while True:
            job: dict[str, Any] = http.get(f"/api/v1/reports/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job['status']} after {JOB_DEADLINE_SEC}s")
            time.sleep(0.2)


def download(stack: Stack, job: dict[str, Any]) -> httpx.Response:
    with stack.http() as http:
        link = http.get(f"/api/v1/reports/jobs/{job['id']}/download")
    assert link.status_code == 200, link.text
    url = link.json()["download_url"]
    assert url.startswith(f"/api/v1/reports/jobs/{job['id']}/file?token=")
    # the file URL carries its own authority: no bearer token
    with httpx.Client(base_url=stack.base_url, timeout=10.0) as anonymous:
        body = anonymous.get(url)
    assert body.status_code == 200, body.text
    return body


def check_file_facts(stack: Stack, job: dict[str, Any], body: httpx.Response) -> None:
    """Size and sha256 of the job are those of the bytes served and of the file on disk."""
    assert job["size_bytes"] == len(body.content)
    assert job["sha256"] == hashlib.sha256(body.content).hexdigest()
    assert body.headers["content-length"] == str(len(body.content))
    assert job["sha256"] in body.headers["etag"]
    ext = job["file_path"].rsplit("/report.", 1)[1]  # csv, json, xlsx, csv.gz, ndjson.gz
    on_disk = stack.export_root / stack.tenant / job["id"] / f"report.{ext}"
    assert on_disk.read_bytes() == body.content
    leftovers = [p.name for p in on_disk.parent.iterdir() if p != on_disk]
    assert leftovers == [], "a temporary file was left beside the export"


def test_a_feed_intake_export_runs_from_create_to_a_downloaded_file_with_the_demo_rows(
    stack: Stack,
) -> None:
    job = create(stack, JobType.FEED_INTAKE_EXPORT, "csv")
    done = wait_finished(stack, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress_pct"] == 100
    assert done["attempts"] == 1
    assert done["requested_by"] == "it-user"
    body = download(stack, done)
    assert body.headers["content-type"].startswith("text/csv")
    check_file_facts(stack, done, body)

    expected = upstream_records(
        stack, JobType.FEED_INTAKE_EXPORT, demo_scope(JobType.FEED_INTAKE_EXPORT)
    )
    assert expected, "the demo upstream has no feed intake records in the demo scope"
    rows = list(csv.reader(io.StringIO(body.content.decode("utf-8"), newline="")))
    header = JOB_TYPES[JobType.FEED_INTAKE_EXPORT].header
    assert tuple(rows[0]) == header
    camel = {
        name: "".join(p if i == 0 else p.title() for i, p in enumerate(name.split("_")))
        for name in header
    }
    want = [
        ["" if r.get(camel[name]) is None else str(r[camel[name]]) for name in header]
        for r in expected
    ]
    assert rows[1:] == want


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("job_type", list(JobType))
def test_every_job_type_exports_every_record_of_its_scope_in_each_format(
    stack: Stack, job_type: JobType, fmt: str
) -> None:
    job = create(stack, job_type, fmt)
    done = wait_finished(stack, job["id"])
    assert done["status"] == "succeeded", done
    body = download(stack, done)
    check_file_facts(stack, done, body)
    expected = upstream_records(stack, job_type, demo_scope(job_type))
    assert expected, f"the demo upstream has no {job_type.value} records in the demo scope"
    if fmt == "csv":
        assert body.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(body.content.decode("utf-8"), newline="")))
        assert tuple(rows[0]) == JOB_TYPES[job_type].header
        assert len(rows) - 1 == len(expected)
    else:
        assert body.headers["content-type"].startswith("application/x-ndjson")
        # lines end at LF only, as NDJSON says (not at U+2028 or NEL inside a string)
        lines = body.content.decode("utf-8").split("\n")
        assert lines.pop() == "", "the file ends with a line feed"
        # NDJSON is upstream's records unchanged; the exporter may page in another order
        # (telemetry is paged by time), so compare as multisets: nothing lost, nothing twice
        got = sorted((json.loads(line) for line in lines), key=json.dumps)
        assert got == sorted(expected, key=json.dumps)


def test_api_and_worker_stop_gracefully_with_exit_code_0_leaving_no_job_running(
    stack: Stack,
) -> None:
    jobs = [create(stack, JobType.FEED_INTAKE_EXPORT, "csv") for _ in range(3)]
    assert stack.worker.stop() == 0
    assert "worker stopped" in stack.worker.stderr()
    with stack.http() as http:
        statuses = [http.get(f"/api/v1/reports/jobs/{j['id']}").json()["status"] for j in jobs]
    assert "running" not in statuses
    assert set(statuses) <= {"queued", "succeeded"}
    assert stack.api.stop() == 0


# --- export options (issue 18): through the real API, PostgreSQL, RabbitMQ and worker ---


def test_a_job_with_export_options_is_stored_run_and_served_as_asked(stack: Stack) -> None:
    options = {
        "compression": "gzip",
        "csv": {"delimiter": ";", "bom": True, "line_ending": "lf"},
        "columns": ["occurred_at", "id", "quantity_kg"],
        "timezone": "Asia/Bangkok",
    }
    job = create(stack, JobType.FEED_INTAKE_EXPORT, "csv", **options)
    # echoed with the csv default filled in: formulas are written as text unless asked otherwise
    echoed = {**options, "csv": {**options["csv"], "formula_guard": True}}  # type: ignore[dict-item]
    assert {k: job[k] for k in options} == echoed
    done = wait_finished(stack, job["id"])
    assert done["status"] == "succeeded", done
    body = download(stack, done)
    check_file_facts(stack, done, body)
    assert body.headers["content-type"] == "application/gzip"
    assert done["file_name"] == "feed_intake_export.csv.gz"
    text = gzip.decompress(body.content).decode("utf-8")
    assert text.startswith("\ufeffoccurred_at;id;quantity_kg\n")
    rows = list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=";"))
    expected = upstream_records(
        stack, JobType.FEED_INTAKE_EXPORT, demo_scope(JobType.FEED_INTAKE_EXPORT)
    )
    assert done["row_count"] == len(rows) - 1 == len(expected)
    assert [row[1] for row in rows[1:]] == [r["id"] for r in expected]
    assert all(row[0].endswith("+07:00") for row in rows[1:])


def test_an_xlsx_job_runs_on_the_worker_and_serves_a_workbook(stack: Stack) -> None:
    job = create(stack, JobType.WEIGHVISION_EXPORT, "xlsx")
    done = wait_finished(stack, job["id"])
    assert done["status"] == "succeeded", done
    body = download(stack, done)
    check_file_facts(stack, done, body)
    assert body.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    sheet = openpyxl.load_workbook(io.BytesIO(body.content), read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == JOB_TYPES[JobType.WEIGHVISION_EXPORT].header
    assert done["row_count"] == len(rows) - 1 > 0
    assert isinstance(rows[1][rows[0].index("record_date")], dt.datetime)
