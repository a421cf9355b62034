"""The ports: what the core needs from the outside world, in the domain's words.

Every port has an in-memory adapter (``reportcore.testing``) and at least one real one; a contract
suite per port runs against all of them.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from .jobs import Job, JobMessage, JobType, Scope
from .jobtypes import Column
from .options import ExportOptions
from .requests import Cursor, ListQuery

# CronRules is a port of the schedules' rules, defined beside them and named here with the rest
from .schedules import CronRules as CronRules
from .schedules import Schedule
from .webhooks import AttemptOutcome, Delivery, Notification, SendResult


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time, aware and in UTC."""

    def now(self) -> dt.datetime: ...


@runtime_checkable
class IdSource(Protocol):
    """New identifiers of jobs and schedules: random UUIDs in the service
    (:class:`reportcore.ids.RandomIds`), a fixed sequence where a test replays a run and needs
    the same ids again (``reportcore.testing.SequentialIds``), as :class:`Clock` is for time."""

    def new_id(self) -> str: ...


@runtime_checkable
class JobRepository(Protocol):
    """Durable storage of jobs. Every state change is one conditional write.

    Methods that change a running job take the ``owner`` holding its lease and return ``None``
    when the condition no longer holds (the job was cancelled, finished, or reclaimed).

    ``succeed``, ``fail`` and ``cancel`` of a job with a ``notify_url`` also put its webhook
    delivery in the outbox (:class:`WebhookOutbox`), in the same transaction.
    """

    def add(self, job: Job, max_unfinished: int | None = None) -> tuple[Job, bool]:
        """Store a new job; if its tenant already has a job with the same idempotency key,
        store nothing and return that one. The flag says whether ``job`` was stored.

        With ``max_unfinished``, a tenant that already has that many queued or running jobs
        gets :class:`reportcore.errors.TooManyJobs` instead (but still its job with the same
        key, if it has one); counted and stored atomically, so concurrent creates never pass
        the cap together."""
        ...

    def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        """The job, if it exists (and belongs to ``tenant_id`` when given)."""
        ...

    def by_key(self, tenant_id: str, idempotency_key: str) -> Job | None:
        """The tenant's job created with ``idempotency_key``, if there is one."""
        ...

    def find(self, tenant_id: str, query: ListQuery) -> list[Job]:
        """Up to ``query.limit`` jobs of the tenant, newest first (created_at desc, id desc),
        strictly after ``query.after`` when given."""
        ...

    def mark_enqueued(self, job_id: str, at: dt.datetime) -> None:
        """Record that the broker confirmed the job's message."""
        ...

    def claim(
        self, job_id: str, owner: str, now: dt.datetime, lease_until: dt.datetime
    ) -> Job | None:
        """queued -> running under a lease held by ``owner``; counts an attempt."""
        ...

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        lease_until: dt.datetime,
        progress_pct: int | None,
    ) -> Job | None:
        """Extend the lease (and raise progress, never lower it) while ``owner`` holds it; a
        lease that ran out (``lease_expires_at`` before ``now``) is lost, not renewed."""
        ...

    def succeed(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        file: StoredFile,
        expires_at: dt.datetime | None,
    ) -> Job | None:
        """running -> succeeded with the file's facts and progress 100."""
        ...

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
        """running -> failed with ``error_code`` and ``error_message``. With ``lapsed``
        (recovery's), only while the lease has run out by ``now``: a renewal after recovery
        read the job keeps it with its live worker. A job whose earlier attempts died
        (``attempts`` > 1), or failed with ``lapsed``, is listed in :meth:`leftovers` from
        ``now``."""
        ...

    def retry(
        self, job_id: str, owner: str | None, now: dt.datetime, *, lapsed: bool = False
    ) -> Job | None:
        """running -> queued: the lease and ``enqueued_at`` are cleared; the job waits to be
        published again. ``lapsed`` as for :meth:`fail`."""
        ...

    def cancel(self, job_id: str, tenant_id: str, now: dt.datetime) -> Job | None:
        """queued | running -> cancelled; ``None`` if the job is finished (or absent).

        The lease owner is cleared (no renewal or finish of the old holder succeeds). A
        running job keeps its ``lease_expires_at`` (until that instant its worker may be alive
        and abort its own file; after it, :meth:`leftovers` lists the job); a queued
        job has none, unless it ran before (listed from the cancel on)."""
        ...

    def next_in_turn(self) -> Job | None:
        """The queued job whose turn it is, across tenants: the oldest queued job of the
        tenant that has the fewest running jobs; among tenants running as few, the one whose
        latest job started longest ago (one whose jobs never started first), then the one
        whose oldest queued job has waited longest. ``None`` when nothing is queued."""
        ...

    def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
        """Running jobs whose lease has run out (or, without a lease, that were last
        updated before ``legacy_before``: rows left running by the old service)."""
        ...

    def unpublished(self, before: dt.datetime, limit: int) -> list[Job]:
        """Queued jobs last updated before ``before`` whose message the broker never
        confirmed (``enqueued_at`` is null: the broker was down, or the API died between
        the insert and the publish)."""
        ...

    def expired_files(
        self, now: dt.datetime, limit: int, after: tuple[dt.datetime, str] | None = None
    ) -> list[Job]:
        """Succeeded jobs whose file is past ``expires_at`` and not deleted yet, by
        ``(expires_at, id)`` (ids compared byte-wise), after ``after`` when given."""
        ...

    def mark_file_deleted(self, job_id: str, at: dt.datetime) -> None:
        """Record that retention deleted the job's file."""
        ...

    def leftovers(self, now: dt.datetime, limit: int) -> list[Job]:
        """Cancelled or failed jobs whose attempts may have left files (cancelled while
        running or after an attempt; failed after an attempt that died, or ``WORKER_LOST``),
        not discarded yet, whose ``lease_expires_at`` (the lease's end, or the instant of the
        cancel or failure) is before ``now`` (no worker can still be writing), by
        ``(lease_expires_at, id)``."""
        ...

    def mark_leftovers(self, job_id: str, seen: dt.datetime, retry_at: dt.datetime | None) -> None:
        """Record how discarding a listed job's leftovers went, if its ``lease_expires_at``
        is still ``seen`` (another pass may have recorded it meanwhile): ``retry_at`` None,
        discarded (the job is never listed again); else listed again once ``retry_at`` is
        past, after the jobs whose lease ran out before it."""
        ...

    def ping(self) -> None:
        """Raise :class:`reportcore.errors.ServiceUnavailable` unless storage answers."""
        ...


