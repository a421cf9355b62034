"""SQLite: the durable job repository of the embedded default (``reportsvc dev``).

One file, opened in WAL mode with ``synchronous=FULL``: a job is on disk once ``add`` returns,
also if the process is killed or the machine loses power right after. The schema is created on
open: each migration file is applied once and recorded by name (as on PostgreSQL), and
``PRAGMA user_version`` holds how many are applied; a file written by a newer version of this
module is refused rather than misread.

The statements and the row codec are the SQL repository's
(:mod:`adapters.sql_jobs`), shared with PostgreSQL; this module brings SQLite's
dialect, the file and its schema versions. Every state change is one conditional statement, so
several processes may share the file (SQLite serialises their writes). Within a process one
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

from adapters import sql_files, sql_jobs, sql_rows
from reportcore.errors import ServiceUnavailable
from reportcore.requests import ListQuery

# RETURNING (3.35) makes a state change one statement; STRICT tables (3.37) refuse a value of
# the wrong type instead of storing it.
MIN_SQLITE_VERSION = (3, 37, 0)
# How long a statement waits for another process's write to finish before the repository
# answers ServiceUnavailable.
BUSY_TIMEOUT_SEC = 5.0


# The schema, one file a step under ``sql/sqlite`` as (name, statements), in name order. A step
# is recorded by name in report_schema_migrations, so one added between two others (a branch
# merged later) is applied too; ``PRAGMA user_version`` counts the steps applied, which is all a
# file recorded before the names were (its first user_version steps).
def iter_statements(script: str) -> Iterator[str]:
    """The statements of a migration script: sqlite3 runs one at a time."""
    statement: list[str] = []
    for line in script.splitlines():
        if line.lstrip().startswith("--"):
            continue
        statement.append(line)
        if line.rstrip().endswith(";"):
            text = "\n".join(statement).strip().rstrip(";")
            if text:
                yield text
            statement = []
    rest = "\n".join(statement).strip()
    if rest:
        yield rest


MIGRATIONS: Sequence[tuple[str, Sequence[str]]] = tuple(
    (name, tuple(iter_statements(script))) for name, script in sql_files.migrations("sqlite")
)
SCHEMA_VERSION = len(MIGRATIONS)
MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS report_schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
) STRICT
"""


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


class SqliteDialect(sql_rows.Dialect):
    """``:name`` parameters; instants, dates and JSON as text; status lists as JSON arrays."""

    engine = "sqlite"

    def parameter(self, name: str) -> str:
        return f":{name}"

    def instant(self, value: dt.datetime | None) -> str | None:
        return instant_text(value)

    def read_instant(self, value: Any) -> dt.datetime | None:
        return None if value is None else dt.datetime.fromisoformat(value).astimezone(dt.UTC)

    def date(self, value: dt.date | None) -> str | None:
        return None if value is None else value.isoformat()

    def read_date(self, value: Any) -> dt.date | None:
        return None if value is None else dt.date.fromisoformat(value)

    def json(self, value: Any) -> str:
        return msgspec.json.encode(value).decode()

    def read_json(self, value: Any) -> Any:
        return None if value is None else msgspec.json.decode(value)

    def statuses(self, values: list[str]) -> str:
        return self.json(values)


DIALECT = SqliteDialect()
_STATEMENTS = sql_jobs.Statements(DIALECT)


def find_statement(tenant_id: str, query: ListQuery) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of :meth:`SqliteJobRepository.find`."""
    return _STATEMENTS.find(tenant_id, query)


class SchemaTooNew(RuntimeError):
    """The file was written by a newer version of this module: reading it could lose data."""


# --- the repository ---


class SqliteJobRepository(sql_jobs.SqlJobRepository):
    """:class:`reportcore.ports.JobRepository` in one SQLite file; thread-safe.

    The file (and its folder's WAL companions) is created if absent. Call :meth:`close` when
    done; a closed repository answers :class:`ServiceUnavailable`.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(DIALECT)
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
        """Apply the steps the file has not had, by name, all in one transaction."""
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
            names = [name for name, _ in MIGRATIONS]
            recorded = conn.execute(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'report_schema_migrations'"
            ).fetchone()[0]
            conn.execute(MIGRATIONS_TABLE)
            if recorded:
                done = {row[0] for row in conn.execute("SELECT name FROM report_schema_migrations")}
            else:  # versioned by count alone: its first `version` steps are applied
                done = set(names[:version])
                self._record(conn, names[:version])
            unknown = sorted(done.difference(names))
            if unknown:
                raise SchemaTooNew(
                    f"{self.path} has schema migrations {', '.join(unknown)} that this version "
                    "of reportsvc does not know: upgrade reportsvc to open it"
                )
            for name, statements in MIGRATIONS:
                if name in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                self._record(conn, [name])
                done.add(name)
            # PRAGMA takes no parameters; the number is ours, not input
            conn.execute(f"PRAGMA user_version = {len(done)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _record(conn: sqlite3.Connection, names: Sequence[str]) -> None:
        applied_at = instant_text(dt.datetime.now(dt.UTC))
        conn.executemany(
            "INSERT INTO report_schema_migrations (name, applied_at) VALUES (?, ?)",
            [(name, applied_at) for name in names],
        )

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

    @contextmanager
    def _session(self) -> Iterator[sql_jobs.Run]:
        with self._connection() as conn:

            def run(statement: str, params: Mapping[str, Any]) -> sql_jobs.Rows:
                # fetchall steps the statement to its end: only then does its implicit
                # transaction commit and release the write lock
                return conn.execute(statement, params).fetchall()

            yield run

    @contextmanager
    def _transaction(self) -> Iterator[sql_jobs.Run]:
        with self._connection() as conn:

            def run(statement: str, params: Mapping[str, Any]) -> sql_jobs.Rows:
                return conn.execute(statement, params).fetchall()

            # IMMEDIATE: take the write lock first, so that the transaction cannot fail
            # halfway on another process's write
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield run
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
