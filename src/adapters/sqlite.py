"""SQLite: the durable job repository of the embedded default (``reportsvc dev``).

One file, opened in WAL mode with ``synchronous=FULL``: a job is on disk once ``add`` returns,
also if the process is killed or the machine loses power right after. The schema is created on
open and versioned with ``PRAGMA user_version``; a file written by a newer version of this
module is refused rather than misread.

Semantics are those of :class:`adapters.memory.InMemoryJobRepository` and
:class:`adapters.postgres.PostgresJobRepository`, kept honest by the one contract suite run
over all of them. Every state change is one conditional ``UPDATE ... RETURNING`` whose
allowed source statuses come from :data:`reportcore.lifecycle.TRANSITIONS`, so several
processes may share the file (SQLite serialises their writes). Within a process one
connection serves every thread, guarded by a lock.

Instants are stored as fixed-width ISO 8601 text in UTC with microseconds
(``2026-03-01T08:00:00.000000Z``): text order is time order, so listing, keyset paging and
the recovery queries compare exactly, and the file stays readable with the ``sqlite3`` shell.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from reportcore import lifecycle
from reportcore.errors import ServiceUnavailable
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat, file_name_for
from reportcore.lifecycle import Event
from reportcore.ports import StoredFile
from reportcore.requests import ListQuery

# RETURNING (3.35) makes a state change one statement; STRICT tables (3.37) refuse a value of
# the wrong type instead of storing it.
MIN_SQLITE_VERSION = (3, 37, 0)
# How long a statement waits for another process's write to finish before the repository
# answers ServiceUnavailable.
BUSY_TIMEOUT_SEC = 5.0

# --- the schema, one entry per version: ``PRAGMA user_version`` is the last one applied ---

MIGRATIONS: Sequence[Sequence[str]] = (
    (
        """
        CREATE TABLE report_jobs (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            requested_by TEXT,
            job_type TEXT NOT NULL,
            format TEXT NOT NULL,
            farm_id TEXT,
            barn_id TEXT,
            batch_id TEXT,
            start_date TEXT,
            end_date TEXT,
            filters TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'queued',
            progress_pct INTEGER NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100),
            file_path TEXT,
            file_name TEXT,
            mime_type TEXT,
            size_bytes INTEGER,
            sha256 TEXT,
            expires_at TEXT,
            error_code TEXT,
            error_message TEXT,
            idempotency_key TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            lease_owner TEXT,
            lease_expires_at TEXT,
            enqueued_at TEXT,
            file_deleted_at TEXT
        ) STRICT
        """,
        """
        CREATE UNIQUE INDEX report_jobs_tenant_key ON report_jobs (tenant_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL
        """,
        "CREATE INDEX report_jobs_tenant_created ON report_jobs (tenant_id, created_at, id)",
        # the recovery pass's three queries each read a small slice of the table
        """
        CREATE INDEX report_jobs_running_lease ON report_jobs (lease_expires_at, updated_at)
        WHERE status = 'running'
        """,
        """
        CREATE INDEX report_jobs_unpublished ON report_jobs (updated_at)
        WHERE status = 'queued' AND enqueued_at IS NULL
        """,
        """
        CREATE INDEX report_jobs_expiring ON report_jobs (expires_at)
        WHERE status = 'succeeded' AND file_deleted_at IS NULL
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

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

INSERT_JOB = f"""
INSERT INTO report_jobs ({_SELECTED})
VALUES ({", ".join(f":{c}" for c in JOB_COLUMNS)})
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {_SELECTED}
"""

SELECT_BY_KEY = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE tenant_id = :tenant_id AND idempotency_key = :idempotency_key
"""

SELECT_JOB = f"SELECT {_SELECTED} FROM report_jobs WHERE id = :id"

SELECT_TENANT_JOB = f"SELECT {_SELECTED} FROM report_jobs WHERE id = :id AND tenant_id = :tenant_id"

# find: the tenant's jobs newest first, each filter of ListQuery one fragment. Ids compare
# with SQLite's BINARY collation (byte-wise UTF-8, the order of Python's str comparison).
FIND_JOBS = f"SELECT {_SELECTED} FROM report_jobs WHERE tenant_id = :tenant_id"
FIND_FILTERS = {
    "status": "status = :status",
    "job_type": "job_type = :job_type",
    "created_from": "created_at >= :created_from",
    "created_to": "created_at <= :created_to",
    "after": "(created_at, id) < (:after_created_at, :after_id)",
}
FIND_ORDER = "ORDER BY created_at DESC, id DESC LIMIT :limit"

MARK_ENQUEUED = "UPDATE report_jobs SET enqueued_at = :at WHERE id = :id"

MARK_FILE_DELETED = """
UPDATE report_jobs SET file_deleted_at = :at WHERE id = :id AND file_deleted_at IS NULL
"""

# Transitions. :sources is a JSON list of every status the event may leave, :target where it
# goes (both from the lifecycle table); the lease holder must be :owner where a method takes
# one (``IS`` is SQLite's null-safe equality: no owner matches only a job without a lease).
_MOVE = "status = :target, updated_at = :now"
_MAY_MOVE = "id = :id AND status IN (SELECT value FROM json_each(:sources))"
_OWNED = "lease_owner IS :owner"

CLAIM_JOB = f"""
UPDATE report_jobs
SET {_MOVE},
    lease_owner = :owner, lease_expires_at = :lease_until,
    started_at = COALESCE(started_at, :now), attempts = attempts + 1,
    error_code = NULL, error_message = NULL
WHERE {_MAY_MOVE}
RETURNING {_SELECTED}
"""

HEARTBEAT_JOB = f"""
UPDATE report_jobs
SET lease_expires_at = :lease_until, updated_at = :now,
    progress_pct = MAX(progress_pct, MIN(:cap, COALESCE(:pct, progress_pct)))
WHERE id = :id AND status = :running AND {_OWNED}
RETURNING {_SELECTED}
"""

# The file's name and type depend on the job's type and format: looked up in JSON maps the
# core made (FILE_NAMES, MIME_TYPES), so that this stays one statement and the core one truth.
SUCCEED_JOB = f"""
UPDATE report_jobs
SET {_MOVE},
    progress_pct = 100,
    file_path = :file_path,
    file_name = json_extract(:file_names, '$."' || job_type || '/' || format || '"'),
    mime_type = json_extract(:mime_types, '$."' || format || '"'),
    size_bytes = :size_bytes, sha256 = :sha256, expires_at = :expires_at,
    finished_at = :now, lease_owner = NULL, lease_expires_at = NULL
WHERE {_MAY_MOVE} AND {_OWNED}
RETURNING {_SELECTED}
"""

FAIL_JOB = f"""
UPDATE report_jobs
SET {_MOVE},
    error_code = :code, error_message = :message,
    finished_at = :now, lease_owner = NULL, lease_expires_at = NULL
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
SET {_MOVE}, finished_at = :now, lease_owner = NULL, lease_expires_at = NULL
WHERE {_MAY_MOVE} AND tenant_id = :tenant_id
RETURNING {_SELECTED}
"""

# The recovery queries spell their status as literals so that the partial indexes match them.
STALE_JOBS = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE status = 'running'
  AND (
      (lease_expires_at IS NOT NULL AND lease_expires_at < :now)
      OR (lease_expires_at IS NULL AND updated_at < :legacy_before)
  )
ORDER BY updated_at, id LIMIT :limit
"""

UNPUBLISHED_JOBS = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE status = 'queued' AND enqueued_at IS NULL AND updated_at < :before
ORDER BY created_at, id LIMIT :limit
"""

EXPIRED_FILES = f"""
SELECT {_SELECTED} FROM report_jobs
WHERE status = 'succeeded' AND file_deleted_at IS NULL AND expires_at <= :now
ORDER BY expires_at, id LIMIT :limit
"""

PING = "SELECT 1"


def _statuses_of(event: Event) -> dict[str, str]:
    """The ``sources`` and ``target`` parameters of ``event``'s update, from the lifecycle."""
    sources = lifecycle.sources_of(event)
    targets = {lifecycle.apply(status, event) for status in sources}
    # one statement sets one target; a table where an event led to several would need a
    # CASE here, and must not silently get a wrong one
    if len(targets) != 1:
        raise RuntimeError(f"event {event.value!r} leads to several statuses: {targets}")
    return {
        "sources": msgspec.json.encode(sorted(s.value for s in sources)).decode(),
        "target": targets.pop().value,
    }


_FROM_TO = {event: _statuses_of(event) for event in Event}

FILE_NAMES = msgspec.json.encode(
    {f"{t.value}/{f.value}": file_name_for(t, f) for t in JobType for f in ReportFormat}
).decode()
MIME_TYPES = msgspec.json.encode({f.value: f.mime_type for f in ReportFormat}).decode()
PROGRESS_CAP_WHILE_RUNNING = 99


# --- values in and out ---


def instant_text(value: dt.datetime | None) -> str | None:
    """An aware instant as fixed-width UTC text with microseconds (text order = time order)."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        # a naive instant has no place in time: storing it would corrupt the order silently
        raise ValueError(f"instant without a time zone: {value!r}")
    utc = value.astimezone(dt.UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _instant(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _date(text: str | None) -> dt.date | None:
    return None if text is None else dt.date.fromisoformat(text)


def _job_from_row(row: sqlite3.Row) -> Job:
    created_at = _instant(row["created_at"])
    updated_at = _instant(row["updated_at"])
    assert created_at is not None and updated_at is not None  # NOT NULL columns
    filters = msgspec.json.decode(row["filters"])
    return Job(
        id=row["id"],
        tenant_id=row["tenant_id"],
        requested_by=row["requested_by"],
        job_type=JobType(row["job_type"]),
        format=ReportFormat(row["format"]),
        farm_id=row["farm_id"],
        barn_id=row["barn_id"],
        batch_id=row["batch_id"],
        start_date=_date(row["start_date"]),
        end_date=_date(row["end_date"]),
        filters=filters if isinstance(filters, dict) else {},
        status=JobStatus(row["status"]),
        progress_pct=row["progress_pct"],
        file_path=row["file_path"],
        file_name=row["file_name"],
        mime_type=row["mime_type"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        expires_at=_instant(row["expires_at"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        idempotency_key=row["idempotency_key"],
        created_at=created_at,
        updated_at=updated_at,
        started_at=_instant(row["started_at"]),
        finished_at=_instant(row["finished_at"]),
        attempts=row["attempts"],
        lease_owner=row["lease_owner"],
        lease_expires_at=_instant(row["lease_expires_at"]),
        enqueued_at=_instant(row["enqueued_at"]),
        file_deleted_at=_instant(row["file_deleted_at"]),
    )


def _row_from_job(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "tenant_id": job.tenant_id,
        "requested_by": job.requested_by,
        "job_type": job.job_type.value,
        "format": job.format.value,
        "farm_id": job.farm_id,
        "barn_id": job.barn_id,
        "batch_id": job.batch_id,
        "start_date": job.start_date.isoformat() if job.start_date else None,
        "end_date": job.end_date.isoformat() if job.end_date else None,
        "filters": msgspec.json.encode(job.filters).decode(),
        "status": job.status.value,
        "progress_pct": job.progress_pct,
        "file_path": job.file_path,
        "file_name": job.file_name,
        "mime_type": job.mime_type,
        "size_bytes": job.size_bytes,
        "sha256": job.sha256,
        "expires_at": instant_text(job.expires_at),
        "error_code": job.error_code,
        "error_message": job.error_message,
        "idempotency_key": job.idempotency_key,
        "created_at": instant_text(job.created_at),
        "updated_at": instant_text(job.updated_at),
        "started_at": instant_text(job.started_at),
        "finished_at": instant_text(job.finished_at),
        "attempts": job.attempts,
        "lease_owner": job.lease_owner,
        "lease_expires_at": instant_text(job.lease_expires_at),
        "enqueued_at": instant_text(job.enqueued_at),
        "file_deleted_at": instant_text(job.file_deleted_at),
    }


def find_statement(tenant_id: str, query: ListQuery) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of :meth:`SqliteJobRepository.find`."""
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
        params["created_from"] = instant_text(query.created_from)
    if query.created_to is not None:
        used.append("created_to")
        params["created_to"] = instant_text(query.created_to)
    if query.after is not None:
        used.append("after")
        params["after_created_at"] = instant_text(query.after.created_at)
        params["after_id"] = query.after.id
    where = " AND ".join([FIND_JOBS, *(FIND_FILTERS[name] for name in used)])
    return f"{where} {FIND_ORDER}", params


class SchemaTooNew(RuntimeError):
    """The file was written by a newer version of this module: reading it could lose data."""


# --- the repository ---


class SqliteJobRepository:
    """:class:`reportcore.ports.JobRepository` in one SQLite file; thread-safe.

    The file (and its folder's WAL companions) is created if absent. Call :meth:`close` when
    done; a closed repository answers :class:`ServiceUnavailable`.
    """

    def __init__(self, path: str | Path) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            wanted = ".".join(map(str, MIN_SQLITE_VERSION))
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: {wanted} or newer is needed"
            )
        self.path = Path(path)
        self._lock = threading.Lock()
        # isolation_level=None: no implicit BEGIN; each statement is its own transaction
        # unless one is opened explicitly (the migrations)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SEC, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            self._use_wal(conn)
            # FULL: a commit is on disk before it returns, so a job survives a power cut too
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (a lasting property of the file, so once is enough)."""
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        # Switching needs the file to itself, and SQLite answers "locked" at once, without
        # its busy timeout, while another process opens or switches the same new file: so
        # try again briefly, up to the same timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_SEC
        pause = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: WAL mode is not available (got {mode!r})")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the file's schema to :data:`SCHEMA_VERSION`, each step in one transaction."""
        # IMMEDIATE takes the write lock first: processes opening a new file at once take
        # turns, and the one that comes second sees the version the first one wrote
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{self.path} has schema version {version}; this version of reportsvc "
                    f"knows up to {SCHEMA_VERSION}: upgrade reportsvc to open it"
                )
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                # PRAGMA takes no parameters; the number is ours, not input
                conn.execute(f"PRAGMA user_version = {int(number)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        """The schema version of the open file."""
        with self._connection() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the file; safe to call more than once."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, held alone; a store that cannot answer is a 503."""
        with self._lock:
            if self._conn is None:
                raise ServiceUnavailable("job store is closed")
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:  # locked past the timeout, disk I/O, full
                raise ServiceUnavailable(f"job store is not available: {exc}") from exc

    def _rows(self, statement: str, params: Mapping[str, Any]) -> list[sqlite3.Row]:
        with self._connection() as conn:
            # fetchall steps the statement to its end: only then does its implicit
            # transaction commit and release the write lock
            return conn.execute(statement, params).fetchall()

    def _one(self, statement: str, params: Mapping[str, Any]) -> Job | None:
        rows = self._rows(statement, params)
        return _job_from_row(rows[0]) if rows else None

    def _many(self, statement: str, params: Mapping[str, Any]) -> list[Job]:
        return [_job_from_row(row) for row in self._rows(statement, params)]

    def _transition(self, event: Event, statement: str, **params: Any) -> Job | None:
        return self._one(statement, {**_FROM_TO[event], **params})

    # port

    def add(self, job: Job) -> tuple[Job, bool]:
        row = _row_from_job(job)
        with self._connection() as conn:
            inserted = conn.execute(INSERT_JOB, row).fetchall()
            if inserted:
                return _job_from_row(inserted[0]), True
            # jobs are never deleted, so the row that won the key is still there
            existing = conn.execute(SELECT_BY_KEY, row).fetchall()
        if not existing:
            raise ServiceUnavailable("job could not be stored nor its idempotent twin found")
        return _job_from_row(existing[0]), False

    def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        if tenant_id is None:
            return self._one(SELECT_JOB, {"id": job_id})
        return self._one(SELECT_TENANT_JOB, {"id": job_id, "tenant_id": tenant_id})

    def find(self, tenant_id: str, query: ListQuery) -> list[Job]:
        statement, params = find_statement(tenant_id, query)
        return self._many(statement, params)

    def mark_enqueued(self, job_id: str, at: dt.datetime) -> None:
        self._rows(MARK_ENQUEUED, {"id": job_id, "at": instant_text(at)})

    def claim(
        self, job_id: str, owner: str, now: dt.datetime, lease_until: dt.datetime
    ) -> Job | None:
        return self._transition(
            Event.CLAIM,
            CLAIM_JOB,
            id=job_id,
            owner=owner,
            now=instant_text(now),
            lease_until=instant_text(lease_until),
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
                "now": instant_text(now),
                "lease_until": instant_text(lease_until),
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
            now=instant_text(now),
            file_path=file.location,
            size_bytes=file.size_bytes,
            sha256=file.sha256,
            expires_at=instant_text(expires_at),
            file_names=FILE_NAMES,
            mime_types=MIME_TYPES,
        )

    def fail(
        self, job_id: str, owner: str | None, now: dt.datetime, code: str, message: str
    ) -> Job | None:
        return self._transition(
            Event.FAIL,
            FAIL_JOB,
            id=job_id,
            owner=owner,
            now=instant_text(now),
            code=code,
            message=message,
        )

    def retry(self, job_id: str, owner: str | None, now: dt.datetime) -> Job | None:
        return self._transition(
            Event.RETRY, RETRY_JOB, id=job_id, owner=owner, now=instant_text(now)
        )

    def cancel(self, job_id: str, tenant_id: str, now: dt.datetime) -> Job | None:
        return self._transition(
            Event.CANCEL, CANCEL_JOB, id=job_id, tenant_id=tenant_id, now=instant_text(now)
        )

    def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
        return self._many(
            STALE_JOBS,
            {
                "now": instant_text(now),
                "legacy_before": instant_text(legacy_before),
                "limit": limit,
            },
        )

    def unpublished(self, before: dt.datetime, limit: int) -> list[Job]:
        return self._many(UNPUBLISHED_JOBS, {"before": instant_text(before), "limit": limit})

    def expired_files(self, now: dt.datetime, limit: int) -> list[Job]:
        return self._many(EXPIRED_FILES, {"now": instant_text(now), "limit": limit})

    def mark_file_deleted(self, job_id: str, at: dt.datetime) -> None:
        self._rows(MARK_FILE_DELETED, {"id": job_id, "at": instant_text(at)})

    def ping(self) -> None:
        self._rows(PING, {})
