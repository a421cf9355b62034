"""What only the SQLite adapter has to promise: the file is durable (across a reopen, and when
the process is killed), its schema is versioned, concurrent callers (threads sharing one
repository, or each with its own connection as separate processes would) never make two jobs
of one key nor two owners of one job, and instants keep their exact order. The port's
behaviour is in test_job_repository_contract.py.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapters import sqlite as sqlite_adapter
from adapters.sqlite import SCHEMA_VERSION, SchemaTooNew, SqliteJobRepository
from reportcore.errors import ServiceUnavailable
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat
from reportcore.ports import StoredFile
from reportcore.requests import Cursor, ListQuery

START = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=30)
TENANT = "tenant-a"
THREADS = 32
FILE = StoredFile(location="exports/tenant-a/job/report.csv", size_bytes=10, sha256="cd" * 32)

T = TypeVar("T")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture
def repo(db_path: Path) -> Iterator[SqliteJobRepository]:
    repository = SqliteJobRepository(db_path)
    yield repository
    repository.close()


def new_job(**fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": TENANT,
        "requested_by": "user-1",
        "job_type": JobType.FEED_INTAKE_EXPORT,
        "format": ReportFormat.CSV,
        "created_at": START,
        "updated_at": START,
    }
    values.update(fields)
    return Job(**values)


def all_at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(0..count-1)`` on ``count`` threads released together by a barrier."""
    barrier = threading.Barrier(count, timeout=30)

    def run(i: int) -> T:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def rows_in(path: Path) -> int:
    """The number of jobs in the file, counted through a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM report_jobs").fetchone()[0])
    finally:
        conn.close()


# --- durability and the schema ---


def test_jobs_and_their_changes_survive_closing_and_reopening_the_file(db_path: Path) -> None:
    first = SqliteJobRepository(db_path)
    queued, _ = first.add(new_job(idempotency_key="k", filters={"source": ["MANUAL"]}))
    done, _ = first.add(new_job(created_at=START + LEASE, updated_at=START + LEASE))
    first.claim(done.id, "worker-1", START, START + LEASE)
    finished = first.succeed(done.id, "worker-1", START + LEASE, FILE, START + 2 * LEASE)
    first.close()

    again = SqliteJobRepository(db_path)
    try:
        assert again.get(queued.id) == queued
        assert again.get(done.id) == finished
        assert [j.id for j in again.find(TENANT, ListQuery())] == [done.id, queued.id]
        # the idempotency key is still taken after the reopen
        replay, created = again.add(new_job(idempotency_key="k"))
        assert (replay.id, created) == (queued.id, False)
    finally:
        again.close()


def test_an_added_job_survives_the_process_being_killed(db_path: Path) -> None:
    # a child adds a job and is killed at once: no close, no clean exit, nothing flushed later
    child = textwrap.dedent(
        f"""
        import datetime as dt, os, signal
        from adapters.sqlite import SqliteJobRepository
        from reportcore.jobs import Job, JobType, ReportFormat
        now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        repo = SqliteJobRepository({str(db_path)!r})
        job, _ = repo.add(Job(id="killed-job", tenant_id="t", requested_by=None,
                              job_type=JobType.TELEMETRY_EXPORT, format=ReportFormat.JSON,
                              created_at=now, updated_at=now))
        print(job.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -9, done.stderr
    assert done.stdout.strip() == "killed-job"
    repo = SqliteJobRepository(db_path)
    try:
        job = repo.get("killed-job")
        assert job is not None and job.status is JobStatus.QUEUED
    finally:
        repo.close()


def test_a_new_file_gets_the_current_schema_in_wal_mode(
    repo: SqliteJobRepository, db_path: Path
) -> None:
    assert repo.schema_version() == SCHEMA_VERSION >= 1
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_a_file_from_a_newer_version_is_refused_and_left_untouched(db_path: Path) -> None:
    SqliteJobRepository(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}"):
        SqliteJobRepository(db_path)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        conn.close()


def recorded_migrations(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM report_schema_migrations ORDER BY 1")]
    finally:
        conn.close()


def test_each_migration_is_recorded_by_name(repo: SqliteJobRepository, db_path: Path) -> None:
    assert recorded_migrations(db_path) == [
        "0001_schema",
        "0004_export_options",
        "0005_webhooks",
        "0006_schedules",
        "0009_cancelled_leftovers",
        "0011_failed_leftovers",
    ]


def test_a_file_versioned_by_count_alone_gets_its_names_and_no_step_again(db_path: Path) -> None:
    SqliteJobRepository(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE report_schema_migrations")  # as reportsvc before names were kept
    conn.close()
    repo = SqliteJobRepository(db_path)  # a step applied again would fail: its columns exist
    try:
        assert repo.schema_version() == SCHEMA_VERSION
        repo.add(new_job(id="after-upgrade"))
        assert repo.get("after-upgrade") is not None
    finally:
        repo.close()
    assert recorded_migrations(db_path) == [
        "0001_schema",
        "0004_export_options",
        "0005_webhooks",
        "0006_schedules",
        "0009_cancelled_leftovers",
        "0011_failed_leftovers",
    ]


def test_a_step_added_between_two_applied_ones_is_applied_too(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteJobRepository(db_path).close()
    # a branch merged after 0005 with a step numbered before it: counting would skip it
    between = ("0002_between", ("CREATE TABLE report_between (id INTEGER PRIMARY KEY) STRICT",))
    steps = sorted([*sqlite_adapter.MIGRATIONS, between])
    monkeypatch.setattr(sqlite_adapter, "MIGRATIONS", tuple(steps))
    monkeypatch.setattr(sqlite_adapter, "SCHEMA_VERSION", len(steps))
    repo = SqliteJobRepository(db_path)
    try:
        assert repo.schema_version() == len(steps)
    finally:
        repo.close()
    assert "0002_between" in recorded_migrations(db_path)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM report_between").fetchone() == (0,)
    finally:
        conn.close()


def test_a_file_with_a_step_this_version_does_not_know_is_refused(db_path: Path) -> None:
    SqliteJobRepository(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("DELETE FROM report_schema_migrations WHERE name = '0005_webhooks'")
    conn.execute("INSERT INTO report_schema_migrations VALUES ('0006_later', '2026-12-01')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match="0006_later"):
        SqliteJobRepository(db_path)


def test_many_processes_opening_a_new_file_at_once_create_its_schema_once(
    db_path: Path,
) -> None:
    def open_and_add(i: int) -> SqliteJobRepository:
        repository = SqliteJobRepository(db_path)
        repository.add(new_job(id=f"job-{i:02d}"))
        return repository

    repositories = all_at_once(8, open_and_add)
    try:
        assert {r.schema_version() for r in repositories} == {SCHEMA_VERSION}
        assert rows_in(db_path) == 8
    finally:
        for repository in repositories:
            repository.close()


# --- concurrency ---


@pytest.mark.parametrize("connections", ["shared", "one_per_thread"])
def test_concurrent_adds_with_one_key_store_one_job(db_path: Path, connections: str) -> None:
    shared = SqliteJobRepository(db_path)
    own = (
        [SqliteJobRepository(db_path) for _ in range(THREADS)]
        if connections == "one_per_thread"
        else [shared] * THREADS
    )
    try:
        results = all_at_once(THREADS, lambda i: own[i].add(new_job(idempotency_key="same")))
        winners = [job for job, created in results if created]
        assert len(winners) == 1
        assert {job.id for job, _ in results} == {winners[0].id}
        assert rows_in(db_path) == 1
    finally:
        for repository in {id(r): r for r in [shared, *own]}.values():
            repository.close()


@pytest.mark.parametrize("connections", ["shared", "one_per_thread"])
def test_concurrent_claims_of_one_job_have_one_winner(db_path: Path, connections: str) -> None:
    shared = SqliteJobRepository(db_path)
    job, _ = shared.add(new_job())
    own = (
        [SqliteJobRepository(db_path) for _ in range(THREADS)]
        if connections == "one_per_thread"
        else [shared] * THREADS
    )
    try:
        claims = all_at_once(
            THREADS, lambda i: own[i].claim(job.id, f"worker-{i}", START, START + LEASE)
        )
        won = [c for c in claims if c is not None]
        assert len(won) == 1
        stored = shared.get(job.id)
        assert stored is not None
        assert (stored.status, stored.lease_owner, stored.attempts) == (
            JobStatus.RUNNING,
            won[0].lease_owner,
            1,
        )
    finally:
        for repository in {id(r): r for r in [shared, *own]}.values():
            repository.close()


# --- instants ---


def test_instants_keep_microseconds_and_order_across_time_zones(
    repo: SqliteJobRepository,
) -> None:
    bangkok = dt.timezone(dt.timedelta(hours=7))
    # the same instant spelled in another zone, then one microsecond apart on either side
    base = START.astimezone(bangkok)
    spellings = [
        base - dt.timedelta(microseconds=1),
        base,
        START + dt.timedelta(microseconds=1),
    ]
    jobs = [repo.add(new_job(created_at=t, updated_at=t))[0] for t in spellings]
    for job, when in zip(jobs, spellings, strict=True):
        stored = repo.get(job.id)
        assert stored is not None
        assert stored.created_at == when
        assert stored.created_at.utcoffset() == dt.timedelta(0)
    assert [j.id for j in repo.find(TENANT, ListQuery())] == [j.id for j in reversed(jobs)]
    after = Cursor(START, jobs[1].id)
    assert [j.id for j in repo.find(TENANT, ListQuery(after=after))] == [jobs[0].id]
    assert [j.id for j in repo.find(TENANT, ListQuery(created_from=base))] == [
        jobs[2].id,
        jobs[1].id,
    ]


def test_an_instant_without_a_time_zone_is_refused(repo: SqliteJobRepository) -> None:
    naive = dt.datetime(2026, 3, 1, 8, 0)
    with pytest.raises(ValueError, match="without a time zone"):
        repo.add(new_job(created_at=naive, updated_at=naive))
    assert repo.find(TENANT, ListQuery()) == []


# --- availability ---


def test_a_closed_repository_is_unavailable(db_path: Path) -> None:
    repository = SqliteJobRepository(db_path)
    repository.close()
    repository.close()
    with pytest.raises(ServiceUnavailable):
        repository.ping()
    with pytest.raises(ServiceUnavailable):
        repository.add(new_job())


def test_a_file_locked_by_another_writer_past_the_timeout_is_unavailable(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_adapter, "BUSY_TIMEOUT_SEC", 0.05)
    repository = SqliteJobRepository(db_path)
    job, _ = repository.add(new_job())
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(ServiceUnavailable, match="locked"):
            repository.claim(job.id, "worker-1", START, START + LEASE)
        # readers are not blocked by a writer in WAL mode
        assert repository.get(job.id) == job
        other.execute("ROLLBACK")
        assert repository.claim(job.id, "worker-1", START, START + LEASE) is not None
    finally:
        other.close()
        repository.close()
