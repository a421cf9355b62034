"""The HTTP record sources against the demo upstream over real HTTP: what each sends, the files
``run_job`` writes from them into a real folder, and how each upstream failure ends a job.

Backoff sleeps are recorded by a fake ``sleep`` (or are a few milliseconds), so the retry
tests are fast; the demo upstream's fault injection makes the failures real HTTP answers.
"""

from __future__ import annotations

import csv
import datetime as dt
import email.utils
import hashlib
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from adapters.demo_upstream import (
    DEMO_BARN_ID,
    DEMO_BATCH_ID,
    DEMO_END,
    DEMO_FARM_ID,
    DEMO_START,
    DEMO_TENANT,
    DemoUpstream,
)
from adapters.filesystem import FilesystemStore
from adapters.upstream import HttpRecordSource, UpstreamConfig
from reportcore.errors import UpstreamUnavailable
from reportcore.export import scope_values, write_export
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat, Scope, message_for
from reportcore.jobtypes import JOB_TYPES
from reportcore.ports import SourceRequest
from reportcore.testing import FakeClock, InMemoryJobRepository
from reportcore.usecases import Policy
from tests.running import run_message

TOKEN = "internal-service-token-7f1d"
NOW = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
PATHS = {
    JobType.FEED_INTAKE_EXPORT: "/api/v1/feed/intake-records",
    JobType.KPI_FEEDING_EXPORT: "/api/v1/kpi/feeding",
    JobType.TELEMETRY_EXPORT: "/api/v1/telemetry/readings",
    JobType.WEIGHVISION_EXPORT: "/api/v1/weighvision/weight-aggregates",
}
START = dt.date.fromisoformat(DEMO_START)
END = dt.date.fromisoformat(DEMO_END)


@pytest.fixture
def demo() -> Iterator[DemoUpstream]:
    with DemoUpstream(token=TOKEN) as upstream:
        yield upstream


class Sleeps:
    """A fake ``sleep``: records each backoff instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def config_for(demo: DemoUpstream, **overrides: Any) -> UpstreamConfig:
    base: dict[str, Any] = {
        "feed_url": demo.base_url,
        "telemetry_url": demo.base_url,
        "weighvision_url": demo.base_url,
        "token": TOKEN,
        "timeout_sec": 5.0,
        "retries": 3,
        "backoff_base_sec": 0.5,
        "backoff_max_sec": 8.0,
    }
    return UpstreamConfig(**(base | overrides))


def demo_scope(job_type: JobType) -> Scope:
    """A scope every job type accepts, of the demo tenant's farm."""
    return Scope(
        farm_id=DEMO_FARM_ID if job_type is not JobType.TELEMETRY_EXPORT else None,
        barn_id=DEMO_BARN_ID,
        batch_id=DEMO_BATCH_ID if job_type is JobType.WEIGHVISION_EXPORT else None,
        start_date=START,
        end_date=END,
    )


def make_job(job_type: JobType, fmt: str, scope: Scope, tenant: str = DEMO_TENANT) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        requested_by="it-user",
        job_type=job_type,
        format=ReportFormat(fmt),
        farm_id=scope.farm_id,
        barn_id=scope.barn_id,
        batch_id=scope.batch_id,
        start_date=scope.start_date,
        end_date=scope.end_date,
        filters=dict(scope.filters),
        created_at=NOW,
        updated_at=NOW,
    )


class Ran(msgspec.Struct, kw_only=True):
    job: Job
    root: Path

    def content(self) -> bytes:
        assert self.job.file_path is not None
        return Path(self.job.file_path).read_bytes()

    def folder(self) -> Path:
        return self.root / self.job.tenant_id / self.job.id


def run(
    source: HttpRecordSource, root: Path, job_type: JobType, fmt: str, scope: Scope | None = None
) -> Ran:
    """One job through ``run_job`` with the HTTP source and a real export folder."""
    jobs = InMemoryJobRepository()
    job = make_job(job_type, fmt, scope or demo_scope(job_type))
    jobs.add(job)
    run_message(
        msgspec.json.encode(message_for(job)),
        owner="worker-1",
        jobs=jobs,
        source=source,
        store=FilesystemStore(root),
        clock=FakeClock(NOW),
        policy=Policy(),
    )
    done = jobs.get(job.id)
    assert done is not None
    return Ran(job=done, root=root)


