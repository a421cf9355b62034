"""The contract of the JobRepository port, run against every adapter of it.

An adapter joins with one entry in REPOSITORY_FACTORIES: a function that builds a fresh, empty
repository for one test (it may ask for fixtures through ``request`` and register clean-up
with ``request.addfinalizer``).

Instants are whole milliseconds: the old schema stores ``timestamp(3)``, so that is the
precision every adapter is held to.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest

from reportcore import lifecycle
from reportcore.errors import TooManyJobs
from reportcore.jobs import (
    Compression,
    CsvOptions,
    Job,
    JobStatus,
    JobType,
    LineEnding,
    ReportFormat,
)
from reportcore.lifecycle import Event
from reportcore.ports import JobRepository, StoredFile
from reportcore.requests import Cursor, ListQuery
from reportcore.testing import FakeClock, InMemoryJobRepository

RepositoryFactory = Callable[[pytest.FixtureRequest], JobRepository]


def _memory(request: pytest.FixtureRequest) -> JobRepository:
    return InMemoryJobRepository()


def _postgres(request: pytest.FixtureRequest) -> JobRepository:
    from adapters.postgres import PostgresJobRepository, create_pool, migrate

    url = request.getfixturevalue("database_url")
    migrate(url)
    pool = create_pool(url, max_size=4)
    request.addfinalizer(pool.close)
    return PostgresJobRepository(pool)


def _sqlite(request: pytest.FixtureRequest) -> JobRepository:
    from adapters.sqlite import SqliteJobRepository

    folder = request.getfixturevalue("tmp_path")
    repository = SqliteJobRepository(folder / "jobs.sqlite3")
    request.addfinalizer(repository.close)
    return repository


REPOSITORY_FACTORIES: dict[str, RepositoryFactory] = {
    "memory": _memory,
    "postgres": _postgres,
    "sqlite": _sqlite,
}

# The lifecycle of the contract, written out independently of reportcore.lifecycle: the
# adapters are checked against the table they use, and that table against this one.
CONTRACT_LIFECYCLE = {
    ("queued", "claim"): "running",
    ("queued", "cancel"): "cancelled",
    ("running", "succeed"): "succeeded",
    ("running", "fail"): "failed",
    ("running", "cancel"): "cancelled",
    ("running", "retry"): "queued",
}

START = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=30)
TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
WORKER = "worker-1"
FILE = StoredFile(location="exports/tenant-a/job/report.csv", size_bytes=1234, sha256="ab" * 32)


@pytest.fixture(params=sorted(REPOSITORY_FACTORIES))
def repo(request: pytest.FixtureRequest) -> JobRepository:
    repository = REPOSITORY_FACTORIES[request.param](request)
    assert isinstance(repository, JobRepository)
    return repository


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def new_job(clock: FakeClock, tenant_id: str = TENANT, **fields: Any) -> Job:
    now = clock.now()
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "requested_by": "user-1",
        "job_type": JobType.FEED_INTAKE_EXPORT,
        "format": ReportFormat.CSV,
        "created_at": now,
        "updated_at": now,
    }
    values.update(fields)
    return Job(**values)


def added(repo: JobRepository, clock: FakeClock, tenant_id: str = TENANT, **fields: Any) -> Job:
    job, stored = repo.add(new_job(clock, tenant_id, **fields))
    assert stored
    return job


def running(repo: JobRepository, clock: FakeClock, owner: str = WORKER, **fields: Any) -> Job:
    job = added(repo, clock, **fields)
    now = clock.now()
    claimed = repo.claim(job.id, owner, now, now + LEASE)
    assert claimed is not None
    return claimed


def in_status(repo: JobRepository, clock: FakeClock, status: str) -> Job:
    """A job brought to ``status`` through the port, as a worker and a user would."""
    if status == "queued":
        return added(repo, clock)
    if status == "cancelled":
        job = repo.cancel(added(repo, clock).id, TENANT, clock.now())
    else:
        job = running(repo, clock)
        if status == "succeeded":
            job = repo.succeed(job.id, WORKER, clock.now(), FILE, None)
        elif status == "failed":
            job = repo.fail(job.id, WORKER, clock.now(), "UPSTREAM_REJECTED", "feed said 400")
    assert job is not None and job.status.value == status
    return job


def apply_event(
    repo: JobRepository, job: Job, event: str, now: dt.datetime, owner: str | None
) -> Job | None:
    """``event`` through its repository method, by ``owner``."""
    if event == "claim":
        return repo.claim(job.id, owner or WORKER, now, now + LEASE)
    if event == "succeed":
        return repo.succeed(job.id, owner, now, FILE, now + dt.timedelta(days=7))
    if event == "fail":
        return repo.fail(job.id, owner, now, "STORAGE_FAILED", "disk full")
    if event == "retry":
        return repo.retry(job.id, owner, now)
    if event == "cancel":
        return repo.cancel(job.id, job.tenant_id, now)
    raise AssertionError(f"unknown event {event}")


def page_through(repo: JobRepository, tenant_id: str, limit: int, **filters: Any) -> list[Job]:
    seen: list[Job] = []
    after: Cursor | None = None
    while True:
        page = repo.find(tenant_id, ListQuery(after=after, limit=limit, **filters))
        seen.extend(page)
        if len(page) < limit:
            return seen
        after = Cursor(page[-1].created_at, page[-1].id)


def ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs]


# --- add and get ---


def test_an_added_job_reads_back_with_every_field(repo: JobRepository, clock: FakeClock) -> None:
    job = new_job(
        clock,
        job_type=JobType.KPI_FEEDING_EXPORT,
        format=ReportFormat.JSON,
        farm_id=str(uuid.uuid4()),
        barn_id=str(uuid.uuid4()),
        batch_id=str(uuid.uuid4()),
        start_date=dt.date(2026, 1, 1),
        end_date=dt.date(2026, 1, 31),
        filters={"source": ["MANUAL", "SILO_AUTO"], "nested": {"a": 1, "b": None}},
        idempotency_key="key-1",
    )
    stored, created = repo.add(job)
    assert created
    assert stored == job
    assert repo.get(job.id) == job
    assert repo.get(job.id, TENANT) == job


def test_every_instant_reads_back_as_aware_utc(repo: JobRepository, clock: FakeClock) -> None:
    job = running(repo, clock)
    repo.mark_enqueued(job.id, clock.advance(1))
    done = repo.succeed(job.id, WORKER, clock.advance(1), FILE, clock.now() + LEASE)
    assert done is not None
    repo.mark_file_deleted(job.id, clock.advance(60))
    stored = repo.get(job.id)
    assert stored is not None
    instants = {
        name: getattr(stored, name)
        for name in (
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
            "expires_at",
            "enqueued_at",
            "file_deleted_at",
        )
    }
    for name, value in instants.items():
        assert value is not None, name
        assert value.utcoffset() == dt.timedelta(0), name
    assert instants["created_at"] == START
    assert instants["enqueued_at"] == START + dt.timedelta(seconds=1)
    assert instants["finished_at"] == START + dt.timedelta(seconds=2)
    assert instants["expires_at"] == START + dt.timedelta(seconds=2) + LEASE
    assert instants["file_deleted_at"] == START + dt.timedelta(seconds=62)


def test_an_unknown_job_is_none(repo: JobRepository) -> None:
    assert repo.get(str(uuid.uuid4())) is None
    assert repo.get(str(uuid.uuid4()), TENANT) is None


def test_another_tenants_job_cannot_be_got(repo: JobRepository, clock: FakeClock) -> None:
    job = added(repo, clock)
    assert repo.get(job.id, OTHER_TENANT) is None
    assert repo.get(job.id, TENANT) is not None


def test_a_second_add_with_the_same_key_returns_the_first_job_and_stores_nothing(
    repo: JobRepository, clock: FakeClock
) -> None:
    first = added(repo, clock, idempotency_key="same")
    clock.advance(5)
    again, created = repo.add(new_job(clock, format=ReportFormat.JSON, idempotency_key="same"))
    assert not created
    assert again == first
    assert ids(repo.find(TENANT, ListQuery())) == [first.id]


def test_the_same_key_in_another_tenant_is_another_job(
    repo: JobRepository, clock: FakeClock
) -> None:
    mine = added(repo, clock, idempotency_key="same")
    theirs, created = repo.add(new_job(clock, OTHER_TENANT, idempotency_key="same"))
    assert created
    assert theirs.id != mine.id


def test_a_job_is_found_by_its_tenant_and_key_only(repo: JobRepository, clock: FakeClock) -> None:
    mine = added(repo, clock, idempotency_key="same")
    theirs, _ = repo.add(new_job(clock, OTHER_TENANT, idempotency_key="same"))
    added(repo, clock)  # no key
    assert repo.by_key(TENANT, "same") == mine
    assert repo.by_key(OTHER_TENANT, "same") == theirs
    assert repo.by_key(TENANT, "other") is None
    assert repo.by_key("tenant-c", "same") is None


def test_jobs_without_a_key_are_never_merged(repo: JobRepository, clock: FakeClock) -> None:
    first = added(repo, clock)
    second = added(repo, clock)
    assert {j.id for j in repo.find(TENANT, ListQuery())} == {first.id, second.id}


# --- the lifecycle ---


def test_the_lifecycle_table_is_the_contracts() -> None:
    table = {(s.value, e.value): t.value for (s, e), t in lifecycle.TRANSITIONS.items()}
    assert table == CONTRACT_LIFECYCLE


@pytest.mark.parametrize("event", [e.value for e in Event])
@pytest.mark.parametrize("status", [s.value for s in JobStatus])
def test_an_event_moves_a_job_only_where_the_lifecycle_allows(
    repo: JobRepository, clock: FakeClock, status: str, event: str
) -> None:
    job = in_status(repo, clock, status)
    target = lifecycle.TRANSITIONS.get((JobStatus(status), Event(event)))
    now = clock.advance(1)
    # the rightful owner acts, so that only the status decides
    result = apply_event(repo, job, event, now, job.lease_owner)
    if target is None:
        assert result is None
        assert repo.get(job.id) == job
    else:
        assert result is not None
        assert result.status is target
        assert result.updated_at == now
        assert repo.get(job.id) == result


@pytest.mark.parametrize("status", [s.value for s in JobStatus if s is not JobStatus.RUNNING])
def test_only_a_running_job_takes_a_heartbeat(
    repo: JobRepository, clock: FakeClock, status: str
) -> None:
    job = in_status(repo, clock, status)
    now = clock.advance(1)
    assert repo.heartbeat(job.id, WORKER, now, now + LEASE, 50) is None
    assert repo.get(job.id) == job


@pytest.mark.parametrize("event", ["heartbeat", "succeed", "fail", "retry"])
@pytest.mark.parametrize("owner", ["worker-2", None])
def test_a_worker_without_the_lease_changes_nothing(
    repo: JobRepository, clock: FakeClock, event: str, owner: str | None
) -> None:
    job = running(repo, clock)
    now = clock.advance(1)
    if event == "heartbeat":
        result = repo.heartbeat(job.id, owner, now, now + LEASE, 50)
    else:
        result = apply_event(repo, job, event, now, owner)
    assert result is None
    assert repo.get(job.id) == job


def test_events_on_an_unknown_job_change_nothing(repo: JobRepository, clock: FakeClock) -> None:
    missing = new_job(clock)
    now = clock.now()
    for event in Event:
        assert apply_event(repo, missing, event.value, now, WORKER) is None
    assert repo.heartbeat(missing.id, WORKER, now, now + LEASE, 10) is None
    repo.mark_enqueued(missing.id, now)
    repo.mark_file_deleted(missing.id, now)
    assert repo.get(missing.id) is None


def test_a_claim_takes_the_lease_counts_an_attempt_and_keeps_the_first_start(
    repo: JobRepository, clock: FakeClock
) -> None:
    job = added(repo, clock)
    first_start = clock.advance(1)
    first = repo.claim(job.id, WORKER, first_start, first_start + LEASE)
    assert first is not None
    assert (first.lease_owner, first.lease_expires_at) == (WORKER, first_start + LEASE)
    assert (first.attempts, first.started_at) == (1, first_start)
    assert repo.retry(job.id, WORKER, clock.advance(1)) is not None
    now = clock.advance(1)
    second = repo.claim(job.id, "worker-2", now, now + LEASE)
    assert second is not None
    assert (second.lease_owner, second.attempts, second.started_at) == (
        "worker-2",
        2,
        first_start,
    )


def test_only_one_of_two_claims_wins(repo: JobRepository, clock: FakeClock) -> None:
    job = added(repo, clock)
    now = clock.now()
    assert repo.claim(job.id, WORKER, now, now + LEASE) is not None
    assert repo.claim(job.id, "worker-2", now, now + LEASE) is None
    stored = repo.get(job.id)
    assert stored is not None and stored.lease_owner == WORKER and stored.attempts == 1


def test_success_records_the_file_and_completes_progress(
    repo: JobRepository, clock: FakeClock
) -> None:
    job = running(repo, clock, job_type=JobType.TELEMETRY_EXPORT, format=ReportFormat.JSON)
    now = clock.advance(3)
    expires = now + dt.timedelta(days=7)
    done = repo.succeed(job.id, WORKER, now, FILE, expires)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.progress_pct == 100
    assert (done.file_path, done.size_bytes, done.sha256) == (
        FILE.location,
        FILE.size_bytes,
        FILE.sha256,
    )
    assert done.file_name == "telemetry_export.json"
    assert done.mime_type == "application/x-ndjson"
    assert (done.expires_at, done.finished_at) == (expires, now)
    assert (done.lease_owner, done.lease_expires_at) == (None, None)


def test_failure_records_the_code_and_the_message(repo: JobRepository, clock: FakeClock) -> None:
    job = running(repo, clock)
    now = clock.advance(2)
    failed = repo.fail(job.id, WORKER, now, "UPSTREAM_REJECTED", "feed service answered 400")
    assert failed is not None
    assert (failed.status, failed.error_code, failed.error_message) == (
        JobStatus.FAILED,
        "UPSTREAM_REJECTED",
        "feed service answered 400",
    )
    assert failed.finished_at == now
    assert (failed.lease_owner, failed.lease_expires_at) == (None, None)


def test_a_retry_frees_the_lease_and_forgets_the_publish(
    repo: JobRepository, clock: FakeClock
) -> None:
    job = running(repo, clock)
    repo.mark_enqueued(job.id, clock.now())
    retried = repo.retry(job.id, WORKER, clock.advance(1))
    assert retried is not None
    assert retried.status is JobStatus.QUEUED
    assert (retried.lease_owner, retried.lease_expires_at, retried.enqueued_at) == (None,) * 3


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_cancel_finishes_the_job_and_frees_the_lease(
    repo: JobRepository, clock: FakeClock, status: str
) -> None:
    job = in_status(repo, clock, status)
    now = clock.advance(1)
    cancelled = repo.cancel(job.id, TENANT, now)
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at == now
    # a running job keeps its lease's end (its leftovers are discarded once it is past),
    # but no owner: the lease is nobody's to renew
    assert (cancelled.lease_owner, cancelled.lease_expires_at) == (None, job.lease_expires_at)
    assert repo.get(job.id) == cancelled
    # the worker notices at its next heartbeat, and cannot finish the job any more
    assert repo.heartbeat(job.id, WORKER, now, now + LEASE, 40) is None
    assert repo.succeed(job.id, WORKER, now, FILE, None) is None
    assert repo.fail(job.id, WORKER, now, "STORAGE_FAILED", "late") is None
    assert repo.retry(job.id, WORKER, now) is None
    assert repo.claim(job.id, "worker-2", now, now + LEASE) is None
    assert repo.stale(now + 2 * LEASE, now + 2 * LEASE, 10) == []
    assert repo.get(job.id) == cancelled


def test_another_tenant_cannot_cancel(repo: JobRepository, clock: FakeClock) -> None:
    job = added(repo, clock)
    assert repo.cancel(job.id, OTHER_TENANT, clock.advance(1)) is None
    assert repo.get(job.id) == job


# --- progress and leases ---


def test_progress_only_rises_and_stays_below_100_while_running(
    repo: JobRepository, clock: FakeClock
) -> None:
    job = running(repo, clock)
    seen = []
    for pct in (10, 40, 20, None, 99, 150, 0):
        now = clock.advance(1)
        beat = repo.heartbeat(job.id, WORKER, now, now + LEASE, pct)
        assert beat is not None
        seen.append(beat.progress_pct)
    assert seen == [10, 40, 40, 40, 99, 99, 99]
    done = repo.succeed(job.id, WORKER, clock.advance(1), FILE, None)
    assert done is not None and done.progress_pct == 100


def test_a_lease_that_ran_out_is_lost_not_renewed(repo: JobRepository, clock: FakeClock) -> None:
    """Recovery reads a job whose lease ran out as stale, then requeues (or fails) it under
    the owner it read: a renewal between the two left a holder exporting a job the queue
    handed to another worker (or one failed WORKER_LOST, its files discarded under it)."""
    job = running(repo, clock)
    assert job.lease_expires_at is not None
    clock.set(job.lease_expires_at + dt.timedelta(milliseconds=1))
    now = clock.now()
    assert repo.heartbeat(job.id, WORKER, now, now + LEASE, 50) is None
    assert repo.get(job.id) == job
    assert [j.id for j in repo.stale(now, START, 10)] == [job.id]
    at_the_end = running(repo, clock)
    assert at_the_end.lease_expires_at is not None
    clock.set(at_the_end.lease_expires_at)  # its last instant is still its own
    assert repo.heartbeat(at_the_end.id, WORKER, clock.now(), clock.now() + LEASE, 50)


def test_a_heartbeat_extends_the_lease(repo: JobRepository, clock: FakeClock) -> None:
    job = running(repo, clock)
    now = clock.advance(20)
    beat = repo.heartbeat(job.id, WORKER, now, now + LEASE, None)
    assert beat is not None
    assert (beat.lease_expires_at, beat.updated_at) == (now + LEASE, now)
    assert repo.stale(START + LEASE + dt.timedelta(seconds=1), START, 10) == []


def test_a_running_job_is_stale_only_once_its_lease_has_run_out(
    repo: JobRepository, clock: FakeClock
) -> None:
    job = running(repo, clock)
    long_ago = START - dt.timedelta(days=1)
    assert repo.stale(START + LEASE, long_ago, 10) == []
    stale = repo.stale(START + LEASE + dt.timedelta(milliseconds=1), long_ago, 10)
    assert ids(stale) == [job.id]
    assert stale[0].lease_owner == WORKER


@pytest.mark.parametrize("end", ["retry", "fail"])
def test_recovery_takes_back_no_job_whose_lease_was_renewed_after_it_read_it(
    repo: JobRepository, clock: FakeClock, end: str
) -> None:
    """Recovery reads the job stale, its worker renews (the owner is the same before and
    after; the worker's clock a moment behind, as two hosts' clocks are), then recovery's
    write: it took the job from its live worker, which ran on while
    a second attempt ran the same export (and after max_attempts the job failed WORKER_LOST
    with every worker alive). Its write holds only while the lease is still run out."""
    job = running(repo, clock)
    now = START + LEASE + dt.timedelta(milliseconds=1)
    (seen,) = repo.stale(now, START - dt.timedelta(days=1), 10)
    # the worker's clock a little behind recovery's: its lease has not run out by it
    worker_now = START + LEASE - dt.timedelta(milliseconds=1)
    assert repo.heartbeat(job.id, WORKER, worker_now, now + LEASE, None) is not None

    def reclaim(lapsed: bool) -> Job | None:
        if end == "retry":
            return repo.retry(seen.id, seen.lease_owner, now, lapsed=lapsed)
        return repo.fail(seen.id, seen.lease_owner, now, "WORKER_LOST", "lost", lapsed=lapsed)

    assert reclaim(lapsed=True) is None
    kept = repo.get(job.id)
    assert kept is not None and kept.status is JobStatus.RUNNING
    assert kept.lease_owner == WORKER and kept.lease_expires_at == now + LEASE
    # run out once more, recovery takes it; the worker's own end needs no lapse
    later = now + LEASE + dt.timedelta(milliseconds=1)
    if end == "retry":
        assert repo.retry(job.id, WORKER, later, lapsed=True) is not None
    else:
        assert reclaim(lapsed=False) is not None
    assert repo.get(job.id).status is not JobStatus.RUNNING  # type: ignore[union-attr]


def test_a_running_job_without_a_lease_is_stale_once_it_is_old(
    repo: JobRepository, clock: FakeClock
) -> None:
    # a row the old service left running: no lease, only its last update time
    legacy = added(repo, clock, status=JobStatus.RUNNING, progress_pct=30)
    later = START + dt.timedelta(hours=1)
    assert repo.stale(later, START, 10) == []
    assert ids(repo.stale(later, START + dt.timedelta(milliseconds=1), 10)) == [legacy.id]
    # recovery hands it back to the queue although no worker holds it
    retried = repo.retry(legacy.id, None, later, lapsed=True)
    assert retried is not None and retried.status is JobStatus.QUEUED


def test_stale_lists_the_longest_silent_first_and_honours_the_limit(
    repo: JobRepository, clock: FakeClock
) -> None:
    jobs = []
    for _ in range(3):
        jobs.append(running(repo, clock))
        clock.advance(1)
    added(repo, clock)  # queued jobs are never stale
    later = clock.advance(3600)
    assert ids(repo.stale(later, START, 10)) == ids(jobs)
    assert ids(repo.stale(later, START, 2)) == ids(jobs[:2])


def test_a_reclaimed_job_refuses_its_previous_owner(repo: JobRepository, clock: FakeClock) -> None:
    job = running(repo, clock)
    expired = clock.advance(LEASE.total_seconds() + 1)
    (stale,) = repo.stale(expired, START, 10)
    assert repo.retry(stale.id, stale.lease_owner, expired) is not None
    again = repo.claim(job.id, "worker-2", expired, expired + LEASE)
    assert again is not None
    now = clock.advance(1)
    assert repo.heartbeat(job.id, WORKER, now, now + LEASE, 80) is None
    assert repo.succeed(job.id, WORKER, now, FILE, None) is None
    assert repo.fail(job.id, WORKER, now, "STORAGE_FAILED", "late") is None
    assert repo.get(job.id) == again


# --- recovery lists ---


def test_unpublished_lists_queued_jobs_the_broker_never_confirmed(
    repo: JobRepository, clock: FakeClock
) -> None:
    first = added(repo, clock)
    confirmed = added(repo, clock)
    repo.mark_enqueued(confirmed.id, clock.now())
    clock.advance(1)
    second = added(repo, clock)
    running(repo, clock)
    assert repo.unpublished(START, 10) == []
    later = clock.advance(60)
    assert ids(repo.unpublished(later, 10)) == [first.id, second.id]
    assert ids(repo.unpublished(later, 1)) == [first.id]


def test_a_retried_job_waits_to_be_published_again(repo: JobRepository, clock: FakeClock) -> None:
    job = running(repo, clock)
    repo.mark_enqueued(job.id, clock.now())
    retried_at = clock.advance(10)
    assert repo.retry(job.id, WORKER, retried_at) is not None
    assert repo.unpublished(retried_at, 10) == []
    assert ids(repo.unpublished(retried_at + dt.timedelta(milliseconds=1), 10)) == [job.id]
    repo.mark_enqueued(job.id, clock.advance(1))
    assert repo.unpublished(clock.advance(60), 10) == []


def test_expired_files_lists_succeeded_jobs_past_expiry_until_deleted(
    repo: JobRepository, clock: FakeClock
) -> None:
    day = dt.timedelta(days=1)
    soon = running(repo, clock)
    repo.succeed(soon.id, WORKER, clock.now(), FILE, START + day)
    late = running(repo, clock)
    repo.succeed(late.id, WORKER, clock.now(), FILE, START + 2 * day)
    forever = running(repo, clock)
    repo.succeed(forever.id, WORKER, clock.now(), FILE, None)
    in_status(repo, clock, "failed")
    assert repo.expired_files(START + day - dt.timedelta(milliseconds=1), 10) == []
    assert ids(repo.expired_files(START + day, 10)) == [soon.id]
    assert ids(repo.expired_files(START + 3 * day, 10)) == [soon.id, late.id]
    assert ids(repo.expired_files(START + 3 * day, 1)) == [soon.id]
    repo.mark_file_deleted(soon.id, START + 3 * day)
    assert ids(repo.expired_files(START + 3 * day, 10)) == [late.id]
    expired = repo.get(soon.id)
    assert expired is not None and expired.status is JobStatus.SUCCEEDED


def test_expired_files_page_by_expiry_then_id_after_a_given_one(
    repo: JobRepository, clock: FakeClock
) -> None:
    """Retention goes on after files it could not delete, so a key orders them whole: ties
    in expires_at are ordered by id, byte-wise."""
    day = dt.timedelta(days=1)
    keys: list[tuple[dt.datetime, str]] = []
    for expires in (START + day, START + day, START + day, START + 2 * day):
        job = running(repo, clock)
        repo.succeed(job.id, WORKER, clock.now(), FILE, expires)
        keys.append((expires, job.id))
    keys.sort(key=lambda key: (key[0], key[1].encode()))
    in_order = [job_id for _, job_id in keys]
    now = START + 3 * day
    assert ids(repo.expired_files(now, 10)) == in_order
    assert ids(repo.expired_files(now, 2, keys[0])) == in_order[1:3]
    assert repo.expired_files(now, 10, keys[-1]) == []


def test_a_file_is_marked_deleted_once(repo: JobRepository, clock: FakeClock) -> None:
    job = in_status(repo, clock, "succeeded")
    repo.mark_file_deleted(job.id, START + dt.timedelta(hours=1))
    repo.mark_file_deleted(job.id, START + dt.timedelta(hours=2))
    stored = repo.get(job.id)
    assert stored is not None and stored.file_deleted_at == START + dt.timedelta(hours=1)


def test_mark_enqueued_records_the_confirmation_only(repo: JobRepository, clock: FakeClock) -> None:
    job = added(repo, clock)
    repo.mark_enqueued(job.id, clock.advance(1))
    stored = repo.get(job.id)
    assert stored == msgspec.structs.replace(job, enqueued_at=clock.now())


def cancelled_running(repo: JobRepository, clock: FakeClock) -> Job:
    """A job cancelled one second after a worker claimed it (its lease ends 29 s later)."""
    job = running(repo, clock)
    cancelled = repo.cancel(job.id, TENANT, clock.advance(1))
    assert cancelled is not None and cancelled.lease_expires_at == job.lease_expires_at
    return cancelled


def test_a_job_cancelled_while_running_has_leftovers_once_its_lease_ran_out(
    repo: JobRepository, clock: FakeClock
) -> None:
    """Until the lease's end its worker may be alive and abort its own file; after it, what
    a dead worker left is recovery's to discard."""
    job = cancelled_running(repo, clock)
    assert job.lease_expires_at is not None
    in_status(repo, clock, "cancelled")  # cancelled while queued: no worker wrote anything
    in_status(repo, clock, "succeeded")
    in_status(repo, clock, "failed")
    running(repo, clock)  # running past its lease: stale, not cancelled
    assert repo.leftovers(job.lease_expires_at, 10) == []  # its last instant
    later = job.lease_expires_at + dt.timedelta(milliseconds=1)
    assert repo.leftovers(later, 10) == [job]
    assert ids(repo.leftovers(later + dt.timedelta(days=30), 10)) == [job.id]


