"""Use cases: small functions over the ports. Each is one thing a user or a worker does."""

from __future__ import annotations

import datetime as dt

import msgspec

from . import lifecycle, tokens
from .errors import (
    Forbidden,
    JobNotCancellable,
    NotFound,
    ReportExpired,
    ReportNotReady,
)
from .idempotency import asked_options, check_replay, fingerprint
from .ids import RANDOM_IDS
from .jobs import Job, JobStatus, file_name_for, mime_type_for
from .jobtypes import JOB_TYPES, JobTypeRegistry
from .leftovers import discard_ended
from .policy import Policy
from .ports import (
    Clock,
    FileStore,
    IdSource,
    JobQueue,
    JobRepository,
)
from .requests import Cursor, ListQuery, ValidCreate, check_range, uuid_or_none
from .running import (
    DEFERRED,
    LeaseKeeper,
    Recovery,
    RunOutcome,
    no_lease_keeper,
    publish,
    recover,
    run_job,
)
from .webhooks import check_notify_url

# --- the API side ---


class Created(msgspec.Struct, frozen=True, kw_only=True):
    """The job a create answered with; ``replayed`` when it existed already."""

    job: Job
    replayed: bool
    enqueued: bool


def create_job(
    request: ValidCreate,
    *,
    tenant_id: str,
    requested_by: str | None,
    jobs: JobRepository,
    queue: JobQueue,
    clock: Clock,
    policy: Policy | None = None,
    job_types: JobTypeRegistry = JOB_TYPES,
    schedule_id: str | None = None,
    scheduled_for: dt.datetime | None = None,
    ids: IdSource = RANDOM_IDS,
) -> Created:
    """Store a job durably, then publish it. A create with a used key is a replay or a 409.

    A range wider than ``policy.max_range_days`` allows for the job type is a 400, and so is
    a ``notify_url`` whose host ``policy.notify_hosts`` does not list. A tenant that already
    has ``policy.max_unfinished_jobs`` queued or running jobs gets
    :class:`~reportcore.errors.TooManyJobs` (429), except for a replay: a create whose key
    the tenant used before answers that job (or 409) before any of these checks, so retrying
    a create on the next day, or after an operator narrowed a knob, still gets its job.

    If the broker does not confirm, the job stays queued without ``enqueued_at`` and the
    recovery pass publishes it later: a create never fails because the broker is down.
    ``schedule_id`` and ``scheduled_for``: the schedule and occurrence that asked for the job;
    ``ids`` names the new job.
    """
    now = clock.now()
    scope = request.scope
    if request.idempotency_key is not None:  # a replay is answered as it was created, also
        # when today or the knobs would refuse it now (a range that has grown too wide)
        stored = jobs.by_key(tenant_id, request.idempotency_key)
        if stored is not None:
            return _replayed(request, stored)
    admit_create(request, now=now, policy=policy, job_types=job_types)
    job = Job(
        id=ids.new_id(),
        tenant_id=tenant_id,
        requested_by=requested_by,
        job_type=request.job_type,
        format=request.format,
        farm_id=scope.farm_id,
        barn_id=scope.barn_id,
        batch_id=scope.batch_id,
        start_date=scope.start_date,
        end_date=scope.end_date,
        filters=dict(scope.filters),
        idempotency_key=request.idempotency_key,
        notify_url=request.notify_url,
        created_at=now,
        updated_at=now,
        compression=request.compression,
        csv=request.csv,
        columns=request.columns,
        timezone=request.timezone,
        schedule_id=schedule_id,
        scheduled_for=scheduled_for,
    )
    # a replay answers its job even at the cap: the repository looks for the key first
    cap = (policy or Policy()).max_unfinished_jobs or None
    stored, created = jobs.add(job, max_unfinished=cap)
    if not created:  # a create with the same key came first, meanwhile
        return _replayed(request, stored)
    return Created(job=stored, replayed=False, enqueued=publish(stored, jobs, queue, clock))


