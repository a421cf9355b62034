"""The worker's use cases: run a job, and recover what a dead worker or broker left behind."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import msgspec

from .deps import Deps
from .errors import (
    ExportCancelled,
    ExportFailure,
    QueueUnavailable,
    ReportError,
    StorageFailure,
    WorkerLost,
)
from .fairness import TenantSlots
from .finishing import record_end, refused_finish
from .jobs import Job, JobStatus, message_for, stored_extension
from .jobtypes import JobTypeSpec
from .leftovers import discard_ended, discard_left_behind, discard_leftovers
from .options import options_of
from .pipeline import ExportProgress, export_records
from .policy import Policy, limit_exceeded
from .ports import (
    Clock,
    Disposition,
    FileStore,
    FileWriter,
    JobQueue,
    JobRepository,
    StoredFile,
)
from .requests import uuid_or_none


def publish(job: Job, jobs: JobRepository, queue: JobQueue, clock: Clock) -> bool:
    """Publish ``job``'s message and record it; ``False`` if the broker did not confirm."""
    try:
        queue.publish(message_for(job))
    except QueueUnavailable:
        return False
    jobs.mark_enqueued(job.id, clock.now())
    return True


LeaseKeeper = Callable[[Callable[[], bool]], AbstractContextManager[object]]
"""Keeps a running job's lease while its export runs: called with ``renew`` (extends the lease;
``False`` once the job is no longer this worker's), it returns a context manager that calls
``renew`` every so often until it exits. The worker passes one that renews from a thread, so
that a page the upstream is slow to give (timeouts, retries, backoff) does not outlive the
lease; without one the lease is renewed only between pages."""


def no_lease_keeper(renew: Callable[[], bool]) -> AbstractContextManager[object]:
    """The lease is renewed between pages only."""
    return contextlib.nullcontext()


class RunOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How handling one message ended, for the consumer and for logs."""

    disposition: Disposition
    job_id: str | None
    status: str  # the job's status afterwards, or why nothing was done
    detail: str = ""
    crash: str = ""  # the traceback of a bug that failed the job, for the worker's log
    # a succeeded export: the job as it was stored and the rows of its file (for metrics)
    job: Job | None = None
    rows: int | None = None


def _never() -> bool:
    return False


def _nothing() -> None:
    return None


class RunContext(msgspec.Struct, frozen=True, kw_only=True):
    """The worker's side of running messages: who runs them, and how a run is stopped, kept
    and shared. ``stopping()`` true hands the job back; ``keep_lease`` renews the lease while
    the export runs; with ``shares``, a job whose tenant holds its share of the worker's slots
    is published again (to the back) and not claimed, so other tenants' jobs run first.
    ``progressed`` is called each time the export writes a page, and from the source's
    threads each time a page arrives (the worker's liveness probe watches it). ``pause``
    waits between tries to record the export's end while the job store is down
    (:mod:`reportcore.finishing`; a test passes its clock's ``advance``)."""

    owner: str
    stopping: Callable[[], bool] = _never
    keep_lease: LeaseKeeper = no_lease_keeper
    shares: TenantSlots | None = None
    progressed: Callable[[], None] = _nothing
    pause: Callable[[float], object] = time.sleep


class _Delivered(msgspec.Struct):
    """What a worker reads of a queue message (:class:`~reportcore.jobs.JobMessage`): its job
    id. The other fields are carried for operators reading the queue; one of an unexpected type
    (``"requested_by": 42`` from another publisher) dead-lettered a job that could run, and
    left it queued with nothing to publish it again."""

    job_id: str


_DELIVERED = msgspec.json.Decoder(_Delivered)


def run_job(body: bytes, deps: Deps, run: RunContext) -> RunOutcome:
    """Handle one queue message: claim the job, stream its export, finish or fail it.

    A message that can never be processed is dead-lettered; one for a job that is finished or
    held by another worker is acknowledged and changes nothing. On shutdown (``run.stopping()``)
    the job is handed back to the queue. No partial file is ever left visible. The job's type is
    looked up in ``deps.job_types`` and its export options are read from the job row, never
    from the message.
    """
    try:
        message = _DELIVERED.decode(body)
    # msgspec's UnicodeDecodeError is bad UTF-8 in a string, its RecursionError JSON nested
    # ~1,000 deep: a message like that never decodes, so it is no outage to retry
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        detail = str(exc) or type(exc).__name__
        return RunOutcome(
            disposition=Disposition.DEAD_LETTER, job_id=None, status="unparsable", detail=detail
        )
    jobs, shares = deps.jobs, run.shares
    job_id = uuid_or_none(message.job_id)
    job = jobs.get(job_id) if job_id else None
    if job is None:
        return RunOutcome(
            disposition=Disposition.DEAD_LETTER, job_id=message.job_id, status="unknown job"
        )
    if job.status is not JobStatus.QUEUED:
        return RunOutcome(disposition=Disposition.ACK, job_id=job.id, status=job.status.value)
    turn = jobs.next_in_turn()
    if turn is not None and turn.tenant_id != job.tenant_id:
        # Another tenant's turn: run its job on this message, and hand the message back for
        # its own job, which waits for its tenant's turn; the other job's own message is
        # acked as a no-op when it comes. (No run: another worker claimed that job first, or
        # its tenant holds its share of this worker; then this message's job runs.)
        with _slot(shares, turn.tenant_id) as held:
            ran = _claim_and_export(turn, deps, run) if held else None
        if ran is not None:
            detail = f"{ran.detail}; {IN_TURN}" if ran.detail else IN_TURN
            return msgspec.structs.replace(ran, disposition=Disposition.REQUEUE, detail=detail)
    with _slot(shares, job.tenant_id) as held:
        if not held:
            return _defer(job, deps.queue)
        return _claim_and_export(job, deps, run) or RunOutcome(
            disposition=Disposition.ACK, job_id=job.id, status="claimed elsewhere"
        )


IN_TURN = "run in its tenant's turn; the message's own job waits for its tenant's"
"""The detail of a :class:`RunOutcome` of a job run on another job's message, for fairness."""


@contextlib.contextmanager
def _slot(shares: TenantSlots | None, tenant_id: str) -> Iterator[bool]:
    """One of the worker's slots for ``tenant_id`` while the block runs; ``False`` when the
    tenant holds its share already (always ``True`` without shares)."""
    if shares is None:
        yield True
    elif not shares.take(tenant_id):
        yield False
    else:
        try:
            yield True
        finally:
            shares.give_back(tenant_id)


def _claim_and_export(job: Job, deps: Deps, run: RunContext) -> RunOutcome | None:
    """Claim ``job`` and run its export; ``None`` if another worker claimed it first."""
    jobs, clock = deps.jobs, deps.clock
    now = clock.now()
    lease = now + dt.timedelta(seconds=deps.policy.lease_sec)
    claimed = jobs.claim(job.id, run.owner, now, lease)
    if claimed is None:
        return None
    spec = deps.job_types.get(claimed.job_type)
    if spec is None:  # a type this worker was not built with: no retry can help
        unknown = ExportFailure(f"job type {claimed.job_type} is not known to this worker")
        return _failed(claimed, unknown, deps, run, claimed.lease_expires_at or lease)
    return _export(claimed, spec, deps, run)


DEFERRED = "deferred"
"""The status of a :class:`RunOutcome` whose job was sent to the back of the queue, unclaimed."""


def _defer(job: Job, queue: JobQueue) -> RunOutcome:
    """Send ``job`` to the back of the queue, unclaimed: its tenant holds its share."""
    try:
        queue.publish(message_for(job))
    except QueueUnavailable:
        # the broker refuses: the message itself goes back and is delivered again
        return RunOutcome(disposition=Disposition.REQUEUE, job_id=job.id, status=DEFERRED)
    return RunOutcome(
        disposition=Disposition.ACK,
        job_id=job.id,
        status=DEFERRED,
        detail="its tenant holds its share of the worker's slots",
    )


class _Shutdown(Exception):
    """The worker is stopping: hand the job back."""


def _export(job: Job, spec: JobTypeSpec, deps: Deps, run: RunContext) -> RunOutcome:
    jobs, store, clock, policy = deps.jobs, deps.store, deps.clock, deps.policy
    owner, stopping = run.owner, run.stopping
    limits = policy.limits
    began = last_beat = clock.now()
    lost = False  # the lease keeper found the job cancelled or reclaimed
    # the end of the lease as last renewed: the end of the export is recorded until then
    held_until = job.lease_expires_at or began + dt.timedelta(seconds=policy.lease_sec)

    def checkpoint() -> None:
        # asked after every page and, by the source, while it waits on its upstream (from its
        # threads): whatever raises here ends the export within seconds, also mid-page
        if stopping():
            raise _Shutdown
        if lost:
            raise ExportCancelled("job was cancelled or reclaimed")
        if (clock.now() - began).total_seconds() > limits.max_sec:
            raise limit_exceeded(limits, "max_sec")

    def renew() -> bool:
        nonlocal lost, held_until
        now = clock.now()
        lease = now + dt.timedelta(seconds=policy.lease_sec)
        if jobs.heartbeat(job.id, owner, now, lease, None) is None:
            lost = True
        else:
            held_until = lease
        return not lost

    def beat(progress: ExportProgress) -> None:
        nonlocal last_beat, held_until
        run.progressed()
        checkpoint()
        now = clock.now()
        if (now - last_beat).total_seconds() >= policy.heartbeat_sec:
            lease = now + dt.timedelta(seconds=policy.lease_sec)
            if jobs.heartbeat(job.id, owner, now, lease, progress.pct) is None:
                raise ExportCancelled("job was cancelled or reclaimed")
            last_beat, held_until = now, lease

    def still_held(progress: ExportProgress) -> None:
        # Keep the file only while still holding the job: a worker whose lease ran out while
        # it wrote the last pages must not put its file where the new holder keeps its own.
        nonlocal held_until
        now = clock.now()
        lease = now + dt.timedelta(seconds=policy.lease_sec)
        if jobs.heartbeat(job.id, owner, now, lease, progress.pct) is None:
            raise ExportCancelled("job was cancelled or reclaimed")
        held_until = lease

    def open_file() -> FileWriter:
        if stopping():  # before anything is fetched or written
            raise _Shutdown
        return store.create(job.tenant_id, job.id, stored_extension(job.format, job.compression))

    # export_records aborts the file on every way out below but success
    try:
        with run.keep_lease(renew):
            exported = export_records(
                spec,
                job.format,
                job.scope,
                tenant_id=job.tenant_id,
                trace_id=job.id,
                source=deps.source,
                open_file=open_file,
                on_progress=beat,
                before_commit=still_held,
                options=options_of(job, spec),
                formats=deps.formats,
                limits=limits,
                checkpoint=checkpoint,
                fetched=run.progressed,
            )
    except _Shutdown:
        jobs.retry(job.id, owner, clock.now())
        return RunOutcome(disposition=Disposition.REQUEUE, job_id=job.id, status="handed back")
    except ExportCancelled:
        latest = jobs.get(job.id)
        status = latest.status.value if latest else "gone"
        if latest is not None and latest.status is JobStatus.CANCELLED and job.attempts > 1:
            # this attempt aborted its own file; one before it that died may have left one.
            # Never when reclaimed: what is under the job's name is then the new holder's
            discard_leftovers(store, job)
        return RunOutcome(disposition=Disposition.ACK, job_id=job.id, status=status)
    except ExportFailure as exc:  # an unwritable export folder fails the job, not the worker
        return _failed(job, exc, deps, run, held_until, store)
    except OSError as exc:
        return _failed(job, _storage_failure(exc), deps, run, held_until, store)
    except ReportError:
        raise  # the job store failed: the worker hands the message back and retries
    except Exception as exc:
        # A bug, not an outage: retrying cannot help, and leaving the job running until its
        # lease ends would hold it (and the worker's patience) for attempts x lease. Fail it
        # now, naming no more than the exception's type; the traceback goes to the log.
        bug = ExportFailure(f"the export failed unexpectedly ({type(exc).__name__})")
        failed = _failed(job, bug, deps, run, held_until, store)
        crash = "".join(traceback.format_exception(exc))
        return msgspec.structs.replace(failed, crash=crash)
    location = exported.location
    now = clock.now()
    expires = now + dt.timedelta(seconds=policy.retention_sec) if policy.retention_sec > 0 else None
    stored = StoredFile(
        location=location,
        size_bytes=exported.size_bytes,
        sha256=exported.sha256,
        rows=exported.rows,
    )
    # a database outage here would cost the whole export: tried again while the lease runs
    done = record_end(
        lambda: jobs.succeed(job.id, owner, now, stored, expires),
        jobs,
        job.id,
        clock=clock,
        until=held_until,
        pause=run.pause,
        ended=JobStatus.SUCCEEDED,
        written={"file_path": location, "sha256": stored.sha256},
    )
    if done is None:  # cancelled (or reclaimed) while the last bytes were written
        latest, left = refused_finish(job.id, location, jobs, store)
        status = latest.status.value if latest else "gone"
        return RunOutcome(disposition=Disposition.ACK, job_id=job.id, status=status, detail=left)
    return RunOutcome(
        disposition=Disposition.ACK,
        job_id=job.id,
        status=done.status.value,
        detail=f"{exported.rows} rows, {exported.size_bytes} bytes",
        job=done,
        rows=exported.rows,
    )


def _storage_failure(exc: OSError) -> StorageFailure:
    return StorageFailure(f"export file could not be written: {exc.strerror or exc}")


def _failed(
    job: Job,
    failure: ExportFailure,
    deps: Deps,
    run: RunContext,
    held_until: dt.datetime,
    store: FileStore | None = None,
) -> RunOutcome:
    """Fail ``job`` with ``failure``, tried again through an outage until ``held_until``."""
    jobs, code, message, now = deps.jobs, failure.code, failure.message[:2000], deps.clock.now()
    failed = record_end(
        lambda: jobs.fail(job.id, run.owner, now, code, message),
        jobs,
        job.id,
        clock=deps.clock,
        until=held_until,
        pause=run.pause,
        ended=JobStatus.FAILED,
        written={"error_code": code},
    )
    # the repository lists the failure for leftovers (its lease_expires_at) when an earlier
    # attempt died: discarded here at once, recovery's passes repeat it if the store refuses
    if failed is not None and store is not None and failed.lease_expires_at is not None:
        discard_ended(store, jobs, failed)
    status = failed.status.value if failed else "lost"
    return RunOutcome(disposition=Disposition.ACK, job_id=job.id, status=status, detail=code)


class Recovery(msgspec.Struct, frozen=True, kw_only=True):
    """What one recovery pass did."""

    requeued: list[str]
    failed: list[str]
    published: list[str]
    files_deleted: list[str]
    # files the store would not delete: past retention, or the leftovers of a job cancelled
    # while running (both tried again on a later pass), or left by the dead attempts of a job
    # failed WORKER_LOST (named once, in this pass)
    files_kept: list[str] = msgspec.field(default_factory=list)
    # jobs cancelled while running whose leftovers were discarded once their lease ran out
    leftovers_discarded: list[str] = msgspec.field(default_factory=list)
    # where the next pass's retention goes on (``recover(files_after=...)``)
    files_next: tuple[dt.datetime, str] | None = None


def recover(
    *,
    jobs: JobRepository,
    queue: JobQueue,
    store: FileStore,
    clock: Clock,
    policy: Policy,
    files_after: tuple[dt.datetime, str] | None = None,
) -> Recovery:
    """The periodic pass that leaves nothing stuck.

    Running jobs whose worker died (lease run out) go back to the queue, or fail with
    ``WORKER_LOST`` after ``max_attempts``; queued jobs whose message the broker never
    confirmed are published again; files past retention are deleted; jobs cancelled while
    running have what their attempts left discarded once their lease has run out. Every step
    is a conditional write, so several workers may run it at once.

    Retention takes a batch of expired files a pass, after ``files_after`` (the previous
    pass's ``files_next``): files the store will not delete never fill every batch.
    """
    now = clock.now()
    requeued: list[str] = []
    failed: list[str] = []
    kept: list[str] = []
    legacy = now - dt.timedelta(seconds=policy.legacy_lease_sec)
    for job in jobs.stale(now, legacy, policy.batch):
        if job.attempts >= policy.max_attempts:
            lost = WorkerLost(f"worker stopped responding on each of {job.attempts} attempts")
            ended = jobs.fail(job.id, job.lease_owner, now, lost.code, lost.message, lapsed=True)
            if ended is not None:
                failed.append(job.id)
                # what the dead attempts wrote (a temporary, a file not yet recorded, an
                # open upload) would stay forever: retention only looks at files kept
                if not discard_ended(store, jobs, ended):
                    kept.append(job.id)
        elif jobs.retry(job.id, job.lease_owner, now, lapsed=True):
            requeued.append(job.id)
    published: list[str] = []
    before = now - dt.timedelta(seconds=policy.republish_after_sec)
    pending = [j for j in jobs.unpublished(before, policy.batch) if j.id not in requeued]
    for job in [*(j for j in (jobs.get(i) for i in requeued) if j), *pending]:
        if job.status is JobStatus.QUEUED and publish(job, jobs, queue, clock):
            published.append(job.id)
    deleted: list[str] = []
    expired = jobs.expired_files(now, policy.batch, files_after)
    for job in expired:
        if job.file_path is not None:
            try:
                store.delete(job.file_path)
            except (StorageFailure, OSError):
                # a file the store will not delete (a permission, an object lock) must not
                # stop the pass, nor the next ones: they go on after it (files_next)
                kept.append(job.id)
                continue
        jobs.mark_file_deleted(job.id, now)
        deleted.append(job.id)
    last = expired[-1] if len(expired) >= policy.batch else None
    leftovers = discard_left_behind(jobs, store, now, policy.batch, kept)
    return Recovery(
        requeued=requeued,
        failed=failed,
        published=published,
        files_deleted=deleted,
        files_kept=kept,
        leftovers_discarded=leftovers,
        # a whole batch: the next pass goes on after it; else from the start (kept ones again)
        files_next=None if last is None or last.expires_at is None else (last.expires_at, last.id),
    )
