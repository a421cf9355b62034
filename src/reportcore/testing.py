"""In-memory adapters of every port of :mod:`reportcore.ports`, and a clock to pin time.

Real, maintained implementations (the way procrastinate ships ``InMemoryConnector``), kept to
the same contract suites as the service's PostgreSQL, RabbitMQ and filesystem adapters, so a
consumer of the library can run its tests on them. Standard library and msgspec only, typed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import queue as stdqueue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from . import fairness, lifecycle
from .errors import QueueUnavailable, ServiceUnavailable
from .jobs import Job, JobMessage, JobStatus, file_name_for, mime_type_for
from .jobtypes import JOB_TYPES, JobTypeRegistry
from .lifecycle import Event
from .memory_files import InMemoryFileStore
from .memory_schedules import InMemoryScheduleRepository
from .outbox import InMemoryOutbox, RecordingWebhookSender
from .ports import Disposition, SourcePage, SourceRequest, StoredFile
from .requests import ListQuery

__all__ = [
    "FakeClock",
    "InMemoryFileStore",
    "InMemoryJobRepository",
    "InMemoryOutbox",
    "InMemoryQueue",
    "InMemoryScheduleRepository",
    "RecordingWebhookSender",
    "SequentialIds",
    "StaticRecordSource",
]


class SequentialIds:
    """A :class:`reportcore.ports.IdSource` that names things in order: the UUIDs of 1, 2, 3...
    (thread-safe). A run replayed with a fresh one gets the same ids again, which random ids
    would not give (hypothesis replays a failing case and must meet the same jobs)."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=next(self._numbers)))


