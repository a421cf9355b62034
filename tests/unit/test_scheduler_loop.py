"""Each worker's scheduler thread: a pass creates due jobs, logs them and records the metrics; a
pass that storage fails is a warning and the next pass retries; a worker starts and stops it."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from types import SimpleNamespace

import msgspec
import pytest
from dependency_injector import providers

from adapters import metrics
from entrypoints.scheduler import Scheduler
from reportcore.access import Principal
from reportcore.requests import ListQuery
from reportcore.scheduling import ScheduleRequest
from reportcore.testing import FakeClock, InMemoryScheduleRepository
from tests.containers import in_memory_container
from tests.unit.api_support import api_settings

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

START = dt.datetime(2026, 1, 5, 5, 59, 30, tzinfo=dt.UTC)
ADMIN = Principal(subject="u1", roles=frozenset({"tenant_admin"}), tenant_id="t1")


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def world() -> tuple[Scheduler, FakeClock, InMemoryScheduleRepository]:
    container = in_memory_container(api_settings())
    clock = FakeClock(START)
    container.clock.override(providers.Object(clock))
    reports = container.reports()
    request = msgspec.convert(
        {
            "job": {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"},
            "cron": "0 6 * * *",
            "timezone": "UTC",
            "range": "previous_day",
        },
        ScheduleRequest,
    )
    reports.create_schedule(request, ADMIN)
    return Scheduler(reports, 0.01), clock, container.schedules()


def test_a_pass_creates_the_due_job_logs_it_and_records_count_lag_and_gauge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler, clock, _ = world()
    created = value("reportsvc_schedule_occurrences_total", outcome="created")
    lags = value("reportsvc_schedule_lag_seconds_count")
    assert scheduler.run_once() is not None  # nothing due yet
    clock.advance(32)
    with caplog.at_level(logging.INFO, logger="reportsvc.scheduler"):
        done = scheduler.run_once()
    assert done is not None and done.created == 1
    assert "scheduler pass" in caplog.text
    assert value("reportsvc_schedule_occurrences_total", outcome="created") == created + 1
    assert value("reportsvc_schedule_lag_seconds_count") == lags + 1
    assert value("reportsvc_schedules", state="active") == 1
    [job] = scheduler.reports.deps.jobs.find("t1", ListQuery())
    assert job.scheduled_for == dt.datetime(2026, 1, 5, 6, 0, tzinfo=dt.UTC)


def test_a_pass_storage_fails_is_a_warning_and_the_next_one_makes_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler, clock, schedules = world()
    clock.advance(32)
    schedules.available = False
    with caplog.at_level(logging.WARNING, logger="reportsvc.scheduler"):
        assert scheduler.run_once() is None
    assert "scheduler pass failed" in caplog.text
    schedules.available = True
    done = scheduler.run_once()
    assert done is not None and done.created == 1


def test_the_loop_passes_until_stopped() -> None:
    scheduler, clock, _ = world()
    clock.advance(32)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while not scheduler.reports.deps.jobs.find("t1", ListQuery()):
            assert dt.datetime.now() < deadline, "no job made"
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_a_minute_with_more_due_schedules_than_a_batch_is_made_at_once_not_a_pass_apart() -> None:
    """120 schedules at 06:00, 50 a pass: the second and third batches waited an interval
    each (REPORT_SCHEDULER_INTERVAL_SEC); thousands of tenants at 06:00 waited minutes."""
    scheduler, clock, _ = world()  # one schedule of t1 at 06:00
    reports = scheduler.reports
    for n in range(119):
        tenant = f"t{n % 3 + 2}"
        request = msgspec.convert(
            {
                "job": {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"},
                "cron": "0 6 * * *",
                "timezone": "UTC",
                "range": "previous_day",
                "name": f"s{n}",
            },
            ScheduleRequest,
        )
        principal = Principal(subject="u1", roles=frozenset({"tenant_admin"}), tenant_id=tenant)
        reports.create_schedule(request, principal)
    clock.advance(32)
    patient = Scheduler(reports, 60.0)  # a pass a minute: a second pass only if at once

    def made() -> int:
        return sum(len(reports.deps.jobs.find(f"t{t}", ListQuery(limit=100))) for t in range(1, 5))

    stop = threading.Event()
    thread = threading.Thread(target=patient.run, args=(stop,))
    thread.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while made() < 120:
            assert dt.datetime.now() < deadline, f"{made()} of 120 jobs made"
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert made() == 120


def test_the_schedules_gauge_is_counted_at_most_once_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting reads every schedule (300,000: ~45 ms on PostgreSQL); it ran with each pass,
    every few seconds in each worker."""
    scheduler, _, schedules = world()
    counted = []
    real = schedules.counts
    monkeypatch.setattr(schedules, "counts", lambda: counted.append(1) or real())
    now = [1000.0]
    # the scheduler module's own clock, not the time module every thread shares
    import entrypoints.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    for _ in range(5):
        assert scheduler.run_once() is not None
        now[0] += 5
    assert len(counted) == 1
    now[0] += 60
    assert scheduler.run_once() is not None
    assert len(counted) == 2