def test_a_job_back_in_the_queue_after_an_attempt_has_leftovers_from_its_cancel_on(
    repo: JobRepository, clock: FakeClock
) -> None:
    """Put back after its worker died, then cancelled: what the dead attempt wrote was the
    api's alone to discard, and an api that could not (a read-only mount of the files) left
    it forever (a cancel cleared the lease's end, so recovery never listed it)."""
    job = running(repo, clock)
    back = repo.retry(job.id, WORKER, clock.advance(31))
    assert back is not None and back.status.value == "queued" and back.attempts == 1
    cancelled = repo.cancel(job.id, TENANT, clock.advance(1))
    assert cancelled is not None and cancelled.lease_expires_at == clock.now()
    never_ran = in_status(repo, clock, "cancelled")
    assert never_ran.lease_expires_at is None, "no attempt, nothing to discard"
    assert repo.leftovers(clock.now(), 10) == []
    assert ids(repo.leftovers(clock.advance(0.001), 10)) == [job.id]


def test_a_job_failed_after_attempts_that_died_has_leftovers_from_its_failure_on(
    repo: JobRepository, clock: FakeClock
) -> None:
    """A failure's own discard of its dead attempts' files was the only one: a store that
    refused it once left them for good. A job failed on its first attempt by its own worker
    (which aborted its own file) has none."""
    first = in_status(repo, clock, "failed")
    assert first.lease_expires_at is None
    second = running(repo, clock)
    back = repo.retry(second.id, WORKER, clock.advance(1))
    assert back is not None
    again = repo.claim(second.id, WORKER, clock.now(), clock.now() + LEASE)
    assert again is not None and again.attempts == 2
    failed = repo.fail(second.id, WORKER, clock.advance(1), "UPSTREAM_UNAVAILABLE", "down")
    assert failed is not None and failed.lease_expires_at == clock.now()
    lost = running(repo, clock)  # recovery fails it: its one attempt died
    now = clock.advance(31)
    assert repo.fail(lost.id, WORKER, now, "WORKER_LOST", "lost", lapsed=True) is not None
    assert ids(repo.leftovers(now, 10)) == [second.id]
    later = clock.advance(0.001)
    assert ids(repo.leftovers(later, 10)) == [second.id, lost.id]
    repo.mark_leftovers(second.id, failed.lease_expires_at, None)  # discarded
    repo.mark_leftovers(lost.id, now, later)  # refused: again after later
    assert repo.leftovers(later, 10) == []
    assert ids(repo.leftovers(clock.advance(0.001), 10)) == [lost.id]
    stored = repo.get(second.id)
    assert stored is not None and stored.status.value == "failed"
    assert stored.lease_expires_at is None and stored.error_code == "UPSTREAM_UNAVAILABLE"


