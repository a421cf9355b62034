"""Schedules over the in-memory adapters: one job per occurrence whatever happens around it.

Every test drives the application (:class:`ReportService`) as the API and the scheduler do, on
a fake clock.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import msgspec
import pytest

from adapters.cron import CronsimRules
from reportcore.access import Principal
from reportcore.deps import Deps
from reportcore.errors import NotFound, ServiceUnavailable, TooManySchedules, ValidationError
from reportcore.jobs import Job, ReportFormat
from reportcore.policy import Policy
from reportcore.requests import CreateRequest, ListQuery, ListRequest
from reportcore.running import RunContext
from reportcore.schedules import LastDays, RangeKind, Schedule, ScheduleRules
from reportcore.scheduling import SchedulePatch, ScheduleRequest
from reportcore.service import ReportService
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    InMemoryScheduleRepository,
    RecordingWebhookSender,
    SequentialIds,
    StaticRecordSource,
)
from reportcore.webhooks import parse_allowed_hosts

TENANT = "t1"
ADMIN = Principal(subject="u1", roles=frozenset({"tenant_admin"}), tenant_id=TENANT)
# Monday 2026-01-05 05:00 UTC = 12:00 in Bangkok
START = dt.datetime(2026, 1, 5, 5, 0, tzinfo=dt.UTC)
FARM = "5b0f8a3e-4c1d-4e59-9a6b-2f1c7d3e9a01"
RECORDS = {
    "FEED_INTAKE_EXPORT": [
        {
            "id": f"r{i}",
            "tenantId": TENANT,
            "farmId": FARM,
            "barnId": "b",
            "source": "MANUAL",
            "quantityKg": "10.5",
            "occurredAt": "2026-01-01T00:00:00Z",
            "createdAt": "2026-01-01T00:00:00Z",
        }
        for i in range(5)
    ]
}
BY_HAND = CreateRequest(job_type="FEED_INTAKE_EXPORT", format=ReportFormat.CSV, farm_id=FARM)
DAILY: dict[str, Any] = {
    "job": {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "farm_id": FARM},
    "cron": "0 6 * * *",
    "timezone": "Asia/Bangkok",
    "range": "previous_day",
}


class FlakyJobs(InMemoryJobRepository):
    """Job storage that fails the next ``fail_adds`` creates, as a database going away would."""

    fail_adds = 0

    def add(self, job: Job, max_unfinished: int | None = None) -> tuple[Job, bool]:
        if self.fail_adds:
            self.fail_adds -= 1
            raise ServiceUnavailable("job store is not available")
        return super().add(job, max_unfinished)


class FlakySchedules(InMemoryScheduleRepository):
    """Schedules whose next ``fail_runs`` records of a job made fail, as a database going away
    right after the create would."""

    fail_runs = 0

    def record_run(self, schedule_id: str, occurrence: dt.datetime, job_id: str) -> None:
        if self.fail_runs:
            self.fail_runs -= 1
            raise ServiceUnavailable("schedule store is not available")
        super().record_run(schedule_id, occurrence, job_id)


class World:
    def __init__(
        self, *, max_schedules: int = 100, notify: str = "", stuck_after_sec: int = 30
    ) -> None:
        self.clock = FakeClock(START)
        self.jobs = FlakyJobs()
        self.queue = InMemoryQueue()
        self.store = InMemoryFileStore()
        self.schedules = FlakySchedules()
        self.deps = Deps(
            jobs=self.jobs,
            queue=self.queue,
            store=self.store,
            clock=self.clock,
            source=StaticRecordSource(RECORDS),
            outbox=self.jobs.outbox,
            sender=RecordingWebhookSender(),
            policy=Policy(notify_hosts=parse_allowed_hosts(notify)),
            schedules=self.schedules,
            cron=CronsimRules(),
            schedule_rules=ScheduleRules(
                max_per_tenant=max_schedules, stuck_after_sec=stuck_after_sec
            ),
        )
        self.app = ReportService(self.deps)

    def policy(self, **changes: Any) -> None:
        self.deps = msgspec.structs.replace(
            self.deps, policy=msgspec.structs.replace(self.deps.policy, **changes)
        )
        self.app = ReportService(self.deps)

    def schedule(self, body: dict[str, Any] = DAILY, **more: Any) -> Schedule:
        request = msgspec.convert({**body, **more}, ScheduleRequest)
        return self.app.create_schedule(request, ADMIN)

    def patch(self, schedule_id: str, **fields: Any) -> Schedule:
        patch = msgspec.convert(fields, SchedulePatch)
        return self.app.update_schedule(schedule_id, patch, ADMIN, None)

    def at(self, *parts: int) -> None:
        self.clock.set(dt.datetime(*parts, tzinfo=dt.UTC))  # type: ignore[misc]

    def jobs_of(self, schedule_id: str | None = None) -> list[Job]:
        return self.jobs.find(TENANT, ListQuery(limit=100, schedule_id=schedule_id))

    def run_all(self) -> None:
        while (body := self.queue.take()) is not None:
            outcome = self.app.run(body, RunContext(owner="w1", stopping=lambda: False))
            self.queue.settle(body, outcome.disposition)


def test_a_new_schedule_is_due_at_its_first_occurrence_in_its_zone() -> None:
    world = World()
    schedule = world.schedule()
    # 06:00 in Bangkok is 23:00 UTC the day before
    assert schedule.next_run_at == dt.datetime(2026, 1, 5, 23, 0, tzinfo=dt.UTC)
    assert (schedule.active, schedule.last_run_at, schedule.created_by) == (True, None, "u1")


def test_an_occurrence_creates_one_job_as_if_posted_with_its_dates_and_key() -> None:
    world = World()
    schedule = world.schedule()
    world.at(2026, 1, 5, 23, 0, 5)
    done = world.app.run_schedules()
    assert (done.created, done.skipped, done.lags) == (1, 0, [5.0])
    [job] = world.jobs_of()
    occurrence = dt.datetime(2026, 1, 5, 23, 0, tzinfo=dt.UTC)
    assert job.schedule_id == schedule.id and job.scheduled_for == occurrence
    # Tuesday 06:00 in Bangkok: yesterday is the Bangkok Monday
    assert (job.start_date, job.end_date) == (dt.date(2026, 1, 5), dt.date(2026, 1, 5))
    assert job.idempotency_key == f"schedule:{schedule.id}:2026-01-05T23:00:00Z"
    assert (job.requested_by, job.farm_id) == ("u1", FARM)
    after = world.app.get_schedule(schedule.id, TENANT)
    assert (after.last_run_at, after.last_job_id) == (occurrence, job.id)
    assert after.next_run_at == dt.datetime(2026, 1, 6, 23, 0, tzinfo=dt.UTC)
    # the same minute again, and the next pass: nothing more
    assert world.app.run_schedules().created == 0
    assert len(world.jobs_of(schedule.id)) == 1


def test_racing_schedulers_create_one_job_per_occurrence() -> None:
    world = World()
    for _ in range(5):
        world.schedule()
    world.at(2026, 1, 5, 23, 0, 1)
    barrier = threading.Barrier(4)

    def scheduler() -> None:
        barrier.wait()
        world.app.run_schedules()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(world.jobs_of()) == 5


def test_a_scheduler_that_dies_between_claim_and_create_leaves_the_job_to_the_next() -> None:
    world = World()
    schedule = world.schedule()
    world.at(2026, 1, 5, 23, 0, 1)
    world.jobs.fail_adds = 1
    with pytest.raises(ServiceUnavailable):
        world.app.run_schedules()
    assert world.jobs_of() == []
    claimed = world.app.get_schedule(schedule.id, TENANT)
    assert claimed.pending == dt.datetime(2026, 1, 5, 23, 0, tzinfo=dt.UTC)
    world.clock.advance(10)  # the claimer may still be at it
    assert world.app.run_schedules().created == 0
    world.clock.advance(30)
    assert world.app.run_schedules().created == 1
    [job] = world.jobs_of()
    assert job.scheduled_for == claimed.pending
    assert world.app.get_schedule(schedule.id, TENANT).pending is None


@pytest.mark.parametrize("claim_age", [64, 299, 300])
def test_a_claim_not_yet_stuck_is_left_to_its_scheduler_and_the_next_waits_for_it(
    claim_age: int,
) -> None:
    """A claim stays its scheduler's for stuck_after_sec (here 300 s), the instant it ends
    included. The next occurrence falling due meanwhile used to be claimed over it, so a
    claim whose scheduler died (or whose create failed) lost its occurrence for good; now the
    next one waits until the pending one is made, then runs as a late one does."""
    world = World(stuck_after_sec=300)
    schedule = world.schedule(cron="* * * * *")
    world.at(2026, 1, 5, 5, 1, 1)
    world.jobs.fail_adds = 1
    with pytest.raises(ServiceUnavailable):
        world.app.run_schedules()
    pending = START.replace(minute=1)
    assert world.app.get_schedule(schedule.id, TENANT).pending == pending
    world.clock.advance(claim_age)
    assert world.app.run_schedules().created == 0, "claimed over a claim not made yet"
    assert world.app.get_schedule(schedule.id, TENANT).pending == pending
    claimed_at = dt.datetime(2026, 1, 5, 5, 1, 1, tzinfo=dt.UTC)
    world.clock.set(claimed_at + dt.timedelta(seconds=301))  # stuck: any scheduler makes it
    assert world.app.run_schedules().created == 1
    assert world.app.run_schedules().created == 1  # then the latest occurrence due
    made = sorted(job.scheduled_for for job in world.jobs_of() if job.scheduled_for)
    assert made == [pending, dt.datetime(2026, 1, 5, 5, 6, tzinfo=dt.UTC)]


def test_every_stuck_claim_of_a_pass_is_finished_not_only_the_first() -> None:
    world = World()
    first, second = world.schedule(), world.schedule()
    world.at(2026, 1, 5, 23, 0, 1)
    world.jobs.fail_adds = 2
    for _ in range(2):  # each pass claims one more schedule and dies creating its job
        with pytest.raises(ServiceUnavailable):
            world.app.run_schedules()
    pending = {world.app.get_schedule(s.id, TENANT).pending for s in (first, second)}
    assert pending == {dt.datetime(2026, 1, 5, 23, 0, tzinfo=dt.UTC)}
    world.clock.advance(60)
    assert world.app.run_schedules().created == 2
    assert {job.schedule_id for job in world.jobs_of()} == {first.id, second.id}


def died_after_making_the_job(world: World) -> Schedule:
    """A schedule whose scheduler made the occurrence's job, then died before recording it."""
    schedule = world.schedule()
    world.at(2026, 1, 5, 23, 0, 1)
    world.schedules.fail_runs = 1
    with pytest.raises(ServiceUnavailable):
        world.app.run_schedules()
    assert len(world.jobs_of()) == 1
    return schedule


