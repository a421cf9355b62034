"""What the dead attempts of an ended job left behind: a killed worker's temporary, a file
committed but never recorded, an S3 upload left open. Retention looks only at files kept, so
whatever ends a job that had such an attempt (a cancel, a failure, ``WORKER_LOST``) discards
them; a store that refuses (a permission, a lock, an outage) is asked again by the recovery
passes (:meth:`JobRepository.leftovers`) until it lets go.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from .errors import ServiceUnavailable, StorageFailure
from .jobs import Job, stored_extension
from .ports import FileStore, JobRepository


def discard_leftovers(store: FileStore, job: Job) -> bool:
    """Whether ``store`` removed what exports of ``job`` left (never raises: best effort)."""
    try:
        store.discard(job.tenant_id, job.id, stored_extension(job.format, job.compression))
    except (StorageFailure, OSError):
        return False
    return True


def discard_ended(store: FileStore, jobs: JobRepository, ended: Job) -> bool:
    """:func:`discard_leftovers` of a job just ended (cancelled or failed) and, done, recorded,
    so that the recovery pass that would list it (its ``lease_expires_at``) does not discard
    again; a record the database refuses leaves that to the pass (never raises)."""
    if not discard_leftovers(store, ended):
        return False
    if ended.lease_expires_at is not None:
        # refused: the next pass discards once more (nothing is left: harmless)
        with contextlib.suppress(ServiceUnavailable):
            jobs.mark_leftovers(ended.id, ended.lease_expires_at, None)
    return True


def discard_left_behind(
    jobs: JobRepository, store: FileStore, now: dt.datetime, limit: int, kept: list[str]
) -> list[str]:
    """Discard what the attempts of cancelled and failed jobs left (:meth:`JobRepository.
    leftovers`), once no worker can still be writing: a live worker aborts its own file when
    it sees the cancel (within a heartbeat), but a dead one (SIGKILL, OOM, a lost node) looks
    alive until its lease ends; a failure's own discard of its dead attempts' files is tried
    once, and nothing else looks at an ended job again. The ids discarded; those the store
    refused go to ``kept`` and to the back of the line, so that they never fill every
    batch."""
    discarded: list[str] = []
    for job in jobs.leftovers(now, limit):
        if job.lease_expires_at is None:  # listed by its lease's end: never
            continue
        if discard_leftovers(store, job):
            jobs.mark_leftovers(job.id, job.lease_expires_at, None)
            discarded.append(job.id)
        else:
            jobs.mark_leftovers(job.id, job.lease_expires_at, now)
            kept.append(job.id)
    return discarded