def request_for(job_type: JobType, scope: Scope, *, raw: bool = False) -> SourceRequest:
    spec = JOB_TYPES[job_type]
    return SourceRequest(
        job_id=str(uuid.uuid4()),
        tenant_id=DEMO_TENANT,
        job_type=job_type,
        scope=scope,
        upstream_filters=spec.upstream_filters(scope.filters),
        typed=not raw,
        raw=raw,
    )


def upstream_records(demo: DemoUpstream, job_type: JobType, scope: Scope) -> list[Any]:
    """What the demo holds for ``scope``, fetched by hand as the contract describes."""
    params: dict[str, Any] = {"tenantId": DEMO_TENANT}
    for name in ("farm_id", "barn_id", "batch_id"):
        value = getattr(scope, name)
        if value is not None:
            params[name.replace("_id", "Id")] = value
    first, last = str(scope.start_date), str(scope.end_date)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=str(demo.base_url), headers=headers, timeout=10.0) as up:
        path = PATHS[job_type]
        if job_type is JobType.FEED_INTAKE_EXPORT:
            params |= {"start": f"{first}T00:00:00Z", "end": f"{last}T23:59:59Z", "limit": 100}
            items: list[Any] = []
            cursor = None
            while True:
                page = up.get(path, params=params | ({"cursor": cursor} if cursor else {}))
                items += page.json()["items"]
                cursor = page.json()["nextCursor"]
                if cursor is None:
                    return items
        if job_type is JobType.TELEMETRY_EXPORT:
            params |= {"from": f"{first}T00:00:00Z", "to": f"{last}T23:59:59Z", "limit": 10000}
            readings = up.get(path, params=params).json()
            assert len(readings) < 10000, "the test scope outgrew one telemetry request"
            return list(readings)
        if job_type is JobType.KPI_FEEDING_EXPORT:
            params |= {"startDate": first, "endDate": last}
        else:
            params |= {"start": first, "end": last}
        return list(up.get(path, params=params).json()["items"])


def camel(column: str) -> str:
    head, *rest = column.split("_")
    return head + "".join(part.title() for part in rest)


# --- what is sent ---


@pytest.mark.parametrize("job_type", list(JobType), ids=lambda t: t.value)
def test_each_source_sends_the_contracts_path_parameters_and_headers(
    demo: DemoUpstream, job_type: JobType
) -> None:
    scope = demo_scope(job_type)
    if job_type is JobType.TELEMETRY_EXPORT:
        scope = msgspec.structs.replace(scope, filters={"metric": "humidity"})
    request = request_for(job_type, scope)
    # one request after another: the parameters of one sequential export (windows: below)
    with HttpRecordSource(config_for(demo, feed_page_limit=40, concurrency=1)) as source:
        pages = list(source.pages(request))
    assert sum(len(p) for p in pages) > 0

    seen = demo.requests_to(PATHS[job_type])
    # telemetry's last page is short: one more request asks for anything older (none)
    assert len(seen) == len(pages) + (job_type is JobType.TELEMETRY_EXPORT)
    for req in seen:
        assert req.headers["authorization"] == f"Bearer {TOKEN}"
        assert req.headers["x-trace-id"] == request.job_id
        assert uuid.UUID(req.headers["x-request-id"])
        assert req.param("tenantId") == DEMO_TENANT
        assert req.param("barnId") == DEMO_BARN_ID
    assert len({r.headers["x-request-id"] for r in seen}) == len(seen), "a request id repeated"

    first = seen[0]
    expected: dict[str, str | None]
    if job_type is JobType.FEED_INTAKE_EXPORT:
        expected = {
            "farmId": DEMO_FARM_ID,
            "start": f"{DEMO_START}T00:00:00Z",
            "end": f"{DEMO_END}T23:59:59Z",
            "limit": "40",
            "cursor": None,
        }
        assert len(seen) > 2, "the demo scope should take several feed pages"
        cursors = [r.param("cursor") for r in seen[1:]]
        assert all(cursors) and len(set(cursors)) == len(cursors)
    elif job_type is JobType.KPI_FEEDING_EXPORT:
        expected = {"farmId": DEMO_FARM_ID, "startDate": DEMO_START, "endDate": DEMO_END}
    elif job_type is JobType.TELEMETRY_EXPORT:
        expected = {
            "farmId": None,
            "metric": "humidity",
            "from": f"{DEMO_START}T00:00:00Z",
            "to": f"{DEMO_END}T23:59:59.999Z",
            "limit": "10000",
        }
    else:
        expected = {
            "farmId": DEMO_FARM_ID,
            "batchId": DEMO_BATCH_ID,
            "start": DEMO_START,
            "end": DEMO_END,
        }
    assert {name: first.param(name) for name in expected} == expected