def test_cancelled_leftovers_come_by_lease_end_and_honour_the_limit(
    repo: JobRepository, clock: FakeClock
) -> None:
    jobs = [cancelled_running(repo, clock) for _ in range(3)]
    later = clock.advance(3600)
    assert ids(repo.leftovers(later, 10)) == ids(jobs)
    assert ids(repo.leftovers(later, 2)) == ids(jobs[:2])


def test_leftovers_marked_discarded_are_listed_no_more_and_the_job_is_unchanged(
    repo: JobRepository, clock: FakeClock
) -> None:
    job = cancelled_running(repo, clock)
    other = cancelled_running(repo, clock)
    assert job.lease_expires_at is not None
    later = clock.advance(3600)
    repo.mark_leftovers(job.id, job.lease_expires_at, None)
    assert ids(repo.leftovers(later, 10)) == [other.id]
    # the job as its owner sees it is as the cancel left it
    assert repo.get(job.id) == msgspec.structs.replace(job, lease_expires_at=None)


def test_refused_leftovers_are_listed_again_after_the_retry_instant_behind_the_others(
    repo: JobRepository, clock: FakeClock
) -> None:
    refused = cancelled_running(repo, clock)
    behind = cancelled_running(repo, clock)
    assert refused.lease_expires_at is not None and behind.lease_expires_at is not None
    now = clock.advance(3600)
    repo.mark_leftovers(refused.id, refused.lease_expires_at, now)
    assert ids(repo.leftovers(now, 10)) == [behind.id]
    later = clock.advance(5)
    assert ids(repo.leftovers(later, 10)) == [behind.id, refused.id]
    assert ids(repo.leftovers(later, 1)) == [behind.id]
    # tried again and discarded: recorded over the instant the second pass read
    (again,) = [j for j in repo.leftovers(later, 10) if j.id == refused.id]
    assert again.lease_expires_at == now
    repo.mark_leftovers(refused.id, now, None)
    assert ids(repo.leftovers(later, 10)) == [behind.id]


