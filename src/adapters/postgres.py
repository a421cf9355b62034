"""PostgreSQL: the job repository, its connection pool and the schema migrations.

The table is the old service's ``report_jobs`` (the contract's compatible storage), extended
only by additive columns (``sql/postgres/0003_run_columns.sql``). Its instants may be
``timestamp(3)`` without time zone holding UTC (what Prisma creates) or ``timestamptz``; the
pool's sessions run with ``TimeZone=UTC``, so aware parameters are stored and compared
correctly against either kind, and every instant read back is made aware UTC.

The statements and the row codec are the SQL repository's (:mod:`adapters.sql_jobs`,
:mod:`adapters.sql_rows`); this module brings PostgreSQL's dialect, the pool and the
migrations. A database that does not answer is :class:`reportcore.errors.ServiceUnavailable`;
the pool checks a connection before lending it and reconnects by itself after a restart.
"""

from __future__ import annotations

import datetime as dt
import functools
import select
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from adapters import sql_files, sql_jobs, sql_rows
from reportcore.errors import ServiceUnavailable
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
# InternalErrors of PostgreSQL's that mean "not now" rather than "wrong": the rest of them
# (InFailedSqlTransaction...) are the code's own
_NOT_WRITABLE = (
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.IdleInTransactionSessionTimeout,
)
# why no connection was made, without libpq's own words (which name the host and its address)
_NO_CONNECTION = (
    ("resolve host", "the database host name does not resolve"),
    ("connection refused", "the database host refused the connection"),
    ("timeout", "the database host did not answer in time"),
    ("timed out", "the database host did not answer in time"),
    ("no route to host", "no route to the database host"),
)
# SQLSTATEs of a server that is going or gone: a connection exception (class 08), a shutdown
# (57P01-57P03), no connection slot left; any other the server sent answers one statement
_DOWN_STATES = ("08", "57P01", "57P02", "57P03", "53300")
# a table, column or type of ours that is not there: a database not migrated (or migrated by
# an older release), an operator's step to take, not a bug of the request
_NOT_MIGRATED = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedObject,
)
NOT_MIGRATED = "job database schema is not up to date: run `reportsvc migrate`"


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


def migrations() -> list[tuple[str, str]]:
    """Every migration shipped in ``adapters/sql/postgres``, as (name, SQL), in order."""
    return sql_files.migrations(PostgresDialect.engine)


@functools.cache
def _shipped() -> tuple[str, ...]:
    """The names of the migrations this release ships, in order."""
    return tuple(name for name, _ in migrations())


# A migration waits this long for a table's lock, then lets go and tries again later: an
# ALTER TABLE waiting behind a long transaction (a pg_dump, a report query) queues every read
# and write of the table behind itself, the old service's included, for as long as it waits.
MIGRATION_LOCK_WAIT = "SET LOCAL lock_timeout = '2s'"
MIGRATION_LOCK_TRIES = 6
MIGRATION_LOCK_PAUSE_SEC = 1.0  # doubled after each refusal, up to 8 s


class MigrationBlocked(Exception):
    """A migration found its tables held by another transaction at every try."""


