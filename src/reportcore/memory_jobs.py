"""The in-memory job repository of :mod:`reportcore.testing` (which re-exports it): jobs in a
dict, each change one atomic conditional write, kept to the job repository contract suite of
tests/integration as the SQL repositories are."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from . import fairness, lifecycle
from .errors import ServiceUnavailable
from .jobs import Job, JobStatus, file_name_for, mime_type_for
from .lifecycle import Event
from .outbox import InMemoryOutbox
from .ports import StoredFile
from .requests import ListQuery


def _copy(job: Job) -> Job:
    return msgspec.structs.replace(job, filters=dict(job.filters))


_LEFT_BEHIND = frozenset((JobStatus.CANCELLED, JobStatus.FAILED))
"""The ended jobs whose dead attempts may have left files (:meth:`leftovers`)."""


class InMemoryJobRepository:
    """Jobs in a dict, guarded by a lock; each method is one atomic conditional change."""

    def __init__(self, outbox: InMemoryOutbox | None = None) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()
        self.available = True
        self.outbox = outbox or InMemoryOutbox()  # where ended jobs' webhooks go

    # helpers
    def _check(self) -> None:
        if not self.available:
            raise ServiceUnavailable("job store is not available")

    def _change(
        self,
        job_id: str,
        event: Event | None,
        now: dt.datetime,
        owner: object = ...,
        lapsed: bool = False,
        **fields: Any,
    ) -> Job | None:
        """Apply ``fields`` (and ``event``'s transition) if the job may take it (with
        ``lapsed``, only while its lease has run out by ``now``)."""
        with self._lock:
            self._check()
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if event is not None and not lifecycle.can(job.status, event):
                return None
            if owner is not ... and job.lease_owner != owner:
                return None
            if lapsed and job.lease_expires_at is not None and job.lease_expires_at >= now:
                return None  # renewed since recovery read it: its worker is alive
            if event is not None:
                fields["status"] = lifecycle.apply(job.status, event)
            new = msgspec.structs.replace(job, updated_at=now, **fields)
            self._jobs[job_id] = new
            return _copy(new)

    def _after(self, job: Job) -> None:
        """Hook for subclasses that persist (the embedded SQLite store)."""

    # port
    def add(self, job: Job, max_unfinished: int | None = None) -> tuple[Job, bool]:
        with self._lock:
            self._check()
            if job.idempotency_key is not None:
                other = self._keyed(job.tenant_id, job.idempotency_key)
                if other is not None:
                    return _copy(other), False
            fairness.check_cap(self._jobs.values(), job, max_unfinished)
            self._jobs[job.id] = _copy(job)
            self._after(job)
            return _copy(job), True

    def _keyed(self, tenant_id: str, idempotency_key: str) -> Job | None:
        """The tenant's job with the key (under the lock)."""
        for job in self._jobs.values():
            if job.tenant_id == tenant_id and job.idempotency_key == idempotency_key:
                return job
        return None

    def by_key(self, tenant_id: str, idempotency_key: str) -> Job | None:
        with self._lock:
            self._check()
            job = self._keyed(tenant_id, idempotency_key)
            return None if job is None else _copy(job)

    def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        with self._lock:
            self._check()
            job = self._jobs.get(job_id)
            if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
                return None
            return _copy(job)

    def find(self, tenant_id: str, query: ListQuery) -> list[Job]:
        with self._lock:
            self._check()
            rows = [j for j in self._jobs.values() if j.tenant_id == tenant_id]
        if query.status is not None:
            rows = [j for j in rows if j.status is query.status]
        if query.job_type is not None:
            rows = [j for j in rows if j.job_type == query.job_type]
        if query.created_from is not None:
            rows = [j for j in rows if j.created_at >= query.created_from]
        if query.created_to is not None:
            rows = [j for j in rows if j.created_at <= query.created_to]
        if query.schedule_id is not None:
            rows = [j for j in rows if j.schedule_id == query.schedule_id]
        if query.after is not None:
            key = (query.after.created_at, query.after.id)
            rows = [j for j in rows if (j.created_at, j.id) < key]
        rows.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return [_copy(j) for j in rows[: query.limit]]

    def mark_enqueued(self, job_id: str, at: dt.datetime) -> None:
        with self._lock:
            self._check()
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs[job_id] = msgspec.structs.replace(job, enqueued_at=at)
                self._after(self._jobs[job_id])

    def _changed(self, job: Job | None) -> Job | None:
        if job is not None:
            self.outbox.enqueue(job, job.updated_at)  # a no-op unless it ended with a notify_url
            self._after(job)
        return job

    def claim(
        self, job_id: str, owner: str, now: dt.datetime, lease_until: dt.datetime
    ) -> Job | None:
        with self._lock:
            current = self._jobs.get(job_id)
            started = current.started_at if current and current.started_at else now
            attempts = (current.attempts if current else 0) + 1
            return self._changed(
                self._change(
                    job_id,
                    Event.CLAIM,
                    now,
                    lease_owner=owner,
                    lease_expires_at=lease_until,
                    started_at=started,
                    attempts=attempts,
                    error_code=None,
                    error_message=None,
                )
            )

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        lease_until: dt.datetime,
        progress_pct: int | None,
    ) -> Job | None:
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None or current.status is not JobStatus.RUNNING:
                return None
            lease = current.lease_expires_at
            if lease is None or lease < now:  # ran out: lost, whoever held it
                return None
            pct = current.progress_pct
            if progress_pct is not None:
                pct = max(pct, min(99, progress_pct))
            return self._changed(
                self._change(
                    job_id, None, now, owner=owner, lease_expires_at=lease_until, progress_pct=pct
                )
            )

    def succeed(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        file: StoredFile,
        expires_at: dt.datetime | None,
    ) -> Job | None:
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None:
                return None
            return self._changed(
                self._change(
                    job_id,
                    Event.SUCCEED,
                    now,
                    owner=owner,
                    progress_pct=100,
                    file_path=file.location,
                    file_name=file_name_for(current.job_type, current.format, current.compression),
                    mime_type=mime_type_for(current.format, current.compression),
                    row_count=file.rows,
                    size_bytes=file.size_bytes,
                    sha256=file.sha256,
                    expires_at=expires_at,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
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
        with self._lock:  # re-entrant: _change takes it too
            current = self._jobs.get(job_id)
            # dead attempts (an earlier one, or recovery's WORKER_LOST): listed in leftovers
            died = current is not None and (current.attempts > 1 or lapsed)
            return self._changed(
                self._change(
                    job_id,
                    Event.FAIL,
                    now,
                    owner=owner,
                    lapsed=lapsed,
                    error_code=code,
                    error_message=message,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=now if died else None,
                )
            )

    def retry(
        self, job_id: str, owner: str | None, now: dt.datetime, *, lapsed: bool = False
    ) -> Job | None:
        return self._changed(
            self._change(
                job_id,
                Event.RETRY,
                now,
                owner=owner,
                lapsed=lapsed,
                lease_owner=None,
                lease_expires_at=None,
                enqueued_at=None,
            )
        )

    def cancel(self, job_id: str, tenant_id: str, now: dt.datetime) -> Job | None:
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None or current.tenant_id != tenant_id:
                return None
            # a running job keeps its lease's end: its leftovers are discarded once it is past;
            # a queued one that ran before has its dead attempt's listed from now on
            lease = (
                current.lease_expires_at
                if current.status is JobStatus.RUNNING
                else now
                if current.attempts > 0
                else None
            )
            return self._changed(
                self._change(
                    job_id,
                    Event.CANCEL,
                    now,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=lease,
                )
            )

    def next_in_turn(self) -> Job | None:
        with self._lock:
            self._check()
            return fairness.next_in_turn([_copy(job) for job in self._jobs.values()])

    def _listed(
        self, keep: Callable[[Job], bool], order: Callable[[Job], Any], limit: int
    ) -> list[Job]:
        """Copies of the first ``limit`` jobs ``keep`` takes, by ``order`` (a recovery list)."""
        with self._lock:
            self._check()
            rows = [j for j in self._jobs.values() if keep(j)]
        rows.sort(key=order)
        return [_copy(j) for j in rows[:limit]]

    def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
        return self._listed(
            lambda j: (
                j.status is JobStatus.RUNNING
                and (
                    (j.lease_expires_at is not None and j.lease_expires_at < now)
                    or (j.lease_expires_at is None and j.updated_at < legacy_before)
                )
            ),
            lambda j: j.updated_at,
            limit,
        )

    def unpublished(self, before: dt.datetime, limit: int) -> list[Job]:
        return self._listed(
            lambda j: (
                j.status is JobStatus.QUEUED and j.enqueued_at is None and j.updated_at < before
            ),
            lambda j: j.created_at,
            limit,
        )

    def expired_files(
        self, now: dt.datetime, limit: int, after: tuple[dt.datetime, str] | None = None
    ) -> list[Job]:
        return self._listed(
            lambda j: (
                j.status is JobStatus.SUCCEEDED
                and j.expires_at is not None
                and j.expires_at <= now
                and j.file_deleted_at is None
                and (after is None or (j.expires_at, j.id) > after)
            ),
            lambda j: (j.expires_at, j.id),
            limit,
        )

    def mark_file_deleted(self, job_id: str, at: dt.datetime) -> None:
        with self._lock:
            self._check()
            job = self._jobs.get(job_id)
            if job is not None and job.file_deleted_at is None:
                self._jobs[job_id] = msgspec.structs.replace(job, file_deleted_at=at)
                self._after(self._jobs[job_id])

    def leftovers(self, now: dt.datetime, limit: int) -> list[Job]:
        return self._listed(
            lambda j: (
                j.status in _LEFT_BEHIND
                and j.lease_expires_at is not None
                and j.lease_expires_at < now
            ),
            lambda j: (j.lease_expires_at, j.id),
            limit,
        )

    def mark_leftovers(self, job_id: str, seen: dt.datetime, retry_at: dt.datetime | None) -> None:
        with self._lock:
            self._check()
            job = self._jobs.get(job_id)
            if job is not None and job.status in _LEFT_BEHIND and job.lease_expires_at == seen:
                self._jobs[job_id] = msgspec.structs.replace(job, lease_expires_at=retry_at)
                self._after(self._jobs[job_id])

    def ping(self) -> None:
        self._check()
