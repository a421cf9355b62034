"""The lease keeper of a running export: while a page is slow to come (upstream timeouts,
retries, backoff) the worker renews the job's lease from a thread, so that recovery does not
take a slow upstream for a dead worker; a renewal that finds the job no longer the worker's
(cancelled, reclaimed) stops the export at its next page, leaving no file."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import msgspec
import pytest

from entrypoints.worker import Worker
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat, message_for
from reportcore.ports import SourcePage, SourceRequest
from reportcore.running import Disposition
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.usecases import LeaseKeeper, Policy, RunOutcome, recover
from tests.running import run_message

TENANT = "tenant-1"
POLICY = Policy(lease_sec=30, heartbeat_sec=1)
DAYS = [
    {"recordDate": f"2026-01-{d:02d}", "fcr": 1.5, "adgG": 40.0, "sgrPct": 2.0} for d in range(1, 6)
]


class CountingSource(StaticRecordSource):
    """Counts the pages the export pulled."""

    pulled = 0

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        for page in super().pages(request):
            self.pulled += 1
            yield page


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(dt.datetime(2026, 1, 10, tzinfo=dt.UTC))
        self.jobs = InMemoryJobRepository()
        self.store = InMemoryFileStore()
        self.source = CountingSource({JobType.KPI_FEEDING_EXPORT.value: DAYS}, page_size=1)
        now = self.clock.now()
        self.job = Job(
            id=str(uuid.uuid4()),
            tenant_id=TENANT,
            requested_by=None,
            job_type=JobType.KPI_FEEDING_EXPORT,
            format=ReportFormat.CSV,
            created_at=now,
            updated_at=now,
        )
        self.jobs.add(self.job)

    def run(self, keeper: LeaseKeeper) -> RunOutcome:
        return run_message(
            msgspec.json.encode(message_for(self.job)),
            owner="worker-1",
            jobs=self.jobs,
            source=self.source,
            store=self.store,
            clock=self.clock,
            policy=POLICY,
            keep_lease=keeper,
        )


def test_the_keeper_renews_the_lease_while_the_export_runs() -> None:
    world = World()
    renewed: list[bool] = []

    @contextlib.contextmanager
    def keeper(renew: Callable[[], bool]) -> Iterator[None]:
        # a page took nearly the lease: without a renewal recovery would reclaim the job
        world.clock.advance(POLICY.lease_sec - 1)
        renewed.append(renew())
        held = world.jobs.get(world.job.id)
        assert held is not None and held.lease_owner == "worker-1"
        assert held.lease_expires_at == world.clock.now() + dt.timedelta(seconds=POLICY.lease_sec)
        assert held.updated_at == world.clock.now(), "the renewal is written at the clock's now"
        yield

    outcome = world.run(keeper)
    assert renewed == [True]
    assert outcome.status == "succeeded"
    done = world.jobs.get(world.job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.attempts == 1


def test_a_renewal_after_the_lease_ran_out_stops_the_export_and_recovery_requeues_it() -> None:
    """A lease that ran out is lost: recovery may have read the job as stale already, and
    would requeue it under a holder that went on exporting beside the next one."""
    world = World()
    renewed: list[bool] = []

    @contextlib.contextmanager
    def keeper(renew: Callable[[], bool]) -> Iterator[None]:
        world.clock.advance(POLICY.lease_sec + 1)  # a page took longer than the lease
        renewed.append(renew())
        yield

    outcome = world.run(keeper)
    assert renewed == [False]
    assert (outcome.disposition, outcome.status) == (Disposition.ACK, "running")
    assert world.store.files == {}, "the partial file was left"
    requeued = recover(
        jobs=world.jobs,
        queue=InMemoryQueue(),
        store=world.store,
        clock=world.clock,
        policy=POLICY,
    )
    assert requeued.requeued == [world.job.id]


def test_a_renewal_that_finds_the_job_cancelled_stops_the_export_and_leaves_no_file() -> None:
    world = World()
    renewed: list[bool] = []

    @contextlib.contextmanager
    def keeper(renew: Callable[[], bool]) -> Iterator[None]:
        world.jobs.cancel(world.job.id, TENANT, world.clock.now())
        renewed.append(renew())
        yield

    outcome = world.run(keeper)
    assert renewed == [False]
    assert outcome.status == "cancelled"
    assert world.source.pulled == 1, "the export went on after the renewal failed"
    assert world.store.files == {}, "the partial file was left"
    job = world.jobs.get(world.job.id)
    assert job is not None and job.status is JobStatus.CANCELLED and job.file_path is None


def test_the_workers_keeper_renews_from_a_thread_until_the_export_ends() -> None:
    calls: list[float] = []
    third = threading.Event()

    def renew() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 3:
            third.set()
        return True

    with Worker._lease_keeper(0.01)(renew):
        assert third.wait(5.0), "the keeper did not renew"
    ended = len(calls)
    # leaving the context joined the keeper's thread: nothing is left that could renew
    assert not any(t.name == "lease-keeper" for t in threading.enumerate())
    time.sleep(0.1)  # ten of its ticks: a keeper still running would have renewed meanwhile
    assert len(calls) == ended, "the keeper renewed after the export ended"


def test_the_workers_keeper_stops_renewing_once_the_job_is_not_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    second = threading.Event()
    keepers: list[threading.Thread] = []

    def renew() -> bool:
        calls.append("renew")
        keepers.append(threading.current_thread())
        if len(calls) == 1:
            raise OSError("database down")  # logged; the next renewal tries again
        second.set()
        return False

    with Worker._lease_keeper(0.01)(renew):
        # the keeper's thread ends by itself once a renewal says the job is gone (taken from
        # the renewal itself: by the time this thread looks, the keeper may have ended)
        assert second.wait(5.0), "the keeper did not renew again after a failed renewal"
        keeper = keepers[-1]
        assert keeper.name == "lease-keeper"
        keeper.join(5.0)
        assert not keeper.is_alive(), "the keeper went on renewing a job that is not its own"
    assert calls == ["renew", "renew"]
    assert "lease not renewed: OSError: database down" in caplog.text
