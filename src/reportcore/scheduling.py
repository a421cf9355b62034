"""Schedules' use cases: what a user does with a schedule, and the scheduler's pass.

Each occurrence makes exactly one job whatever the number of schedulers: the pass claims it by
one conditional write (``next_run_at`` moves on only from the value it read, and the occurrence
is recorded as pending), then creates the job through the create use case with the
occurrence's idempotency key. A scheduler that dies between the two leaves the occurrence
pending; once that is older than ``stuck_after_sec``, any scheduler creates its job (or finds
it: the key makes the create a replay). A template that no longer validates makes no job: the
schedule records why, and counts the occurrences skipped in a row.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from .deps import Deps
from .errors import (
    IdempotencyKeyReused,
    NotFound,
    ReportError,
    ServiceUnavailable,
    TooManyJobs,
    TooManySchedules,
    ValidationError,
)
from .jobs import Job
from .ports import ScheduleRepository
from .requests import (
    Cursor,
    ListRequest,
    uuid_or_none,
    validate_create,
    validate_list,
    widest_range,
)
from .schedules import (
    JobTemplate,
    Schedule,
    ScheduleRange,
    create_request,
    latest_due,
    next_occurrence,
    occurs_ever,
    validate_cron,
    validate_name,
    validate_range,
    validate_schedule_timezone,
    validate_template,
    widest_days,
)
from .usecases import admit_create, create_job

# a PATCH that keeps meeting a claim or another PATCH gives up after this many reads
PATCH_TRIES = 5
# a schedule this process cannot read (a stored zone its tzdata lacks, a cron its cronsim
# refuses) is claimed this far ahead with the reason shown: it holds neither the pass nor the
# head of every batch, and is tried again then (a process with newer data may read it)
UNREADABLE_RETRY = dt.timedelta(minutes=5)
# A PATCH's updated_at, the version the next one is written over, moves at least this far:
# PostgreSQL keeps milliseconds, so a smaller step from an api whose clock is behind the last
# write left the version as it was, and a PATCH landing meanwhile was written over
_VERSION_STEP = dt.timedelta(milliseconds=1)


class ScheduleRequest(msgspec.Struct, kw_only=True):
    """A new schedule as given, before any check."""

    job: JobTemplate
    cron: str
    timezone: str | None = None
    range: ScheduleRange
    name: str | None = None
    active: bool = True
    tenant_id: str | None = None


class SchedulePatch(msgspec.Struct, kw_only=True):
    """What a PATCH changes: only the fields it names (``name: null`` clears the name)."""

    name: str | msgspec.UnsetType | None = msgspec.UNSET
    job: JobTemplate | msgspec.UnsetType = msgspec.UNSET
    # null is taken here so that the rule's 400 names the field, as at create
    cron: str | msgspec.UnsetType | None = msgspec.UNSET
    timezone: str | msgspec.UnsetType | None = msgspec.UNSET
    range: ScheduleRange | msgspec.UnsetType | None = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET


class SchedulePage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a tenant's schedules and where the next starts (``None``: the last)."""

    items: list[Schedule]
    after: Cursor | None


class SchedulerPass(msgspec.Struct, kw_only=True):
    """What one pass of the scheduler did: jobs created (and how late, in seconds, each
    occurrence ran) and occurrences skipped."""

    created: int = 0
    skipped: int = 0
    lags: list[float] = msgspec.field(default_factory=list)
    # the pass took a whole batch of due schedules: more may be due, run the next one now
    full: bool = False


def _repository(deps: Deps) -> ScheduleRepository:
    if deps.schedules is None or deps.cron is None:
        raise NotFound("schedules are not available in this process")
    return deps.schedules


def _checked(schedule: Schedule, deps: Deps, now: dt.datetime) -> Schedule:
    """``schedule`` with every rule checked and its ``next_run_at`` (``None`` while paused).

    The template is checked as the create of its first occurrence would be, so that a
    schedule that could never make a job is a 400 now rather than a skip later.
    """
    assert deps.cron is not None
    validate_name(schedule.name)  # a NUL is a control character too
    cron = validate_cron(schedule.cron, deps.cron)
    validate_range(schedule.range)
    validate_template(schedule.job)
    first = occurs_ever(cron, validate_schedule_timezone(schedule.timezone), now, deps.cron)
    # the checks answer what they were given, but for the cron: its fields spaced once
    checked = msgspec.structs.replace(
        schedule, cron=cron, next_run_at=first if schedule.active else None
    )
    try:
        valid = validate_create(create_request(checked, first), job_types=deps.job_types)
        _check_widest(schedule, valid.job_type, deps)
        admit_create(valid, now=now, policy=deps.policy, job_types=deps.job_types)
    except ValidationError as exc:
        if exc.field == "range":
            raise
        field = f"job.{exc.field}" if exc.field else "job"
        raise ValidationError(exc.message, field=field) from None
    return checked