def test_a_farm_wide_feed_export_sends_no_barn_or_batch(demo: DemoUpstream) -> None:
    scope = Scope(farm_id=DEMO_FARM_ID)
    with HttpRecordSource(config_for(demo)) as source:
        list(source.pages(request_for(JobType.FEED_INTAKE_EXPORT, scope)))
    first = demo.requests_to(PATHS[JobType.FEED_INTAKE_EXPORT])[0]
    assert set(first.params) == {"tenantId", "farmId", "limit"}


def test_no_token_configured_means_no_authorization_header() -> None:
    with DemoUpstream() as open_demo, HttpRecordSource(config_for(open_demo, token=None)) as src:
        scope = demo_scope(JobType.KPI_FEEDING_EXPORT)
        list(src.pages(request_for(JobType.KPI_FEEDING_EXPORT, scope)))
        assert "authorization" not in open_demo.requests[0].headers


# --- whole exports into the folder ---


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("job_type", list(JobType), ids=lambda t: t.value)
def test_run_job_exports_every_upstream_record_into_the_export_folder(
    demo: DemoUpstream, tmp_path: Path, job_type: JobType, fmt: str
) -> None:
    with HttpRecordSource(config_for(demo, feed_page_limit=25, telemetry_limit=500)) as source:
        ran = run(source, tmp_path, job_type, fmt)
    job = ran.job
    assert job.status is JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    assert job.file_path == str(tmp_path / DEMO_TENANT / job.id / f"report.{fmt}")
    content = ran.content()
    assert (job.size_bytes, job.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert [p.name for p in ran.folder().iterdir()] == [f"report.{fmt}"]

    expected = upstream_records(demo, job_type, demo_scope(job_type))
    assert len(expected) > 10
    if fmt == "json":
        # NDJSON lines end at LF only (str.splitlines would also split at U+2028 or NEL,
        # which a JSON string may hold)
        lines = content.decode().split("\n")
        assert lines.pop() == "", "the file ends with a line feed"
        assert [json.loads(line) for line in lines] == expected
        # unchanged: each line is upstream's own encoding of the record
        assert lines == [msgspec.json.encode(r).decode() for r in expected]
        return
    rows = list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))
    header = JOB_TYPES[job_type].header
    assert tuple(rows[0]) == header
    scope_cells = {"tenant_id": DEMO_TENANT, "farm_id": job.farm_id, "barn_id": job.barn_id}
    scope_cells["batch_id"] = job.batch_id
    want = []
    for record in expected:
        row = []
        for column in header:
            if camel(column) in record:
                value = record[camel(column)]
            else:
                value = scope_cells.get(column) if job_type is JobType.KPI_FEEDING_EXPORT else None
            row.append("" if value is None else str(value))
        want.append(row)
    assert rows[1:] == want