def test_marking_leftovers_over_a_lease_end_another_pass_changed_changes_nothing(
    repo: JobRepository, clock: FakeClock
) -> None:
    """Two passes may read the same job: the one that discarded it records first; the other,
    refused by the store, must not list the job again (nor the other way round)."""
    job = cancelled_running(repo, clock)
    assert job.lease_expires_at is not None
    now = clock.advance(3600)
    repo.mark_leftovers(job.id, job.lease_expires_at, None)
    repo.mark_leftovers(job.id, job.lease_expires_at, now)
    assert repo.leftovers(clock.advance(5), 10) == []
    assert repo.get(job.id) == msgspec.structs.replace(job, lease_expires_at=None)


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "queued"])
def test_marking_leftovers_never_touches_a_job_that_is_not_cancelled(
    repo: JobRepository, clock: FakeClock, status: str
) -> None:
    job = in_status(repo, clock, status)
    seen = job.lease_expires_at or clock.now()
    repo.mark_leftovers(job.id, seen, None)
    repo.mark_leftovers(job.id, seen, clock.advance(1))
    assert repo.get(job.id) == job


# --- listing ---


def test_find_lists_only_the_tenants_jobs_newest_first(
    repo: JobRepository, clock: FakeClock
) -> None:
    mine = []
    for _ in range(3):
        mine.append(added(repo, clock))
        added(repo, clock, OTHER_TENANT)
        clock.advance(1)
    assert ids(repo.find(TENANT, ListQuery())) == ids(mine[::-1])
    assert ids(repo.find(TENANT, ListQuery(limit=2))) == ids(mine[:0:-1])
    assert repo.find("nobody", ListQuery()) == []