def test_a_job_created_before_the_scheduler_died_is_found_again_not_doubled() -> None:
    world = World()
    schedule = died_after_making_the_job(world)
    world.clock.advance(60)
    world.app.run_schedules()
    [job] = world.jobs_of()
    assert world.app.get_schedule(schedule.id, TENANT).last_job_id == job.id


def test_a_job_made_before_the_scheduler_died_is_recorded_though_the_template_changed() -> None:
    """A PATCH of the template between the job made and the next scheduler finishing the
    claim: the re-made request's key named another request (409), recorded as a skip, and the
    schedule showed no job for an occurrence that has one."""
    world = World()
    schedule = died_after_making_the_job(world)
    world.patch(schedule.id, range="previous_week")
    world.clock.advance(60)
    done = world.app.run_schedules()
    [job] = world.jobs_of()
    shown = world.app.get_schedule(schedule.id, TENANT)
    assert (done.created, done.skipped) == (0, 0)
    assert (shown.last_job_id, shown.skipped_in_a_row, shown.last_error) == (job.id, 0, None)


def test_after_downtime_only_the_latest_missed_occurrence_runs_once() -> None:
    world = World()
    world.schedule()
    world.at(2026, 1, 9, 23, 30)  # five daily occurrences missed, the last half an hour ago
    done = world.app.run_schedules()
    assert (done.created, done.lags) == (1, [1800.0])
    [job] = world.jobs_of()
    assert job.scheduled_for == dt.datetime(2026, 1, 9, 23, 0, tzinfo=dt.UTC)
    assert world.app.run_schedules().created == 0