def test_a_feed_export_applies_its_source_filter_to_the_stream(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    scope = msgspec.structs.replace(
        demo_scope(JobType.FEED_INTAKE_EXPORT), filters={"source": ["MANUAL"]}
    )
    with HttpRecordSource(config_for(demo)) as source:
        ran = run(source, tmp_path, JobType.FEED_INTAKE_EXPORT, "json", scope)
    lines = [json.loads(line) for line in ran.content().split(b"\n")[:-1]]  # LF-ended lines
    every = upstream_records(demo, JobType.FEED_INTAKE_EXPORT, scope)
    assert lines == [r for r in every if r["source"] == "MANUAL"]
    assert 0 < len(lines) < len(every)


# --- telemetry paging ---


@pytest.mark.parametrize("inclusive_to", [True, False], ids=["to-inclusive", "to-exclusive"])
@pytest.mark.parametrize("limit", [10_000, 1_000])
def test_25000_telemetry_readings_7_per_instant_export_as_25000_unique_rows(
    tmp_path: Path, limit: int, inclusive_to: bool
) -> None:
    day = dt.date(2026, 1, 7)
    scope = Scope(barn_id=DEMO_BARN_ID, start_date=day, end_date=day)
    with (
        DemoUpstream(readings_per_day=25_000, per_timestamp=7, inclusive_to=inclusive_to) as demo,
        HttpRecordSource(config_for(demo, token=None, telemetry_limit=limit)) as source,
    ):
        ran = run(source, tmp_path, JobType.TELEMETRY_EXPORT, "csv", scope)
        calls = len(demo.requests_to(PATHS[JobType.TELEMETRY_EXPORT]))
    assert ran.job.status is JobStatus.SUCCEEDED, ran.job.error_message
    rows = list(csv.DictReader(io.StringIO(ran.content().decode(), newline="")))
    assert len(rows) == 25_000
    assert len({r["id"] for r in rows}) == 25_000, "a reading was exported twice"
    # every row is of the asked day and barn: with 25,000 unique ones, none was lost
    assert {r["occurred_at"][:10] for r in rows} == {day.isoformat()}
    assert {r["barn_id"] for r in rows} == {DEMO_BARN_ID}
    per_instant: dict[str, int] = {}
    for r in rows:
        per_instant[r["occurred_at"]] = per_instant.get(r["occurred_at"], 0) + 1
    assert max(per_instant.values()) == 7
    stamps = [r["occurred_at"] for r in rows]
    assert stamps == sorted(stamps, reverse=True), "not newest first"
    assert calls >= 25_000 // limit + 1


def test_more_readings_at_one_instant_than_a_page_fails_instead_of_truncating(
    tmp_path: Path,
) -> None:
    day = dt.date(2026, 1, 7)
    scope = Scope(barn_id=DEMO_BARN_ID, start_date=day, end_date=day)
    with (
        DemoUpstream(readings_per_day=700, per_timestamp=7) as demo,
        HttpRecordSource(config_for(demo, token=None, telemetry_limit=5)) as source,
    ):
        ran = run(source, tmp_path, JobType.TELEMETRY_EXPORT, "csv", scope)
    assert ran.job.status is JobStatus.FAILED
    assert ran.job.error_code == "UPSTREAM_BAD_RESPONSE"
    message = ran.job.error_message or ""
    assert "telemetry service" in message and "one instant" in message
    assert "limit 5" in message
    assert not (tmp_path / DEMO_TENANT / ran.job.id).exists()


# --- failures ---


def failed(ran: Ran, code: str) -> str:
    assert ran.job.status is JobStatus.FAILED, ran.job
    assert ran.job.error_code == code
    assert ran.job.file_path is None
    assert not ran.folder().exists(), "a partial export was left behind"
    message = ran.job.error_message or ""
    assert TOKEN not in message
    return message


def test_two_503s_then_200_is_retried_with_backoff_and_succeeds(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    demo.faults.status(503, times=2)
    with HttpRecordSource(config_for(demo), sleep=sleeps) as source:
        ran = run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "csv")
    assert ran.job.status is JobStatus.SUCCEEDED
    assert len(demo.requests_to(PATHS[JobType.KPI_FEEDING_EXPORT])) == 3
    assert len(sleeps.calls) == 2
    # full jitter: each wait anywhere in [0, base * 2**attempt]
    assert 0 <= sleeps.calls[0] <= 0.5 and 0 <= sleeps.calls[1] <= 1.0


def test_429_with_retry_after_waits_what_upstream_asked(demo: DemoUpstream, tmp_path: Path) -> None:
    sleeps = Sleeps()
    demo.faults.status(429, retry_after=3)
    demo.faults.status(503, retry_after="120")  # more than backoff_max: capped
    with HttpRecordSource(config_for(demo), sleep=sleeps) as source:
        ran = run(source, tmp_path, JobType.WEIGHVISION_EXPORT, "json")
    assert ran.job.status is JobStatus.SUCCEEDED
    assert sleeps.calls == [3.0, 8.0]


def test_retry_after_as_an_http_date_is_honoured(demo: DemoUpstream, tmp_path: Path) -> None:
    sleeps = Sleeps()
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    demo.faults.status(503, retry_after=email.utils.format_datetime(when, usegmt=True))
    with HttpRecordSource(config_for(demo), sleep=sleeps) as source:
        ran = run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "csv")
    assert ran.job.status is JobStatus.SUCCEEDED
    [waited] = sleeps.calls
    assert 2.0 <= waited <= 5.0