def test_a_job_created_in_a_days_last_half_millisecond_stays_in_that_day(
    repo: JobRepository, clock: FakeClock
) -> None:
    """PostgreSQL's timestamp(3) rounds: 23:59:59.9996 was stored as the next day's 00:00,
    out of that day's created_to and created after its own start."""
    last = START.replace(hour=23, minute=59, second=59, microsecond=999_600)
    clock.set(last)
    job = running(repo, clock)
    assert job.created_at.date() == last.date()
    assert job.started_at is not None and job.started_at >= job.created_at
    day_end = last.replace(microsecond=999_999)
    assert ids(repo.find(TENANT, ListQuery(created_to=day_end))) == [job.id]


def test_find_filters_by_status_type_and_creation_time(
    repo: JobRepository, clock: FakeClock
) -> None:
    early = added(repo, clock)
    clock.advance(60)
    kpi = added(repo, clock, job_type=JobType.KPI_FEEDING_EXPORT)
    clock.advance(60)
    run = running(repo, clock)
    t1 = START + dt.timedelta(seconds=60)
    assert ids(repo.find(TENANT, ListQuery(status=JobStatus.RUNNING))) == [run.id]
    assert ids(repo.find(TENANT, ListQuery(status=JobStatus.QUEUED))) == [kpi.id, early.id]
    assert ids(repo.find(TENANT, ListQuery(job_type=JobType.KPI_FEEDING_EXPORT))) == [kpi.id]
    assert ids(repo.find(TENANT, ListQuery(created_from=t1))) == [run.id, kpi.id]
    assert ids(repo.find(TENANT, ListQuery(created_to=t1))) == [kpi.id, early.id]
    assert ids(repo.find(TENANT, ListQuery(created_from=t1, created_to=t1))) == [kpi.id]
    both = ListQuery(status=JobStatus.QUEUED, job_type=JobType.FEED_INTAKE_EXPORT)
    assert ids(repo.find(TENANT, both)) == [early.id]
    assert repo.find(TENANT, ListQuery(status=JobStatus.CANCELLED)) == []