def test_a_paused_schedule_creates_no_job_until_resumed_and_does_not_catch_up() -> None:
    world = World()
    schedule = world.schedule()
    paused = world.patch(schedule.id, active=False)
    assert (paused.active, paused.next_run_at) == (False, None)
    world.at(2026, 1, 7, 0, 0)
    assert world.app.run_schedules().created == 0
    resumed = world.patch(schedule.id, active=True)
    assert resumed.next_run_at == dt.datetime(2026, 1, 7, 23, 0, tzinfo=dt.UTC)
    assert world.app.run_schedules().created == 0
    world.at(2026, 1, 7, 23, 0)
    assert world.app.run_schedules().created == 1


class MillisecondSchedules(InMemoryScheduleRepository):
    """``updated_at`` written to the millisecond, as PostgreSQL's timestamp(3) keeps it, and a
    hook run once inside the next update, before it writes (another PATCH landing between)."""

    hook: Any = None

    def update(self, schedule: Schedule, read: Schedule) -> Schedule | None:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        at = schedule.updated_at
        kept = at.replace(microsecond=at.microsecond // 1000 * 1000)
        return super().update(msgspec.structs.replace(schedule, updated_at=kept), read)


def test_two_patches_at_once_keep_both_changes_on_a_store_of_milliseconds() -> None:
    """A PATCH bumped updated_at (the version it is written over) by 1 us past the one read:
    PostgreSQL keeps milliseconds, so from an api whose clock was behind the last write the
    version did not change, and a PATCH landing meanwhile was written over, its change lost."""
    world = World()
    world.schedules = schedules = MillisecondSchedules()
    world.deps = msgspec.structs.replace(world.deps, schedules=schedules)
    world.app = ReportService(world.deps)
    made = world.schedule()
    world.clock.set(START - dt.timedelta(milliseconds=100))  # another api's clock, behind
    schedules.hook = lambda: world.patch(made.id, range="previous_week")
    world.patch(made.id, name="weekly")
    shown = world.app.get_schedule(made.id, TENANT)
    assert (shown.name, shown.range) == ("weekly", RangeKind.PREVIOUS_WEEK)


def test_a_template_that_no_longer_validates_is_skipped_with_the_reason_shown() -> None:
    world = World(notify="hooks.example.com")
    schedule = world.schedule(job={**DAILY["job"], "notify_url": "https://hooks.example.com/x"})
    world.policy(notify_hosts=())  # the host is no longer allowed
    world.at(2026, 1, 5, 23, 0)
    assert world.app.run_schedules().skipped == 1
    world.at(2026, 1, 6, 23, 0)
    assert world.app.run_schedules().skipped == 1
    shown = world.app.get_schedule(schedule.id, TENANT)
    assert world.jobs_of() == []
    assert shown.last_error is not None and "notify_url" in shown.last_error
    assert shown.skipped_in_a_row == 2
    assert shown.last_skipped_at == dt.datetime(2026, 1, 6, 23, 0, tzinfo=dt.UTC)
    assert world.deps.schedules is not None and world.deps.schedules.counts().skipping == 1
    world.patch(schedule.id, job=DAILY["job"])
    world.at(2026, 1, 7, 23, 0)
    assert world.app.run_schedules().created == 1
    fixed = world.app.get_schedule(schedule.id, TENANT)
    assert (fixed.skipped_in_a_row, fixed.last_error) == (0, None)


@pytest.mark.parametrize("broken", ["zone", "cron"])
def test_a_schedule_this_worker_cannot_read_holds_up_no_other(broken: str) -> None:
    """A stored zone this worker's tzdata lacks (an api with newer tzdata took it), a cron its
    cronsim refuses: the pass failed on it, and as it was never claimed it stayed first in
    every batch, so no schedule of any tenant ran any more."""
    world = World()
    others = [world.schedule() for _ in range(2)]
    bad = world.schedule()
    rows = world.schedules._rows
    change = {"timezone": "Mars/Olympus_Mons"} if broken == "zone" else {"cron": "0 25 * * *"}
    rows[bad.id] = msgspec.structs.replace(rows[bad.id], **change)
    world.at(2026, 1, 5, 23, 0)
    done = world.app.run_schedules()
    assert (done.created, done.skipped) == (2, 1)
    assert sorted(j.schedule_id for j in world.jobs_of()) == sorted(s.id for s in others)
    shown = world.app.get_schedule(bad.id, TENANT)
    assert shown.last_error is not None and "could not be read" in shown.last_error
    assert shown.next_run_at == dt.datetime(2026, 1, 5, 23, 5, tzinfo=dt.UTC)  # set aside
    world.at(2026, 1, 6, 23, 0)
    assert world.app.run_schedules().created == 2  # and the next day too
    rows[bad.id] = msgspec.structs.replace(rows[bad.id], timezone=bad.timezone, cron=bad.cron)
    world.at(2026, 1, 7, 23, 0)
    assert world.app.run_schedules().created == 3  # readable again: it runs


@pytest.mark.parametrize("change", [{"active": False}, {"name": "renamed"}])
def test_a_schedule_whose_template_stopped_validating_can_still_be_paused_or_renamed(
    change: dict[str, Any],
) -> None:
    """Every PATCH checked the whole template as at create: once its notify_url's host was no
    longer allowed, pausing the skipping schedule (or renaming it) was a 400 naming the URL."""
    world = World(notify="hooks.example.com")
    schedule = world.schedule(job={**DAILY["job"], "notify_url": "https://hooks.example.com/x"})
    world.policy(notify_hosts=())  # the host is no longer allowed
    patched = world.patch(schedule.id, **change)
    assert (patched.active, patched.name) == (
        change.get("active", True),
        change.get("name", schedule.name),
    )
    with pytest.raises(ValidationError, match="notify_url"):  # a resume checks it all again
        world.patch(schedule.id, active=True, cron="0 22 * * *")


def test_an_occurrence_of_a_tenant_at_its_cap_of_unfinished_jobs_is_skipped_with_why() -> None:
    world = World()
    schedule = world.schedule()
    world.policy(max_unfinished_jobs=1)
    world.app.create(
        CreateRequest(job_type="FEED_INTAKE_EXPORT", format=ReportFormat.CSV, farm_id=FARM), ADMIN
    )
    world.at(2026, 1, 5, 23, 0)
    assert world.app.run_schedules().skipped == 1
    shown = world.app.get_schedule(schedule.id, TENANT)
    assert shown.last_error is not None and "REPORT_MAX_UNFINISHED_JOBS" in shown.last_error
    assert [j.schedule_id for j in world.jobs_of()] == [None]
    world.run_all()  # the tenant's job finishes: the next occurrence has room
    world.at(2026, 1, 6, 23, 0)
    assert world.app.run_schedules().created == 1


def test_the_job_a_schedule_creates_has_the_bytes_of_the_same_request_by_hand() -> None:
    world = World()
    world.schedule(job={**DAILY["job"], "csv": {"delimiter": ";"}, "timezone": "Asia/Bangkok"})
    world.at(2026, 1, 5, 23, 0)
    world.app.run_schedules()
    [scheduled] = world.jobs_of()
    by_hand = CreateRequest(
        job_type="FEED_INTAKE_EXPORT",
        format=scheduled.format,
        farm_id=FARM,
        start_date="2026-01-05",
        end_date="2026-01-05",
        csv=scheduled.csv,
        timezone="Asia/Bangkok",
    )
    manual = world.app.create(by_hand, ADMIN).shown.job
    world.run_all()
    done = {j.id: j for j in world.jobs_of()}
    a, b = done[scheduled.id], done[manual.id]
    assert a.file_path and b.file_path and a.status.value == b.status.value == "succeeded"
    assert world.store.files[a.file_path] == world.store.files[b.file_path]
    assert a.sha256 == b.sha256 and a.row_count == 5


def test_schedules_and_jobs_are_named_by_the_services_id_source() -> None:
    # the ids a service gives are its IdSource's, as its instants are its Clock's
    world = World()
    world.deps = msgspec.structs.replace(world.deps, ids=SequentialIds())
    world.app = ReportService(world.deps)
    schedule = world.schedule()
    world.at(2026, 1, 5, 23, 0)
    world.app.run_schedules()
    [scheduled] = world.jobs_of()
    by_hand = world.app.create(BY_HAND, ADMIN).shown.job
    named = [uuid.UUID(x).int for x in (schedule.id, scheduled.id, by_hand.id)]
    assert named == [1, 2, 3]


def test_a_service_names_things_with_random_uuids_by_default() -> None:
    world = World()
    ids = {world.schedule().id for _ in range(3)}
    ids.add(world.app.create(BY_HAND, ADMIN).shown.job.id)
    assert len(ids) == 4
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_a_tenant_may_have_at_most_its_cap_of_schedules() -> None:
    world = World(max_schedules=2)
    world.schedule()
    world.schedule()
    with pytest.raises(TooManySchedules):
        world.schedule()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"job": {**DAILY["job"], "start_date": "2026-01-01"}}, "job.start_date"),
        ({"job": {**DAILY["job"], "idempotency_key": "k"}}, "job.idempotency_key"),
        ({"job": {"job_type": "KPI_FEEDING_EXPORT", "format": "csv"}}, "job.barn_id"),
        ({"job": {**DAILY["job"], "columns": ["nope"]}}, "job.columns[0]"),
        ({"job": {**DAILY["job"], "filters": {"nope": "x"}}}, "job.filters.nope"),
        ({"cron": "0 6 * *"}, "cron"),
        ({"cron": "0 6 30 2 *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": None}, "timezone"),
        ({"range": {"last_days": 0}}, "range"),
        ({"name": "a\nb"}, "name"),
    ],
)
def test_a_schedule_is_validated_as_its_jobs_would_be(change: dict[str, Any], field: str) -> None:
    world = World()
    with pytest.raises(ValidationError) as caught:
        world.schedule({**DAILY, **change})
    assert caught.value.field == field
    schedule = world.schedule()
    with pytest.raises(ValidationError) as caught:
        world.patch(schedule.id, **change)
    assert caught.value.field == field