def test_a_persistent_503_fails_the_job_unavailable_within_the_bounded_time(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    demo.faults.status(503, times=100)
    config = config_for(demo, retries=4, backoff_base_sec=0.01, backoff_max_sec=0.05, concurrency=1)
    started = time.monotonic()
    with HttpRecordSource(config) as source:  # real sleeps, tiny backoff
        ran = run(source, tmp_path, JobType.FEED_INTAKE_EXPORT, "csv")
    elapsed = time.monotonic() - started
    message = failed(ran, "UPSTREAM_UNAVAILABLE")
    assert "feed service answered 503 for GET /api/v1/feed/intake-records" in message
    assert len(demo.requests_to(PATHS[JobType.FEED_INTAKE_EXPORT])) == 5  # 1 + 4 retries
    assert elapsed < 4 * 0.05 + 2.0


def test_404_fails_the_job_rejected_at_once_naming_service_status_and_path(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    sleeps = Sleeps()
    demo.faults.status(404, times=5)
    with HttpRecordSource(config_for(demo, concurrency=1), sleep=sleeps) as source:
        ran = run(source, tmp_path, JobType.FEED_INTAKE_EXPORT, "csv")
    message = failed(ran, "UPSTREAM_REJECTED")
    assert message == "feed service answered 404 for GET /api/v1/feed/intake-records"
    assert sleeps.calls == [], "a 4xx was retried"
    assert len(demo.requests) == 1


def test_a_wrong_service_token_is_rejected_and_never_echoed(tmp_path: Path) -> None:
    with (
        DemoUpstream(token="the-right-one") as demo,
        HttpRecordSource(config_for(demo, token=TOKEN)) as source,
    ):
        ran = run(source, tmp_path, JobType.TELEMETRY_EXPORT, "csv")
    message = failed(ran, "UPSTREAM_REJECTED")
    assert message == "telemetry service answered 401 for GET /api/v1/telemetry/readings"


def test_a_malformed_page_fails_the_job_bad_response(demo: DemoUpstream, tmp_path: Path) -> None:
    demo.faults.malformed(path=PATHS[JobType.FEED_INTAKE_EXPORT])
    with HttpRecordSource(config_for(demo)) as source:
        ran = run(source, tmp_path, JobType.FEED_INTAKE_EXPORT, "json")
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert message.startswith(
        "feed service sent an unreadable page for GET /api/v1/feed/intake-records"
    )


def test_a_malformed_later_page_also_leaves_no_file(demo: DemoUpstream, tmp_path: Path) -> None:
    demo.faults.malformed(path=PATHS[JobType.FEED_INTAKE_EXPORT], after=2)
    with HttpRecordSource(config_for(demo, feed_page_limit=10, concurrency=1)) as source:
        ran = run(source, tmp_path, JobType.FEED_INTAKE_EXPORT, "csv")
    failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert len(demo.requests_to(PATHS[JobType.FEED_INTAKE_EXPORT])) == 3


def test_a_hung_request_times_out_and_is_retried(demo: DemoUpstream, tmp_path: Path) -> None:
    sleeps = Sleeps()
    demo.faults.hang(5.0)
    with HttpRecordSource(config_for(demo, timeout_sec=0.3), sleep=sleeps) as source:
        ran = run(source, tmp_path, JobType.WEIGHVISION_EXPORT, "csv")
    assert ran.job.status is JobStatus.SUCCEEDED
    assert len(sleeps.calls) == 1


def test_a_dropped_connection_is_retried(demo: DemoUpstream, tmp_path: Path) -> None:
    sleeps = Sleeps()
    demo.faults.drop(times=2)
    with HttpRecordSource(config_for(demo), sleep=sleeps) as source:
        ran = run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "json")
    assert ran.job.status is JobStatus.SUCCEEDED
    assert len(sleeps.calls) == 2


def test_an_unreachable_service_fails_unavailable_after_every_try(tmp_path: Path) -> None:
    # bound and never listening, held for the test: connections are refused, and no other
    # process can start listening on the port meanwhile
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        sleeps = Sleeps()
        config = UpstreamConfig(feed_url=url, retries=2, concurrency=1)
        with HttpRecordSource(config, sleep=sleeps) as source:
            ran = run(source, tmp_path, JobType.FEED_INTAKE_EXPORT, "csv")
    message = failed(ran, "UPSTREAM_UNAVAILABLE")
    assert message.startswith("feed service could not be reached for GET /api/v1/feed/")
    assert len(sleeps.calls) == 2


def test_a_job_type_whose_service_is_not_configured_names_the_variable(tmp_path: Path) -> None:
    with HttpRecordSource(UpstreamConfig(feed_url="http://127.0.0.1:9")) as source:
        ran = run(source, tmp_path, JobType.TELEMETRY_EXPORT, "csv")
        with pytest.raises(UpstreamUnavailable, match="CLOUD_WEIGHVISION_READMODEL_URL"):
            scope = demo_scope(JobType.WEIGHVISION_EXPORT)
            next(source.pages(request_for(JobType.WEIGHVISION_EXPORT, scope)))
    assert "CLOUD_TELEMETRY_SERVICE_URL" in failed(ran, "UPSTREAM_UNAVAILABLE")


# --- the demo upstream itself ---


def test_the_demo_serves_the_same_records_however_they_are_paged(demo: DemoUpstream) -> None:
    scope = demo_scope(JobType.FEED_INTAKE_EXPORT)
    with (
        HttpRecordSource(config_for(demo, feed_page_limit=100)) as big,
        HttpRecordSource(config_for(demo, feed_page_limit=7)) as small,
    ):
        request = request_for(JobType.FEED_INTAKE_EXPORT, scope, raw=True)
        by_100 = [bytes(r) for p in big.pages(request) for r in p.raw or ()]
        by_7 = [bytes(r) for p in small.pages(request) for r in p.raw or ()]
    assert by_100 == by_7
    assert len(by_100) == 24 * ((END - START).days + 1)


def test_the_demo_answers_400_for_a_missing_tenant_and_a_bad_cursor(demo: DemoUpstream) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=str(demo.base_url), headers=headers) as http:
        assert http.get(PATHS[JobType.FEED_INTAKE_EXPORT]).status_code == 400
        bad = http.get(
            PATHS[JobType.FEED_INTAKE_EXPORT],
            params={"tenantId": DEMO_TENANT, "cursor": str(uuid.uuid4())},
        )
        assert bad.status_code == 400
        assert http.get(PATHS[JobType.KPI_FEEDING_EXPORT], params={"tenantId": "t"}).is_error
        assert http.get("/api/v1/unknown").status_code == 404