def _check_widest(schedule: Schedule, job_type: str, deps: Deps) -> None:
    """The range at its widest occurrence against the job type's limit, naming ``range`` (a
    previous_month made in February, 28 days, under a 30-day limit would be skipped after
    every 31-day month); before the first occurrence's dates are checked, which would name
    ``job.end_date``, a field a schedule may not set."""
    limit = widest_range(job_type, deps.policy.max_range_days, deps.job_types)
    if (widest := widest_days(schedule.range)) > limit:
        raise ValidationError(
            f"{job_type} may span at most {limit} days; this range spans up to {widest}",
            field="range",
        )


def create_schedule(
    request: ScheduleRequest, *, tenant_id: str, created_by: str | None, deps: Deps
) -> Schedule:
    """Check and store a new schedule of ``tenant_id``; 429 past the tenant's cap."""
    repository = _repository(deps)
    now = deps.clock.now()
    schedule = Schedule(
        id=deps.ids.new_id(),
        tenant_id=tenant_id,
        created_by=created_by,
        name=request.name,
        job=request.job,
        cron=request.cron,
        timezone=request.timezone,  # type: ignore[arg-type]  # checked by _checked
        range=request.range,
        active=request.active,
        created_at=now,
        updated_at=now,
    )
    cap = deps.schedule_rules.max_per_tenant
    stored = repository.add(_checked(schedule, deps, now), cap)
    if stored is None:
        raise TooManySchedules(f"a tenant may have at most {cap} schedules")
    return stored


def get_schedule(schedule_id: str, *, tenant_id: str, deps: Deps) -> Schedule:
    """The tenant's schedule, or :class:`NotFound` (also another tenant's, or a bad id)."""
    repository = _repository(deps)
    canonical = uuid_or_none(schedule_id)
    found = repository.get(canonical, tenant_id) if canonical else None
    if found is None:
        raise NotFound("schedule not found")
    return found


def list_schedules(wanted: ListRequest, *, tenant_id: str, deps: Deps) -> SchedulePage:
    """A page of the tenant's schedules, newest first; ``wanted``'s limit and cursor as for
    jobs (its other filters are not asked for)."""
    repository = _repository(deps)
    query = validate_list(ListRequest(after=wanted.after, limit=wanted.limit))
    rows = repository.find(tenant_id, query.after, query.limit + 1)
    items = rows[: query.limit]
    more = len(rows) > query.limit
    after = Cursor(items[-1].created_at, items[-1].id) if more and items else None
    return SchedulePage(items=items, after=after)


def update_schedule(
    schedule_id: str, patch: SchedulePatch, *, tenant_id: str, deps: Deps
) -> Schedule:
    """Apply the fields ``patch`` names, checked as at create; a new cron, zone or a resume
    starts counting occurrences from now (a resumed schedule does not catch up)."""
    repository = _repository(deps)
    changes = {
        name: value
        for name in ("name", "job", "cron", "timezone", "range", "active")
        if (value := getattr(patch, name)) is not msgspec.UNSET
    }
    # Written only over the row as read: a scheduler claiming the due occurrence meanwhile
    # (writing its next_run_at back would make it due again) or another PATCH (whose changes
    # this one would undo) makes the write miss, and the patch is applied again to the row
    # as it is now.
    for _ in range(PATCH_TRIES):
        current = get_schedule(schedule_id, tenant_id=tenant_id, deps=deps)  # 404 once gone
        now = max(deps.clock.now(), current.updated_at + _VERSION_STEP)
        wanted = msgspec.structs.replace(current, updated_at=now, **changes)
        if changes.keys() & {"job", "range", "cron", "timezone"} or (
            wanted.active and not current.active
        ):
            checked = _checked(wanted, deps, now)
        else:
            # a pause or a rename leaves what makes the jobs as it was: not checked again, so
            # that a schedule whose template stopped validating (skipping each occurrence,
            # its notify_url's host no longer allowed) can still be paused
            validate_name(wanted.name)
            checked = wanted if wanted.active else msgspec.structs.replace(wanted, next_run_at=None)
        timing_same = (
            checked.cron == current.cron
            and checked.timezone == current.timezone
            and checked.active == current.active
        )
        if timing_same:  # the occurrence already due stays due
            checked = msgspec.structs.replace(checked, next_run_at=current.next_run_at)
        stored = repository.update(checked, current)
        if stored is not None:
            return stored
    raise ServiceUnavailable("schedule kept changing while it was updated; try again")


