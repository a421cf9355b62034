"""The worker over the in-memory adapters: what it promises about running, stopping, recovery."""

from __future__ import annotations

import csv
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec
import pytest
from dependency_injector import providers

from entrypoints.containers import Container
from entrypoints.settings import Settings
from entrypoints.worker import Worker, new_owner_id
from reportcore.jobs import Job, JobStatus, JobType
from reportcore.ports import SourcePage, SourceRequest
from reportcore.requests import CreateRequest, ListQuery, validate_create
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.usecases import create_job
from tests.containers import in_memory_container, replace

TENANT = "t-worker"
DEADLINE_SEC = 10.0


def feed_record(i: int) -> dict[str, object]:
    return {
        "id": f"rec-{i}",
        "tenantId": TENANT,
        "farmId": "f1",
        "barnId": "b1",
        "source": "MANUAL",
        "quantityKg": f"{i}.5",
        "occurredAt": f"2026-01-01T00:00:{i % 60:02d}Z",
        "createdAt": "2026-01-01T00:00:00Z",
    }


RECORDS = {JobType.FEED_INTAKE_EXPORT.value: [feed_record(i) for i in range(7)]}


def wait_until(check: Callable[[], bool], what: str, deadline: float = DEADLINE_SEC) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)  # a polling tick: the wait ends on the condition, not on time


class GatedSource:
    """A record source whose exports wait at a gate after their first page."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self._inner = StaticRecordSource(RECORDS, page_size=3)

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            for n, page in enumerate(self._inner.pages(request)):
                yield page
                if n == 0 and not self.release.wait(DEADLINE_SEC):
                    raise AssertionError("the test never opened the gate")
        finally:
            with self._lock:
                self.active -= 1


class World:
    """A container over in-memory adapters and a fake clock, with helpers to drive it."""

    def __init__(self, **settings: object) -> None:
        base: dict[str, object] = {"recovery_interval_sec": 0.02, "download_secret": "s" * 32}
        base.update(settings)
        self.settings = Settings(**base)  # type: ignore[arg-type]
        self.container: Container = in_memory_container(self.settings)
        self.clock = FakeClock()
        self.container.clock.override(providers.Object(self.clock))
        replace(self.container, "source", StaticRecordSource(RECORDS, page_size=3))
        self.jobs: InMemoryJobRepository = self.container.jobs()
        self.queue: InMemoryQueue = self.container.queue()
        self.store: InMemoryFileStore = self.container.store()

    def create(self, fmt: str = "csv", tenant: str = TENANT) -> Job:
        request = msgspec.convert(
            {"job_type": "FEED_INTAKE_EXPORT", "format": fmt}, type=CreateRequest
        )
        return create_job(
            validate_create(request),
            tenant_id=tenant,
            requested_by="u1",
            jobs=self.jobs,
            queue=self.queue,
            clock=self.clock,
        ).job

    def status(self, job: Job) -> JobStatus:
        current = self.jobs.get(job.id)
        assert current is not None
        return current.status

    def running_jobs(self) -> list[Job]:
        return [
            j
            for j in self.jobs.find(TENANT, ListQuery(limit=1000))
            if j.status is JobStatus.RUNNING
        ]

    @contextmanager
    def worker(self, owner: str = "host:1:abc") -> Iterator[threading.Event]:
        stop = threading.Event()
        worker = Worker(self.container.reports(), self.settings, owner, outage_pause_sec=0.02)
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            yield stop
        finally:
            stop.set()
            thread.join(DEADLINE_SEC)
            assert not thread.is_alive(), "the worker did not stop"


def test_the_worker_runs_queued_jobs_to_success_with_their_file() -> None:
    world = World()
    csv_job, json_job = world.create("csv"), world.create("json")
    with world.worker():
        wait_until(
            lambda: (
                world.status(csv_job) is JobStatus.SUCCEEDED
                and world.status(json_job) is JobStatus.SUCCEEDED
            ),
            "both jobs to succeed",
        )
    done = world.jobs.get(csv_job.id)
    assert done is not None and done.file_path is not None
    table = list(csv.reader(io.StringIO(world.store.files[done.file_path].decode(), newline="")))
    assert table[0][:4] == ["id", "tenant_id", "farm_id", "barn_id"]
    assert len(table) == 1 + len(RECORDS["FEED_INTAKE_EXPORT"])
    assert done.sha256 == world.store.sha256(done.file_path)
    ndjson = world.jobs.get(json_job.id)
    assert ndjson is not None and ndjson.file_path is not None
    lines = world.store.files[ndjson.file_path].split(b"\n")
    assert lines.pop() == b""  # every line ends at LF, as NDJSON clients split it
    rows = [msgspec.json.decode(line) for line in lines]
    assert rows == RECORDS["FEED_INTAKE_EXPORT"]


def test_the_worker_runs_as_many_jobs_at_once_as_its_concurrency_and_no_more() -> None:
    world = World(worker_concurrency=3, worker_tenant_concurrency=3)
    gate = GatedSource()
    replace(world.container, "source", gate)
    jobs = [world.create() for _ in range(4)]
    with world.worker():
        wait_until(lambda: gate.active == 3, "three exports running at once")
        assert sum(world.status(j) is JobStatus.QUEUED for j in jobs) == 1
        gate.release.set()
        wait_until(
            lambda: all(world.status(j) is JobStatus.SUCCEEDED for j in jobs), "all jobs to succeed"
        )
    assert gate.max_active == 3


def test_each_claim_holds_its_lease_as_an_owner_of_its_own() -> None:
    """One owner for the whole process let a job reclaimed from one handler thread (its lease
    ran out in a pause) and claimed by another thread of the same process pass both of their
    heartbeats: two exports of one job at once, and a commit deleting the other's file."""
    world = World(worker_concurrency=3, worker_tenant_concurrency=3)
    gate = GatedSource()
    replace(world.container, "source", gate)
    jobs = [world.create() for _ in range(3)]
    with world.worker(owner="host:1:abc"):
        wait_until(lambda: gate.active == 3, "three exports running at once")
        owners = [j.lease_owner or "" for j in world.running_jobs()]
        gate.release.set()
        wait_until(
            lambda: all(world.status(j) is JobStatus.SUCCEEDED for j in jobs), "all jobs to succeed"
        )
    assert len(set(owners)) == 3, owners
    assert all(re.fullmatch(r"host:1:abc/\d+", owner) for owner in owners), owners