def _utc(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC, as a clock tells it; a naive instant names no moment: refused."""
    if when.utcoffset() is None:
        raise ValueError(f"a clock's instant is aware: {when!r} has no zone")
    return when.astimezone(dt.UTC)


class FakeClock:
    """A :class:`reportcore.ports.Clock` that moves only when told to (thread-safe); an
    instant it is given in another zone is told in UTC, as every clock tells it."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = _utc(start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """The time it was set or advanced to."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> dt.datetime:
        """Move on by ``seconds``; returns the new time."""
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            return self._now

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when``."""
        when = _utc(when)
        with self._lock:
            self._now = when


def _copy(job: Job) -> Job:
    return msgspec.structs.replace(job, filters=dict(job.filters))


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
        **fields: Any,
    ) -> Job | None:
        """Apply ``fields`` (and ``event``'s transition) if the job may take it."""
        with self._lock:
            self._check()
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if event is not None and not lifecycle.can(job.status, event):
                return None
            if owner is not ... and job.lease_owner != owner:
                return None
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
        self, job_id: str, owner: str | None, now: dt.datetime, code: str, message: str
    ) -> Job | None:
        return self._changed(
            self._change(
                job_id,
                Event.FAIL,
                now,
                owner=owner,
                error_code=code,
                error_message=message,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )

    def retry(self, job_id: str, owner: str | None, now: dt.datetime) -> Job | None:
        return self._changed(
            self._change(
                job_id,
                Event.RETRY,
                now,
                owner=owner,
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
            return self._changed(
                self._change(
                    job_id,
                    Event.CANCEL,
                    now,
                    finished_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )

    def next_in_turn(self) -> Job | None:
        with self._lock:
            self._check()
            return fairness.next_in_turn([_copy(job) for job in self._jobs.values()])

    def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
        with self._lock:
            self._check()
            rows = [
                j
                for j in self._jobs.values()
                if j.status is JobStatus.RUNNING
                and (
                    (j.lease_expires_at is not None and j.lease_expires_at < now)
                    or (j.lease_expires_at is None and j.updated_at < legacy_before)
                )
            ]
        rows.sort(key=lambda j: j.updated_at)
        return [_copy(j) for j in rows[:limit]]

    def unpublished(self, before: dt.datetime, limit: int) -> list[Job]:
        with self._lock:
            self._check()
            rows = [
                j
                for j in self._jobs.values()
                if j.status is JobStatus.QUEUED and j.enqueued_at is None and j.updated_at < before
            ]
        rows.sort(key=lambda j: j.created_at)
        return [_copy(j) for j in rows[:limit]]

    def expired_files(
        self, now: dt.datetime, limit: int, after: tuple[dt.datetime, str] | None = None
    ) -> list[Job]:
        with self._lock:
            self._check()
            rows = [
                (j.expires_at, j.id, j)
                for j in self._jobs.values()
                if j.status is JobStatus.SUCCEEDED
                and j.expires_at is not None
                and j.expires_at <= now
                and j.file_deleted_at is None
                and (after is None or (j.expires_at, j.id) > after)
            ]
        rows.sort(key=lambda row: (row[0], row[1]))
        return [_copy(j) for _, _, j in rows[:limit]]

    def mark_file_deleted(self, job_id: str, at: dt.datetime) -> None:
        with self._lock:
            self._check()
            job = self._jobs.get(job_id)
            if job is not None and job.file_deleted_at is None:
                self._jobs[job_id] = msgspec.structs.replace(job, file_deleted_at=at)
                self._after(self._jobs[job_id])

    def ping(self) -> None:
        self._check()


class InMemoryQueue:
    """A job queue in process: publish is the broker's confirm; ``run`` consumes.

    Dead-lettered messages are kept in ``dead_letters`` for inspection.
    """

    def __init__(self) -> None:
        self._queue: stdqueue.Queue[bytes] = stdqueue.Queue()
        self.dead_letters: list[bytes] = []
        self.available = True

    def publish(self, message: JobMessage) -> None:
        if not self.available:
            raise QueueUnavailable("queue is not available")
        self._queue.put(msgspec.json.encode(message))

    def publish_raw(self, body: bytes) -> None:
        """Put any bytes on the queue (as an old or broken publisher might)."""
        self._queue.put(body)

    def ping(self) -> None:
        if not self.available:
            raise ServiceUnavailable("queue is not available")

    def pending(self) -> int:
        return self._queue.qsize()

    def take(self) -> bytes | None:
        """The next message, if any, without a consumer (for tests driving a worker by hand)."""
        try:
            return self._queue.get_nowait()
        except stdqueue.Empty:
            return None

    def settle(self, body: bytes, disposition: Disposition) -> None:
        """What a consumer does with a handled message."""
        if disposition is Disposition.DEAD_LETTER:
            self.dead_letters.append(body)
        elif disposition is Disposition.REQUEUE:
            self._queue.put(body)

    def run(
        self,
        handle: Callable[[bytes], Disposition],
        concurrency: int,
        stop: Callable[[], bool],
    ) -> None:
        """Deliver messages to ``handle`` on ``concurrency`` threads until ``stop()``."""
        slots = threading.Semaphore(concurrency)

        def work(body: bytes) -> None:
            try:
                self.settle(body, handle(body))
            except Exception:
                self._queue.put(body)  # the handler crashed: redeliver, as a broker would
                raise
            finally:
                slots.release()

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="job") as pool:
            while not stop():
                if not slots.acquire(timeout=0.2):
                    continue
                try:
                    body = self._queue.get(timeout=0.2)
                except stdqueue.Empty:
                    slots.release()
                    continue
                pool.submit(work, body)


class StaticRecordSource:
    """Records held in memory, served in pages: for tests and the library examples.

    ``records`` maps a job type to its upstream records as JSON-ready dicts (camelCase), in
    upstream order; they are encoded and decoded exactly as a real source would, into the
    record type ``job_types`` (a consumer's own registry, say) gives for the job type.
    """

    def __init__(
        self,
        records: Mapping[str, Sequence[Mapping[str, Any]]],
        page_size: int = 100,
        fail_with: Exception | None = None,
        *,
        job_types: JobTypeRegistry = JOB_TYPES,
    ) -> None:
        self._records = records
        self._job_types = job_types
        self._page_size = page_size
        self.fail_with = fail_with
        self.requests: list[SourceRequest] = []

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        self.requests.append(request)
        spec = self._job_types[request.job_type]
        items = list(self._records.get(str(request.job_type), ()))
        for start in range(0, max(len(items), 1), self._page_size):
            if self.fail_with is not None:
                raise self.fail_with
            chunk = items[start : start + self._page_size]
            body = msgspec.json.encode(chunk)
            raws = msgspec.json.decode(body, type=list[msgspec.Raw]) if request.raw else None
            record_list: Any = list[spec.record_type]  # type: ignore[name-defined]
            typed = msgspec.json.decode(body, type=record_list) if request.typed else None
            yield SourcePage(records=typed, raw=raws)