def test_a_range_wider_than_the_job_type_allows_is_refused_at_create() -> None:
    world = World()
    world.policy(max_range_days={"FEED_INTAKE_EXPORT": 7})
    for wide in ("previous_month", {"last_days": 30}):
        with pytest.raises(ValidationError) as refused:
            world.schedule(range=wide)
        # the field a schedule sets, not job.end_date (which it may not set): the first
        # occurrence's dates were checked first and named it
        assert refused.value.field == "range", refused.value
    assert world.schedule(range="previous_week").range == "previous_week"


@pytest.mark.parametrize("kind", ["previous_month", "month_to_date"])
def test_a_month_range_is_checked_at_its_widest_not_at_its_first_occurrence(kind: str) -> None:
    """Made in February under a 30-day limit, previous_month first covers January (31 days:
    refused as ever), but made in March it first covers February (28): it was accepted, and
    skipped after every 31-day month; month_to_date the same on the 1st of any month."""
    world = World()
    world.policy(max_range_days={"FEED_INTAKE_EXPORT": 30})
    world.at(2026, 3, 1, 0, 0)  # the first occurrence (06:00 in Bangkok) covers February / 1 day
    with pytest.raises(ValidationError) as caught:
        world.schedule(range=kind)
    assert caught.value.field == "range"
    assert caught.value.message == (
        "FEED_INTAKE_EXPORT may span at most 30 days; this range spans up to 31"
    )
    assert world.schedule(range={"last_days": 30}).range == LastDays(last_days=30)
    world.policy(max_range_days={"FEED_INTAKE_EXPORT": 31})
    assert world.schedule(range=kind).range == kind