def test_paging_through_ties_yields_every_job_once_in_order(
    repo: JobRepository, clock: FakeClock
) -> None:
    # several jobs per instant, with ids whose order differs between collations
    jobs = []
    names = ["a-1", "A-2", "b_3", "B.4", "a5", "Z-6", "z-7"]
    name = itertools.cycle(names)
    for _ in range(4):
        for _ in range(5):
            jobs.append(added(repo, clock, id=f"{next(name)}-{uuid.uuid4()}"))
        clock.advance(0.001)
    expected = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)
    for limit in (1, 2, 3, 7, 100):
        assert ids(page_through(repo, TENANT, limit)) == ids(expected), limit


def test_paging_while_new_jobs_arrive_yields_every_earlier_job_once(
    repo: JobRepository, clock: FakeClock
) -> None:
    earlier = []
    for i in range(12):
        earlier.append(added(repo, clock))
        if i % 3 == 2:
            clock.advance(1)
    seen: list[Job] = []
    after: Cursor | None = None
    while True:
        page = repo.find(TENANT, ListQuery(after=after, limit=4))
        seen.extend(page)
        if len(page) < 4:
            break
        after = Cursor(page[-1].created_at, page[-1].id)
        # newcomers arrive between pages, some at the very instant of the cursor
        added(repo, clock, created_at=after.created_at, updated_at=after.created_at)
        added(repo, clock, created_at=clock.advance(1), updated_at=clock.now())
    seen_ids = ids(seen)
    assert len(seen_ids) == len(set(seen_ids))
    assert [i for i in seen_ids if i in set(ids(earlier))] == ids(
        sorted(earlier, key=lambda j: (j.created_at, j.id), reverse=True)
    )
    keys = [(j.created_at, j.id) for j in seen]
    assert keys == sorted(keys, reverse=True)


