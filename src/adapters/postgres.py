"""PostgreSQL: the job repository, its connection pool and the schema migrations.

The table is the old service's ``report_jobs`` (the contract's compatible storage), extended
only by additive columns (``sql/0003_run_columns.sql``). Its instants may be
``timestamp(3)`` without time zone holding UTC (what Prisma creates) or ``timestamptz``; the
pool's sessions run with ``TimeZone=UTC``, so aware parameters are stored and compared
correctly against either kind, and every instant read back is made aware UTC.

Every state change is one conditional ``UPDATE ... RETURNING``: the statuses it may start from
come from :data:`reportcore.lifecycle.TRANSITIONS`, so the SQL cannot disagree with the core.
A database that does not answer is :class:`reportcore.errors.ServiceUnavailable`; the pool
checks a connection before lending it and reconnects by itself after a restart.
"""

from __future__ import annotations

import datetime as dt
import re
import select
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from reportcore import lifecycle
from reportcore.errors import ServiceUnavailable
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat, file_name_for
from reportcore.lifecycle import Event
from reportcore.ports import StoredFile
from reportcore.requests import ListQuery

# --- the pool ---

# Session settings of every pooled connection: instants in UTC (see the module docstring), and
# no statement may hang a request or a worker forever.
SESSION_SETTINGS = "SET TIME ZONE 'UTC'; SET statement_timeout = '30s'"


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SESSION_SETTINGS)
    if not conn.autocommit:
        conn.commit()


# A connection lent again within this long of its last check skips the check's round trip
# unless the server has sent it something: under load every query paid one more round trip
# (about a third of a simple read's cost on the API's one core). A server that drops a
# connection (restart, pg_terminate_backend, crash) sends a FATAL message or closes the socket,
# which leaves it readable while idle; an idle autocommit connection is sent nothing else
# here (no LISTEN), so a readable one gets the full check.
CHECK_AFTER_SEC = 1.0


def _has_input(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server sent ``conn`` anything (or closed it) while it sat idle."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class _LendCheck:
    """The pool's ``check``: a round trip unless checked lately and nothing arrived since."""

    def __init__(self, every_sec: float = CHECK_AFTER_SEC) -> None:
        self._every = every_sec
        self._checked: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        if conn.broken or conn.closed:
            raise psycopg.OperationalError("the connection is broken")
        now = time.monotonic()
        with self._lock:
            last = self._checked.get(conn)
        if last is not None and now - last < self._every and not _has_input(conn):
            return
        ConnectionPool.check_connection(conn)
        with self._lock:
            self._checked[conn] = now


def create_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0
) -> ConnectionPool:
    """An open pool of autocommit connections to ``database_url``, sessions in UTC.

    ``timeout`` bounds how long a caller waits for a connection before the repository answers
    :class:`ServiceUnavailable`. The pool does not wait for the database at start: a process
    comes up (and reports itself not ready) while PostgreSQL is down.
    """
    return ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=True,
        name="report_jobs",
        timeout=timeout,
        kwargs={
            "autocommit": True,
            "connect_timeout": 5,
            "application_name": "reportsvc",
            # notice a peer that vanished without closing (a failover, a dead network)
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
        configure=_configure,
        # a connection PostgreSQL dropped (restart, pg_terminate_backend) is found before it
        # is lent (unless it was checked under CHECK_AFTER_SEC ago), so a restart costs no
        # failed request once the server is back
        check=_LendCheck(),
        # the pool's reconnect attempts (1 s apart, then 2 s) give up after this and start over
        # at the next request: a recovered server is noticed within ~2 s, not the 4 s gap of
        # a longer backoff (tests/faults/test_database_restart.py measures it)
        reconnect_timeout=3.0,
        max_idle=300.0,
        max_lifetime=1800.0,
    )


# How long a caller waits for a pooled connection while the database is known to be down (see
# PostgresJobRepository._cursor); the pool's own timeout otherwise.
DOWN_WAIT_SEC = 0.5


# --- migrations ---

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS report_schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
APPLIED_MIGRATIONS = "SELECT name FROM report_schema_migrations"
RECORD_MIGRATION = "INSERT INTO report_schema_migrations (name) VALUES (%s)"
# one key for every process migrating this database ("report_jobs" in ASCII)
MIGRATION_LOCK_KEY = 0x7265706F72745F6A
TAKE_MIGRATION_LOCK = "SELECT pg_advisory_lock(%s)"
RELEASE_MIGRATION_LOCK = "SELECT pg_advisory_unlock(%s)"