def test_another_tenants_schedule_is_not_found_and_delete_keeps_the_jobs() -> None:
    world = World()
    schedule = world.schedule()
    other = Principal(subject="x", roles=frozenset({"tenant_admin"}), tenant_id="t2")
    with pytest.raises(NotFound):
        world.app.get_schedule(schedule.id, "t2")
    with pytest.raises(NotFound):
        world.app.delete_schedule(schedule.id, other, None)
    world.at(2026, 1, 5, 23, 0)
    world.app.run_schedules()
    world.app.delete_schedule(schedule.id, ADMIN, None)
    with pytest.raises(NotFound):
        world.app.get_schedule(schedule.id, TENANT)
    assert len(world.jobs_of(schedule.id)) == 1
    with pytest.raises(NotFound):
        world.app.get_schedule("not-a-uuid", TENANT)


def test_paging_through_schedules_yields_each_once_newest_first() -> None:
    world = World()
    made = []
    for _ in range(5):
        made.append(world.schedule().id)
        world.clock.advance(1)
    seen: list[str] = []
    after = None
    while True:
        page = world.app.list_schedules(TENANT, ListRequest(after=after, limit=2))
        seen += [s.id for s in page.items]
        if page.after is None:
            break
        after = page.after
    assert seen == made[::-1]


