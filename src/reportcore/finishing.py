"""Recording how a worker's export ended (``succeed``, ``fail``) through a short outage of the
job store.

The work is done when that write is made: the file committed, or the failure known. A database
that failed the one write used to throw the work away: the error handed the message back, its
next delivery found the job still ``running`` and acked it, and the job sat until its lease ran
out; recovery then ran the whole export again (hours for a big one), or failed it
``WORKER_LOST`` after the last attempt and discarded the finished file. The write is now tried
again, backing off, for as long as the lease the worker last renewed runs: nobody else can hold
the job meanwhile, and recovery takes it back only once that lease has run out. Past it, the
outage propagates as before (the message goes back, recovery retries the job).

Trying again is safe: each write is conditional on the worker holding the job, so when a try
that raised had landed after all (the connection dropped after the commit), the next one finds
the job finished and answers ``None``; the job is then read back (:func:`record_end`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TypeVar

from .errors import ServiceUnavailable, StorageFailure
from .jobs import Job, JobStatus
from .ports import Clock, FileStore, JobRepository

FIRST_PAUSE_SEC = 0.5
"""The wait before the second try; each next wait is twice the last, up to :data:`MAX_PAUSE_SEC`."""
MAX_PAUSE_SEC = 5.0

T = TypeVar("T")


def through_outage(
    write: Callable[[], T],
    *,
    clock: Clock,
    until: dt.datetime,
    pause: Callable[[float], object],
) -> tuple[T, bool]:
    """``write()``'s answer, tried again while it raises :class:`ServiceUnavailable` and time is
    left before ``until`` (the end of the lease the worker holds), and whether a try raised
    before it (a ``None`` may then be that try's write, landed). Past ``until`` the last outage
    is raised. ``pause(seconds)`` waits between tries; the time left is both the clock's and
    the pauses' own count of it, so a clock that stands still (a test's) still ends the tries."""
    wait = FIRST_PAUSE_SEC
    budget = (until - clock.now()).total_seconds()
    retried = False
    while True:
        try:
            return write(), retried
        except ServiceUnavailable:
            left = min(budget, (until - clock.now()).total_seconds())
            if left <= 0:
                raise
            wait = min(wait, left)  # the last try at the lease's end, not after it
            pause(wait)
            budget -= wait
            retried = True
            wait = min(wait * 2, MAX_PAUSE_SEC)


def record_end(
    write: Callable[[], Job | None],
    jobs: JobRepository,
    job_id: str,
    *,
    clock: Clock,
    until: dt.datetime,
    pause: Callable[[float], object],
    ended: JobStatus,
    written: Mapping[str, object],
) -> Job | None:
    """The job as ``write`` (its ``succeed`` or ``fail``) ended it, tried again through an
    outage until ``until`` (:func:`through_outage`); ``None`` when the write was refused. When
    a try raised and a later one was refused, the job is read back: ended ``ended`` with the
    ``written`` fields, the try that raised landed and the job is as it wrote it."""
    done, retried = through_outage(write, clock=clock, until=until, pause=pause)
    if done is not None or not retried:
        return done
    latest, _ = through_outage(lambda: jobs.get(job_id), clock=clock, until=until, pause=pause)
    return latest if landed(latest, ended, written) else None


def landed(latest: Job | None, status: JobStatus, written: Mapping[str, object]) -> bool:
    """Whether ``latest`` (a job read back) is ended ``status`` with the ``written`` fields."""
    return (
        latest is not None
        and latest.status is status
        and all(getattr(latest, name) == value for name, value in written.items())
    )


def refused_finish(
    job_id: str, location: str, jobs: JobRepository, store: FileStore
) -> tuple[Job | None, str]:
    """The job read back after its ``succeed`` was refused (cancelled, or reclaimed, while the
    last bytes were written), having removed the file at ``location`` unless it is another
    attempt's to keep; and what was left where, for the log."""
    latest = jobs.get(job_id)
    if latest is not None and latest.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        # our lease ran out and the job was handed on: its next attempt writes this same
        # location (and may have done so already, not yet recorded), then keeps the file
        # or removes it as its own end says; deleting it here could lose that attempt's
        return latest, f"file at {location} left to the job's next attempt"
    # the file there may be the one of a worker that took the job over and finished it
    if landed(latest, JobStatus.SUCCEEDED, {"file_path": location}):
        return latest, ""
    try:
        store.delete(location)
    except (StorageFailure, OSError) as exc:
        # no retry would help: the message's next delivery finds the job ended (a job
        # cancelled while it ran has its leftovers discarded by a recovery pass once
        # its lease ends, if the store lets it); said in the log with the location
        return latest, f"file left at {location}: the store would not delete it ({exc})"
    return latest, ""
