"""The SQL job repository, one for every engine; an engine brings only a small dialect
(:class:`adapters.sql_rows.Dialect`).

The statements are written once, in ``sql/jobs.sql``; what an engine spells differently (a
status list, a null-safe comparison, a JSON lookup, the keyset order) are named pieces in
``sql/<engine>/dialect.sql``, next to that engine's migrations. The row codec
(:mod:`adapters.sql_rows`) is derived from the fields of :class:`reportcore.jobs.Job`: a new
column is one edit of ``Job`` plus a migration. The statuses each transition may leave come from
:data:`reportcore.lifecycle.TRANSITIONS`, so the SQL cannot disagree with the core.
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from adapters.sql_files import named_blocks, sql_file
from adapters.sql_rows import JOB_COLUMNS, Dialect, RowCodec
from reportcore import lifecycle
from reportcore.errors import ServiceUnavailable, TooManyJobs
from reportcore.jobs import (
    Compression,
    Job,
    JobStatus,
    JobType,
    ReportFormat,
    file_name_for,
    mime_type_for,
)
from reportcore.lifecycle import Event
from reportcore.ports import StoredFile
from reportcore.requests import ListQuery
from reportcore.webhooks import event_for

# A statement's rows as mappings of column name to value ([] for a statement without rows).
Rows = Sequence[Mapping[str, Any]]
# Runs one statement with its parameters in an open session.
Run = Callable[[str, Mapping[str, Any]], Rows]

PROGRESS_CAP_WHILE_RUNNING = 99

# ":name" but not the second colon of a PostgreSQL cast ("x::text")
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def _moves(event: Event) -> tuple[list[str], str]:
    """The statuses ``event`` may leave and the one it leads to, from the lifecycle table."""
    sources = lifecycle.sources_of(event)
    targets = {lifecycle.apply(status, event) for status in sources}
    # one statement sets one target; a table where an event led to several would need a
    # CASE here, and must not silently get a wrong one
    if len(targets) != 1:
        raise RuntimeError(f"event {event.value!r} leads to several statuses: {targets}")
    return sorted(s.value for s in sources), targets.pop().value


class Statements:
    """The repository's statements in one dialect, from ``sql/jobs.sql`` and its pieces."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        pieces = named_blocks(sql_file(dialect.engine, "dialect.sql"))
        shared = named_blocks(sql_file("jobs.sql"))
        fill = {
            **pieces,
            "columns": ", ".join(JOB_COLUMNS),
            "values": ", ".join(f":{c}" for c in JOB_COLUMNS),
        }
        # the pieces are filled in first, so their parameters are spelled with the rest
        self._sql = {
            name: self._parameters(text.format_map(fill))
            for name, text in {**shared, **pieces}.items()
        }

    def _parameters(self, text: str) -> str:
        return _PARAMETER.sub(lambda m: self.dialect.parameter(m.group(1)), text)

    def __getitem__(self, name: str) -> str:
        return self._sql[name]

    def find(self, tenant_id: str, query: ListQuery) -> tuple[str, dict[str, Any]]:
        """The statement and parameters listing ``tenant_id``'s jobs by ``query``."""
        d = self.dialect
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": query.limit}
        used: list[str] = []
        if query.status is not None:
            used.append("find_status")
            params["status"] = query.status.value
        if query.job_type is not None:
            used.append("find_job_type")
            params["job_type"] = str(query.job_type)
        if query.created_from is not None:
            used.append("find_created_from")
            params["created_from"] = d.instant(query.created_from)
        if query.created_to is not None:
            used.append("find_created_to")
            params["created_to"] = d.instant(query.created_to)
        if query.schedule_id is not None:
            used.append("find_schedule_id")
            params["schedule_id"] = query.schedule_id
        if query.after is not None:
            used.append("find_after")
            params["after_created_at"] = d.instant(query.after.created_at)
            params["after_id"] = query.after.id
        parts = [self["find_jobs"], *(self[name] for name in used)]
        return f"{' AND '.join(parts)} {self['find_order']}", params


# before every expiry a job can have: where retention's paging starts
_BEFORE_ANY = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@functools.cache
def _file_names() -> dict[str, str]:
    """``<job_type>/<format>/<compression>`` -> the file name offered (compression ``none``
    also for a job that did not ask: the old service's rows)."""
    return {
        f"{t.value}/{f.value}/{c.value}": file_name_for(t, f, c)
        for t in JobType
        for f in ReportFormat
        for c in Compression
    }