@pytest.mark.parametrize("field", ["cron", "timezone", "name"])
def test_a_nul_anywhere_in_a_schedule_is_refused_as_a_nul(field: str) -> None:
    """As a create of a job is: PostgreSQL cannot store it, and the 400 says why."""
    world = World()
    value = {"cron": "0 6 * * *", "timezone": "Asia/Bangkok", "name": "daily"}[field]
    with pytest.raises(ValidationError) as caught:
        world.schedule({**DAILY, field: value + "\x00"})
    assert caught.value.field == field
    assert "NUL" in str(caught.value)


def test_a_platform_admin_changes_and_deletes_the_schedules_of_the_tenant_it_names() -> None:
    world = World()
    schedule = world.schedule()
    platform = Principal(subject="ops", roles=frozenset({"platform_admin"}), tenant_id=None)
    change = msgspec.convert({"name": "by ops"}, SchedulePatch)
    with pytest.raises(ValidationError) as caught:
        world.app.update_schedule(schedule.id, change, platform, None)
    assert caught.value.field == "tenant_id"
    assert world.app.update_schedule(schedule.id, change, platform, TENANT).name == "by ops"
    with pytest.raises(ValidationError):
        world.app.delete_schedule(schedule.id, platform, None)
    world.app.delete_schedule(schedule.id, platform, TENANT)
    with pytest.raises(NotFound):
        world.app.get_schedule(schedule.id, TENANT)
