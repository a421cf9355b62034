"""What only the PostgreSQL adapter has to promise: migrations over the old service's database,
races between processes, rows the old service reads and writes, and surviving a database that
goes away. The port's behaviour is in test_job_repository_contract.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from adapters.postgres import (
    DIALECT,
    PostgresJobRepository,
    create_pool,
    find_statement,
    migrate,
    migrations,
)
from reportcore.errors import ServiceUnavailable
from reportcore.jobs import (
    Compression,
    CsvOptions,
    Job,
    JobStatus,
    JobType,
    LineEnding,
    ReportFormat,
)
from reportcore.ports import StoredFile
from reportcore.requests import Cursor, ListQuery
from tests.conftest import PG_ADMIN_DB

ALL_MIGRATIONS = [name for name, _ in migrations()]

# The schema the old Node service (Prisma) created; {ts} is its timestamp type, which may be
# timestamp(3) without time zone (holding UTC) or timestamptz.
OLD_SCHEMA = """
CREATE TYPE "ReportJobType" AS ENUM
    ('FEED_INTAKE_EXPORT','KPI_FEEDING_EXPORT','TELEMETRY_EXPORT','WEIGHVISION_EXPORT');
CREATE TYPE "ReportFormat" AS ENUM ('csv','json');
CREATE TYPE "ReportJobStatus" AS ENUM ('queued','running','succeeded','failed');
CREATE TABLE report_jobs (
  id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, requested_by TEXT,
  job_type "ReportJobType" NOT NULL, format "ReportFormat" NOT NULL,
  farm_id TEXT, barn_id TEXT, batch_id TEXT, start_date DATE, end_date DATE,
  filters JSONB, status "ReportJobStatus" NOT NULL DEFAULT 'queued',
  progress_pct INTEGER NOT NULL DEFAULT 0, file_path TEXT, file_name TEXT, mime_type TEXT,
  size_bytes BIGINT, sha256 TEXT, expires_at {ts}, error_code TEXT, error_message TEXT,
  idempotency_key TEXT, created_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at {ts} NOT NULL);
CREATE INDEX report_jobs_tenant_id_created_at_idx ON report_jobs(tenant_id, created_at DESC);
"""
OLD_UNIQUE_INDEX = """
CREATE UNIQUE INDEX report_jobs_tenant_id_idempotency_key_key ON report_jobs(tenant_id,
idempotency_key) WHERE idempotency_key IS NOT NULL
"""

# How the old service wrote and read rows: its own columns only, instants as UTC wall time.
OLD_INSERT = """
INSERT INTO report_jobs (id, tenant_id, requested_by, job_type, format, farm_id, barn_id,
  batch_id, start_date, end_date, filters, status, progress_pct, file_path, file_name,
  mime_type, size_bytes, sha256, expires_at, error_code, error_message, idempotency_key,
  created_at, updated_at)
VALUES (%(id)s, %(tenant_id)s, %(requested_by)s, %(job_type)s, %(format)s, %(farm_id)s,
  %(barn_id)s, %(batch_id)s, %(start_date)s, %(end_date)s, %(filters)s, %(status)s,
  %(progress_pct)s, %(file_path)s, %(file_name)s, %(mime_type)s, %(size_bytes)s, %(sha256)s,
  %(expires_at)s, %(error_code)s, %(error_message)s, %(idempotency_key)s, %(created_at)s,
  %(updated_at)s)
"""
OLD_SELECT = """
SELECT id, tenant_id, requested_by, job_type::text, format::text, farm_id, barn_id, batch_id,
  start_date, end_date, filters, status::text, progress_pct, file_path, file_name, mime_type,
  size_bytes, sha256, to_char(expires_at, 'YYYY-MM-DD HH24:MI:SS.MS') AS expires_at,
  error_code, error_message, idempotency_key,
  to_char(created_at, 'YYYY-MM-DD HH24:MI:SS.MS') AS created_at,
  to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS.MS') AS updated_at
FROM report_jobs WHERE id = %s AND tenant_id = %s LIMIT 1
"""
OLD_UPDATE = """
UPDATE report_jobs SET status = 'running', progress_pct = 5, updated_at = %s WHERE id = %s
"""
COLUMN_TYPES = """
SELECT column_name, data_type, datetime_precision, is_nullable, column_default
FROM information_schema.columns WHERE table_name = 'report_jobs' ORDER BY column_name
"""
KEY_INDEXES = """
SELECT count(*) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = 'report_jobs'::regclass AND i.indisunique
  AND pg_get_indexdef(i.indexrelid) LIKE '%(tenant_id, idempotency_key)%'