def test_a_tenant_with_a_backlog_leaves_a_slot_for_another_tenants_job() -> None:
    world = World(worker_concurrency=3)  # a tenant's share: 2 of the 3 slots
    gate = GatedSource()
    replace(world.container, "source", gate)
    backlog = [world.create() for _ in range(6)]
    with world.worker():
        wait_until(lambda: gate.active == 2, "the tenant's two exports running")
        theirs = world.create(tenant="t-other")
        wait_until(lambda: gate.active == 3, "the other tenant's export running beside them")
        assert len(world.running_jobs()) == 2, "the backlog's tenant never holds a third slot"
        gate.release.set()
        wait_until(
            lambda: all(world.status(j) is JobStatus.SUCCEEDED for j in [*backlog, theirs]),
            "every job to succeed",
        )
    assert gate.max_active == 3


def test_the_share_of_a_tenant_is_configurable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="reportsvc.worker")
    world = World(worker_concurrency=3, worker_tenant_concurrency=1)
    gate = GatedSource()
    replace(world.container, "source", gate)
    jobs = [world.create() for _ in range(3)]

    def deferrals() -> int:
        return sum(getattr(r, "status", None) == "deferred" for r in caplog.records)

    with world.worker():
        wait_until(lambda: gate.active == 1, "one export of the tenant running")
        wait_until(lambda: deferrals() >= 4, "each waiting job deferred twice")
        assert gate.max_active == 1
        gate.release.set()
        wait_until(
            lambda: all(world.status(j) is JobStatus.SUCCEEDED for j in jobs), "all jobs to succeed"
        )
    assert gate.max_active == 1


