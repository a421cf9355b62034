"""The contract of the ScheduleRepository port, run against the in-memory, PostgreSQL and SQLite
adapters: one claim per occurrence however many schedulers race, the outcome recorded only
for the occurrence claimed, the cap exact, tenants apart, paging in order."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from reportcore.jobs import ReportFormat
from reportcore.ports import JobRepository, ScheduleCounts, ScheduleRepository
from reportcore.requests import Cursor, ListQuery
from reportcore.schedules import JobTemplate, LastDays, RangeKind, Schedule
from reportcore.testing import FakeClock, InMemoryJobRepository, InMemoryScheduleRepository

from .test_job_repository_contract import (
    TENANT,
    added,
    clock,  # noqa: F401  (a fixture)
    repo,  # noqa: F401  (a fixture)
)

MS = dt.timedelta(milliseconds=1)


@pytest.fixture
def schedules(repo: JobRepository) -> ScheduleRepository:  # noqa: F811
    if isinstance(repo, InMemoryJobRepository):
        found: ScheduleRepository = InMemoryScheduleRepository()
    else:
        from adapters.sql_jobs import SqlJobRepository
        from adapters.sql_schedules import SqlScheduleRepository

        assert isinstance(repo, SqlJobRepository)
        found = SqlScheduleRepository(repo)
    assert isinstance(found, ScheduleRepository)
    return found


def new_schedule(clock: FakeClock, tenant_id: str = TENANT, **fields: Any) -> Schedule:  # noqa: F811
    now = clock.now()
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "created_by": "user-1",
        "name": "daily feed",
        "job": JobTemplate(
            job_type="FEED_INTAKE_EXPORT",
            format=ReportFormat.CSV,
            filters={"source": ["MANUAL"]},
            csv=None,
        ),
        "cron": "0 6 * * *",
        "timezone": "Asia/Bangkok",
        "range": LastDays(7),
        "next_run_at": now + dt.timedelta(hours=1),
        "created_at": now,
        "updated_at": now,
    }
    values.update(fields)
    return Schedule(**values)


def stored(schedules: ScheduleRepository, clock: FakeClock, **fields: Any) -> Schedule:  # noqa: F811
    made = schedules.add(new_schedule(clock, **fields), 1000)
    assert made is not None
    clock.advance(0.001)
    return made


def test_a_schedule_reads_back_as_stored(
    schedules: ScheduleRepository,
    clock: FakeClock,  # noqa: F811
) -> None:
    made = new_schedule(clock, range=RangeKind.PREVIOUS_WEEK)
    assert schedules.add(made, 10) == made
    assert schedules.get(made.id, TENANT) == made
    assert schedules.get(made.id, "another-tenant") is None
    other = new_schedule(clock, range=LastDays(3), active=False, next_run_at=None, name=None)
    assert schedules.add(other, 10) == other
    assert schedules.get(other.id, TENANT) == other


def test_the_cap_is_exact_under_concurrent_creates(
    schedules: ScheduleRepository,
    clock: FakeClock,  # noqa: F811
) -> None:
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: schedules.add(new_schedule(clock), 5), range(12)))
    assert sum(1 for m in made if m is not None) == 5
    assert schedules.add(new_schedule(clock, tenant_id="t-other"), 5) is not None


def test_one_of_many_racing_claims_wins_an_occurrence(
    schedules: ScheduleRepository,
    clock: FakeClock,  # noqa: F811
) -> None:
    made = stored(schedules, clock)
    assert made.next_run_at is not None
    occurrence = made.next_run_at
    following = occurrence + dt.timedelta(days=1)
    barrier = threading.Barrier(6)

    def claim(_: int) -> Schedule | None:
        barrier.wait()
        return schedules.claim(made.id, occurrence, occurrence, following, clock.now())

    with ThreadPoolExecutor(6) as pool:
        won = [c for c in pool.map(claim, range(6)) if c is not None]
    assert len(won) == 1
    assert (won[0].next_run_at, won[0].pending) == (following, occurrence)
    # the value read is gone: a late scheduler's claim changes nothing
    assert schedules.claim(made.id, occurrence, occurrence, following, clock.now()) is None
    # nor does the next occurrence's while this one is pending: it would be lost
    later = following + dt.timedelta(days=1)
    assert schedules.claim(made.id, following, following, later, clock.now()) is None
    schedules.record_run(made.id, occurrence, "job-1")
    taken = schedules.claim(made.id, following, following, later, clock.now())
    assert taken is not None and (taken.next_run_at, taken.pending) == (later, following)


def test_due_lists_active_schedules_whose_time_came_and_stuck_claims(
    schedules: ScheduleRepository,
    clock: FakeClock,  # noqa: F811
) -> None:
    now = clock.now()
    due = stored(schedules, clock, next_run_at=now - MS)
    later = stored(schedules, clock, next_run_at=now + dt.timedelta(hours=1))
    paused = stored(schedules, clock, next_run_at=now - MS, active=False)
    stuck = stored(schedules, clock, next_run_at=now - MS)
    assert stuck.next_run_at is not None
    claimed = schedules.claim(stuck.id, stuck.next_run_at, stuck.next_run_at, now + MS * 10, now)
    assert claimed is not None
    ids = {s.id for s in schedules.due(now, now - dt.timedelta(seconds=30), 100)}
    assert due.id in ids and later.id not in ids and paused.id not in ids
    assert stuck.id not in ids  # its claimer may still be at it
    ids = {s.id for s in schedules.due(now, now + MS, 100)}
    assert stuck.id in ids


def test_an_outcome_is_recorded_only_for_the_occurrence_claimed(
    schedules: ScheduleRepository,
    clock: FakeClock,  # noqa: F811
) -> None:
    made = stored(schedules, clock)
    assert made.next_run_at is not None
    occurrence = made.next_run_at
    now = clock.now()
    schedules.record_run(made.id, occurrence, "job-0")  # nothing claimed: nothing changes
    assert schedules.get(made.id, TENANT) == made
    schedules.claim(made.id, occurrence, occurrence, occurrence + dt.timedelta(days=1), now)
    schedules.record_skip(made.id, occurrence, "job.notify_url: host not allowed")
    skipped = schedules.get(made.id, TENANT)
    assert skipped is not None
    assert (skipped.last_error, skipped.last_skipped_at, skipped.skipped_in_a_row) == (
        "job.notify_url: host not allowed",
        occurrence,
        1,
    )
    assert skipped.pending is None
    assert schedules.counts() == ScheduleCounts(active=1, paused=0, skipping=1)
    second = occurrence + dt.timedelta(days=1)
    schedules.claim(made.id, second, second, second + dt.timedelta(days=1), now)
    schedules.record_run(made.id, second, "job-1")
    ran = schedules.get(made.id, TENANT)
    assert ran is not None
    assert (ran.last_run_at, ran.last_job_id, ran.last_error, ran.skipped_in_a_row) == (
        second,
        "job-1",
        None,
        0,
    )
    assert schedules.counts() == ScheduleCounts(active=1, paused=0, skipping=0)


def test_pausing_drops_a_claim_and_update_changes_only_what_a_user_may(
    schedules: ScheduleRepository,
    clock: FakeClock,  # noqa: F811
) -> None:
    made = stored(schedules, clock)
    assert made.next_run_at is not None
    at = made.next_run_at
    claimed = schedules.claim(made.id, at, at, at + dt.timedelta(days=1), clock.now())
    assert claimed is not None
    later = clock.now() + dt.timedelta(minutes=5)
    changed = Schedule(
        **{
            **{f: getattr(made, f) for f in made.__struct_fields__},
            "name": "paused",
            "active": False,
            "next_run_at": None,
            "updated_at": later,
            "created_at": later,  # not a user's to change
            "last_job_id": "forged",
        }
    )
    # over the row as read before the claim: the claim came in between, nothing is written
    assert schedules.update(changed, made) is None
    assert schedules.get(made.id, made.tenant_id) == claimed
    updated = schedules.update(changed, claimed)
    assert updated is not None
    assert (updated.name, updated.active, updated.next_run_at, updated.updated_at) == (
        "paused",
        False,
        None,
        later,
    )
    assert (updated.pending, updated.created_at, updated.last_job_id) == (
        None,
        made.created_at,
        None,
    )
    assert schedules.counts() == ScheduleCounts(active=0, paused=1, skipping=0)
    assert schedules.update(changed, claimed) is None, "a second write over the same read"
    # a paused schedule (next_run_at NULL) is written over as read, and resumed
    resumed = Schedule(
        **{
            **{f: getattr(updated, f) for f in updated.__struct_fields__},
            "active": True,
            "next_run_at": at,
            "updated_at": later + dt.timedelta(minutes=1),
        }
    )
    again = schedules.update(resumed, updated)
    assert again is not None and (again.active, again.next_run_at) == (True, at)
    gone = new_schedule(clock)
    assert schedules.update(gone, gone) is None


def test_delete_and_paging_are_per_tenant_newest_first(
    schedules: ScheduleRepository,
    clock: FakeClock,  # noqa: F811
) -> None:
    mine = [stored(schedules, clock).id for _ in range(5)]
    theirs = stored(schedules, clock, tenant_id="t-other")
    seen: list[str] = []
    after: Cursor | None = None
    while True:
        page = schedules.find(TENANT, after, 2)
        seen += [s.id for s in page]
        if len(page) < 2:
            break
        after = Cursor(page[-1].created_at, page[-1].id)
    assert seen == mine[::-1]
    assert not schedules.delete(theirs.id, TENANT)
    assert schedules.delete(theirs.id, "t-other")
    assert not schedules.delete(theirs.id, "t-other")


def test_jobs_are_listed_by_the_schedule_that_made_them(
    repo: JobRepository,  # noqa: F811
    clock: FakeClock,  # noqa: F811
) -> None:
    sid = str(uuid.uuid4())
    at = clock.now().replace(microsecond=0)
    made = added(repo, clock, schedule_id=sid, scheduled_for=at)
    added(repo, clock)
    [found] = repo.find(TENANT, ListQuery(schedule_id=sid))
    assert (found.id, found.schedule_id, found.scheduled_for) == (made.id, sid, at)
