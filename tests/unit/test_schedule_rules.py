"""A schedule's rules with their literal answers: each 400's message and field, the bounds of
every length and count, the create request an occurrence makes, and what a pass counts.

(The mutation run of reportcore.schedules and reportcore.scheduling asked for these: each test
states a promise a changed line would break.)
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from adapters.cron import CronsimRules
from reportcore.errors import NotFound, ServiceUnavailable, ValidationError
from reportcore.jobs import Compression, CsvOptions, ReportFormat
from reportcore.requests import CreateRequest, ListRequest
from reportcore.schedules import (
    JobTemplate,
    LastDays,
    RangeKind,
    Schedule,
    ScheduleRules,
    create_request,
    idempotency_key_for,
    latest_due,
    next_occurrence,
    occurs_ever,
    validate_cron,
    validate_name,
    validate_range,
    validate_schedule_timezone,
    validate_template,
)
from reportcore.scheduling import get_schedule
from reportcore.service import ReportService
from reportcore.testing import InMemoryScheduleRepository
from tests.unit.test_scheduling import ADMIN, DAILY, TENANT, World

RULES = CronsimRules()
UTC = dt.UTC


class NeverMatches:
    """Cron rules that read every expression and match none (cronsim refuses 30 February at
    once, so the rule is shown over this stand-in of the port)."""

    def check(self, expr: str) -> None:
        return None

    def next_match(self, expr: str, after: dt.datetime) -> dt.datetime | None:
        return None


def refused(call: Any, *args: Any) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as caught:
        call(*args)
    return caught.value.message, caught.value.field


FIVE_FIELDS = (
    "cron must have five fields: minute hour day-of-month month day-of-week (e.g. '0 6 * * MON')"
)


@pytest.mark.parametrize(
    ("expr", "answer"),
    [
        ("", ("cron must be 1..100 characters", "cron")),
        ("*" + " " * 100, ("cron must be 1..100 characters", "cron")),
        ("*", (FIVE_FIELDS, "cron")),
        ("* * * * * *", (FIVE_FIELDS, "cron")),
        ("* * * *\t*\n", (FIVE_FIELDS, "cron")),
        ("61 * * * *", ("cron is not valid: Bad minute", "cron")),
    ],
)
def test_a_bad_cron_is_told_what_is_wanted(expr: str, answer: tuple[str, str]) -> None:
    assert refused(validate_cron, expr, RULES) == answer


def test_a_cron_of_100_characters_is_taken_and_spaced_once() -> None:
    spaced = "0  6 *" + " " * 91 + "* *"
    assert len(spaced) == 100
    assert validate_cron(spaced, RULES) == "0 6 * * *"


def test_names_are_1_to_200_printable_characters() -> None:
    assert validate_name("a") == "a"
    assert validate_name("n" * 200) == "n" * 200
    assert validate_name(None) is None
    assert refused(validate_name, "") == ("name must be 1..200 characters", "name")
    assert refused(validate_name, "n" * 201) == ("name must be 1..200 characters", "name")
    assert refused(validate_name, "a\tb") == ("name must not contain control characters", "name")


def test_last_days_are_1_to_366_and_other_ranges_are_named() -> None:
    assert validate_range(LastDays(1)) == LastDays(1)
    assert validate_range(RangeKind.MONTH_TO_DATE) is RangeKind.MONTH_TO_DATE
    assert refused(validate_range, LastDays(True)) == (  # type: ignore[arg-type]
        "range.last_days must be an integer 1..366",
        "range",
    )
    assert refused(validate_range, "weekly") == (
        "range must be one of previous_day, previous_week, previous_month, month_to_date "
        'or {"last_days": N}',
        "range",
    )


def test_a_template_with_a_nul_names_its_field_and_one_with_dates_is_refused() -> None:
    nul = JobTemplate(job_type="FEED_INTAKE_EXPORT", format=ReportFormat.CSV, farm_id="a\x00")
    assert refused(validate_template, nul) == (
        "job.farm_id must not contain NUL characters",
        "job.farm_id",
    )
    keyed = JobTemplate(job_type="FEED_INTAKE_EXPORT", format=ReportFormat.CSV, start_date="x")
    assert refused(validate_template, keyed) == (
        "job.start_date is set by each occurrence, not by the schedule",
        "job.start_date",
    )


def test_a_schedule_without_a_zone_or_that_never_occurs_is_a_400() -> None:
    assert refused(validate_schedule_timezone, None) == (
        "timezone is required (an IANA name)",
        "timezone",
    )
    assert validate_schedule_timezone("UTC") == "UTC"
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert refused(occurs_ever, "0 0 * * *", "UTC", now, NeverMatches()) == (
        "cron never matches a date (e.g. 30 February)",
        "cron",
    )
    assert occurs_ever("0 0 * * *", "UTC", now, RULES) == dt.datetime(2026, 1, 2, tzinfo=UTC)


def test_an_occurrence_exactly_now_is_the_one_due() -> None:
    first = dt.datetime(2026, 1, 1, 6, tzinfo=UTC)
    now = dt.datetime(2026, 1, 3, 6, tzinfo=UTC)
    assert latest_due("0 6 * * *", "UTC", first, now, RULES) == now


@pytest.fixture
def bangkok_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time 7 h off UTC: an instant read as local time shows."""
    monkeypatch.setenv("TZ", "Asia/Bangkok")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_key_of_an_occurrence_is_in_utc_whatever_the_local_time(
    bangkok_local_time: None,
) -> None:
    at = dt.datetime(2026, 1, 12, 6, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    assert idempotency_key_for("s1", at) == "schedule:s1:2026-01-11T23:00:00Z"


def test_an_occurrence_asks_for_the_template_its_dates_its_key_and_its_tenant() -> None:
    now = dt.datetime(2026, 3, 1, tzinfo=UTC)
    template = JobTemplate(
        job_type="TELEMETRY_EXPORT",
        format=ReportFormat.JSON,
        farm_id="f",
        barn_id="b",
        batch_id="c",
        filters={"metric": "temperature"},
        compression=Compression.GZIP,
        csv=CsvOptions(delimiter=";"),
        columns=["id"],
        timezone="Asia/Bangkok",
        notify_url="https://hooks.example.com/x",
    )
    schedule = Schedule(
        id="s1",
        tenant_id="t9",
        created_by="u",
        job=template,
        cron="0 6 * * *",
        timezone="UTC",
        range=RangeKind.PREVIOUS_DAY,
        created_at=now,
        updated_at=now,
    )
    assert create_request(schedule, now) == CreateRequest(
        job_type="TELEMETRY_EXPORT",
        format=ReportFormat.JSON,
        farm_id="f",
        barn_id="b",
        batch_id="c",
        start_date="2026-02-28",
        end_date="2026-02-28",
        filters={"metric": "temperature"},
        idempotency_key="schedule:s1:2026-03-01T00:00:00Z",
        tenant_id="t9",
        compression=Compression.GZIP,
        csv=CsvOptions(delimiter=";"),
        columns=["id"],
        timezone="Asia/Bangkok",
        notify_url="https://hooks.example.com/x",
    )


# --- the use cases' literal answers ---


def schedule(world: World, **more: Any) -> Schedule:
    return world.schedule(DAILY, **more)


def test_a_schedule_created_paused_has_no_next_run() -> None:
    world = World()
    paused = schedule(world, active=False, cron="0  6 * * *")
    assert (paused.active, paused.next_run_at, paused.cron) == (False, None, "0 6 * * *")


def test_a_nul_in_the_name_is_refused_naming_it() -> None:
    world = World()
    made = schedule(world)
    with pytest.raises(ValidationError) as caught:
        world.patch(made.id, name="a\x00")
    assert (caught.value.message, caught.value.field) == (
        "name must not contain NUL characters",
        "name",
    )


def test_missing_schedules_are_404s_saying_so() -> None:
    world = World()
    made = schedule(world)
    world.app.delete_schedule(made.id, ADMIN, None)
    for call in (
        lambda: world.app.get_schedule(made.id, TENANT),
        lambda: world.patch(made.id, name="x"),
        lambda: world.app.delete_schedule(made.id, ADMIN, None),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.message == "schedule not found"


def test_patch_stamps_updated_at_and_keeps_a_due_occurrence_unless_its_timing_changes() -> None:
    world = World()
    made = schedule(world)
    world.at(2026, 1, 5, 23, 30)  # the first occurrence (23:00) is due and not yet run
    renamed = world.patch(made.id, name="renamed")
    assert renamed.updated_at == dt.datetime(2026, 1, 5, 23, 30, tzinfo=UTC)
    assert renamed.next_run_at == made.next_run_at
    rezoned = world.patch(made.id, timezone="Europe/Berlin")
    assert rezoned.next_run_at == dt.datetime(2026, 1, 6, 5, 0, tzinfo=UTC)
    recronned = world.patch(made.id, cron="0 7 * * *")
    assert recronned.next_run_at == dt.datetime(2026, 1, 6, 6, 0, tzinfo=UTC)


def test_a_pass_counts_every_job_and_skip_and_a_lag_of_zero_on_time() -> None:
    world = World(notify="hooks.example.com")
    hooked = {**DAILY["job"], "notify_url": "https://hooks.example.com/x"}
    for _ in range(2):
        schedule(world)
        schedule(world, job=hooked)
    world.at(2026, 1, 5, 23, 0)
    assert world.app.run_schedules().created == 4  # the allowed host makes its jobs
    world.policy(notify_hosts=())
    world.at(2026, 1, 6, 23, 0)
    done = world.app.run_schedules()
    assert (done.created, done.skipped, done.lags) == (2, 2, [0.0, 0.0])


def test_a_page_of_three_ends_at_its_third_and_a_full_last_page_has_no_cursor() -> None:
    world = World()
    made = []
    for _ in range(3):
        made.append(schedule(world).id)
        world.clock.advance(1)
    page = world.app.list_schedules(TENANT, ListRequest(limit=3))
    assert [s.id for s in page.items] == made[::-1] and page.after is None
    first = world.app.list_schedules(TENANT, ListRequest(limit=2))
    assert first.after is not None
    assert (first.after.created_at, first.after.id) == (
        first.items[1].created_at,
        first.items[1].id,
    )
    schedule(world)
    three = world.app.list_schedules(TENANT, ListRequest(limit=3))
    assert three.after is not None
    assert (three.after.created_at, three.after.id) == (
        three.items[2].created_at,
        three.items[2].id,
    )


def test_msgspec_reads_a_range_word_or_last_days() -> None:
    assert msgspec.convert("previous_week", RangeKind | LastDays) is RangeKind.PREVIOUS_WEEK
    assert msgspec.convert({"last_days": 3}, RangeKind | LastDays) == LastDays(3)


def test_the_next_occurrence_is_strictly_after_an_occurrence_itself() -> None:
    at = dt.datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert next_occurrence("0 6 * * *", "UTC", at, RULES) == at + dt.timedelta(days=1)


def test_a_process_without_schedules_answers_404_saying_so() -> None:
    world = World()
    for missing in ({"schedules": None}, {"cron": None}):
        deps = msgspec.structs.replace(world.deps, **missing)
        with pytest.raises(NotFound) as caught:
            get_schedule("x", tenant_id=TENANT, deps=deps)
        assert caught.value.message == "schedules are not available in this process"


def test_a_pass_takes_at_most_its_batch_and_the_next_pass_the_rest() -> None:
    world = World()
    world.deps = msgspec.structs.replace(world.deps, schedule_rules=ScheduleRules(batch=1))
    world.app = ReportService(world.deps)
    schedule(world)
    schedule(world)
    world.at(2026, 1, 5, 23, 0)
    assert world.app.run_schedules().created == 1
    assert world.app.run_schedules().created == 1


def test_a_stuck_claim_and_a_due_occurrence_are_both_handled_in_one_pass() -> None:
    world = World()
    stuck = schedule(world)
    world.at(2026, 1, 5, 23, 0)
    world.jobs.fail_adds = 1
    with pytest.raises(ServiceUnavailable):
        world.app.run_schedules()
    other = schedule(world, cron="30 6 * * *")  # due at 23:30 UTC
    world.at(2026, 1, 5, 23, 31)
    done = world.app.run_schedules()
    assert done.created == 2
    assert {j.schedule_id for j in world.jobs_of()} == {stuck.id, other.id}


class VanishingSchedules(InMemoryScheduleRepository):
    """A schedule deleted between a PATCH's read and its write."""

    def update(self, schedule: Schedule, read: Schedule) -> Schedule | None:
        self.delete(schedule.id, schedule.tenant_id)
        return super().update(schedule, read)


class Interleaved(InMemoryScheduleRepository):
    """Runs ``between`` once, between a PATCH's read and its first write: a scheduler's pass
    or another PATCH landing in that gap."""

    between: Any = None

    def update(self, schedule: Schedule, read: Schedule) -> Schedule | None:
        between, self.between = self.between, None
        if between is not None:
            between()
        return super().update(schedule, read)


def interleaved(world: World) -> Interleaved:
    repository = Interleaved()
    world.schedules = repository  # type: ignore[assignment]
    world.deps = msgspec.structs.replace(world.deps, schedules=repository)
    world.app = ReportService(world.deps)
    return repository


def test_a_patch_racing_the_scheduler_never_makes_a_claimed_occurrence_due_again() -> None:
    """The PATCH wrote back the next_run_at it had read: the scheduler claimed 23:00 in
    between, the write made 23:00 due again, and the next pass made a second create of it
    (with a changed job: refused as a reused key, recorded as a skip, alert and all)."""
    world = World()
    repository = interleaved(world)
    made = schedule(world)
    world.at(2026, 1, 5, 23, 0, 5)
    repository.between = world.app.run_schedules  # claims 23:00 and creates its job
    world.patch(made.id, name="renamed", job={**DAILY["job"], "format": "json"})
    after = world.app.get_schedule(made.id, TENANT)
    assert after.name == "renamed" and after.job.format is ReportFormat.JSON
    assert after.next_run_at == dt.datetime(2026, 1, 6, 23, 0, tzinfo=dt.UTC)
    assert world.app.run_schedules().created == 0
    again = world.app.get_schedule(made.id, TENANT)
    assert (again.skipped_in_a_row, again.last_error) == (0, None)
    assert len(world.jobs_of(made.id)) == 1


def test_two_patches_at_once_keep_both_changes() -> None:
    world = World()
    repository = interleaved(world)
    made = schedule(world)
    repository.between = lambda: world.patch(made.id, active=False)
    world.patch(made.id, name="renamed")
    after = world.app.get_schedule(made.id, TENANT)
    assert (after.name, after.active, after.next_run_at) == ("renamed", False, None)


def test_a_schedule_deleted_during_a_patch_is_a_404() -> None:
    world = World()
    made = schedule(world)
    vanishing = VanishingSchedules()
    vanishing.add(made, 10)
    world.deps = msgspec.structs.replace(world.deps, schedules=vanishing)
    world.app = ReportService(world.deps)
    with pytest.raises(NotFound) as caught:
        world.patch(made.id, name="late")
    assert caught.value.message == "schedule not found"


def test_after_a_long_downtime_the_latest_occurrence_is_found_however_far_back() -> None:
    # leap days only: none in the 400 days before now, so the search goes back to the start
    due = dt.datetime(2020, 2, 29, tzinfo=UTC)
    now = dt.datetime(2023, 6, 1, tzinfo=UTC)
    assert latest_due("0 0 29 2 *", "UTC", due, now, RULES) == due


def test_a_library_users_job_type_is_scheduled_through_its_registry() -> None:
    from reportcore.jobtypes import JOB_TYPES
    from tests.unit.test_outside_job_type import SILO_LEVELS

    world = World()
    world.deps = msgspec.structs.replace(world.deps, job_types=JOB_TYPES.extended(SILO_LEVELS))
    world.app = ReportService(world.deps)
    made = world.schedule(DAILY, job={"job_type": "SILO_LEVEL_EXPORT", "format": "csv"})
    world.at(2026, 1, 5, 23, 0)
    assert world.app.run_schedules().created == 1
    [job] = world.jobs_of(made.id)
    assert job.job_type == "SILO_LEVEL_EXPORT"
