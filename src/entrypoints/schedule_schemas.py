"""The HTTP shapes of schedules: the create and PATCH bodies and the schedule JSON.

As in :mod:`entrypoints.schemas`, they carry no rules: a body becomes the core's request as it
is (the dashboard's ``tenantId`` folded into ``tenant_id``) and the core checks it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

from reportcore.schedules import JobTemplate, Schedule, ScheduleRange
from reportcore.scheduling import SchedulePage, SchedulePatch, ScheduleRequest

from .schemas import Instant, encode_cursor, named_tenant

SCHEDULES_PATH = "/api/v1/reports/schedules"

Cron = Annotated[
    str,
    msgspec.Meta(
        description="five fields: minute hour day-of-month month day-of-week, read in `timezone`",
        examples=["0 6 * * MON"],
    ),
]
Zone = Annotated[str, msgspec.Meta(description="IANA time zone name", examples=["Asia/Bangkok"])]
Range = Annotated[
    ScheduleRange,
    msgspec.Meta(
        description="previous_day, previous_week (Monday..Sunday), previous_month, month_to_date "
        'or {"last_days": N}, read in `timezone` at each occurrence',
        examples=["previous_week"],
    ),
]
Template = Annotated[
    JobTemplate,
    msgspec.Meta(
        description="a create body without dates or idempotency key (each occurrence sets them)",
        examples=[{"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}],
    ),
]


class ScheduleCreate(msgspec.Struct, kw_only=True):
    """The body of ``POST /api/v1/reports/schedules``; unknown top-level fields are ignored."""

    job: Template
    cron: Cron
    timezone: Zone | None = None
    range: Range
    name: str | None = None
    active: bool = True
    tenant_id: str | None = None
    tenantId: str | None = None

    def to_core(self) -> ScheduleRequest:
        """The core's request, the tenant named once."""
        fields = msgspec.structs.asdict(self)
        fields.pop("tenantId")
        fields["tenant_id"] = named_tenant(self.tenant_id, self.tenantId)
        return ScheduleRequest(**fields)


class SchedulePatchBody(SchedulePatch, kw_only=True):
    """The body of ``PATCH .../{scheduleId}``: only the fields it names change."""

    tenant_id: str | None = None
    tenantId: str | None = None

    def to_core(self) -> SchedulePatch:
        """The core's patch (without the tenant, which the route resolves)."""
        return SchedulePatch(
            **{name: getattr(self, name) for name in SchedulePatch.__struct_fields__}
        )


class ScheduleOut(msgspec.Struct, kw_only=True):
    """A schedule as clients see it. ``last_error``, ``last_skipped_at`` and
    ``skipped_in_a_row``: why the latest occurrences made no job (the template no longer
    validates), until one does."""

    id: str
    tenant_id: str
    created_by: str | None
    name: str | None
    job: dict[str, Any]
    cron: Cron
    timezone: Zone
    range: Range
    active: bool
    next_run_at: Instant | None
    last_run_at: Instant | None
    last_job_id: str | None
    created_at: Instant
    updated_at: Instant
    last_error: str | None
    last_skipped_at: Instant | None
    skipped_in_a_row: int


class SchedulePageOut(msgspec.Struct, kw_only=True):
    """One page of schedules, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[ScheduleOut]
    next_cursor: str | None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def schedule_out(schedule: Schedule) -> ScheduleOut:
    """The schedule JSON; the template shows the fields it sets."""
    template = {k: v for k, v in msgspec.to_builtins(schedule.job).items() if v is not None}
    return ScheduleOut(
        id=schedule.id,
        tenant_id=schedule.tenant_id,
        created_by=schedule.created_by,
        name=schedule.name,
        job=template,
        cron=schedule.cron,
        timezone=schedule.timezone,
        range=schedule.range,
        active=schedule.active,
        next_run_at=_utc(schedule.next_run_at),
        last_run_at=_utc(schedule.last_run_at),
        last_job_id=schedule.last_job_id,
        created_at=schedule.created_at.astimezone(dt.UTC),
        updated_at=schedule.updated_at.astimezone(dt.UTC),
        last_error=schedule.last_error,
        last_skipped_at=_utc(schedule.last_skipped_at),
        skipped_in_a_row=schedule.skipped_in_a_row,
    )


def schedule_page_out(page: SchedulePage) -> SchedulePageOut:
    """A page of schedules and its opaque next cursor."""
    return SchedulePageOut(
        items=[schedule_out(s) for s in page.items],
        next_cursor=encode_cursor(page.after) if page.after else None,
    )