@functools.cache
def _mime_types() -> dict[str, str]:
    """``<format>/<compression>`` -> the file's Content-Type."""
    return {f"{f.value}/{c.value}": mime_type_for(f, c) for f in ReportFormat for c in Compression}


class SqlJobRepository(abc.ABC):
    """:class:`reportcore.ports.JobRepository` over SQL; an engine gives a dialect and sessions.

    Semantics are those of :class:`reportcore.testing.InMemoryJobRepository`, kept honest by one
    contract suite run over every engine.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._sql = Statements(dialect)
        self._codec = RowCodec(dialect)
        self._moves = {}
        for event in Event:
            sources, target = _moves(event)
            self._moves[event] = {"sources": dialect.statuses(sources), "target": target}
        self._file_names = dialect.json(_file_names())
        self._mime_types = dialect.json(_mime_types())

    @abc.abstractmethod
    def _session(self) -> AbstractContextManager[Run]:
        """A session to run statements in; an engine that does not answer is a 503."""

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[Run]:
        """A session whose statements commit together, or not at all."""

    # for the webhook outbox (sql_webhooks.py), which shares the tables, statements, sessions
    @property
    def statements(self) -> Statements:
        """The repository's statements in its dialect."""
        return self._sql

    def session(self) -> AbstractContextManager[Run]:
        """A session to run statements in (see :meth:`_session`)."""
        return self._session()

    def transaction(self) -> AbstractContextManager[Run]:
        """A session whose statements commit together (see :meth:`_transaction`)."""
        return self._transaction()

    def _ending(self, event: Event, name: str, **params: Any) -> Job | None:
        """A terminal transition and, for a job with a notify_url, its webhook delivery, in
        one transaction: a delivery exists exactly when the job ended."""
        with self._transaction() as run:
            rows = run(self._sql[name], {**self._moves[event], **params})
            job = self._codec.job(rows[0]) if rows else None
            hook = event_for(job) if job is not None else None
            if hook is not None:  # the row gives the url; every terminal transition has a now
                values = {"delivery_id": str(uuid.uuid4()), "event": hook.value}
                run(
                    self._sql["enqueue_delivery"],
                    {**values, "id": params["id"], "now": params["now"]},
                )
            return job

    def _rows(self, statement: str, params: Mapping[str, Any]) -> Rows:
        with self._session() as run:
            return run(statement, params)

    def _one(self, name: str, params: Mapping[str, Any]) -> Job | None:
        rows = self._rows(self._sql[name], params)
        return self._codec.job(rows[0]) if rows else None

    def _many(self, statement: str, params: Mapping[str, Any]) -> list[Job]:
        return [self._codec.job(row) for row in self._rows(statement, params)]

    def _transition(self, event: Event, name: str, **params: Any) -> Job | None:
        return self._one(name, {**self._moves[event], **params})

    def _at(self, value: dt.datetime | None) -> Any:
        return self._dialect.instant(value)

    # port

    def add(self, job: Job, max_unfinished: int | None = None) -> tuple[Job, bool]:
        row = self._codec.row(job)
        if max_unfinished is not None:
            return self._add_within(row, max_unfinished)
        with self._session() as run:
            # The insert waits for a concurrent one with the same key to commit or roll back,
            # and then does nothing (or inserts); the select that follows runs on a fresh
            # snapshot and sees the winner. The loop covers a winner deleted in between.
            for _ in range(3):
                inserted = run(self._sql["insert_job"], row)
                if inserted:
                    return self._codec.job(inserted[0]), True
                existing = run(self._sql["select_by_key"], row)
                if existing:
                    return self._codec.job(existing[0]), False
        raise ServiceUnavailable("job could not be stored: its idempotency key kept changing")

    def _add_within(self, row: Mapping[str, Any], max_unfinished: int) -> tuple[Job, bool]:
        # under the tenant's lock nothing of this tenant is added meanwhile: the count and the
        # key stay true until the insert commits
        with self._transaction() as run:
            run(self._sql["tenant_lock"], row)
            [count] = run(self._sql["count_unfinished"], row)
            full = count["unfinished"] >= max_unfinished
            inserted = [] if full else run(self._sql["insert_job"], row)
            if inserted:
                return self._codec.job(inserted[0]), True
            existing = run(self._sql["select_by_key"], row) if row["idempotency_key"] else []
            if existing:  # a replay answers its job, also at the cap
                return self._codec.job(existing[0]), False
        if full:
            raise TooManyJobs.at(max_unfinished)
        raise ServiceUnavailable("job could not be stored: its idempotency key kept changing")

    def by_key(self, tenant_id: str, idempotency_key: str) -> Job | None:
        return self._one(
            "select_by_key", {"tenant_id": tenant_id, "idempotency_key": idempotency_key}
        )

    def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        if tenant_id is None:
            return self._one("select_job", {"id": job_id})
        return self._one("select_tenant_job", {"id": job_id, "tenant_id": tenant_id})

    def find(self, tenant_id: str, query: ListQuery) -> list[Job]:
        return self._many(*self._sql.find(tenant_id, query))

    def mark_enqueued(self, job_id: str, at: dt.datetime) -> None:
        self._rows(self._sql["mark_enqueued"], {"id": job_id, "at": self._at(at)})

    def claim(
        self, job_id: str, owner: str, now: dt.datetime, lease_until: dt.datetime
    ) -> Job | None:
        return self._transition(
            Event.CLAIM,
            "claim_job",
            id=job_id,
            owner=owner,
            now=self._at(now),
            lease_until=self._at(lease_until),
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
            "heartbeat_job",
            {
                "id": job_id,
                "owner": owner,
                "now": self._at(now),
                "lease_until": self._at(lease_until),
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
        return self._ending(
            Event.SUCCEED,
            "succeed_job",
            id=job_id,
            owner=owner,
            now=self._at(now),
            file_path=file.location,
            size_bytes=file.size_bytes,
            sha256=file.sha256,
            row_count=file.rows,
            expires_at=self._at(expires_at),
            file_names=self._file_names,
            mime_types=self._mime_types,
        )

    def fail(
        self,
        job_id: str,
        owner: str | None,
        now: dt.datetime,
        code: str,
        message: str,
        *,
        lapsed: bool = False,
    ) -> Job | None:
        return self._ending(
            Event.FAIL,
            "fail_job",
            id=job_id,
            owner=owner,
            now=self._at(now),
            code=code,
            message=message,
            any_lease=not lapsed,
        )

    def retry(
        self, job_id: str, owner: str | None, now: dt.datetime, *, lapsed: bool = False
    ) -> Job | None:
        return self._transition(
            Event.RETRY,
            "retry_job",
            id=job_id,
            owner=owner,
            now=self._at(now),
            any_lease=not lapsed,
        )

    def cancel(self, job_id: str, tenant_id: str, now: dt.datetime) -> Job | None:
        return self._ending(
            Event.CANCEL, "cancel_job", id=job_id, tenant_id=tenant_id, now=self._at(now)
        )

    def next_in_turn(self) -> Job | None:
        return self._one("next_in_turn", {})

    def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
        params = {"now": self._at(now), "legacy_before": self._at(legacy_before), "limit": limit}
        return self._many(self._sql["stale_jobs"], params)

    def unpublished(self, before: dt.datetime, limit: int) -> list[Job]:
        params = {"before": self._at(before), "limit": limit}
        return self._many(self._sql["unpublished_jobs"], params)

    def expired_files(
        self, now: dt.datetime, limit: int, after: tuple[dt.datetime, str] | None = None
    ) -> list[Job]:
        at, job_id = after or (_BEFORE_ANY, "")
        params = {
            "now": self._at(now),
            "limit": limit,
            "after_at": self._at(at),
            "after_id": job_id,
        }
        return self._many(self._sql["expired_files"], params)

    def mark_file_deleted(self, job_id: str, at: dt.datetime) -> None:
        self._rows(self._sql["mark_file_deleted"], {"id": job_id, "at": self._at(at)})

    def leftovers(self, now: dt.datetime, limit: int) -> list[Job]:
        return self._many(self._sql["leftovers"], {"now": self._at(now), "limit": limit})

    def mark_leftovers(self, job_id: str, seen: dt.datetime, retry_at: dt.datetime | None) -> None:
        params = {"id": job_id, "seen": self._at(seen), "retry_at": self._at(retry_at)}
        self._rows(self._sql["mark_leftovers"], params)

    def ping(self) -> None:
        self._rows(self._sql["ping"], {})