def test_the_demo_runs_as_a_process_printing_its_url_and_stops_on_sigterm() -> None:
    argv = [
        sys.executable,
        "-m",
        "adapters.demo_upstream",
        "--port",
        "0",
        "--per-day",
        "5",
    ]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the first line, printed once it listens
            url = line.split(" on ", 1)[1].split()[0]
            assert url.startswith("http://127.0.0.1:")
            params = {"tenantId": "any-tenant", "limit": "100"}
            answer = httpx.get(url + PATHS[JobType.FEED_INTAKE_EXPORT], params=params)
            assert answer.status_code == 200
            assert 34 <= len(answer.json()["items"]) <= 36  # 7 days up to now, 5 a day
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0


# --- docs/job-types.md ---

DOC = Path(__file__).resolve().parents[2] / "docs" / "job-types.md"
SAMPLE = re.compile(r"<!-- sample: (\w+) days=(\d+) rows=(\d+) -->\n```csv\n(.*?)```", re.DOTALL)


def sample_csv(demo: DemoUpstream, job_type: JobType, days: int, rows: int) -> str:
    """The first ``rows`` rows of a CSV export of the demo farm from DEMO_START, as the code
    writes them (line ends shown as plain newlines)."""
    scope = Scope(
        farm_id=DEMO_FARM_ID,
        barn_id=DEMO_BARN_ID,
        batch_id=None if job_type is JobType.TELEMETRY_EXPORT else DEMO_BATCH_ID,
        start_date=START,
        end_date=START + dt.timedelta(days=days - 1),
    )
    writer = _Collected()
    with HttpRecordSource(config_for(demo)) as source:
        write_export(
            JOB_TYPES[job_type],
            ReportFormat.CSV,
            source.pages(request_for(job_type, scope)),
            writer,
            scope_values=scope_values(DEMO_TENANT, scope),
        )
    lines = bytes(writer.data).decode().split("\r\n")
    return "\n".join(lines[: rows + 1]) + "\n"


class _Collected:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def commit(self) -> str:
        return "collected"

    def abort(self) -> None:
        self.data.clear()


def test_the_job_types_page_shows_what_the_code_writes_from_the_demo_data(
    demo: DemoUpstream,
) -> None:
    samples = SAMPLE.findall(DOC.read_text())
    assert {JobType(s[0]) for s in samples} == set(JobType), "a job type has no sample"
    for name, days, rows, shown in samples:
        assert shown == sample_csv(demo, JobType(name), int(days), int(rows)), name
