"""A job type defined here, outside the package, goes through the use cases end to end: created
(validated against the registry passed in), queued, run, downloaded. No module global is
changed: the service's own registry never learns of it."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from reportcore import (
    JOB_TYPES,
    Column,
    CreateRequest,
    Deps,
    JobStatus,
    JobTypeSpec,
    Principal,
    ReportFormat,
    ReportService,
    RunContext,
    ValidationError,
)
from reportcore.jobtypes import JobTypeRegistry
from reportcore.requests import ListRequest
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    RecordingWebhookSender,
    StaticRecordSource,
)

TENANT = "tenant-a"
MANAGER = Principal(subject="u-1", roles=frozenset({"tenant_admin"}), tenant_id=TENANT)


class SiloLevel(msgspec.Struct, frozen=True, rename="camel"):
    silo_id: str
    measured_at: str
    level_pct: float


SILO_LEVELS = JobTypeSpec(
    job_type="SILO_LEVEL_EXPORT",
    upstream="silo service",
    record_type=SiloLevel,
    required_scope=(),
    filters={},
    columns=(
        Column("silo_id", attr="silo_id"),
        Column("measured_at", attr="measured_at"),
        Column("level_pct", attr="level_pct"),
    ),
    progress_attr="measured_at",
    newest_first=False,
)
# dated: the range is checked against the type's own widest range, from the registry passed in
SILO_CSV = CreateRequest(
    job_type="SILO_LEVEL_EXPORT",
    format=ReportFormat.CSV,
    start_date="2026-01-01",
    end_date="2026-01-01",
)
RECORDS = {
    "SILO_LEVEL_EXPORT": [
        {"siloId": "s1", "measuredAt": "2026-01-01T06:00:00Z", "levelPct": 81.5},
        {"siloId": "s2", "measuredAt": "2026-01-01T07:00:00Z", "levelPct": 12.0},
    ]
}


def service(
    job_types: JobTypeRegistry, *, runs_with: JobTypeRegistry | None = None
) -> tuple[ReportService, ReportService, InMemoryQueue]:
    """An API side with ``job_types`` and a worker side with ``runs_with`` (the same by
    default), over one set of in-memory adapters."""
    jobs, queue = InMemoryJobRepository(), InMemoryQueue()
    worker_types = runs_with if runs_with is not None else job_types
    deps = Deps(
        jobs=jobs,
        queue=queue,
        store=InMemoryFileStore(),
        clock=FakeClock(dt.datetime(2026, 1, 2, tzinfo=dt.UTC)),
        source=StaticRecordSource(RECORDS, job_types=worker_types),
        outbox=jobs.outbox,
        sender=RecordingWebhookSender(),
        consumer=queue,
        job_types=job_types,
        download_secret=b"s" * 32,
    )
    worker = msgspec.structs.replace(deps, job_types=worker_types)
    return ReportService(deps), ReportService(worker), queue


def test_a_job_type_of_a_library_user_is_created_run_and_downloaded() -> None:
    api, worker, queue = service(JOB_TYPES.extended(SILO_LEVELS))
    created = api.create(SILO_CSV, MANAGER)
    assert created.shown.job.job_type == "SILO_LEVEL_EXPORT" and not created.replayed
    message = queue.take()
    assert message is not None
    assert msgspec.json.decode(message)["job_type"] == "SILO_LEVEL_EXPORT"
    outcome = worker.run(message, RunContext(owner="w1"))
    assert (outcome.status, outcome.rows) == ("succeeded", 2)
    grant = api.issue_download(created.shown.job.id, TENANT)
    served = api.open_file(created.shown.job.id, grant.token)
    assert served.file_name == "silo_level_export.csv"
    body = b"".join(api.read(served, 0, served.size_bytes - 1))
    assert body == b"silo_id,measured_at,level_pct\r\ns1,2026-01-01T06:00:00Z,81.5\r\n" + (
        b"s2,2026-01-01T07:00:00Z,12.0\r\n"
    )
    listed = api.list_jobs(TENANT, ListRequest(job_type="SILO_LEVEL_EXPORT"))
    assert [s.job.id for s in listed.items] == [created.shown.job.id]
    assert "SILO_LEVEL_EXPORT" not in JOB_TYPES  # the service's registry is left as it was


def test_a_service_without_the_type_refuses_it_naming_the_types_it_has() -> None:
    api, _, queue = service(JOB_TYPES)
    with pytest.raises(ValidationError) as refused:
        api.create(SILO_CSV, MANAGER)
    assert refused.value.field == "job_type"
    assert refused.value.message == "job_type must be one of " + ", ".join(JOB_TYPES)
    assert queue.take() is None


def test_a_worker_built_without_the_type_fails_its_job_saying_so() -> None:
    api, worker, queue = service(JOB_TYPES.extended(SILO_LEVELS), runs_with=JOB_TYPES)
    created = api.create(SILO_CSV, MANAGER)
    message = queue.take()
    assert message is not None
    outcome = worker.run(message, RunContext(owner="w1"))
    assert (outcome.status, outcome.detail) == ("failed", "EXPORT_FAILED")
    job = api.get(created.shown.job.id, TENANT).job
    assert job.status is JobStatus.FAILED
    assert job.error_message == "job type SILO_LEVEL_EXPORT is not known to this worker"
