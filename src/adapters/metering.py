"""Counting what the core does, from outside it: the job repository and the queue wrapped so
that every state change they store is counted, and the worker's export outcomes recorded.

The core stays pure (it never imports prometheus): the wrappers are adapters of the same
ports, put in front of the real ones by the composition root (``entrypoints.containers``). A job is
counted where its change is stored, so a create is counted once by the API that stored it, a
finish once by the process that finished it (the worker; the API for a cancel; recovery for a
job whose workers kept dying), whatever entrypoint asked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from adapters import metrics
from reportcore.errors import QueueUnavailable
from reportcore.jobs import Job, JobMessage
from reportcore.ports import JobQueue, JobRepository, StoredFile
from reportcore.requests import ListQuery
from reportcore.running import LeaseKeeper, RunOutcome


def job_labels(job: Job) -> tuple[str, str]:
    """The (type, format) labels of ``job``, bounded to the core's closed sets."""
    return (
        metrics.bounded(job.job_type, metrics.JOB_TYPES),
        metrics.bounded(job.format, metrics.FORMATS),
    )


def count_finished(job: Job) -> None:
    """Count ``job``, now in a terminal status."""
    metrics.JOBS_FINISHED.labels(
        metrics.bounded(job.job_type, metrics.JOB_TYPES),
        metrics.bounded(job.status, metrics.STATUSES),
        metrics.error_code_label(job.error_code),
    ).inc()


class MeteredJobRepository:
    """A :class:`~reportcore.ports.JobRepository` that counts creates and finishes."""

    def __init__(self, inner: JobRepository) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # close() and the adapters' own extras
        return getattr(self.inner, name)

    def add(self, job: Job, max_unfinished: int | None = None) -> tuple[Job, bool]:
        stored, created = self.inner.add(job, max_unfinished)
        if created:
            metrics.JOBS_CREATED.labels(*job_labels(stored)).inc()
        return stored, created

    def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        return self.inner.get(job_id, tenant_id)

    def by_key(self, tenant_id: str, idempotency_key: str) -> Job | None:
        return self.inner.by_key(tenant_id, idempotency_key)

    def find(self, tenant_id: str, query: ListQuery) -> list[Job]:
        return self.inner.find(tenant_id, query)

    def mark_enqueued(self, job_id: str, at: dt.datetime) -> None:
        self.inner.mark_enqueued(job_id, at)

    def claim(
        self, job_id: str, owner: str, now: dt.datetime, lease_until: dt.datetime
    ) -> Job | None:
        return self.inner.claim(job_id, owner, now, lease_until)

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        lease_until: dt.datetime,
        progress_pct: int | None,
    ) -> Job | None:
        return self.inner.heartbeat(job_id, owner, now, lease_until, progress_pct)

    def succeed(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        file: StoredFile,
        expires_at: dt.datetime | None,
    ) -> Job | None:
        done = self.inner.succeed(job_id, owner, now, file, expires_at)
        if done is not None:
            count_finished(done)
        return done

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
        failed = self.inner.fail(job_id, owner, now, code, message, lapsed=lapsed)
        if failed is not None:
            count_finished(failed)
        return failed

    def retry(
        self, job_id: str, owner: str | None, now: dt.datetime, *, lapsed: bool = False
    ) -> Job | None:
        return self.inner.retry(job_id, owner, now, lapsed=lapsed)

    def cancel(self, job_id: str, tenant_id: str, now: dt.datetime) -> Job | None:
        cancelled = self.inner.cancel(job_id, tenant_id, now)
        if cancelled is not None:
            count_finished(cancelled)
        return cancelled

    def next_in_turn(self) -> Job | None:
        return self.inner.next_in_turn()

    def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
        return self.inner.stale(now, legacy_before, limit)

    def unpublished(self, before: dt.datetime, limit: int) -> list[Job]:
        return self.inner.unpublished(before, limit)

    def expired_files(
        self, now: dt.datetime, limit: int, after: tuple[dt.datetime, str] | None = None
    ) -> list[Job]:
        return self.inner.expired_files(now, limit, after)

    def mark_file_deleted(self, job_id: str, at: dt.datetime) -> None:
        self.inner.mark_file_deleted(job_id, at)

    def leftovers(self, now: dt.datetime, limit: int) -> list[Job]:
        return self.inner.leftovers(now, limit)

    def mark_leftovers(self, job_id: str, seen: dt.datetime, retry_at: dt.datetime | None) -> None:
        self.inner.mark_leftovers(job_id, seen, retry_at)

    def ping(self) -> None:
        self.inner.ping()


class MeteredJobQueue:
    """A :class:`~reportcore.ports.JobQueue` that counts the publishes the broker refused."""

    def __init__(self, inner: JobQueue) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # close() and the adapters' own extras
        return getattr(self.inner, name)

    def publish(self, message: JobMessage) -> None:
        try:
            self.inner.publish(message)
        except QueueUnavailable:
            metrics.PUBLISH_FAILURES.inc()
            raise

    def ping(self) -> None:
        self.inner.ping()


def running_gauge(keeper: LeaseKeeper) -> LeaseKeeper:
    """``keeper``, also counting the job in ``reportsvc_jobs_running`` while it runs: the
    lease keeper is held exactly while a claimed job exports."""

    @contextlib.contextmanager
    def keeping(renew: Callable[[], bool]) -> Iterator[object]:
        metrics.JOBS_RUNNING.inc()
        try:
            with keeper(renew) as kept:
                yield kept
        finally:
            metrics.JOBS_RUNNING.dec()

    return keeping


def record_export(outcome: RunOutcome, seconds: float) -> None:
    """The duration, rows and bytes of a succeeded export (other outcomes record nothing)."""
    job = outcome.job
    if job is None or outcome.rows is None:
        return
    labels = job_labels(job)
    metrics.EXPORT_DURATION.labels(*labels).observe(seconds)
    metrics.EXPORT_ROWS.labels(*labels).inc(outcome.rows)
    metrics.EXPORT_BYTES.labels(*labels).inc(job.size_bytes or 0)
