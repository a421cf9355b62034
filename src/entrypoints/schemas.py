"""The shapes of the HTTP edge: request and response bodies, their spellings and examples.

These Structs are what handlers take and return, so the OpenAPI document is generated from the
same types that are decoded and encoded. They carry no rules: a body is turned into the core's
request as it is (:meth:`CreateRequest.to_core`), and the core checks it; the job JSON is built
here from a :class:`reportcore.jobs.Job`, leaving out the worker's bookkeeping. The HTTP
spelling lives here: the dashboard's ``tenantId``, the opaque list cursor, the file URL.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from reportcore.errors import ValidationError
from reportcore.jobs import Compression, CsvOptions, Job, JobStatus, JobType, ReportFormat
from reportcore.requests import CreateRequest as CoreCreateRequest
from reportcore.requests import Cursor
from reportcore.service import Listed, Shown
from reportcore.usecases import DownloadGrant
from reportcore.webhooks import DeliveryState, Notification

JOBS_PATH = "/api/v1/reports/jobs"

OptionalUuid = Annotated[
    str | None, msgspec.Meta(description="UUID", examples=["0f8fad5b-d9cb-469f-a165-70867728950e"])
]
OptionalDate = Annotated[
    str | None, msgspec.Meta(description="YYYY-MM-DD", examples=["2026-01-31"])
]


def named_tenant(*names: str | None) -> str | None:
    """The one tenant a request names, if any, from every place it may name one.

    A request may spell the tenant ``tenant_id`` or ``tenantId`` (the dashboard's spelling),
    in the body or the query; naming two different tenants is a :class:`ValidationError`
    rather than a guess at which one was meant.
    """
    given = {n for n in names if n}
    if len(given) > 1:
        raise ValidationError("tenant_id and tenantId name different tenants", field="tenant_id")
    return given.pop() if given else None


class CreateRequest(msgspec.Struct, kw_only=True):
    """The body of ``POST /api/v1/reports/jobs``; unknown top-level fields are ignored."""

    job_type: JobType
    format: ReportFormat
    farm_id: OptionalUuid = None
    barn_id: OptionalUuid = None
    batch_id: OptionalUuid = None
    start_date: OptionalDate = None
    end_date: OptionalDate = None
    filters: dict[str, Any] | None = None
    idempotency_key: str | None = None
    tenant_id: str | None = None
    tenantId: str | None = None  # the dashboard spells it so; both are accepted
    # export options (docs/api.md): absent means the file is written as it always was
    compression: Compression | None = None
    csv: CsvOptions | None = None
    columns: Annotated[
        list[str] | None,
        msgspec.Meta(
            description="a subset of the job type's columns, in the order wanted",
            examples=[["occurred_at", "quantity_kg"]],
        ),
    ] = None
    timezone: Annotated[
        str | None, msgspec.Meta(description="IANA time zone name", examples=["Asia/Bangkok"])
    ] = None
    notify_url: str | None = None  # checked against the allowed hosts by the core

    def to_core(self) -> CoreCreateRequest:
        """The core's create request: the same fields, the tenant named once."""
        fields = msgspec.structs.asdict(self)
        fields.pop("tenantId")
        fields["tenant_id"] = named_tenant(self.tenant_id, self.tenantId)
        fields["job_type"] = str(self.job_type)
        return CoreCreateRequest(**fields)


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe cursor."""
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


# A cursor encode_cursor makes is ~100 characters (an instant and a job id): a longer one is
# refused before it is decoded
MAX_CURSOR_CHARS = 200


def decode_cursor(text: str) -> Cursor:
    """The cursor ``encode_cursor`` made, or a 400."""
    if len(text) > MAX_CURSOR_CHARS:
        raise ValidationError(
            f"cursor is not valid (at most {MAX_CURSOR_CHARS} characters)", field="cursor"
        )
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = msgspec.json.decode(raw, type=Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValidationError("cursor is not valid", field="cursor") from None
    if cursor.created_at.tzinfo is None:
        raise ValidationError("cursor is not valid", field="cursor")
    try:
        cursor.created_at.astimezone(dt.UTC)
    except OverflowError:  # no stored job is that old or that new: a forged cursor
        raise ValidationError("cursor is not valid", field="cursor") from None
    return cursor


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
    job_type: Annotated[
        str, msgspec.Meta(description="a job type's name", examples=["FEED_INTAKE_EXPORT"])
    ]
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
    # the schedule that created the job and the occurrence it was for (null: created by hand)
    schedule_id: str | None
    scheduled_for: Instant | None
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
        schedule_id=job.schedule_id,
        scheduled_for=_utc(job.scheduled_for),
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


def shown_out(shown: Shown) -> JobOut:
    """The job JSON of a job as the core shows it (with its webhook's state)."""
    return job_out(shown.job, shown.notification)


def page_out(page: Listed) -> JobPageOut:
    """The listing JSON of ``page``: its jobs, and the opaque cursor of the next page."""
    after = page.after
    return JobPageOut(
        items=[shown_out(s) for s in page.items],
        next_cursor=encode_cursor(after) if after is not None else None,
    )


class DownloadOut(msgspec.Struct, kw_only=True):
    """A short-lived URL of the job's file."""

    download_url: str
    expires_at: Instant


def file_url(job_id: str, token: str) -> str:
    """The API's own URL of a job's file, with the download token that grants it."""
    return f"{JOBS_PATH}/{job_id}/file?token={token}"


def download_out(grant: DownloadGrant) -> DownloadOut:
    """The download JSON of ``grant``: the file's URL, and when its token expires."""
    expires = _utc(grant.expires_at)
    assert expires is not None
    return DownloadOut(download_url=file_url(grant.job_id, grant.token), expires_at=expires)


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