@runtime_checkable
class JobQueue(Protocol):
    """Where jobs wait for a worker. ``publish`` returns once the broker confirmed."""

    def publish(self, message: JobMessage) -> None:
        """Raise :class:`reportcore.errors.QueueUnavailable` if the broker did not confirm."""
        ...

    def ping(self) -> None:
        """Raise :class:`reportcore.errors.ServiceUnavailable` unless the broker answers."""
        ...


class Disposition(enum.StrEnum):
    """What a consumer does with a message once its handler returns."""

    ACK = "ack"  # done with (whatever the outcome, it is stored)
    DEAD_LETTER = "dead_letter"  # can never be processed
    REQUEUE = "requeue"  # handed back (shutdown), another worker takes it


@runtime_checkable
class JobConsumer(Protocol):
    """Delivers queued messages to a handler, ``concurrency`` at a time, until ``stop()``."""

    def run(
        self,
        handle: Callable[[bytes], Disposition],
        concurrency: int,
        stop: Callable[[], bool],
    ) -> None: ...


class SourceRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a record source is asked for.

    ``typed``: records decoded into the job type's record Struct; ``raw``: each record's JSON
    bytes exactly as upstream sent them. Both may be asked (an NDJSON export with a filter
    applied while streaming); the lists are then aligned, and a typed record needs to carry
    only what identifies it, the stream filters' and the progress's attributes (a source may
    skip the rest: the raw bytes are what is written). A record naming another tenant than
    ``tenant_id`` fails the export (``UPSTREAM_BAD_RESPONSE``), whichever is asked.
    """

    job_id: str
    tenant_id: str
    # a consumer's own job type (see JobTypeRegistry) is named by a plain string
    job_type: JobType | str
    scope: Scope
    upstream_filters: dict[str, Any]
    typed: bool = True
    raw: bool = False
    # the most upstream pages the source may fetch for this export, all windows together
    # (``EXPORT_LIMIT_EXCEEDED`` past it: reportcore.policy.limit_exceeded); None: no limit
    max_pages: int | None = None
    # the most bytes of upstream pages the source may fetch for this export (what windows
    # fetched ahead of the exporter hold on disk meanwhile); None: no limit
    max_bytes: int | None = None
    # raises once the export must end (cancelled, handed back, over its time): a source asks
    # it while it waits on its upstream, so that an export ends within seconds mid-page
    checkpoint: Callable[[], None] | None = None
    # called (from the source's threads) each time a page arrives: the export is moving even
    # while none of it is written (pages whose records are all dropped)
    fetched: Callable[[], None] | None = None


class SourcePage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of records, in upstream order."""

    records: Sequence[Any] | None = None
    raw: Sequence[bytes | memoryview | msgspec.Raw] | None = None

    def __len__(self) -> int:
        items = self.records if self.records is not None else self.raw
        return len(items) if items is not None else 0