"""

TENANT = "tenant-a"
NOW = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def old_row(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": TENANT,
        "requested_by": "user-1",
        "job_type": "FEED_INTAKE_EXPORT",
        "format": "csv",
        "farm_id": None,
        "barn_id": None,
        "batch_id": None,
        "start_date": None,
        "end_date": None,
        "filters": None,
        "status": "queued",
        "progress_pct": 0,
        "file_path": None,
        "file_name": None,
        "mime_type": None,
        "size_bytes": None,
        "sha256": None,
        "expires_at": None,
        "error_code": None,
        "error_message": None,
        "idempotency_key": None,
        "created_at": "2025-06-01 12:00:00.123+00",
        "updated_at": "2025-06-01 12:00:00.123+00",
    }
    row.update(fields)
    return row


def expected_job(row: dict[str, Any], **fields: Any) -> Job:
    """What the repository must read from an old row: its values, instants aware UTC."""
    values = {k: v for k, v in row.items() if k != "filters"}
    for name in ("created_at", "updated_at", "expires_at"):
        if values[name] is not None:
            values[name] = dt.datetime.fromisoformat(values[name]).astimezone(dt.UTC)
    values["job_type"] = JobType(values["job_type"])
    values["format"] = ReportFormat(values["format"])
    values["status"] = JobStatus(values["status"])
    return Job(**values, **fields)


@pytest.fixture
def connect(database_url: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Plain connections to the test database, as another service would open; closed after."""
    opened: list[psycopg.Connection[Any]] = []

    def open_one(**kwargs: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(database_url, autocommit=True, **kwargs)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


@pytest.fixture
def pools(database_url: str) -> Iterator[Callable[..., ConnectionPool]]:
    """``create_pool`` on the test database; every pool is closed after the test."""
    made: list[ConnectionPool] = []

    def make(**kwargs: Any) -> ConnectionPool:
        pool = create_pool(database_url, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def new_job(**fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": TENANT,
        "requested_by": "user-1",
        "job_type": JobType.FEED_INTAKE_EXPORT,
        "format": ReportFormat.CSV,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(fields)
    return Job(**values)


def terminate_other_backends(conn: psycopg.Connection[Any]) -> int:
    """Kill every other session of this database, waiting until each is gone."""
    row = conn.execute(
        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


# --- migrations ---


def test_a_fresh_database_gets_every_migration_once(database_url: str, connect: Any) -> None:
    assert migrate(database_url) == ALL_MIGRATIONS
    assert migrate(database_url) == []
    conn = connect()
    recorded = [r[0] for r in conn.execute("SELECT name FROM report_schema_migrations ORDER BY 1")]
    assert recorded == ALL_MIGRATIONS
    labels = conn.execute(
        "SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum "
        "WHERE enumtypid = '\"ReportJobStatus\"'::regtype"
    ).fetchone()
    assert labels is not None
    assert labels[0] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert conn.execute(KEY_INDEXES).fetchone() == (1,)


@pytest.mark.parametrize("timestamp_type", ["TIMESTAMP(3)", "TIMESTAMPTZ(3)"])
def test_an_old_service_database_is_migrated_in_place_and_its_rows_read_back(
    database_url: str, connect: Any, pools: Any, timestamp_type: str
) -> None:
    # the old service's session is not in UTC: its instants must not move anyway
    old = connect(options="-c TimeZone=America/New_York")
    old.execute(OLD_SCHEMA.format(ts=timestamp_type).encode())
    old.execute(OLD_UNIQUE_INDEX.encode())
    queued = old_row(idempotency_key="old-key")
    legacy_running = old_row(
        status="running",
        progress_pct=40,
        filters='{"source": "MANUAL"}',
        created_at="2025-06-01 12:05:00.5+00",
        updated_at="2025-06-01 12:06:00.999+00",
    )
    succeeded = old_row(
        job_type="KPI_FEEDING_EXPORT",
        format="json",
        barn_id=str(uuid.uuid4()),
        start_date=dt.date(2025, 5, 1),
        end_date=dt.date(2025, 5, 31),
        status="succeeded",
        progress_pct=100,
        file_path="/data/exports/tenant-a/x/report.json",
        file_name="kpi_feeding_export.json",
        mime_type="application/x-ndjson",
        size_bytes=2**40,
        sha256="cd" * 32,
        expires_at="2025-06-08 12:10:00.5+00",
        created_at="2025-06-01 12:10:00+00",
        updated_at="2025-06-01 12:10:00+00",
    )
    failed = old_row(
        status="failed",
        error_code="UPSTREAM_UNAVAILABLE",
        error_message="feed service timed out",
        created_at="2025-06-01 12:15:00+00",
        updated_at="2025-06-01 12:16:00+00",
    )
    rows = [queued, legacy_running, succeeded, failed]
    for row in rows:
        old.execute(OLD_INSERT, row)
    types_before = old.execute(COLUMN_TYPES).fetchall()

    assert migrate(database_url) == ALL_MIGRATIONS

    repo = PostgresJobRepository(pools())
    expected = {row["id"]: expected_job(row) for row in rows}
    expected[legacy_running["id"]].filters = {"source": "MANUAL"}
    for job_id, job in expected.items():
        assert repo.get(job_id, TENANT) == job
    newest_first = sorted(expected.values(), key=lambda j: (j.created_at, j.id), reverse=True)
    assert repo.find(TENANT, ListQuery()) == newest_first
    page = repo.find(TENANT, ListQuery(limit=2))
    rest = repo.find(TENANT, ListQuery(after=Cursor(page[-1].created_at, page[-1].id)))
    assert page + rest == newest_first
    # recovery finds what the old service left behind
    assert [j.id for j in repo.stale(NOW, NOW - dt.timedelta(minutes=10), 10)] == [
        legacy_running["id"]
    ]
    assert [j.id for j in repo.unpublished(NOW, 10)] == [queued["id"]]
    assert [j.id for j in repo.expired_files(NOW, 10)] == [succeeded["id"]]
    # the old key still guards creates, and the new status exists
    replay, created = repo.add(new_job(idempotency_key="old-key"))
    assert (replay.id, created) == (queued["id"], False)
    cancelled = repo.cancel(queued["id"], TENANT, NOW)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    retried = repo.retry(legacy_running["id"], None, NOW)
    assert retried is not None and retried.status is JobStatus.QUEUED
    claimed = repo.claim(legacy_running["id"], "w", NOW, NOW + dt.timedelta(seconds=30))
    assert claimed is not None and claimed.attempts == 1 and claimed.progress_pct == 40

    assert migrate(database_url) == []
    types_after = {r[0]: r for r in old.execute(COLUMN_TYPES).fetchall()}
    assert all(types_after[r[0]] == r for r in types_before)
    assert old.execute(KEY_INDEXES).fetchone() == (1,)


def test_an_old_unique_index_under_another_name_is_used_not_duplicated(
    database_url: str, connect: Any, pools: Any
) -> None:
    old = connect()
    old.execute(OLD_SCHEMA.format(ts="TIMESTAMP(3)").encode())
    old.execute(
        'CREATE UNIQUE INDEX "ReportJob_tenant_id_idempotency_key_key" '
        "ON report_jobs (tenant_id, idempotency_key)"
    )
    migrate(database_url)
    assert old.execute(KEY_INDEXES).fetchone() == (1,)
    repo = PostgresJobRepository(pools())
    first, created = repo.add(new_job(idempotency_key="k"))
    again, created_again = repo.add(new_job(idempotency_key="k"))
    assert (created, created_again, again.id) == (True, False, first.id)


def test_an_invalid_old_unique_index_is_rebuilt_not_taken_for_a_guard(
    database_url: str, connect: Any, pools: Any
) -> None:
    # A unique index built CONCURRENTLY that failed (here: on a duplicate, since removed) stays
    # behind, invalid: INSERT ... ON CONFLICT never infers it, so every create with a key failed.
    old = connect()
    old.execute(OLD_SCHEMA.format(ts="TIMESTAMP(3)").encode())
    twins = [old_row(idempotency_key="k"), old_row(idempotency_key="k")]
    for row in twins:
        old.execute(OLD_INSERT, row)
    with pytest.raises(psycopg.errors.UniqueViolation):
        old.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {OLD_UNIQUE_INDEX.split('INDEX ', 1)[1]}")
    old.execute("DELETE FROM report_jobs WHERE id = %s", (twins[1]["id"],))
    valid = (
        "SELECT bool_and(i.indisvalid) FROM pg_index AS i "
        "WHERE i.indrelid = 'report_jobs'::regclass AND i.indisunique AND NOT i.indisprimary"
    )
    assert old.execute(valid).fetchone() == (False,)

    migrate(database_url)

    assert old.execute(valid).fetchone() == (True,)
    assert old.execute(KEY_INDEXES).fetchone() == (1,)
    repo = PostgresJobRepository(pools())
    again, created = repo.add(new_job(idempotency_key="k"))
    assert (again.id, created) == (twins[0]["id"], False)


def test_old_rows_sharing_a_key_stop_the_migration_with_the_key_named(
    database_url: str, connect: Any
) -> None:
    old = connect()
    old.execute(OLD_SCHEMA.format(ts="TIMESTAMP(3)").encode())
    for _ in range(2):
        old.execute(OLD_INSERT, old_row(idempotency_key="twin-key"))
    with pytest.raises(psycopg.errors.UniqueViolation, match="twin-key"):
        migrate(database_url)


def test_migrations_run_at_once_from_two_processes_apply_each_migration_once(
    database_url: str, connect: Any
) -> None:
    start = threading.Barrier(2)

    def run() -> list[str]:
        start.wait(timeout=10)
        return migrate(database_url)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: run(), range(2)))
    assert sorted(results, key=len) == [[], ALL_MIGRATIONS]
    count = connect().execute("SELECT count(*) FROM report_schema_migrations").fetchone()
    assert count == (len(ALL_MIGRATIONS),)


@pytest.mark.parametrize("reader", ["ends", "stays"])
def test_a_migration_behind_a_long_transaction_never_holds_the_table_longer_than_its_wait(
    reader: str, database_url: str, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ALTER TABLE waiting for a reader's transaction queued every read and write of
    report_jobs behind itself (the old service's too) for as long as the reader lasted.
    It waits 2 s at a time and lets go between tries; a reader that never ends is named."""
    import adapters.postgres as postgres

    monkeypatch.setattr(postgres, "MIGRATION_LOCK_TRIES", 3)
    monkeypatch.setattr(postgres, "MIGRATION_LOCK_PAUSE_SEC", 0.5)
    old = connect()
    old.execute(OLD_SCHEMA.format(ts="TIMESTAMP(3)").encode())
    long_reader = connect()
    long_reader.execute("BEGIN")
    long_reader.execute("SELECT count(*) FROM report_jobs")  # its lock held until it ends
    watcher = connect()
    waiting_for_lock = (
        "SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation "
        "WHERE c.relname = 'report_jobs' AND NOT l.granted"
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        migrating = pool.submit(migrate, database_url)
        try:
            # the migration now waits for the reader (asked, not assumed after a sleep: on a
            # loaded machine it could come later than the read below, which then tested nothing)
            deadline = time.monotonic() + 30
            while watcher.execute(waiting_for_lock).fetchone() == (0,):
                assert time.monotonic() < deadline, "the migration never waited for the lock"
                time.sleep(0.02)
            other = connect()
            other.execute("SET statement_timeout = '10s'")
            began = time.monotonic()
            other.execute("SELECT count(*) FROM report_jobs WHERE tenant_id = 't1'")
            waited = time.monotonic() - began
            if reader == "ends":
                time.sleep(1.0)
                long_reader.execute("ROLLBACK")
                assert migrating.result(timeout=60) == ALL_MIGRATIONS
            else:
                with pytest.raises(postgres.MigrationBlocked, match="could not lock its tables"):
                    migrating.result(timeout=60)
        finally:  # never leave the pool waiting on a migration that waits on this reader
            long_reader.execute("ROLLBACK")
    assert waited < 5.0, f"another client's read waited {waited:.1f} s behind the migration"


def test_ties_in_created_at_page_in_code_point_order_of_ids_whatever_the_collation(
    database_url: str, connect: Any, pools: Any
) -> None:
    # an old database whose ids sort by a language's rules, where "a-1" < "A-2" < "b_3"
    old = connect()
    if old.execute("SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu'").fetchone() is None:
        from tests.conftest import REQUIRE_SERVICES

        if REQUIRE_SERVICES:
            pytest.fail("REQUIRE_SERVICES=1 but this PostgreSQL has no ICU collation (en-x-icu)")
        pytest.skip("this PostgreSQL has no ICU collation to compare with")
    schema = OLD_SCHEMA.replace("id TEXT PRIMARY KEY", 'id TEXT COLLATE "en-x-icu" PRIMARY KEY')
    old.execute(schema.format(ts="TIMESTAMP(3)").encode())
    migrate(database_url)
    repo = PostgresJobRepository(pools())
    names = ["a-1", "A-2", "b_3", "B.4", "a5", "Z-6", "z-7"]
    for name in names:
        repo.add(new_job(id=name))
    for limit in (1, 3):
        seen: list[str] = []
        after = None
        while page := repo.find(TENANT, ListQuery(after=after, limit=limit)):
            seen.extend(j.id for j in page)
            after = Cursor(page[-1].created_at, page[-1].id)
        assert seen == sorted(names, reverse=True)


def plan_of(conn: psycopg.Connection[Any], statement: str, params: Mapping[str, Any]) -> str:
    """PostgreSQL's plan of ``statement`` with ``params`` (EXPLAIN's lines, joined)."""
    literal = psycopg.ClientCursor(conn).mogrify(statement, params)
    return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {literal}".encode()))


def test_find_walks_the_tenant_created_at_index(database_url: str, pools: Any) -> None:
    migrate(database_url)
    pool = pools()
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO report_jobs (id, tenant_id, job_type, format, status, created_at, "
            "updated_at) SELECT 'j' || n, 't' || (n % 20), 'FEED_INTAKE_EXPORT', 'csv', "
            "'succeeded', timestamp '2026-01-01' + n * interval '1 minute', now() "
            "FROM generate_series(1, 20000) AS n"
        )
        conn.execute("ANALYZE report_jobs")
        cursor = Cursor(dt.datetime(2026, 1, 5, tzinfo=dt.UTC), "j100")
        for query in (ListQuery(limit=26), ListQuery(after=cursor, limit=26)):
            plan = plan_of(conn, *find_statement("t7", query))
            assert "report_jobs_tenant_id_created_at_idx" in plan, plan


def test_the_schedulers_poll_reads_indexes_not_the_whole_table(
    database_url: str, pools: Any
) -> None:
    """An OR of "due" and "stuck claim" could use no index: each pass of each worker's
    scheduler read every schedule (300,000: a parallel seq scan of 37 ms, every 5 s)."""
    from adapters.sql_schedules import ScheduleStatements

    migrate(database_url)
    now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    params = {"now": now, "stuck_before": now, "limit": 50}
    with pools().connection() as conn:
        conn.execute("SET enable_seqscan = off")  # what the indexes allow, whatever the size
        plan = plan_of(conn, ScheduleStatements(DIALECT)["due_schedules"], params)
    assert "Seq Scan" not in plan, plan
    assert "report_schedules_due_idx" in plan and "report_schedules_claims_idx" in plan, plan


def test_a_statement_the_server_cancelled_is_not_taken_for_the_database_down(
    database_url: str, pools: Any, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement timeout (a deadlock, a lock not available) is the server answering: it
    marked the database down, and the next caller waited 0.5 s for a pooled connection
    instead of the pool's timeout, a 503 for a pool merely busy at that moment."""
    migrate(database_url)
    monkeypatch.setattr(
        "adapters.postgres.SESSION_SETTINGS",
        "SET TIME ZONE 'UTC'; SET statement_timeout = '300ms'",
    )
    pool = pools(max_size=1, timeout=5.0)
    repo = PostgresJobRepository(pool)
    job = new_job()
    repo.add(job)
    locker = connect()
    with locker.transaction():
        locker.execute("LOCK TABLE report_jobs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(ServiceUnavailable):
            repo.get(job.id, TENANT)  # cancelled by its statement_timeout
    held = threading.Event()

    def hold_the_only_connection() -> None:
        with pool.connection():
            held.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert held.wait(5)
        began = time.monotonic()
        assert repo.get(job.id, TENANT) == job  # waited for the connection, as for any busy pool
        assert time.monotonic() - began > 0.5
    finally:
        holder.join()


def test_the_leftovers_walk_their_partial_index(database_url: str, pools: Any) -> None:
    """Every worker asks every few seconds; the table holds years of cancelled and failed
    jobs, of which only those whose leftovers are not discarded yet are in the index
    (migration 0011; 0009's, of cancelled rows alone, is left)."""
    migrate(database_url)
    pool = pools()
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO report_jobs (id, tenant_id, job_type, format, status, created_at, "
            "updated_at, lease_expires_at) SELECT 'j' || n, 't' || (n % 20), "
            "'FEED_INTAKE_EXPORT', 'csv', "
            "(CASE WHEN n % 2 = 0 THEN 'cancelled' ELSE 'failed' END)::\"ReportJobStatus\", "
            "now(), now(), "
            "CASE WHEN n % 1000 = 0 THEN now() END FROM generate_series(1, 20000) AS n"
        )
        conn.execute("ANALYZE report_jobs")
        statement = PostgresJobRepository(pool).statements["leftovers"]
        plan = plan_of(conn, statement, {"now": dt.datetime.now(dt.UTC), "limit": 100})
        assert "report_jobs_leftovers_idx" in plan, plan


def test_readiness_says_why_the_database_refuses_us(database_url: str) -> None:
    """A role or database that does not exist, a password refused: the pool only logged the
    server's reason, and /api/ready said 'no answer within 3s' (or 'not available')."""
    wrong = database_url.rsplit("/", 1)[0] + "/no_such_database_x"
    pool = create_pool(wrong, timeout=0.5)
    repo = PostgresJobRepository(pool)
    said = 'database "no_such_database_x" does not exist'
    try:
        for _ in range(2):  # the first finds the database down, the next ask it why
            with contextlib.suppress(ServiceUnavailable):
                repo.ping()
        with pytest.raises(ServiceUnavailable, match=said) as refused:
            repo.ping()
        host = urlsplit(database_url).hostname or "localhost"
        assert host not in refused.value.message  # readiness is answered to anyone
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("db-primary.corp.invalid", "the database host name does not resolve"),
        ("127.0.0.1:1", "the database host refused the connection"),
    ],
)
def test_readiness_never_names_the_database_host(host: str, said: str) -> None:
    """/api/ready is answered to anyone: libpq's words name the host ('failed to resolve host
    ...', 'connection to server at ... failed')."""
    pool = create_pool(f"postgresql://root@{host}/reports", timeout=0.5)
    repo = PostgresJobRepository(pool)
    try:
        for _ in range(2):
            with contextlib.suppress(ServiceUnavailable):
                repo.ping()
        with pytest.raises(ServiceUnavailable) as refused:
            repo.ping()
    finally:
        pool.close()
    assert refused.value.message == f"job database is not available: {said}"


# --- races and the old service ---


def test_32_concurrent_identical_creates_store_one_job(
    database_url: str, pools: Any, connect: Any
) -> None:
    migrate(database_url)
    repo = PostgresJobRepository(pools(max_size=16))
    start = threading.Barrier(32)

    def create(_: int) -> tuple[str, bool]:
        start.wait(timeout=10)
        job, created = repo.add(new_job(idempotency_key="double-click"))
        return job.id, created

    with ThreadPoolExecutor(max_workers=32) as executor:
        results = list(executor.map(create, range(32)))
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert connect().execute("SELECT count(*) FROM report_jobs").fetchone() == (1,)


def test_a_job_written_by_the_repository_is_read_and_written_by_the_old_service(
    database_url: str, pools: Any, connect: Any
) -> None:
    migrate(database_url)
    # the server's default zone is not UTC: stored instants must be UTC wall time anyway
    admin = connect()
    dbname = admin.info.dbname
    admin.execute(f"ALTER DATABASE \"{dbname}\" SET TimeZone = 'Asia/Kolkata'".encode())
    repo = PostgresJobRepository(pools())
    job, _ = repo.add(
        new_job(
            filters={"source": ["MANUAL"]},
            idempotency_key="k-1",
            created_at=utc("2026-03-01 08:00:00.250"),
            updated_at=utc("2026-03-01 08:00:00.250"),
        )
    )
    repo.claim(job.id, "w", NOW, NOW + dt.timedelta(seconds=30))
    done = repo.succeed(
        job.id,
        "w",
        utc("2026-03-01 08:05:00"),
        StoredFile(location="/data/exports/tenant-a/j/report.csv", size_bytes=10, sha256="ef"),
        utc("2026-03-08 08:05:00"),
    )
    assert done is not None

    old = connect()
    row = old.cursor(row_factory=dict_row).execute(OLD_SELECT, (job.id, TENANT)).fetchone()
    assert row == {
        "id": job.id,
        "tenant_id": TENANT,
        "requested_by": "user-1",
        "job_type": "FEED_INTAKE_EXPORT",
        "format": "csv",
        "farm_id": None,
        "barn_id": None,
        "batch_id": None,
        "start_date": None,
        "end_date": None,
        "filters": {"source": ["MANUAL"]},
        "status": "succeeded",
        "progress_pct": 100,
        "file_path": "/data/exports/tenant-a/j/report.csv",
        "file_name": "feed_intake_export.csv",
        "mime_type": "text/csv; charset=utf-8",
        "size_bytes": 10,
        "sha256": "ef",
        "expires_at": "2026-03-08 08:05:00.000",
        "error_code": None,
        "error_message": None,
        "idempotency_key": "k-1",
        "created_at": "2026-03-01 08:00:00.250",
        "updated_at": "2026-03-01 08:05:00.000",
    }

    # the old service still creates and updates jobs with the columns it knows
    theirs = old_row()
    old.execute(OLD_INSERT, theirs)
    old.execute(OLD_UPDATE, ("2025-06-01 12:01:00+00", theirs["id"]))
    read = repo.get(theirs["id"])
    assert read == expected_job(
        {**theirs, "status": "running", "progress_pct": 5, "updated_at": "2025-06-01 12:01:00+00"}
    )
    assert read is not None and read.attempts == 0


# --- a database that goes away ---


def test_connections_the_server_dropped_are_replaced_without_a_failed_call(
    database_url: str, pools: Any, connect: Any
) -> None:
    migrate(database_url)
    pool = pools(min_size=2, max_size=4)
    pool.wait(timeout=10)
    repo = PostgresJobRepository(pool)
    job, _ = repo.add(new_job())
    assert terminate_other_backends(connect()) >= 2
    assert repo.get(job.id) == job
    repo.ping()


def _every_method(repo: PostgresJobRepository, job: Job) -> dict[str, Callable[[], Any]]:
    later = NOW + dt.timedelta(seconds=30)
    file = StoredFile(location="x", size_bytes=1, sha256="00")
    return {
        "add": lambda: repo.add(new_job()),
        "get": lambda: repo.get(job.id),
        "find": lambda: repo.find(TENANT, ListQuery()),
        "mark_enqueued": lambda: repo.mark_enqueued(job.id, NOW),
        "claim": lambda: repo.claim(job.id, "w", NOW, later),
        "heartbeat": lambda: repo.heartbeat(job.id, "w", NOW, later, 5),
        "succeed": lambda: repo.succeed(job.id, "w", NOW, file, None),
        "fail": lambda: repo.fail(job.id, "w", NOW, "X", "x"),
        "retry": lambda: repo.retry(job.id, "w", NOW),
        "cancel": lambda: repo.cancel(job.id, TENANT, NOW),
        "stale": lambda: repo.stale(NOW, NOW, 10),
        "unpublished": lambda: repo.unpublished(NOW, 10),
        "expired_files": lambda: repo.expired_files(NOW, 10),
        "mark_file_deleted": lambda: repo.mark_file_deleted(job.id, NOW),
        "ping": repo.ping,
    }


@contextlib.contextmanager
def database_altered(
    connect: Any, clause: str, on: str, off: str
) -> Iterator[psycopg.Connection[Any]]:
    """The test's database ALTERed with ``clause`` set to ``on`` (from the admin database: a
    database cannot lock itself out), its other backends ended so that the pool's connections
    come back under it, then set to ``off`` again; yields a connection of its own."""
    own = connect()
    admin = connect(dbname=PG_ADMIN_DB)
    alter = f'ALTER DATABASE "{own.info.dbname}" {clause}'
    admin.execute(alter.format(on).encode())
    try:
        terminate_other_backends(own)
        yield own
    finally:
        admin.execute(alter.format(off).encode())


def until_available(call: Callable[[], Any], within_sec: float) -> None:
    """``call()`` again until the database answers it (no restart, no manual step: the pool
    reconnects by itself), failing past ``within_sec``."""
    deadline = time.monotonic() + within_sec
    while True:
        try:
            call()
            return
        except ServiceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_an_unreachable_database_is_unavailable_in_every_method_and_then_recovers(
    database_url: str, pools: Any, connect: Any
) -> None:
    migrate(database_url)
    repo = PostgresJobRepository(pools(min_size=1, max_size=2, timeout=0.3))
    job, _ = repo.add(new_job())
    with database_altered(connect, "WITH ALLOW_CONNECTIONS {}", on="false", off="true"):
        for name, call in _every_method(repo, job).items():
            with pytest.raises(ServiceUnavailable) as raised:
                call()
            assert isinstance(raised.value.__cause__, psycopg.OperationalError), name

    until_available(lambda: repo.get(job.id), within_sec=60)
    assert repo.get(job.id) == job
    for call in _every_method(repo, job).values():
        call()


def test_a_database_that_takes_no_writes_is_unavailable_for_them_not_a_bug(
    database_url: str, pools: Any, connect: Any
) -> None:
    """What a failover onto a standby looks like to the pool's new connections: reads go on,
    a write fails ReadOnlySqlTransaction, a PostgreSQL InternalError, which was a 500 and a
    job failed 'unexpectedly'; it is the 503 of an outage, and passes when writes come back."""
    migrate(database_url)
    repo = PostgresJobRepository(pools(min_size=1, max_size=2, timeout=2))
    job, _ = repo.add(new_job())
    read_only = "SET default_transaction_read_only = {}"
    with database_altered(connect, read_only, on="on", off="off") as own:
        refused: ServiceUnavailable | None = None
        for _ in range(5):  # a connection the server ended may be met first: an outage too
            try:
                repo.add(new_job())
            except ServiceUnavailable as exc:
                if isinstance(exc.__cause__, psycopg.errors.ReadOnlySqlTransaction):
                    refused = exc
                    break
        assert refused is not None
        assert refused.message == "job database is not available for writes"
        assert repo.get(job.id) == job
    terminate_other_backends(own)  # writable again: the pool's connections too
    until_available(lambda: repo.add(new_job()), within_sec=30)


def test_a_database_not_migrated_is_not_ready_and_its_job_routes_are_503_not_500(
    database_url: str, pools: Any, connect: Any
) -> None:
    """On a database nobody migrated, readiness pinged `SELECT 1` and said "ok" while every
    job route met UndefinedTable: a 500. Readiness names the step, the routes are a 503."""
    repo = PostgresJobRepository(pools(min_size=1, max_size=2, timeout=2))
    with pytest.raises(ServiceUnavailable) as empty:
        repo.ping()
    assert empty.value.message == "job database schema is not up to date: run `reportsvc migrate`"
    with pytest.raises(ServiceUnavailable) as listing:
        repo.find("t1", ListQuery())
    assert listing.value.message == "job database schema is not up to date: run `reportsvc migrate`"
    migrate(database_url)
    connect().execute("DELETE FROM report_schema_migrations WHERE name = '0007_fair_turns'")
    with pytest.raises(ServiceUnavailable, match=r"\(missing 0007_fair_turns\)$"):
        repo.ping()  # one release behind: not ready either
    migrate(database_url)
    repo.ping()
    assert repo.find("t1", ListQuery()) == []


# --- export options (issue 18): migration 0004 ---

OPTION_COLUMNS = {
    "compression": "text",
    "csv": "jsonb",
    "columns": "jsonb",
    "timezone": "text",
    "row_count": "bigint",
}


def test_the_option_columns_are_nullable_without_default_and_xlsx_is_a_format(
    database_url: str, connect: Any
) -> None:
    migrate(database_url)
    conn = connect()
    found = {r[0]: r for r in conn.execute(COLUMN_TYPES).fetchall() if r[0] in OPTION_COLUMNS}
    assert {name: r[1] for name, r in found.items()} == OPTION_COLUMNS
    assert all(r[3] == "YES" and r[4] is None for r in found.values())
    labels = conn.execute(
        "SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum "
        "WHERE enumtypid = '\"ReportFormat\"'::regtype"
    ).fetchone()
    assert labels is not None and labels[0] == ["csv", "json", "xlsx"]


def test_a_job_with_options_is_stored_in_the_new_columns_and_the_old_ones_unchanged(
    database_url: str, pools: Any, connect: Any
) -> None:
    migrate(database_url)
    repo = PostgresJobRepository(pools())
    job, _ = repo.add(
        new_job(
            compression=Compression.GZIP,
            csv=CsvOptions(delimiter="\t", bom=True, line_ending=LineEnding.LF),
            columns=["id", "occurred_at"],
            timezone="Asia/Bangkok",
            created_at=utc("2026-03-01 08:00:00.250"),
            updated_at=utc("2026-03-01 08:00:00.250"),
        )
    )
    repo.claim(job.id, "w", NOW, NOW + dt.timedelta(seconds=30))
    stored = StoredFile(location="/x/report.csv.gz", size_bytes=10, sha256="ef", rows=7)
    done = repo.succeed(job.id, "w", utc("2026-03-01 08:05:00"), stored, None)
    assert done is not None and done.row_count == 7
    conn = connect()
    new = conn.execute(
        "SELECT compression, csv, columns, timezone, row_count FROM report_jobs WHERE id = %s",
        (job.id,),
    ).fetchone()
    assert new == (
        "gzip",
        {"delimiter": "\t", "bom": True, "line_ending": "lf", "formula_guard": True},
        ["id", "occurred_at"],
        "Asia/Bangkok",
        7,
    )
    # the old service reads the row with its own columns, as before
    old = conn.cursor(row_factory=dict_row).execute(OLD_SELECT, (job.id, TENANT)).fetchone()
    assert old is not None
    assert (old["format"], old["file_name"], old["mime_type"], old["size_bytes"]) == (
        "csv",
        "feed_intake_export.csv.gz",
        "application/gzip",
        10,
    )
    # and a row it inserts has no options: the job writes what it always wrote
    theirs = old_row()
    conn.execute(OLD_INSERT, theirs)
    read = repo.get(theirs["id"])
    assert read is not None
    assert (read.compression, read.csv, read.columns, read.timezone, read.row_count) == (
        (None,) * 5
    )