def migrate(database_url: str) -> list[str]:
    """Apply the migrations this database has not had yet; return their names.

    Idempotent, and safe to run from several processes at once: they take turns under an
    advisory lock, and each migration commits together with its record. A migration waits at
    most 2 s for a lock on its tables at a time (the tables' users queue behind it no longer
    than that), tried :data:`MIGRATION_LOCK_TRIES` times; then :class:`MigrationBlocked`.
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
            _apply(conn, name, statements)
            applied.append(name)
        conn.execute(RELEASE_MIGRATION_LOCK, (MIGRATION_LOCK_KEY,))
        return applied


def _apply(conn: psycopg.Connection[Any], name: str, statements: str) -> None:
    pause = MIGRATION_LOCK_PAUSE_SEC
    for tried in range(1, MIGRATION_LOCK_TRIES + 1):
        try:
            with conn.transaction():
                conn.execute(MIGRATION_LOCK_WAIT)
                # no parameters: the file goes as one simple query, several statements allowed
                conn.execute(statements.encode())
                conn.execute(RECORD_MIGRATION, (name,))
            return
        except psycopg.errors.LockNotAvailable:
            if tried == MIGRATION_LOCK_TRIES:
                raise MigrationBlocked(
                    f"{name} could not lock its tables in {MIGRATION_LOCK_TRIES} tries: another "
                    f"transaction holds them (see pg_stat_activity); run migrate again once it "
                    f"ended"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


# --- the dialect ---

# The casts a parameter needs, by its name in sql/jobs.sql: the old schema's enum types, and
# the types PostgreSQL cannot infer (a NULL owner, GREATEST's arguments, a JSON map).
_CASTS = {
    "job_type": '::"ReportJobType"',
    "format": '::"ReportFormat"',
    "status": '::"ReportJobStatus"',
    "target": '::"ReportJobStatus"',
    "running": '::"ReportJobStatus"',
    "sources": '::"ReportJobStatus"[]',
    "owner": "::text",
    "cap": "::integer",
    "pct": "::integer",
    "file_names": "::jsonb",
    "mime_types": "::jsonb",
    "job_ids": "::text[]",
}


class PostgresDialect(sql_rows.Dialect):
    """``%(name)s`` parameters, native instants and dates, ``jsonb``, status arrays."""

    engine = "postgres"

    def parameter(self, name: str) -> str:
        return f"%({name})s{_CASTS.get(name, '')}"

    def instant(self, value: dt.datetime | None) -> dt.datetime | None:
        """Cut to the millisecond: the old schema's ``timestamp(3)`` columns round, so a job
        created in a day's last half millisecond was stored in the next day (out of that
        day's ``created_to``, and created after it started); every instant is cut alike, so
        they compare as they were taken."""
        if value is None:
            return None
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    def read_instant(self, value: Any) -> dt.datetime | None:
        """Aware UTC; a value without zone holds UTC (the old schema's ``timestamp(3)``)."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]

    def json(self, value: Any) -> Jsonb:
        return Jsonb(value)

    def read_json(self, value: Any) -> Any:
        return value

    def statuses(self, values: list[str]) -> list[str]:
        return values


DIALECT = PostgresDialect()
_STATEMENTS = sql_jobs.Statements(DIALECT)


def find_statement(tenant_id: str, query: ListQuery) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of :meth:`PostgresJobRepository.find` (also for EXPLAIN)."""
    return _STATEMENTS.find(tenant_id, query)


# --- the repository ---


class PostgresJobRepository(sql_jobs.SqlJobRepository):
    """:class:`reportcore.ports.JobRepository` over ``report_jobs``; thread-safe (one pool).

    The statements are :mod:`adapters.sql_jobs`'s; this class brings the pool and tells an
    outage from a busy pool.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        super().__init__(DIALECT)
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
        except _NOT_WRITABLE as exc:
            # a failover that lands on a standby (or a database set read-only), a session the
            # server ended: an outage to the callers (a 503, a job handed back), not a bug
            raise ServiceUnavailable("job database is not available for writes") from exc
        except _NOT_MIGRATED as exc:
            raise ServiceUnavailable(NOT_MIGRATED) from exc

    def ping(self) -> None:
        """The database answers, and has every migration this release ships (readiness: a
        database not migrated is not ready, rather than a 500 on every job route). While the
        pool cannot connect, one connection of its own says why (a role or database that does
        not exist, a refused password: the pool only logs it, and readiness said 'no answer')."""
        try:
            with self._session() as run:
                done = {row["name"] for row in run(APPLIED_MIGRATIONS, {})}
        except ServiceUnavailable as exc:
            why = self._why_not_connected() if self._down else None
            if why is None:
                raise
            # from the driver's error, as every other refusal (exc's own cause)
            raise ServiceUnavailable(f"job database is not available: {why}") from (
                exc.__cause__ or exc
            )
        missing = [name for name in _shipped() if name not in done]
        if missing:
            raise ServiceUnavailable(f"{NOT_MIGRATED} (missing {', '.join(missing)})")

    def _why_not_connected(self) -> str | None:
        """The server's (or the network's) reason a connection fails now, on one line; None
        if one connects."""
        info = self._pool.conninfo
        try:
            psycopg.connect(
                info() if callable(info) else info,
                connect_timeout=2,
                application_name="reportsvc readiness",
            ).close()
        except psycopg.Error as exc:
            # readiness is answered to anyone: the server's words, not its address
            said = " ".join(str(exc).split())
            if "FATAL:" in said:  # the server answered: a role, a database, a password
                return said.rsplit("FATAL:", 1)[-1].strip()[:200]
            lowered = said.lower()
            for words, reason in _NO_CONNECTION:
                if words in lowered:
                    return reason
            return "no connection could be made"
        return None

    def _outage(self, exc: psycopg.OperationalError) -> bool:
        """Whether ``exc`` means the database is down, not that the pool is busy nor that the
        server refused one statement (a statement timeout, a deadlock, a lock not available:
        still a 503, the caller may retry, but the server answered)."""
        if not isinstance(exc, PoolTimeout):
            state = exc.sqlstate
            return state is None or state.startswith(_DOWN_STATES)  # refused, cut, shut down
        # a pool exhausted by load holds all its connections; one that cannot fill itself
        # cannot connect
        stats = self._pool.get_stats()
        return stats.get("pool_available", 0) == 0 and stats.get("pool_size", 0) < stats.get(
            "pool_max", 1
        )

    @contextmanager
    def _session(self) -> Iterator[sql_jobs.Run]:
        with self._cursor() as cur:

            def run(statement: str, params: Mapping[str, Any]) -> sql_jobs.Rows:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description is not None else []

            yield run

    @contextmanager
    def _transaction(self) -> Iterator[sql_jobs.Run]:
        with self._cursor() as cur, cur.connection.transaction():

            def run(statement: str, params: Mapping[str, Any]) -> sql_jobs.Rows:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description is not None else []

            yield run