def _replayed(request: ValidCreate, stored: Job) -> Created:
    """The job a create with a used key answers: the stored one if the request is the same,
    else :class:`~reportcore.errors.IdempotencyKeyReused` (409)."""
    asked = asked_options(request.compression, request.csv, request.columns, request.timezone)
    wanted = fingerprint(request.job_type, request.format, request.scope, asked)
    return Created(job=check_replay(stored, wanted), replayed=True, enqueued=True)


def admit_create(
    request: ValidCreate,
    *,
    now: dt.datetime,
    policy: Policy | None = None,
    job_types: JobTypeRegistry = JOB_TYPES,
) -> None:
    """The checks of a create that depend on the service's knobs: the widest range its job
    type may span up to today, and the hosts a ``notify_url`` may name (400s)."""
    rules = policy or Policy()
    check_range(
        request.job_type,
        request.scope,
        today=now.date(),
        max_days=rules.max_range_days,
        job_types=job_types,
    )
    if request.notify_url is not None:
        check_notify_url(request.notify_url, rules.notify_hosts)


def get_job(job_id: str, *, tenant_id: str, jobs: JobRepository) -> Job:
    """The tenant's job, or :class:`NotFound` (also for another tenant's job or a bad id)."""
    canonical = uuid_or_none(job_id)
    job = jobs.get(canonical, tenant_id) if canonical else None
    if job is None:
        raise NotFound("report job not found")
    return job


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a listing and the position the next one starts after, if any."""

    items: list[Job]
    after: Cursor | None


def list_jobs(query: ListQuery, *, tenant_id: str, jobs: JobRepository) -> JobPage:
    """A page of the tenant's jobs, newest first; ask again ``after`` for the rest."""
    rows = jobs.find(tenant_id, msgspec.structs.replace(query, limit=query.limit + 1))
    items = rows[: query.limit]
    more = len(rows) > query.limit
    after = Cursor(items[-1].created_at, items[-1].id) if more and items else None
    return JobPage(items=items, after=after)


def cancel_job(
    job_id: str,
    *,
    tenant_id: str,
    jobs: JobRepository,
    clock: Clock,
    store: FileStore | None = None,
) -> Job:
    """Cancel a queued or running job (a running one's worker notices within a heartbeat).

    A running job whose lease had run out has no worker left to notice, and a queued one that
    ran before was put back by recovery after its worker died: what their attempts wrote (a
    temporary, an open upload) is discarded from ``store`` here, else nothing would ever
    remove it (retention looks at files kept). A running job whose lease still runs may have
    a live worker, whose file is its own to abort: the job keeps its lease's end, and the
    recovery pass discards what is left once it is past (its worker died, or is done)."""
    job = get_job(job_id, tenant_id=tenant_id, jobs=jobs)
    if not lifecycle.can(job.status, lifecycle.Event.CANCEL):
        raise JobNotCancellable(f"job is {job.status.value} and can no longer be cancelled")
    now = clock.now()
    cancelled = jobs.cancel(job.id, tenant_id, now)
    if cancelled is None:  # it finished meanwhile
        latest = get_job(job.id, tenant_id=tenant_id, jobs=jobs)
        raise JobNotCancellable(f"job is {latest.status.value} and can no longer be cancelled")
    lost = job.lease_expires_at is not None and job.lease_expires_at < now
    ran = job.status is JobStatus.QUEUED and job.attempts > 0
    if store is not None and ((job.status is JobStatus.RUNNING and lost) or ran):
        discard_ended(store, jobs, cancelled)  # best effort: the cancel stands either way
    return cancelled


def file_is_gone(job: Job, now: dt.datetime) -> bool:
    """Whether retention has removed (or is due to remove) the job's file."""
    return job.file_deleted_at is not None or (job.expires_at is not None and job.expires_at <= now)


class DownloadGrant(msgspec.Struct, frozen=True, kw_only=True):
    """A short-lived download token of the job's file (the API makes it a URL of its own)."""

    job_id: str
    token: str
    expires_at: dt.datetime