_MIGRATION_FILE = re.compile(r"^(\d{4}_[a-z0-9_]+)\.sql$")


def migrations() -> list[tuple[str, str]]:
    """Every migration shipped in ``adapters/sql``, as (name, SQL), in the order to apply."""
    found = []
    for entry in resources.files("adapters").joinpath("sql").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((match.group(1), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(database_url: str) -> list[str]:
    """Apply the migrations this database has not had yet; return their names.

    Idempotent, and safe to run from several processes at once: they take turns under an
    advisory lock, and each migration commits together with its record.
    """
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        # a session lock: also released if this process dies, when its connection closes
        conn.execute(TAKE_MIGRATION_LOCK, (MIGRATION_LOCK_KEY,))
        conn.execute(MIGRATIONS_TABLE)
        done = {row[0] for row in conn.execute(APPLIED_MIGRATIONS)}
        applied = []
        for name, statements in migrations():
            if name in done:
                continue
            with conn.transaction():
                # no parameters: the file goes as one simple query, several statements allowed
                conn.execute(statements.encode())
                conn.execute(RECORD_MIGRATION, (name,))
            applied.append(name)
        conn.execute(RELEASE_MIGRATION_LOCK, (MIGRATION_LOCK_KEY,))
        return applied


# --- the repository's statements ---

JOB_COLUMNS = (
    "id",
    "tenant_id",
    "requested_by",
    "job_type",
    "format",
    "farm_id",
    "barn_id",
    "batch_id",
    "start_date",
    "end_date",
    "filters",
    "status",
    "progress_pct",
    "file_path",
    "file_name",
    "mime_type",
    "size_bytes",
    "sha256",
    "expires_at",
    "error_code",
    "error_message",
    "idempotency_key",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "attempts",
    "lease_owner",
    "lease_expires_at",
    "enqueued_at",
    "file_deleted_at",
)
_SELECTED = ", ".join(JOB_COLUMNS)
_ENUM_CASTS = {
    "job_type": '::"ReportJobType"',
    "format": '::"ReportFormat"',
    "status": '::"ReportJobStatus"',
}

INSERT_JOB = f"""
INSERT INTO report_jobs ({_SELECTED})
VALUES ({", ".join(f"%({c})s{_ENUM_CASTS.get(c, '')}" for c in JOB_COLUMNS)})
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {_SELECTED}
"""

SELECT_BY_KEY = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE tenant_id = %(tenant_id)s AND idempotency_key = %(idempotency_key)s
"""

SELECT_JOB = f"SELECT {_SELECTED} FROM report_jobs WHERE id = %(id)s"

SELECT_TENANT_JOB = f"""
SELECT {_SELECTED} FROM report_jobs WHERE id = %(id)s AND tenant_id = %(tenant_id)s
"""

# find: the tenant's jobs newest first, each filter of ListQuery one fragment. Ids compare
# byte-wise ("C") so that ties in created_at order the same whatever the database's collation.
FIND_JOBS = f"SELECT {_SELECTED} FROM report_jobs WHERE tenant_id = %(tenant_id)s"
FIND_FILTERS = {
    "status": 'status = %(status)s::"ReportJobStatus"',
    "job_type": 'job_type = %(job_type)s::"ReportJobType"',
    "created_from": "created_at >= %(created_from)s",
    "created_to": "created_at <= %(created_to)s",
    # the row comparison (created_at, id) < (...), spelled so that the first half can be an
    # index condition on (tenant_id, created_at)
    "after": (
        "created_at <= %(after_created_at)s AND "
        '(created_at < %(after_created_at)s OR id COLLATE "C" < %(after_id)s)'
    ),
}
FIND_ORDER = 'ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT %(limit)s'

MARK_ENQUEUED = "UPDATE report_jobs SET enqueued_at = %(at)s WHERE id = %(id)s"

MARK_FILE_DELETED = """
UPDATE report_jobs SET file_deleted_at = %(at)s WHERE id = %(id)s AND file_deleted_at IS NULL
"""

# Transitions. %(from)s is every status the event may leave, %(to)s where it goes (both from
# the lifecycle table); the lease holder must be %(owner)s where a method takes one.
_MOVE = 'status = %(to)s::"ReportJobStatus", updated_at = %(now)s'
_MAY_MOVE = 'id = %(id)s AND status = ANY(%(from)s::"ReportJobStatus"[])'
_OWNED = "lease_owner IS NOT DISTINCT FROM %(owner)s::text"

CLAIM_JOB = f"""
UPDATE report_jobs
SET {_MOVE},
    lease_owner = %(owner)s, lease_expires_at = %(lease_until)s,
    started_at = COALESCE(started_at, %(now)s), attempts = attempts + 1,
    error_code = NULL, error_message = NULL
WHERE {_MAY_MOVE}
RETURNING {_SELECTED}
"""

HEARTBEAT_JOB = f"""
UPDATE report_jobs
SET lease_expires_at = %(lease_until)s, updated_at = %(now)s,
    progress_pct = GREATEST(
        progress_pct, LEAST(%(cap)s::integer, COALESCE(%(pct)s::integer, progress_pct))
    )
WHERE id = %(id)s AND status = %(running)s::"ReportJobStatus" AND {_OWNED}
RETURNING {_SELECTED}
"""

# The file's name and type depend on the job's type and format: looked up in maps the core
# made (FILE_NAMES, MIME_TYPES), so that this stays one statement and the core one truth.
SUCCEED_JOB = f"""
UPDATE report_jobs
SET {_MOVE},
    progress_pct = 100,
    file_path = %(file_path)s,
    file_name = %(file_names)s::jsonb ->> (job_type::text || '/' || format::text),
    mime_type = %(mime_types)s::jsonb ->> format::text,
    size_bytes = %(size_bytes)s, sha256 = %(sha256)s, expires_at = %(expires_at)s,
    finished_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL
WHERE {_MAY_MOVE} AND {_OWNED}
RETURNING {_SELECTED}
"""

FAIL_JOB = f"""
UPDATE report_jobs
SET {_MOVE},
    error_code = %(code)s, error_message = %(message)s,
    finished_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL
WHERE {_MAY_MOVE} AND {_OWNED}
RETURNING {_SELECTED}
"""

RETRY_JOB = f"""
UPDATE report_jobs
SET {_MOVE}, lease_owner = NULL, lease_expires_at = NULL, enqueued_at = NULL
WHERE {_MAY_MOVE} AND {_OWNED}
RETURNING {_SELECTED}
"""

CANCEL_JOB = f"""
UPDATE report_jobs
SET {_MOVE}, finished_at = %(now)s, lease_owner = NULL, lease_expires_at = NULL
WHERE {_MAY_MOVE} AND tenant_id = %(tenant_id)s
RETURNING {_SELECTED}
"""

# The recovery queries spell their status as literals so that the partial indexes of
# sql/0003_run_columns.sql match them.
STALE_JOBS = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE status = 'running'
  AND (
      (lease_expires_at IS NOT NULL AND lease_expires_at < %(now)s)
      OR (lease_expires_at IS NULL AND updated_at < %(legacy_before)s)
  )
ORDER BY updated_at, id LIMIT %(limit)s
"""

UNPUBLISHED_JOBS = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE status = 'queued' AND enqueued_at IS NULL AND updated_at < %(before)s
ORDER BY created_at, id LIMIT %(limit)s
"""

EXPIRED_FILES = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE status = 'succeeded' AND file_deleted_at IS NULL AND expires_at <= %(now)s
ORDER BY expires_at, id LIMIT %(limit)s
"""

PING = "SELECT 1"


def _statuses_of(event: Event) -> dict[str, Any]:
    """The ``from`` and ``to`` parameters of ``event``'s update, from the lifecycle table."""
    sources = lifecycle.sources_of(event)
    targets = {lifecycle.apply(status, event) for status in sources}
    # one statement sets one target; a table where an event led to several would need a
    # CASE here, and must not silently get a wrong one
    if len(targets) != 1:
        raise RuntimeError(f"event {event.value!r} leads to several statuses: {targets}")
    return {"from": sorted(s.value for s in sources), "to": targets.pop().value}


_FROM_TO = {event: _statuses_of(event) for event in Event}

FILE_NAMES = Jsonb(
    {f"{t.value}/{f.value}": file_name_for(t, f) for t in JobType for f in ReportFormat}
)
MIME_TYPES = Jsonb({f.value: f.mime_type for f in ReportFormat})
PROGRESS_CAP_WHILE_RUNNING = 99


# --- rows ---


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """An instant read back, aware UTC; a value without zone holds UTC (the old schema)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _job_from_row(row: Mapping[str, Any]) -> Job:
    filters = row["filters"]
    created_at = _utc(row["created_at"])
    updated_at = _utc(row["updated_at"])
    assert created_at is not None and updated_at is not None  # NOT NULL columns
    return Job(
        id=row["id"],
        tenant_id=row["tenant_id"],
        requested_by=row["requested_by"],
        job_type=JobType(row["job_type"]),
        format=ReportFormat(row["format"]),
        farm_id=row["farm_id"],
        barn_id=row["barn_id"],
        batch_id=row["batch_id"],
        start_date=row["start_date"],
        end_date=row["end_date"],
        # the old service may have stored NULL
        filters=dict(filters) if isinstance(filters, dict) else {},
        status=JobStatus(row["status"]),
        progress_pct=row["progress_pct"],
        file_path=row["file_path"],
        file_name=row["file_name"],
        mime_type=row["mime_type"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        expires_at=_utc(row["expires_at"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        idempotency_key=row["idempotency_key"],
        created_at=created_at,
        updated_at=updated_at,
        started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]),
        attempts=row["attempts"],
        lease_owner=row["lease_owner"],
        lease_expires_at=_utc(row["lease_expires_at"]),
        enqueued_at=_utc(row["enqueued_at"]),
        file_deleted_at=_utc(row["file_deleted_at"]),
    )


def _row_from_job(job: Job) -> dict[str, Any]:
    # enum members go as their values: psycopg would dump a plain Enum by its name
    return {
        "id": job.id,
        "tenant_id": job.tenant_id,
        "requested_by": job.requested_by,
        "job_type": job.job_type.value,
        "format": job.format.value,
        "farm_id": job.farm_id,
        "barn_id": job.barn_id,
        "batch_id": job.batch_id,
        "start_date": job.start_date,
        "end_date": job.end_date,
        "filters": Jsonb(job.filters),
        "status": job.status.value,
        "progress_pct": job.progress_pct,
        "file_path": job.file_path,
        "file_name": job.file_name,
        "mime_type": job.mime_type,
        "size_bytes": job.size_bytes,
        "sha256": job.sha256,
        "expires_at": job.expires_at,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "idempotency_key": job.idempotency_key,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
        "lease_owner": job.lease_owner,
        "lease_expires_at": job.lease_expires_at,
        "enqueued_at": job.enqueued_at,
        "file_deleted_at": job.file_deleted_at,
    }


def find_statement(tenant_id: str, query: ListQuery) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement and parameters of :meth:`PostgresJobRepository.find` (also for EXPLAIN)."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": query.limit}
    used: list[str] = []
    if query.status is not None:
        used.append("status")
        params["status"] = query.status.value
    if query.job_type is not None:
        used.append("job_type")
        params["job_type"] = query.job_type.value
    if query.created_from is not None:
        used.append("created_from")
        params["created_from"] = query.created_from
    if query.created_to is not None:
        used.append("created_to")
        params["created_to"] = query.created_to
    if query.after is not None:
        used.append("after")
        params["after_created_at"] = query.after.created_at
        params["after_id"] = query.after.id
    parts = [sql.SQL(FIND_JOBS)]
    parts.extend(sql.SQL(FIND_FILTERS[name]) for name in used)
    statement = sql.SQL(" AND ").join(parts) + sql.SQL(" ") + sql.SQL(FIND_ORDER)
    return statement, params


# --- the repository ---


class PostgresJobRepository:
    """:class:`reportcore.ports.JobRepository` over ``report_jobs``; thread-safe (one pool).

    Semantics are those of :class:`adapters.memory.InMemoryJobRepository`, kept honest by one
    contract suite run over both.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        # set when the database was found down, cleared by the next connection lent
        self._down = False

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A cursor on a pooled connection; a database that does not answer is a 503."""
        # While the database is known down, waiting the pool's whole timeout for a connection
        # it cannot make would hold every request (and probe) that long before its 503; the
        # pool keeps reconnecting in the background either way.
        wait = DOWN_WAIT_SEC if self._down else None
        try:
            with self._pool.connection(timeout=wait) as conn:
                self._down = False
                with conn.cursor(row_factory=dict_row) as cur:
                    yield cur
        except psycopg.OperationalError as exc:  # also PoolTimeout, PoolClosed
            self._down = self._outage(exc)
            raise ServiceUnavailable("job database is not available") from exc

    def _outage(self, exc: psycopg.OperationalError) -> bool:
        """Whether ``exc`` means the database is down, not that the pool is busy."""
        if not isinstance(exc, PoolTimeout):
            return True  # refused, cut or shut down
        # a pool exhausted by load holds all its connections; one that cannot fill itself
        # cannot connect
        stats = self._pool.get_stats()
        return stats.get("pool_available", 0) == 0 and stats.get("pool_size", 0) < stats.get(
            "pool_max", 1
        )

    def _one(self, statement: str, params: Mapping[str, Any]) -> Job | None:
        with self._cursor() as cur:
            cur.execute(statement, params)
            row = cur.fetchone()
        return None if row is None else _job_from_row(row)

    def _many(self, statement: str | sql.Composed, params: Mapping[str, Any]) -> list[Job]:
        with self._cursor() as cur:
            cur.execute(statement, params)
            rows = cur.fetchall()
        return [_job_from_row(row) for row in rows]

    def _transition(self, event: Event, statement: str, **params: Any) -> Job | None:
        return self._one(statement, {**_FROM_TO[event], **params})

    def add(self, job: Job) -> tuple[Job, bool]:
        row = _row_from_job(job)
        with self._cursor() as cur:
            # The insert waits for a concurrent one with the same key to commit or roll back,
            # and then does nothing (or inserts); the select that follows runs on a fresh
            # snapshot and sees the winner. The loop covers a winner deleted in between.
            for _ in range(3):
                cur.execute(INSERT_JOB, row)
                inserted = cur.fetchone()
                if inserted is not None:
                    return _job_from_row(inserted), True
                cur.execute(SELECT_BY_KEY, row)
                existing = cur.fetchone()
                if existing is not None:
                    return _job_from_row(existing), False
        raise ServiceUnavailable("job could not be stored: its idempotency key kept changing")

    def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        if tenant_id is None:
            return self._one(SELECT_JOB, {"id": job_id})
        return self._one(SELECT_TENANT_JOB, {"id": job_id, "tenant_id": tenant_id})

    def find(self, tenant_id: str, query: ListQuery) -> list[Job]:
        statement, params = find_statement(tenant_id, query)
        return self._many(statement, params)

    def mark_enqueued(self, job_id: str, at: dt.datetime) -> None:
        with self._cursor() as cur:
            cur.execute(MARK_ENQUEUED, {"id": job_id, "at": at})

    def claim(
        self, job_id: str, owner: str, now: dt.datetime, lease_until: dt.datetime
    ) -> Job | None:
        return self._transition(
            Event.CLAIM, CLAIM_JOB, id=job_id, owner=owner, now=now, lease_until=lease_until
        )

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        lease_until: dt.datetime,
        progress_pct: int | None,
    ) -> Job | None:
        return self._one(
            HEARTBEAT_JOB,
            {
                "id": job_id,
                "owner": owner,
                "now": now,
                "lease_until": lease_until,
                "pct": progress_pct,
                "cap": PROGRESS_CAP_WHILE_RUNNING,
                "running": JobStatus.RUNNING.value,
            },
        )

    def succeed(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        file: StoredFile,
        expires_at: dt.datetime | None,
    ) -> Job | None:
        return self._transition(
            Event.SUCCEED,
            SUCCEED_JOB,
            id=job_id,
            owner=owner,
            now=now,
            file_path=file.location,
            size_bytes=file.size_bytes,
            sha256=file.sha256,
            expires_at=expires_at,
            file_names=FILE_NAMES,
            mime_types=MIME_TYPES,
        )

    def fail(
        self, job_id: str, owner: str | None, now: dt.datetime, code: str, message: str
    ) -> Job | None:
        return self._transition(
            Event.FAIL, FAIL_JOB, id=job_id, owner=owner, now=now, code=code, message=message
        )

    def retry(self, job_id: str, owner: str | None, now: dt.datetime) -> Job | None:
        return self._transition(Event.RETRY, RETRY_JOB, id=job_id, owner=owner, now=now)

    def cancel(self, job_id: str, tenant_id: str, now: dt.datetime) -> Job | None:
        return self._transition(Event.CANCEL, CANCEL_JOB, id=job_id, tenant_id=tenant_id, now=now)

    def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
        return self._many(STALE_JOBS, {"now": now, "legacy_before": legacy_before, "limit": limit})

    def unpublished(self, before: dt.datetime, limit: int) -> list[Job]:
        return self._many(UNPUBLISHED_JOBS, {"before": before, "limit": limit})

    def expired_files(self, now: dt.datetime, limit: int) -> list[Job]:
        return self._many(EXPIRED_FILES, {"now": now, "limit": limit})

    def mark_file_deleted(self, job_id: str, at: dt.datetime) -> None:
        with self._cursor() as cur:
            cur.execute(MARK_FILE_DELETED, {"id": job_id, "at": at})

    def ping(self) -> None:
        with self._cursor() as cur:
            cur.execute(PING)