def delete_schedule(schedule_id: str, *, tenant_id: str, deps: Deps) -> None:
    """Remove the tenant's schedule; the jobs it made stay."""
    repository = _repository(deps)
    canonical = uuid_or_none(schedule_id)
    if canonical is None or not repository.delete(canonical, tenant_id):
        raise NotFound("schedule not found")


def run_schedules(deps: Deps) -> SchedulerPass:
    """One pass of the scheduler: every due occurrence claimed and its job created, and every
    occurrence a dead scheduler left claimed finished."""
    repository = _repository(deps)
    assert deps.cron is not None
    rules = deps.schedule_rules
    now = deps.clock.now()
    stuck_before = now - dt.timedelta(seconds=rules.stuck_after_sec)
    due_now = repository.due(now, stuck_before, rules.batch)
    done = SchedulerPass(full=len(due_now) >= rules.batch)
    for schedule in due_now:
        if schedule.pending is not None:
            # an occurrence claimed and not made yet: its scheduler's until it is stuck, then
            # anyone's; the next one is claimed only once it is made (else it would be lost
            # with the claim it replaced)
            if schedule.claimed_at is None or schedule.claimed_at < stuck_before:
                _make_job(schedule, schedule.pending, deps, done)
            continue
        due = schedule.next_run_at
        if not schedule.active or due is None or due > now:
            continue
        try:
            occurrence = latest_due(schedule.cron, schedule.timezone, due, now, deps.cron)
            following = next_occurrence(schedule.cron, schedule.timezone, now, deps.cron)
        except Exception as exc:
            _set_aside(schedule, due, deps, done, exc)
            continue
        # claimed at the time of the claim, not of the pass: a long pass must not make its
        # own fresh claims look stuck to another scheduler
        claimed = repository.claim(schedule.id, due, occurrence, following, deps.clock.now())
        if claimed is not None:
            _make_job(claimed, occurrence, deps, done)
    return done


def _set_aside(
    schedule: Schedule, due: dt.datetime, deps: Deps, done: SchedulerPass, exc: Exception
) -> None:
    """Skip the occurrence ``due`` of a schedule this process cannot read, and claim the
    schedule's next run :data:`UNREADABLE_RETRY` from now."""
    repository = _repository(deps)
    now = deps.clock.now()
    if repository.claim(schedule.id, due, due, now + UNREADABLE_RETRY, now) is None:
        return  # another scheduler had it
    reason = f"the schedule could not be read ({type(exc).__name__}: {exc}); tried again later"
    repository.record_skip(schedule.id, due, reason[:500])
    done.skipped += 1


def _made_before(schedule: Schedule, occurrence: dt.datetime, deps: Deps) -> Job | None:
    """The job this schedule made for ``occurrence`` before its scheduler died unrecorded, if
    the template changed since (a PATCH): its key then names a different request."""
    key = create_request(schedule, occurrence).idempotency_key
    made = deps.jobs.by_key(schedule.tenant_id, key) if key is not None else None
    return made if made is not None and made.schedule_id == schedule.id else None


def _make_job(schedule: Schedule, occurrence: dt.datetime, deps: Deps, done: SchedulerPass) -> None:
    """Create the occurrence's job as a create request would, and record the outcome."""
    repository = _repository(deps)
    try:
        valid = validate_create(create_request(schedule, occurrence), job_types=deps.job_types)
        created = create_job(
            valid,
            tenant_id=schedule.tenant_id,
            requested_by=schedule.created_by,
            jobs=deps.jobs,
            queue=deps.queue,
            clock=deps.clock,
            policy=deps.policy,
            job_types=deps.job_types,
            schedule_id=schedule.id,
            scheduled_for=occurrence,
            ids=deps.ids,
        )
    except (ValidationError, IdempotencyKeyReused, TooManyJobs) as exc:
        made = (
            _made_before(schedule, occurrence, deps)
            if isinstance(exc, IdempotencyKeyReused)
            else None
        )
        if made is not None:
            repository.record_run(schedule.id, occurrence, made.id)
            return
        # a template that no longer validates, or a tenant at its cap of unfinished jobs: the
        # occurrence is skipped with the reason shown (the next one tries again)
        repository.record_skip(schedule.id, occurrence, exc.message)
        done.skipped += 1
        return
    except ReportError:
        raise  # a store or the queue down: the pass fails, the claim is finished later
    except Exception as exc:
        # a template this process cannot turn into a request (a zone its tzdata lacks): the
        # occurrence is skipped with the reason shown, not the whole pass failed on it
        reason = f"the occurrence could not be made ({type(exc).__name__}: {exc})"
        repository.record_skip(schedule.id, occurrence, reason[:500])
        done.skipped += 1
        return
    repository.record_run(schedule.id, occurrence, created.job.id)
    if not created.replayed:
        done.created += 1
        done.lags.append(max(0.0, (deps.clock.now() - occurrence).total_seconds()))
