"""Schedules: a job template created at each occurrence of a cron expression, in a time zone.

The rules of time live here, pure: when an occurrence is (the cron read as wall-clock time in
the schedule's IANA zone; a wall time that does not exist, a DST gap, runs at the first minute
that does; one that exists twice, a fold, runs once, at its first instant), which occurrence
runs after downtime (only the latest missed one) and which whole local days its ``range``
covers. Reading the cron expression itself is the :class:`CronRules` port's (a well-kept cron
library in ``adapters.cron``): it only answers which wall-clock minute matches next, with no
zone, so every decision about zones is made here, on ``zoneinfo`` alone.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Protocol, runtime_checkable

import msgspec

from .errors import ValidationError
from .jobs import Compression, CsvOptions, ReportFormat
from .options import validate_timezone, zone_of
from .requests import CreateRequest, refuse_nul

MINUTE = dt.timedelta(minutes=1)
MAX_CRON_LENGTH = 100
MAX_NAME_LENGTH = 200
MAX_LAST_DAYS = 366
DEFAULT_MAX_SCHEDULES = 100
# Downtime is searched back in these steps for its latest missed occurrence, so that a
# schedule due every minute does not walk a week of minutes one by one after a week down.
_LOOKBACK = (
    dt.timedelta(hours=1),
    dt.timedelta(days=2),
    dt.timedelta(days=40),
    dt.timedelta(days=400),
)


class ScheduleRules(msgspec.Struct, frozen=True, kw_only=True):
    """The knobs of schedules: the cap per tenant, how long a claimed occurrence may wait for
    its job before another scheduler creates it, and how many are taken in one pass."""

    max_per_tenant: int = DEFAULT_MAX_SCHEDULES
    stuck_after_sec: float = 30.0
    batch: int = 50


@runtime_checkable
class CronRules(Protocol):
    """Reads five-field cron expressions as plain wall-clock time (no zone, no DST)."""

    def check(self, expr: str) -> None:
        """Raise ``ValueError`` saying why, unless ``expr`` is a cron expression it reads."""
        ...

    def next_match(self, expr: str, after: dt.datetime) -> dt.datetime | None:
        """The first naive wall-clock minute strictly after the naive ``after`` that ``expr``
        matches, or ``None`` if there is none (for decades)."""
        ...


class RangeKind(enum.StrEnum):
    """The date ranges named by a word; ``{"last_days": N}`` is the other kind."""

    PREVIOUS_DAY = "previous_day"
    PREVIOUS_WEEK = "previous_week"  # Monday..Sunday
    PREVIOUS_MONTH = "previous_month"
    MONTH_TO_DATE = "month_to_date"  # the 1st .. the occurrence's day


class LastDays(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``last_days`` whole local days before the occurrence's day."""

    last_days: int


ScheduleRange = RangeKind | LastDays


def resolve_range(rng: ScheduleRange, day: dt.date) -> tuple[dt.date, dt.date]:
    """``start_date``, ``end_date`` (inclusive) of ``rng`` for an occurrence on local ``day``."""
    if isinstance(rng, LastDays):
        return day - dt.timedelta(days=rng.last_days), day - dt.timedelta(days=1)
    if rng is RangeKind.PREVIOUS_DAY:
        yesterday = day - dt.timedelta(days=1)
        return yesterday, yesterday
    if rng is RangeKind.PREVIOUS_WEEK:
        monday = day - dt.timedelta(days=day.weekday())
        return monday - dt.timedelta(days=7), monday - dt.timedelta(days=1)
    first = day.replace(day=1)
    if rng is RangeKind.MONTH_TO_DATE:
        return first, day
    last_of_previous = first - dt.timedelta(days=1)
    return last_of_previous.replace(day=1), last_of_previous


def widest_days(rng: ScheduleRange) -> int:
    """The most days ``rng`` ever spans, both ends counted (a month: 31)."""
    if isinstance(rng, LastDays):
        return rng.last_days
    return {RangeKind.PREVIOUS_DAY: 1, RangeKind.PREVIOUS_WEEK: 7}.get(rng, 31)


def range_of(rng: ScheduleRange, occurrence: dt.datetime, timezone: str) -> tuple[dt.date, dt.date]:
    """The dates ``rng`` covers for ``occurrence`` (an instant), read in ``timezone``."""
    return resolve_range(rng, occurrence.astimezone(zone_of(timezone)).date())


