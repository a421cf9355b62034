"""The shapes of the HTTP edge: response bodies (and the one request body the core lacks).

These Structs are what handlers return, so the OpenAPI document is generated from the same
types that are encoded. They carry no rules: the create body is
:class:`reportcore.requests.CreateRequest`, validated by the core; the job JSON is built here
from a :class:`reportcore.jobs.Job`, leaving out the worker's bookkeeping.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from reportcore.jobs import Compression, CsvOptions, Job, JobStatus, JobType, ReportFormat
from reportcore.usecases import DownloadLink, JobPage
from reportcore.webhooks import DeliveryState, Notification

Instant = Annotated[
    dt.datetime,
    msgspec.Meta(description="ISO 8601 instant in UTC", examples=["2026-01-31T08:15:00Z"]),
]
Day = Annotated[dt.date, msgspec.Meta(description="YYYY-MM-DD", examples=["2026-01-31"])]


class JobOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A report job as clients see it: the old service's fields plus the run's three,
    ``row_count``, and the export options the job was created with (only those given: a job
    without options shows none of them)."""

    id: str
    tenant_id: str
    requested_by: str | None
    job_type: JobType
    format: ReportFormat
    farm_id: str | None
    barn_id: str | None
    batch_id: str | None
    start_date: Day | None
    end_date: Day | None
    filters: dict[str, Any]
    status: JobStatus
    progress_pct: int
    file_path: str | None
    file_name: str | None
    mime_type: str | None
    size_bytes: int | None
    sha256: str | None
    expires_at: Instant | None
    error_code: str | None
    error_message: str | None
    idempotency_key: str | None
    created_at: Instant
    updated_at: Instant
    started_at: Instant | None
    finished_at: Instant | None
    attempts: int
    row_count: Annotated[
        int | None, msgspec.Meta(description="rows written (header excluded); null until done")
    ]
    compression: Compression | None = None
    csv: CsvOptions | None = None
    columns: list[str] | None = None
    timezone: str | None = None
    # only on a job created with notify_url: a job without one is shown exactly as before
    notify_url: str | msgspec.UnsetType = msgspec.UNSET
    notification: NotificationOut | msgspec.UnsetType | None = msgspec.UNSET


class NotificationOut(msgspec.Struct, kw_only=True):
    """The job's webhook: pending (attempts so far), delivered, or failed after the last."""

    state: DeliveryState
    attempts: int
    last_error: str | None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # a naive instant from storage is UTC; an aware one is shown in UTC so that it ends in "Z"
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def shown_file_path(job: Job) -> str | None:
    """Where the job's file lives, relative to the store's root: ``<tenant>/<job>/<name>``.

    The stored value is the server's own (an absolute path under ``EXPORT_ROOT``, or an object
    URL) and names the machine's folders; no client needs them, and none may see them.
    """
    if not job.file_path:
        return None
    name = job.file_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return f"{job.tenant_id}/{job.id}/{name}"


def job_out(job: Job, notification: Notification | None = None) -> JobOut:
    """The job JSON of ``job`` (``notification``: its webhook's state, if it has one)."""
    created = _utc(job.created_at)
    updated = _utc(job.updated_at)
    assert created is not None and updated is not None  # both are required on a Job
    out = JobOut(
        id=job.id,
        tenant_id=job.tenant_id,
        requested_by=job.requested_by,
        job_type=job.job_type,
        format=job.format,
        farm_id=job.farm_id,
        barn_id=job.barn_id,
        batch_id=job.batch_id,
        start_date=job.start_date,
        end_date=job.end_date,
        filters=dict(job.filters or {}),
        status=job.status,
        progress_pct=job.progress_pct,
        file_path=shown_file_path(job),
        file_name=job.file_name,
        mime_type=job.mime_type,
        size_bytes=job.size_bytes,
        sha256=job.sha256,
        expires_at=_utc(job.expires_at),
        error_code=job.error_code,
        error_message=job.error_message,
        idempotency_key=job.idempotency_key,
        created_at=created,
        updated_at=updated,
        started_at=_utc(job.started_at),
        finished_at=_utc(job.finished_at),
        attempts=job.attempts,
        row_count=job.row_count,
        compression=job.compression,
        csv=job.csv,
        columns=job.columns,
        timezone=job.timezone,
    )
    if job.notify_url is not None:
        out.notify_url = job.notify_url
        out.notification = (
            None
            if notification is None
            else NotificationOut(
                state=notification.state,
                attempts=notification.attempts,
                last_error=notification.last_error,
            )
        )
    return out


class JobPageOut(msgspec.Struct, kw_only=True):
    """One page of a listing, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[JobOut]
    next_cursor: str | None


def page_out(page: JobPage, notifications: dict[str, Notification] | None = None) -> JobPageOut:
    """The listing JSON of ``page`` (with its jobs' webhook states)."""
    notes = notifications or {}
    return JobPageOut(
        items=[job_out(j, notes.get(j.id)) for j in page.items], next_cursor=page.next_cursor
    )


class DownloadOut(msgspec.Struct, kw_only=True):
    """A short-lived URL of the job's file."""

    download_url: str
    expires_at: Instant


def download_out(link: DownloadLink) -> DownloadOut:
    """The download JSON of ``link``."""
    expires = _utc(link.expires_at)
    assert expires is not None
    return DownloadOut(download_url=link.download_url, expires_at=expires)


class TenantBody(msgspec.Struct, kw_only=True):
    """The optional body of ``POST .../cancel``: a platform_admin names the tenant here."""

    tenant_id: str | None = None
    tenantId: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """What went wrong: a stable ``code``, a message for people, and the request's trace id."""

    code: Annotated[
        str,
        msgspec.Meta(
            examples=["VALIDATION_ERROR"],
            description=(
                "UNAUTHORIZED, FORBIDDEN, VALIDATION_ERROR, NOT_FOUND, REPORT_NOT_READY, "
                "IDEMPOTENCY_KEY_REUSED, JOB_NOT_CANCELLABLE, REPORT_EXPIRED, "
                "SERVICE_UNAVAILABLE or INTERNAL_ERROR"
            ),
        ),
    ]
    message: str
    traceId: str


class ErrorEnvelope(msgspec.Struct, kw_only=True):
    """Every error response."""

    error: ErrorBody


class Ready(msgspec.Struct, kw_only=True):
    """``GET /api/ready`` when the database and the broker answer."""

    status: Literal["ready"] = "ready"


class ReadinessChecks(msgspec.Struct, kw_only=True):
    """Each backing service: ``ok``, or why not."""

    database: str
    queue: str


class NotReady(msgspec.Struct, kw_only=True):
    """``GET /api/ready`` when a backing service does not answer."""

    status: Literal["not ready"] = "not ready"
    checks: ReadinessChecks