def issue_download(
    job_id: str,
    *,
    tenant_id: str,
    jobs: JobRepository,
    store: FileStore,
    clock: Clock,
    secret: bytes,
    policy: Policy,
) -> DownloadGrant:
    """A signed download token for a succeeded job whose file still exists.

    The token is for the API's own file route: a store that hands out direct URLs is asked for
    one only once the token is verified (:func:`open_file`), so that the token, its checks and
    its errors hold for every store.
    """
    job = get_job(job_id, tenant_id=tenant_id, jobs=jobs)
    if job.status is not JobStatus.SUCCEEDED or job.file_path is None:
        raise ReportNotReady(f"report is {job.status.value}, not succeeded")
    now = clock.now()
    if file_is_gone(job, now):
        raise ReportExpired("report file has expired")
    # whole seconds, as the token's exp is: the URL works until the very instant it shows
    expires = (now + dt.timedelta(seconds=policy.download_ttl_sec)).replace(microsecond=0)
    token = tokens.sign(
        secret,
        tokens.DownloadClaims(tenant_id=job.tenant_id, job_id=job.id, exp=int(expires.timestamp())),
    )
    return DownloadGrant(job_id=job.id, token=token, expires_at=expires)


class FileToServe(msgspec.Struct, frozen=True, kw_only=True):
    """A file a verified token grants, with what the response headers need."""

    location: str
    size_bytes: int
    file_name: str
    mime_type: str
    sha256: str | None
    # where the client may fetch the bytes itself (a presigned object URL) until the token
    # expires; None when the API streams them
    direct_url: str | None = None


def open_file(
    job_id: str,
    token: str | None,
    *,
    jobs: JobRepository,
    store: FileStore,
    clock: Clock,
    secret: bytes,
) -> FileToServe:
    """The file a download token grants: 401 bad token, 403 other job, 404 none, 410 expired.

    When the store hands out direct URLs, ``direct_url`` is one valid no longer than the token,
    nor past the file's ``expires_at``.
    """
    now = clock.now()
    claims = tokens.verify(secret, token, now=now.timestamp())
    canonical = uuid_or_none(job_id)
    if canonical is None or claims.job_id != canonical:
        raise Forbidden("download token is for another job")
    job = jobs.get(canonical, claims.tenant_id)
    if job is None or job.status is not JobStatus.SUCCEEDED or job.file_path is None:
        raise NotFound("report file not found")
    if file_is_gone(job, now):
        raise ReportExpired("report file has expired")
    size = store.size(job.file_path)
    if size is None:
        raise NotFound("report file not found")
    file_name = job.file_name or file_name_for(job.job_type, job.format, job.compression)
    # a direct URL ends with the token, or with the file's retention if that comes first: the
    # store's URL would otherwise serve the file past expires_at until retention deletes it
    until = dt.datetime.fromtimestamp(claims.exp, dt.UTC)
    if job.expires_at is not None and job.expires_at < until:
        until = job.expires_at.astimezone(dt.UTC)
    return FileToServe(
        location=job.file_path,
        size_bytes=size,
        file_name=file_name,
        mime_type=job.mime_type or mime_type_for(job.format, job.compression),
        sha256=job.sha256,
        direct_url=store.download_url(job.file_path, until, file_name),
    )


# the worker's use cases live in .running; named here too, so that every use case is
# reportcore.usecases.<name>
__all__ = [
    "DEFERRED",
    "Created",
    "DownloadGrant",
    "FileToServe",
    "JobPage",
    "LeaseKeeper",
    "Policy",
    "Recovery",
    "RunOutcome",
    "admit_create",
    "cancel_job",
    "create_job",
    "file_is_gone",
    "get_job",
    "issue_download",
    "list_jobs",
    "no_lease_keeper",
    "open_file",
    "publish",
    "recover",
    "run_job",
]