# --- occurrences ---


def _wall(instant: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The naive wall-clock time of an aware ``instant`` in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def instant_of(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The UTC instant a naive wall-clock minute runs at in ``zone``.

    A wall time that exists once is that instant; one that exists twice (a fold) is its first;
    one that does not exist (a gap) is the first instant whose wall time is later: the next
    minute that exists.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(dt.UTC)
    if _wall(first, zone) == wall:
        return first
    # in a gap, fold=0 reads the wall time with the offset before the change and fold=1 with
    # the one after: the change, where wall time jumps past ``wall``, lies between them
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(dt.UTC)
    hi = first
    lo, hi = min(lo, hi), max(lo, hi)
    # the first whole minute in (lo, hi] whose wall time is after ``wall``
    steps = int((hi - lo) / MINUTE)
    low, high = 0, steps
    while low < high:
        mid = (low + high) // 2
        if _wall(lo + mid * MINUTE, zone) > wall:
            high = mid
        else:
            low = mid + 1
    return lo + low * MINUTE


def next_occurrence(
    cron: str, timezone: str, after: dt.datetime, rules: CronRules
) -> dt.datetime | None:
    """The first occurrence strictly after the instant ``after``, aware UTC (``None``: never).

    Occurrences rise with their wall-clock minutes (a gap's run at the change, a fold's at its
    first pass), and none of the minutes up to ``after``'s wall time is after ``after``: so
    the matches from there on are tried in order, skipping those a fold puts before ``after``.
    """
    zone = zone_of(timezone)
    wall: dt.datetime | None = _wall(after, zone)
    while True:
        assert wall is not None
        wall = rules.next_match(cron, wall)
        if wall is None:
            return None
        at = instant_of(wall, zone)
        if at > after:
            return at


def latest_due(
    cron: str,
    timezone: str,
    next_run_at: dt.datetime,
    now: dt.datetime,
    rules: CronRules,
) -> dt.datetime:
    """The latest occurrence at or before ``now``, of a schedule due at ``next_run_at`` (an
    occurrence, at or before ``now``): after downtime only that one runs."""
    for back in (*_LOOKBACK, None):
        start = next_run_at if back is None else max(next_run_at, now - back)
        latest = next_run_at if start == next_run_at else None
        at: dt.datetime | None = start - dt.timedelta(microseconds=1)
        while True:
            assert at is not None
            at = next_occurrence(cron, timezone, at, rules)
            if at is None or at > now:
                break
            latest = at
        if latest is not None:
            return latest
    return next_run_at  # unreachable: the last step starts at next_run_at itself


# the scheduler's keys; a client's create may not use one (it would take an occurrence's job)
SCHEDULE_KEY_PREFIX = "schedule:"


def idempotency_key_for(schedule_id: str, occurrence: dt.datetime) -> str:
    """``schedule:<id>:<occurrence in UTC>``: the key of the one job of an occurrence."""
    utc = occurrence.astimezone(dt.UTC).replace(tzinfo=None)
    return f"{SCHEDULE_KEY_PREFIX}{schedule_id}:{utc.isoformat(timespec='seconds')}Z"


# --- the schedule ---


class JobTemplate(msgspec.Struct, kw_only=True):
    """The job a schedule creates: a create body without dates or idempotency key (those come
    from each occurrence; naming them is a 400). Unknown fields are ignored, as in a create."""

    job_type: str
    format: ReportFormat
    farm_id: str | None = None
    barn_id: str | None = None
    batch_id: str | None = None
    filters: dict[str, Any] | None = None
    compression: Compression | None = None
    csv: CsvOptions | None = None
    columns: list[str] | None = None
    timezone: str | None = None
    notify_url: str | None = None
    # refused when given: present so that a body naming them is told so, not silently changed
    start_date: str | None = None
    end_date: str | None = None
    idempotency_key: str | None = None


class Schedule(msgspec.Struct, kw_only=True):
    """A tenant's schedule and what is known about its runs.

    The first block is the schedule JSON of the contract; ``last_error``, ``last_skipped_at``
    and ``skipped_in_a_row`` say why its latest occurrences made no job. ``pending`` and
    ``claimed_at`` are the scheduler's bookkeeping: an occurrence claimed and not yet known to
    have its job (a scheduler that died in between leaves it for another to finish).
    """

    id: str
    tenant_id: str
    created_by: str | None
    name: str | None = None
    job: JobTemplate
    cron: str
    timezone: str
    range: ScheduleRange
    active: bool = True
    next_run_at: dt.datetime | None = None
    last_run_at: dt.datetime | None = None
    last_job_id: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    last_error: str | None = None
    last_skipped_at: dt.datetime | None = None
    skipped_in_a_row: int = 0
    pending: dt.datetime | None = None
    claimed_at: dt.datetime | None = None


def create_request(schedule: Schedule, occurrence: dt.datetime) -> CreateRequest:
    """The create request of ``schedule``'s job at ``occurrence``: the template, the range's
    dates in the schedule's zone, the occurrence's idempotency key and the tenant."""
    start, end = range_of(schedule.range, occurrence, schedule.timezone)
    t = schedule.job
    return CreateRequest(
        job_type=t.job_type,
        format=t.format,
        farm_id=t.farm_id,
        barn_id=t.barn_id,
        batch_id=t.batch_id,
        start_date=start.isoformat(),
        end_date=end.isoformat(),
        filters=t.filters,
        idempotency_key=idempotency_key_for(schedule.id, occurrence),
        tenant_id=schedule.tenant_id,
        compression=t.compression,
        csv=t.csv,
        columns=t.columns,
        timezone=t.timezone,
        notify_url=t.notify_url,
    )


# --- checks ---


def validate_cron(expr: object, rules: CronRules) -> str:
    """Five fields the cron library reads, or a 400 naming ``cron``."""
    if not isinstance(expr, str) or not 1 <= len(expr) <= MAX_CRON_LENGTH:
        raise ValidationError(f"cron must be 1..{MAX_CRON_LENGTH} characters", field="cron")
    fields = expr.split()
    if len(fields) != 5 or not expr.isprintable():
        raise ValidationError(
            "cron must have five fields: minute hour day-of-month month day-of-week "
            "(e.g. '0 6 * * MON')",
            field="cron",
        )
    try:
        rules.check(expr)
    except ValueError as exc:
        raise ValidationError(f"cron is not valid: {exc}", field="cron") from None
    return " ".join(fields)


def validate_range(value: object) -> ScheduleRange:
    """A range word or ``{"last_days": 1..366}``, or a 400 naming ``range``."""
    if isinstance(value, LastDays):
        if isinstance(value.last_days, bool) or not 1 <= value.last_days <= MAX_LAST_DAYS:
            raise ValidationError(
                f"range.last_days must be an integer 1..{MAX_LAST_DAYS}", field="range"
            )
        return value
    if isinstance(value, RangeKind):
        return value
    words = ", ".join(k.value for k in RangeKind)
    raise ValidationError(f'range must be one of {words} or {{"last_days": N}}', field="range")


def validate_name(value: str | None) -> str | None:
    """An optional printable name of 1..200 characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise ValidationError(f"name must be 1..{MAX_NAME_LENGTH} characters", field="name")
    if not value.isprintable():
        raise ValidationError("name must not contain control characters", field="name")
    return value


def validate_template(template: JobTemplate) -> JobTemplate:
    """The parts of a template a create body has no say in: no dates, no key."""
    refuse_nul(msgspec.to_builtins(template), "job")
    for field in ("start_date", "end_date", "idempotency_key"):
        if getattr(template, field) is not None:
            raise ValidationError(
                f"job.{field} is set by each occurrence, not by the schedule",
                field=f"job.{field}",
            )
    return template


def validate_schedule_timezone(value: object) -> str:
    """The schedule's zone: required, an IANA name."""
    if value is None:
        raise ValidationError("timezone is required (an IANA name)", field="timezone")
    checked = validate_timezone(value)  # type: ignore[arg-type]  # checked inside
    assert checked is not None
    return checked


def occurs_ever(cron: str, timezone: str, now: dt.datetime, rules: CronRules) -> dt.datetime:
    """The first occurrence after ``now``, or a 400 when the expression never matches."""
    at = next_occurrence(cron, timezone, now, rules)
    if at is None:
        raise ValidationError("cron never matches a date (e.g. 30 February)", field="cron")
    return at
