"""The job: its closed sets (type, format, status) and the record every port speaks in."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Literal

import msgspec


class JobType(enum.StrEnum):
    """The four exports; names are the wire values of the old service."""

    FEED_INTAKE_EXPORT = "FEED_INTAKE_EXPORT"
    KPI_FEEDING_EXPORT = "KPI_FEEDING_EXPORT"
    TELEMETRY_EXPORT = "TELEMETRY_EXPORT"
    WEIGHVISION_EXPORT = "WEIGHVISION_EXPORT"


class ReportFormat(enum.StrEnum):
    """``json`` means NDJSON: one record per line; ``xlsx`` an Excel workbook."""

    CSV = "csv"
    JSON = "json"
    XLSX = "xlsx"

    @property
    def extension(self) -> str:
        """The file extension of the contract (``report.csv`` / ``report.json``)."""
        return self.value

    @property
    def mime_type(self) -> str:
        """The ``Content-Type`` a download is served with."""
        return _MIME_TYPES[self]


_MIME_TYPES = {
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.JSON: "application/x-ndjson",
    ReportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
GZIP_MIME_TYPE = "application/gzip"


class Compression(enum.StrEnum):
    """How a csv or json file is compressed; ``none`` is the default."""

    NONE = "none"
    GZIP = "gzip"


class LineEnding(enum.StrEnum):
    """How a CSV line ends."""

    CRLF = "crlf"
    LF = "lf"

    @property
    def chars(self) -> str:
        """The characters that end a line."""
        return "\r\n" if self is LineEnding.CRLF else "\n"


Delimiter = Literal[",", ";", "\t", "|"]


class CsvOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a CSV file is spelled; the defaults are the contract's RFC 4180 bytes."""

    delimiter: Delimiter = ","
    bom: bool = False
    line_ending: LineEnding = LineEnding.CRLF
    # a text cell that a spreadsheet would run as a formula is written as text ('=... quoted);
    # false: every cell exactly as the upstream sent it, for machine consumers
    formula_guard: bool = True


def stored_extension(fmt: ReportFormat, compression: Compression | None = None) -> str:
    """The extension of the stored file: ``csv``, ``json``, ``xlsx``, ``csv.gz``, ``ndjson.gz``."""
    if compression is Compression.GZIP:
        return "ndjson.gz" if fmt is ReportFormat.JSON else f"{fmt.value}.gz"
    return fmt.extension


def mime_type_for(fmt: ReportFormat, compression: Compression | None = None) -> str:
    """The ``Content-Type`` of the stored file."""
    return GZIP_MIME_TYPE if compression is Compression.GZIP else fmt.mime_type


class JobStatus(enum.StrEnum):
    """Where a job is in its lifecycle; see :mod:`reportcore.lifecycle`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Terminal states never change again."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """What a job exports: ids as strings (UUIDs), dates inclusive, filters already validated."""

    farm_id: str | None = None
    barn_id: str | None = None
    batch_id: str | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    filters: dict[str, Any] = msgspec.field(default_factory=dict)


class Job(msgspec.Struct, kw_only=True):
    """One export request and everything known about its run.

    The first block is the job JSON of the contract; the second holds the worker's bookkeeping
    (lease, publish time, file deletion), stored beside it but never shown to clients.
    """

    id: str
    tenant_id: str
    requested_by: str | None
    job_type: str  # a name in the service's job type registry (JobType names the service's own)
    format: ReportFormat
    farm_id: str | None = None
    barn_id: str | None = None
    batch_id: str | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    filters: dict[str, Any] = msgspec.field(default_factory=dict)
    status: JobStatus = JobStatus.QUEUED
    progress_pct: int = 0
    file_path: str | None = None
    file_name: str | None = None
    mime_type: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    expires_at: dt.datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    idempotency_key: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    attempts: int = 0
    # export options: None when the client did not ask (the job writes what it always did)
    compression: Compression | None = None
    csv: CsvOptions | None = None
    columns: list[str] | None = None
    timezone: str | None = None
    row_count: int | None = None  # rows written, once succeeded
    # where the service POSTs the job's terminal event (reportcore.webhooks); None: nowhere
    notify_url: str | None = None
    # the schedule that created the job and the occurrence it was created for (None: by hand)
    schedule_id: str | None = None
    scheduled_for: dt.datetime | None = None
    # worker bookkeeping, not part of the job JSON
    lease_owner: str | None = None
    lease_expires_at: dt.datetime | None = None
    enqueued_at: dt.datetime | None = None
    file_deleted_at: dt.datetime | None = None

    @property
    def scope(self) -> Scope:
        """The job's scope as one value."""
        return Scope(
            farm_id=self.farm_id,
            barn_id=self.barn_id,
            batch_id=self.batch_id,
            start_date=self.start_date,
            end_date=self.end_date,
            filters=dict(self.filters),
        )


class JobMessage(msgspec.Struct, kw_only=True):
    """The queue message of the old service, kept byte-compatible.

    ``{"job_id","tenant_id","job_type","format","scope":{...},"requested_by"}``. Only
    ``job_id`` is needed to run a job (the row is the truth); the rest is carried for
    compatibility and for operators reading the queue.
    """

    job_id: str
    tenant_id: str | None = None
    job_type: str | None = None
    format: str | None = None
    scope: dict[str, Any] | None = None
    requested_by: str | None = None


def message_for(job: Job) -> JobMessage:
    """The queue message that asks a worker to run ``job``."""
    return JobMessage(
        job_id=job.id,
        tenant_id=job.tenant_id,
        job_type=str(job.job_type),
        format=job.format.value,
        scope={
            "farm_id": job.farm_id,
            "barn_id": job.barn_id,
            "batch_id": job.batch_id,
            "start_date": job.start_date.isoformat() if job.start_date else None,
            "end_date": job.end_date.isoformat() if job.end_date else None,
            "filters": job.filters,
        },
        requested_by=job.requested_by,
    )


def file_name_for(job_type: str, fmt: ReportFormat, compression: Compression | None = None) -> str:
    """The file name offered in ``Content-Disposition``; the stored name is ``report.<ext>``."""
    return f"{str(job_type).lower()}.{stored_extension(fmt, compression)}"