@runtime_checkable
class RecordSource(Protocol):
    """Records of one job from its upstream service, page by page.

    Transient faults are retried inside; what is left raises an
    :class:`reportcore.errors.ExportFailure` (UPSTREAM_UNAVAILABLE / _REJECTED / _BAD_RESPONSE).
    """

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]: ...


class StoredFile(msgspec.Struct, frozen=True, kw_only=True):
    """A complete export file: where it is and what it holds (``rows``: records written)."""

    location: str
    size_bytes: int
    sha256: str
    rows: int | None = None


@runtime_checkable
class ByteSink(Protocol):
    """Takes the bytes of a file in order (hashed, maybe compressed, then written)."""

    def add(self, data: bytes) -> None: ...


class SheetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a row encoder writes: these columns (header and kinds), by these options."""

    columns: tuple[Column, ...]
    options: ExportOptions


@runtime_checkable
class RowEncoder(Protocol):
    """Writes rows of a job type's columns (cells as the records hold them: text, numbers,
    ``None``) into a :class:`ByteSink`, in a file format. A format that must see every row
    before its bytes exist (a zipped workbook) writes them on :meth:`close`."""

    def add(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None:
        """Every row is added: write whatever is left."""
        ...

    def abort(self) -> None:
        """The export stops: drop whatever is held (temporary files); safe to call twice."""
        ...


@runtime_checkable
class FileWriter(Protocol):
    """A file being written; invisible under its final name until :meth:`commit`."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``. It is the caller's again once this returns (the exporter reuses
        its buffer): keep a copy, never the object."""
        ...

    def commit(self) -> str:
        """Make the file visible under its final name; returns its location."""
        ...

    def abort(self) -> None:
        """Remove whatever was written; safe to call more than once or after a failure."""
        ...


@runtime_checkable
class FileStore(Protocol):
    """Where export files live: a folder, or an S3-compatible bucket.

    Raises :class:`reportcore.errors.StorageFailure` for writes that fail.
    """

    def create(self, tenant_id: str, job_id: str, extension: str) -> FileWriter: ...

    def size(self, location: str) -> int | None:
        """The file's size, or ``None`` if it is gone."""
        ...

    def read(self, location: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` .. ``end`` (inclusive; ``None`` = to the end), in chunks; a
        missing file raises ``FileNotFoundError`` at the call, before the first chunk."""
        ...

    def delete(self, location: str) -> None:
        """Remove the file (and its folder if empty); absent files are fine."""
        ...

    def discard(self, tenant_id: str, job_id: str, extension: str) -> None:
        """Remove whatever exports of this job left under its name (the file, temporaries,
        unfinished uploads), for a job that ends without one: absent is fine."""
        ...

    def download_url(
        self, location: str, expires_at: dt.datetime, file_name: str | None = None
    ) -> str | None:
        """A direct URL of the file valid until ``expires_at`` (a presigned object-store URL
        that downloads it as ``file_name``), or ``None``: the API streams it itself.

        Asked only after a download token was verified, never instead of one.
        """
        ...


@runtime_checkable
class WebhookOutbox(Protocol):
    """The durable outbox of webhook deliveries (one per ended job with a ``notify_url``).

    Deliveries are put in by the :class:`JobRepository`'s terminal transitions; this port
    hands due ones to a sender under a lease (so that a sender that dies lets another retry
    them) and records how each attempt went.
    """

    def claim_due(
        self, now: dt.datetime, owner: str, lease_until: dt.datetime, limit: int
    ) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due by ``now`` and not leased by another sender,
        oldest first, now leased by ``owner`` until ``lease_until``."""
        ...

    def record(self, delivery_id: str, owner: str, outcome: AttemptOutcome) -> bool:
        """Store an attempt's outcome and end the lease; ``False`` if ``owner`` lost it."""
        ...

    def notifications(self, job_ids: Sequence[str]) -> dict[str, Notification]:
        """The delivery state of each of these jobs that has one."""
        ...


@runtime_checkable
class WebhookSender(Protocol):
    """POSTs a webhook; never raises for the receiver's failures, it reports them."""

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult: ...


class ScheduleCounts(msgspec.Struct, frozen=True, kw_only=True):
    """How many schedules there are: active, paused, and active ones whose latest occurrence
    was skipped (their template no longer validates)."""

    active: int = 0
    paused: int = 0
    skipping: int = 0


@runtime_checkable
class ScheduleRepository(Protocol):
    """Durable storage of schedules. The scheduler's writes are each one conditional write, so
    that any number of schedulers (one per worker process) create each occurrence's job once.
    """

    def add(self, schedule: Schedule, max_per_tenant: int) -> Schedule | None:
        """Store a new schedule, unless its tenant has ``max_per_tenant`` already (``None``)."""
        ...

    def get(self, schedule_id: str, tenant_id: str) -> Schedule | None:
        """The tenant's schedule, if it exists."""
        ...

    def find(self, tenant_id: str, after: Cursor | None, limit: int) -> list[Schedule]:
        """Up to ``limit`` of the tenant's schedules, newest first (created_at desc, id desc),
        strictly after ``after`` when given."""
        ...

    def update(self, schedule: Schedule, read: Schedule) -> Schedule | None:
        """Store what a user may change (name, job, cron, timezone, range, active) and the
        ``next_run_at`` that follows; pausing drops a claimed occurrence that has no job yet.
        Only over the row as ``read`` (its ``updated_at`` and ``next_run_at``): ``None`` if a
        claim or another update came in between, or the schedule is gone."""
        ...

    def delete(self, schedule_id: str, tenant_id: str) -> bool:
        """Remove the schedule (its jobs stay); whether it existed."""
        ...

    def due(self, now: dt.datetime, stuck_before: dt.datetime, limit: int) -> list[Schedule]:
        """Active schedules whose ``next_run_at`` is at or before ``now``, and schedules with an
        occurrence claimed before ``stuck_before`` that has no job yet, soonest first."""
        ...

    def claim(
        self,
        schedule_id: str,
        expected: dt.datetime,
        occurrence: dt.datetime,
        next_run_at: dt.datetime | None,
        now: dt.datetime,
    ) -> Schedule | None:
        """Take ``occurrence`` of an active schedule, in one conditional write: ``next_run_at``
        moves on from ``expected`` (only if it still is ``expected``) and ``occurrence`` is
        recorded as pending; never over an occurrence still pending. ``None``: another
        scheduler (or a PATCH) came first, or the schedule's pending occurrence is not made."""
        ...

    def record_run(self, schedule_id: str, occurrence: dt.datetime, job_id: str) -> None:
        """The pending ``occurrence`` has its job."""
        ...

    def record_skip(self, schedule_id: str, occurrence: dt.datetime, reason: str) -> None:
        """The pending ``occurrence`` made no job, for ``reason`` (its template no longer
        validates)."""
        ...

    def counts(self) -> ScheduleCounts:
        """How many schedules there are, for the gauge."""
        ...