def test_paging_keeps_the_filters(repo: JobRepository, clock: FakeClock) -> None:
    queued = []
    for _ in range(5):
        queued.append(added(repo, clock))
        running(repo, clock)
        clock.advance(1)
    found = page_through(repo, TENANT, 2, status=JobStatus.QUEUED)
    assert ids(found) == ids(queued[::-1])


def test_ping_answers(repo: JobRepository) -> None:
    repo.ping()


# --- export options (issue 18) ---


def test_export_options_and_row_count_read_back_as_stored(
    repo: JobRepository, clock: FakeClock
) -> None:
    csv = CsvOptions(delimiter=";", bom=True, line_ending=LineEnding.LF)
    job, _ = repo.add(
        new_job(
            clock,
            compression=Compression.GZIP,
            csv=csv,
            columns=["occurred_at", "quantity_kg", "id"],
            timezone="Asia/Bangkok",
        )
    )
    read = repo.get(job.id)
    assert read is not None
    assert (read.compression, read.csv, read.columns, read.timezone) == (
        Compression.GZIP,
        csv,
        ["occurred_at", "quantity_kg", "id"],
        "Asia/Bangkok",
    )
    assert read.row_count is None  # until it is finished


def test_a_job_without_options_reads_back_without_any(
    repo: JobRepository, clock: FakeClock
) -> None:
    job, _ = repo.add(new_job(clock))
    read = repo.get(job.id)
    assert read is not None
    assert (read.compression, read.csv, read.columns, read.timezone, read.row_count) == (
        None,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("fmt", "compression", "file_name", "mime_type"),
    [
        (ReportFormat.CSV, Compression.GZIP, "feed_intake_export.csv.gz", "application/gzip"),
        (ReportFormat.JSON, Compression.GZIP, "feed_intake_export.ndjson.gz", "application/gzip"),
        (ReportFormat.CSV, Compression.NONE, "feed_intake_export.csv", "text/csv; charset=utf-8"),
        (
            ReportFormat.XLSX,
            None,
            "feed_intake_export.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    ],
)
def test_success_names_the_file_by_format_and_compression_and_counts_its_rows(
    repo: JobRepository,
    clock: FakeClock,
    fmt: ReportFormat,
    compression: Compression | None,
    file_name: str,
    mime_type: str,
) -> None:
    job = running(repo, clock, format=fmt, compression=compression)
    now = clock.advance(3)
    done = repo.succeed(job.id, WORKER, now, msgspec.structs.replace(FILE, rows=42), None)
    assert done is not None
    assert (done.file_name, done.mime_type, done.row_count) == (file_name, mime_type, 42)


# --- the cap of unfinished jobs and the turns across tenants (issue 26, row 14) ---


def test_a_tenant_at_its_cap_is_refused_and_nothing_is_stored(
    repo: JobRepository, clock: FakeClock
) -> None:
    running(repo, clock)
    added(repo, clock)
    with pytest.raises(TooManyJobs, match="2 queued or running jobs"):
        repo.add(new_job(clock), max_unfinished=2)
    assert len(repo.find(TENANT, ListQuery())) == 2
    # another tenant's jobs do not count, and a finished job frees its place
    assert repo.add(new_job(clock, OTHER_TENANT), max_unfinished=2)[1]
    for status in ("succeeded", "failed", "cancelled"):
        in_status(repo, clock, status)  # each added under no cap, then finished
    queued = [j for j in repo.find(TENANT, ListQuery()) if j.status is JobStatus.QUEUED]
    assert repo.cancel(queued[0].id, TENANT, clock.now()) is not None
    assert repo.add(new_job(clock), max_unfinished=2)[1]


def test_at_the_cap_a_used_key_still_answers_its_job(repo: JobRepository, clock: FakeClock) -> None:
    first = added(repo, clock, idempotency_key="same")
    again, created = repo.add(new_job(clock, idempotency_key="same"), max_unfinished=1)
    assert (again, created) == (first, False)
    with pytest.raises(TooManyJobs):
        repo.add(new_job(clock, idempotency_key="another"), max_unfinished=1)


def test_concurrent_adds_never_pass_the_cap_together(repo: JobRepository, clock: FakeClock) -> None:
    def add_one(_: int) -> bool:
        try:
            return repo.add(new_job(clock), max_unfinished=5)[1]
        except TooManyJobs:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        stored = list(pool.map(add_one, range(24)))
    assert stored.count(True) == 5
    assert len(repo.find(TENANT, ListQuery())) == 5


def test_nothing_queued_is_no_ones_turn(repo: JobRepository, clock: FakeClock) -> None:
    assert repo.next_in_turn() is None
    running(repo, clock)
    assert repo.next_in_turn() is None


def test_the_turn_goes_to_the_tenant_running_the_fewest_jobs(
    repo: JobRepository, clock: FakeClock
) -> None:
    running(repo, clock)
    clock.advance(1)
    mine = added(repo, clock)
    clock.advance(1)
    theirs = added(repo, clock, OTHER_TENANT)  # queued later, but its tenant runs nothing
    assert repo.next_in_turn() == theirs
    assert repo.claim(theirs.id, WORKER, clock.now(), clock.now() + LEASE) is not None
    # one running each: the tenant whose latest job started longest ago
    assert repo.next_in_turn() == mine


def test_among_tenants_running_as_few_the_turn_goes_to_the_one_that_started_least_recently(
    repo: JobRepository, clock: FakeClock
) -> None:
    done = in_status(repo, clock, "succeeded")  # the tenant ran a job, which finished
    assert done.status is JobStatus.SUCCEEDED
    clock.advance(1)
    oldest_queued = added(repo, clock)
    clock.advance(1)
    added(repo, clock)
    never_ran = added(repo, clock, OTHER_TENANT)
    assert repo.next_in_turn() == never_ran, "a tenant whose jobs never started comes first"
    now = clock.now()
    assert repo.claim(never_ran.id, WORKER, now, now + LEASE) is not None
    assert repo.succeed(never_ran.id, WORKER, now, FILE, None) is not None
    clock.advance(1)
    added(repo, clock, OTHER_TENANT)
    # both have started a job now: the one whose latest start is older, its oldest queued job
    assert repo.next_in_turn() == oldest_queued


def test_among_tenants_that_never_ran_the_turn_goes_to_the_one_waiting_longest(
    repo: JobRepository, clock: FakeClock
) -> None:
    first = added(repo, clock, OTHER_TENANT)
    clock.advance(1)
    added(repo, clock)
    clock.advance(1)
    added(repo, clock, OTHER_TENANT)
    assert repo.next_in_turn() == first
