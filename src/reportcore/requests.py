"""Create and list requests: their shapes and every check that needs no I/O."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import ValidationError
from .jobs import Compression, CsvOptions, JobStatus, ReportFormat, Scope
from .jobtypes import JOB_TYPES, JobTypeRegistry, JobTypeSpec
from .options import (
    ExportOptions,
    check_applies,
    export_options,
    validate_columns,
    validate_timezone,
)

MAX_IDEMPOTENCY_KEY = 200
# A filter's list of values: a device list is tens, not thousands. Each value is echoed in every
# GET and listing of its job, so a 60,000-value list made every answer 780 KB.
MAX_FILTER_VALUES = 100
# The dates a job may name. The upstreams take them as instants (``T00:00:00Z`` to
# ``T23:59:59Z``) and the exporters compute the instant after ``end_date``: 9999-12-31 has none
# in Python's calendar. FarmIQ holds no record from before the Unix epoch.
EARLIEST_DATE = dt.date(1970, 1, 1)
LATEST_DATE = dt.date(9999, 12, 30)
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class CreateRequest(msgspec.Struct, kw_only=True):
    """What a create asks for, as text, before any check (the HTTP body, the CLI's flags and a
    library caller all arrive here; the HTTP spelling lives in ``entrypoints``).

    ``job_type`` names a type of the registry the service runs with (:class:`JobType` names the
    service's own); ``tenant_id`` is the tenant the request names, if any.
    """

    job_type: str
    format: ReportFormat
    farm_id: str | None = None
    barn_id: str | None = None
    batch_id: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    filters: dict[str, Any] | None = None
    idempotency_key: str | None = None
    tenant_id: str | None = None
    # export options (docs/api.md): absent means the file is written as it always was
    compression: Compression | None = None
    csv: CsvOptions | None = None
    columns: list[str] | None = None
    timezone: str | None = None
    notify_url: str | None = None  # checked against the allowed hosts by create_job


class ValidCreate(msgspec.Struct, frozen=True, kw_only=True):
    """A create request that passed every check: what a job is made from.

    The options are as given (``None`` when absent), so that a job echoes what it was asked.
    """

    job_type: str
    format: ReportFormat
    scope: Scope
    idempotency_key: str | None
    compression: Compression | None = None
    csv: CsvOptions | None = None
    columns: list[str] | None = None
    timezone: str | None = None
    notify_url: str | None = None


def refuse_nul(value: object, field: str = "") -> None:
    """Raise :class:`ValidationError` when any text in ``value`` holds a NUL character.

    ``value`` is a request as builtins (str, dict, list); the message names the field the
    NUL was found in (``filters.source``). PostgreSQL cannot store a NUL in text, and a NUL
    in a log line or a file name cuts it short, so every caller gets a 400, not a later 500.
    """
    if isinstance(value, str):
        if "\x00" in value:
            name = field or "request"
            raise ValidationError(f"{name} must not contain NUL characters", field=name or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key, field)
            refuse_nul(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list | tuple):
        for item in value:
            refuse_nul(item, field)


def uuid_or_none(value: str) -> str | None:
    """The canonical (lower-case, hyphenated) form of a UUID; ``None`` if ``value`` is none."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def parse_uuid(value: str | None, field: str) -> str | None:
    """The canonical (lower-case, hyphenated) form of a UUID, or a 400 naming ``field``."""
    if value is None:
        return None
    canonical = uuid_or_none(value)
    if canonical is None:
        raise ValidationError(f"{field} must be a UUID", field=field)
    return canonical


def parse_date(value: str | None, field: str) -> dt.date | None:
    """A ``YYYY-MM-DD`` date, or a 400 naming ``field``."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValidationError(f"{field} must be a date YYYY-MM-DD", field=field)
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{field} is not a valid date", field=field) from None
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise ValidationError(
            f"{field} must be between {EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}",
            field=field,
        )
    return day


# an instant's time part follows a T (or, as Python also reads it, a space)
_HAS_TIME = re.compile(r"[Tt ]")


def parse_instant(value: str | None, field: str, *, end_of_day: bool = False) -> dt.datetime | None:
    """An ISO date or instant as an aware UTC datetime; a date means its start (or end)."""
    if value is None:
        return None
    try:
        if not _HAS_TIME.search(value):  # a date in any ISO spelling (20260101, 2026-W01-4)
            day = dt.date.fromisoformat(value)
            t = dt.time.max if end_of_day else dt.time.min
            return dt.datetime.combine(day, t, tzinfo=dt.UTC)
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{field} must be an ISO 8601 date or instant", field=field) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    try:
        return instant.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValidationError(f"{field} is out of range", field=field) from None


def validate_tenant_id(value: str, field: str = "tenant_id") -> str:
    """A tenant id safe to use as a path segment and a key, or a 400."""
    if not isinstance(value, str) or not _TENANT_RE.fullmatch(value):
        raise ValidationError(
            f"{field} must be 1..128 characters of letters, digits, '.', '_', ':' or '-'",
            field=field,
        )
    return value


def validate_idempotency_key(value: str | None) -> str | None:
    """1..200 printable characters, or absent.

    The key is stored and echoed in the job JSON and logs: CR, LF, ESC and other control or
    separator characters would let a client forge lines there.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError(
            f"idempotency_key must be 1..{MAX_IDEMPOTENCY_KEY} characters",
            field="idempotency_key",
        )
    if not value.isprintable():
        raise ValidationError(
            "idempotency_key must not contain control characters", field="idempotency_key"
        )
    return value


def _echo(text: str, limit: int = 100) -> str:
    # a key of any length must not make the answer as long
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def validate_filters(spec: JobTypeSpec, filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The filters object checked against the job type's table; errors list the allowed keys."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise ValidationError("filters must be an object", field="filters")
    allowed = "; ".join(f.describe() for f in spec.filters.values()) or "none"
    out: dict[str, Any] = {}
    for key, value in filters.items():
        fspec = spec.filters.get(key)
        if fspec is None:
            raise ValidationError(
                f"unknown filter {_echo(key)!r} for {spec.job_type}; allowed: {allowed}",
                field=f"filters.{_echo(key)}",
            )
        values: list[Any]
        if isinstance(value, str):
            values = [value]
        elif fspec.many and isinstance(value, list) and value:
            if len(value) > MAX_FILTER_VALUES:
                raise ValidationError(
                    f"filter {key!r} takes at most {MAX_FILTER_VALUES} values, got {len(value)}",
                    field=f"filters.{_echo(key)}",
                )
            values = value
        else:
            raise ValidationError(
                f"filter {key!r} must be a {fspec.describe().split(': ', 1)[1]}; "
                f"allowed: {allowed}",
                field=f"filters.{_echo(key)}",
            )
        for v in values:
            if not isinstance(v, str) or not 1 <= len(v) <= 200:
                raise ValidationError(
                    f"filter {key!r} values must be strings of 1..200 characters",
                    field=f"filters.{_echo(key)}",
                )
            if fspec.choices is not None and v not in fspec.choices:
                raise ValidationError(
                    f"filter {key!r} must be one of {', '.join(sorted(fspec.choices))}",
                    field=f"filters.{_echo(key)}",
                )
        # one canonical form, so that fingerprints do not depend on list order or duplicates
        out[key] = values[0] if isinstance(value, str) else sorted(set(values))
    return out


def validate_create(
    req: CreateRequest,
    *,
    header_key: str | None = None,
    job_types: JobTypeRegistry = JOB_TYPES,
) -> ValidCreate:
    """Every check of a create request that needs no I/O.

    ``header_key`` is the ``Idempotency-Key`` header; when both are given they must agree.
    ``job_types``: the registry the service runs with.
    """
    refuse_nul(msgspec.structs.asdict(req))
    if not isinstance(req.job_type, str) or req.job_type not in job_types:
        raise ValidationError(f"job_type must be one of {', '.join(job_types)}", field="job_type")
    if not isinstance(req.format, ReportFormat):
        raise ValidationError("format must be csv, json or xlsx", field="format")
    spec = job_types[req.job_type]
    farm_id = parse_uuid(req.farm_id, "farm_id")
    barn_id = parse_uuid(req.barn_id, "barn_id")
    batch_id = parse_uuid(req.batch_id, "batch_id")
    start = parse_date(req.start_date, "start_date")
    end = parse_date(req.end_date, "end_date")
    if start is not None and end is not None and end < start:
        raise ValidationError("end_date must be on or after start_date", field="end_date")
    scope = Scope(
        farm_id=farm_id,
        barn_id=barn_id,
        batch_id=batch_id,
        start_date=start,
        end_date=end,
        filters=validate_filters(spec, req.filters),
    )
    missing = [name for name in spec.required_scope if getattr(scope, name) is None]
    if missing:
        raise ValidationError(
            f"{req.job_type} requires {', '.join(spec.required_scope)}; "
            f"missing: {', '.join(missing)}",
            field=missing[0],
        )
    body_key = validate_idempotency_key(req.idempotency_key)
    head_key = validate_idempotency_key(header_key)
    if body_key is not None and head_key is not None and body_key != head_key:
        raise ValidationError(
            "Idempotency-Key header and idempotency_key differ", field="idempotency_key"
        )
    check_applies(req.format, req.compression, req.csv)
    return ValidCreate(
        job_type=str(req.job_type),
        format=req.format,
        scope=scope,
        idempotency_key=body_key if body_key is not None else head_key,
        compression=req.compression,
        csv=req.csv,
        columns=validate_columns(spec, req.columns),
        timezone=validate_timezone(req.timezone),
        notify_url=req.notify_url,
    )


def options_of_create(valid: ValidCreate, job_types: JobTypeRegistry = JOB_TYPES) -> ExportOptions:
    """The export options of a checked create request, as the encoders read them."""
    return export_options(
        job_types[valid.job_type],
        compression=valid.compression,
        csv=valid.csv,
        columns=valid.columns,
        timezone=valid.timezone,
    )


def widest_range(
    job_type: str, max_days: Mapping[str, int], job_types: JobTypeRegistry = JOB_TYPES
) -> int:
    """The most days a job of ``job_type`` may span: ``max_days``' (the operator's), else its
    spec's."""
    return max_days.get(job_type, job_types[job_type].max_range_days)


def check_range(
    job_type: str,
    scope: Scope,
    *,
    today: dt.date,
    max_days: Mapping[str, int],
    job_types: JobTypeRegistry = JOB_TYPES,
) -> None:
    """400 when the job's dates span more days than its type allows (both ends counted).

    An absent ``end_date`` means up to ``today``. An absent ``start_date`` leaves the window
    to the upstream, whose default window is bounded (the last days before ``end``).
    """
    if scope.start_date is None:
        return
    limit = widest_range(job_type, max_days, job_types)
    end = scope.end_date or max(today, scope.start_date)
    days = (end - scope.start_date).days + 1
    if days > limit:
        field = "end_date" if scope.end_date is not None else "start_date"
        raise ValidationError(
            f"{job_type} may span at most {limit} days; "
            f"start_date..{'end_date' if scope.end_date else 'today'} spans {days}",
            field=field,
        )


# --- listing ---


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Position after the last job of a page: newest first, ties broken by id."""

    created_at: dt.datetime
    id: str


class ListQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A validated list request."""

    status: JobStatus | None = None
    job_type: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    after: Cursor | None = None
    limit: int = DEFAULT_PAGE_SIZE
    schedule_id: str | None = None  # only the jobs this schedule created


class ListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A list request as given, before any check: the query's text, and the position after
    which the page starts (the caller decodes its opaque cursor into a :class:`Cursor`)."""

    status: str | None = None
    job_type: str | None = None
    created_from: str | None = None
    created_to: str | None = None
    after: Cursor | None = None
    limit: str | int | None = None
    schedule_id: str | None = None


def validate_list(wanted: ListRequest, *, job_types: JobTypeRegistry = JOB_TYPES) -> ListQuery:
    """A list request checked into a :class:`ListQuery`; ``job_types``: the service's registry."""
    refuse_nul(
        {
            "status": wanted.status,
            "job_type": wanted.job_type,
            "created_from": wanted.created_from,
            "created_to": wanted.created_to,
            "limit": wanted.limit,
            "schedule_id": wanted.schedule_id,
        }
    )
    if wanted.after is not None:
        refuse_nul(wanted.after.id, "cursor")  # a forged cursor can hide one
    status, job_type, limit = wanted.status, wanted.job_type, wanted.limit
    try:
        st = JobStatus(status) if status is not None else None
    except ValueError:
        raise ValidationError(
            f"status must be one of {', '.join(s.value for s in JobStatus)}", field="status"
        ) from None
    if job_type is not None and job_type not in job_types:
        raise ValidationError(f"job_type must be one of {', '.join(job_types)}", field="job_type")
    n = DEFAULT_PAGE_SIZE
    if limit is not None:
        text = str(limit)
        # [0-9], not \d: int() would read '\u0665' (an Arabic-Indic five) as 5
        if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= MAX_PAGE_SIZE:
            raise ValidationError(f"limit must be an integer 1..{MAX_PAGE_SIZE}", field="limit")
        n = int(text)
    frm = parse_instant(wanted.created_from, "created_from")
    to = parse_instant(wanted.created_to, "created_to", end_of_day=True)
    if frm is not None and to is not None and to < frm:
        raise ValidationError("created_to must be on or after created_from", field="created_to")
    return ListQuery(
        status=st,
        job_type=job_type,
        created_from=frm,
        created_to=to,
        after=wanted.after,
        limit=n,
        schedule_id=parse_uuid(wanted.schedule_id, "schedule_id"),
    )