def test_stopping_hands_in_flight_jobs_back_and_leaves_none_running() -> None:
    world = World(worker_concurrency=2, worker_tenant_concurrency=2)
    gate = GatedSource()
    replace(world.container, "source", gate)
    jobs = [world.create(), world.create()]
    with world.worker() as stop:
        wait_until(lambda: gate.active == 2, "both exports to start")
        stop.set()
        gate.release.set()
    assert world.running_jobs() == []
    for job in jobs:
        back = world.jobs.get(job.id)
        assert back is not None
        assert back.status is JobStatus.QUEUED
        assert back.lease_owner is None
        assert back.attempts == 1
    assert world.store.files == {}, "a handed-back job left a file"
    assert world.queue.pending() == 2, "the handed-back messages are not on the queue again"
    # the next worker finishes them
    replace(world.container, "source", StaticRecordSource(RECORDS))
    with world.worker(owner="host:2:def"):
        wait_until(
            lambda: all(world.status(j) is JobStatus.SUCCEEDED for j in jobs), "jobs to finish"
        )


def test_recovery_publishes_a_job_the_broker_never_confirmed() -> None:
    world = World()
    world.queue.available = False
    job = world.create()
    world.queue.available = True
    assert world.queue.pending() == 0
    world.clock.advance(60)
    with world.worker():
        wait_until(lambda: world.status(job) is JobStatus.SUCCEEDED, "the job to run")


def test_recovery_takes_back_a_job_whose_worker_died_and_runs_it_again() -> None:
    world = World(lease_sec=30.0)
    job = world.create()
    assert world.queue.take() is not None  # the dead worker had taken the message
    now = world.clock.now()
    assert world.jobs.claim(job.id, "dead:1:x", now, world.clock.advance(30)) is not None
    world.clock.advance(1)
    with world.worker():
        wait_until(lambda: world.status(job) is JobStatus.SUCCEEDED, "the job to run again")
    done = world.jobs.get(job.id)
    assert done is not None and done.attempts == 2


def test_a_job_whose_worker_died_on_its_last_attempt_fails_as_worker_lost() -> None:
    world = World(lease_sec=30.0, max_attempts=1)
    job = world.create()
    assert world.queue.take() is not None
    now = world.clock.now()
    assert world.jobs.claim(job.id, "dead:1:x", now, world.clock.advance(30)) is not None
    world.clock.advance(1)
    with world.worker():
        wait_until(lambda: world.status(job) is JobStatus.FAILED, "the job to fail")
    failed = world.jobs.get(job.id)
    assert failed is not None and failed.error_code == "WORKER_LOST"


def test_the_worker_survives_a_storage_outage_with_warnings_and_then_runs_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    job = world.create()
    world.jobs.available = False
    with caplog.at_level(logging.WARNING, logger="reportsvc.worker"), world.worker():
        wait_until(
            lambda: (
                any("recovery pass failed" in r.getMessage() for r in caplog.records)
                and any("job not handled" in r.getMessage() for r in caplog.records)
            ),
            "warnings about the outage",
        )
        world.jobs.available = True
        wait_until(lambda: world.status(job) is JobStatus.SUCCEEDED, "the job to run")


def test_each_job_outcome_is_logged_with_id_status_detail_and_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    job = world.create()
    with caplog.at_level(logging.INFO, logger="reportsvc.worker"), world.worker():
        wait_until(lambda: world.status(job) is JobStatus.SUCCEEDED, "the job to run")
        wait_until(
            lambda: any(getattr(r, "job_id", None) == job.id for r in caplog.records),
            "the outcome line",
        )
    line = next(r for r in caplog.records if getattr(r, "job_id", None) == job.id)
    assert line.status == "succeeded"  # type: ignore[attr-defined]
    assert line.detail == "7 rows, " + str(world.jobs.get(job.id).size_bytes) + " bytes"  # type: ignore[attr-defined, union-attr]
    assert isinstance(line.duration_ms, int)  # type: ignore[attr-defined]


def test_a_message_that_can_never_run_is_dead_lettered() -> None:
    world = World()
    world.queue.publish_raw(b"{not json")
    with world.worker():
        wait_until(lambda: world.queue.dead_letters == [b"{not json"], "the dead letter")


def test_an_owner_id_names_the_host_the_process_and_a_random_part() -> None:
    first, second = new_owner_id(), new_owner_id()
    host, pid, rnd = first.split(":")
    assert host == socket.gethostname()
    assert pid.isdigit()
    assert re.fullmatch(r"[0-9a-f]{8}", rnd)
    assert first != second
