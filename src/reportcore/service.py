"""The application: every use case over one :class:`~reportcore.deps.Deps`.

The API's routes, the worker and the CLI hold one :class:`ReportService` and call one method per
request or message: each method takes the request as the caller received it (text, a token, a
principal), runs every check and the use case, and returns what the caller shapes into its
answer. Nothing here knows HTTP: routes, URLs and the wire spelling stay in ``entrypoints``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import msgspec

from . import scheduling, usecases
from .access import Principal, resolve_tenant
from .deps import Deps
from .errors import NotFound, ValidationError
from .jobs import Job
from .notifying import (
    DeliveryPass,
    attempt_delivery,
    claim_deliveries,
    deliver_due,
    notifications_of,
)
from .requests import (
    CreateRequest,
    Cursor,
    ListRequest,
    refuse_nul,
    validate_create,
    validate_list,
)
from .running import Recovery, RunContext, RunOutcome, recover, run_job
from .schedules import SCHEDULE_KEY_PREFIX, Schedule
from .scheduling import SchedulePage, SchedulePatch, ScheduleRequest, SchedulerPass
from .webhooks import Delivery, DeliveryState, Notification, RenderJob


class Shown(msgspec.Struct, frozen=True, kw_only=True):
    """A job as a client is shown it: the job and the state of its webhook, if it has one."""

    job: Job
    notification: Notification | None = None


class CreateOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a create answered: the job (shown), whether it was a replay of an earlier create
    with the same key, and whether the broker confirmed its message."""

    shown: Shown
    replayed: bool
    enqueued: bool


class Listed(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a tenant's jobs, shown, and where the next page starts (``None``: last)."""

    items: list[Shown]
    after: Cursor | None


class ReportService:
    """The use cases of the reporting export service over one set of ports."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # --- the API side ---

    def create(
        self, request: CreateRequest, principal: Principal, *, header_key: str | None = None
    ) -> CreateOutcome:
        """Check ``request`` for ``principal`` and create its job (or answer the earlier one
        with the same idempotency key). ``header_key``: the ``Idempotency-Key`` header."""
        # before the tenant is resolved: a NUL anywhere is a 400, also in a tenant it names
        refuse_nul(msgspec.structs.asdict(request))
        tenant = resolve_tenant(principal, request.tenant_id)
        d = self.deps
        valid = validate_create(request, header_key=header_key, job_types=d.job_types)
        if valid.idempotency_key is not None and valid.idempotency_key.startswith(
            SCHEDULE_KEY_PREFIX
        ):
            # next_run_at tells the key of a schedule's next job: taken by hand, the
            # occurrence would be skipped ("exactly one job an occurrence", CONTRACT.md)
            raise ValidationError(
                f"idempotency_key must not start with {SCHEDULE_KEY_PREFIX!r}: "
                f"those keys are the scheduler's",
                field="idempotency_key",
            )
        created = usecases.create_job(
            valid,
            tenant_id=tenant,
            requested_by=principal.subject,
            jobs=d.jobs,
            queue=d.queue,
            clock=d.clock,
            policy=d.policy,
            job_types=d.job_types,
            ids=d.ids,
        )
        shown = self._shown([created.job])[0] if created.replayed else Shown(job=created.job)
        return CreateOutcome(shown=shown, replayed=created.replayed, enqueued=created.enqueued)

    def list_jobs(self, tenant: str, wanted: ListRequest) -> Listed:
        """A page of the tenant's jobs, newest first; ``wanted``: the query as given."""
        query = validate_list(wanted, job_types=self.deps.job_types)
        page = usecases.list_jobs(query, tenant_id=tenant, jobs=self.deps.jobs)
        return Listed(items=self._shown(page.items), after=page.after)

    def get(self, job_id: str, tenant: str) -> Shown:
        """One job of the tenant (404 for another tenant's)."""
        return self._shown([usecases.get_job(job_id, tenant_id=tenant, jobs=self.deps.jobs)])[0]

    def cancel(self, job_id: str, principal: Principal, tenant: str | None) -> Shown:
        """Cancel a queued or running job of the tenant ``principal`` acts for (``tenant``: the
        one the request names, if any)."""
        acting = resolve_tenant(principal, tenant)
        d = self.deps
        cancelled = usecases.cancel_job(
            job_id, tenant_id=acting, jobs=d.jobs, clock=d.clock, store=d.store
        )
        return self._shown([cancelled])[0]

    def issue_download(self, job_id: str, tenant: str) -> usecases.DownloadGrant:
        """A short-lived download token for a succeeded job's file."""
        d = self.deps
        return usecases.issue_download(
            job_id,
            tenant_id=tenant,
            jobs=d.jobs,
            store=d.store,
            clock=d.clock,
            secret=d.download_secret,
            policy=d.policy,
        )

    def open_file(self, job_id: str, token: str | None) -> usecases.FileToServe:
        """The file a download token grants (401, 403, 404 or 410 otherwise)."""
        d = self.deps
        return usecases.open_file(
            job_id, token, jobs=d.jobs, store=d.store, clock=d.clock, secret=d.download_secret
        )

    def read(self, file: usecases.FileToServe, start: int, end: int) -> Iterator[bytes]:
        """The bytes ``start..end`` (inclusive) of a file :meth:`open_file` granted; 404 if it
        went since (retention deleted it between the two), as :meth:`open_file` says then."""
        try:
            return self.deps.store.read(file.location, start, end)
        except FileNotFoundError:
            raise NotFound("report file not found") from None

    def _shown(self, jobs: Sequence[Job]) -> list[Shown]:
        states = notifications_of(jobs, self.deps.outbox)
        return [Shown(job=job, notification=states.get(job.id)) for job in jobs]

    # --- schedules ---

    def create_schedule(self, request: ScheduleRequest, principal: Principal) -> Schedule:
        """Check ``request`` for ``principal`` and store its schedule (429 past the cap)."""
        refuse_nul(msgspec.to_builtins(request))
        tenant = resolve_tenant(principal, request.tenant_id)
        return scheduling.create_schedule(
            request, tenant_id=tenant, created_by=principal.subject, deps=self.deps
        )

    def list_schedules(self, tenant: str, wanted: ListRequest) -> SchedulePage:
        """A page of the tenant's schedules, newest first (``wanted``: limit and cursor)."""
        return scheduling.list_schedules(wanted, tenant_id=tenant, deps=self.deps)

    def get_schedule(self, schedule_id: str, tenant: str) -> Schedule:
        """One schedule of the tenant (404 for another tenant's)."""
        return scheduling.get_schedule(schedule_id, tenant_id=tenant, deps=self.deps)

    def update_schedule(
        self, schedule_id: str, patch: SchedulePatch, principal: Principal, tenant: str | None
    ) -> Schedule:
        """Change the fields ``patch`` names of a schedule of the tenant ``principal`` acts for."""
        refuse_nul(msgspec.to_builtins(patch))
        acting = resolve_tenant(principal, tenant)
        return scheduling.update_schedule(schedule_id, patch, tenant_id=acting, deps=self.deps)

    def delete_schedule(self, schedule_id: str, principal: Principal, tenant: str | None) -> None:
        """Remove a schedule of the tenant ``principal`` acts for; its jobs stay."""
        acting = resolve_tenant(principal, tenant)
        scheduling.delete_schedule(schedule_id, tenant_id=acting, deps=self.deps)

    def run_schedules(self) -> SchedulerPass:
        """One pass of the scheduler (:func:`reportcore.scheduling.run_schedules`)."""
        return scheduling.run_schedules(self.deps)

    # --- the worker side ---

    def run(self, body: bytes, run: RunContext) -> RunOutcome:
        """Handle one queue message (:func:`reportcore.running.run_job`)."""
        return run_job(body, self.deps, run)

    def recover(self, files_after: tuple[dt.datetime, str] | None = None) -> Recovery:
        """One recovery pass (:func:`reportcore.running.recover`)."""
        d = self.deps
        return recover(
            jobs=d.jobs,
            queue=d.queue,
            store=d.store,
            clock=d.clock,
            policy=d.policy,
            files_after=files_after,
        )

    def deliver(self, render: RenderJob, owner: str) -> DeliveryPass:
        """One pass over the webhook outbox; ``render`` writes a job as its webhook shows it."""
        d = self.deps
        return deliver_due(
            outbox=d.outbox,
            jobs=d.jobs,
            sender=d.sender,
            clock=d.clock,
            rules=d.webhook_rules,
            render=render,
            owner=owner,
        )

    def claim_deliveries(self, owner: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` due webhook deliveries to ``owner`` (as many as it can attempt
        at once; :func:`reportcore.notifying.claim_deliveries`)."""
        d = self.deps
        return claim_deliveries(
            outbox=d.outbox, clock=d.clock, rules=d.webhook_rules, owner=owner, limit=limit
        )

    def attempt_delivery(
        self, delivery: Delivery, render: RenderJob, owner: str
    ) -> DeliveryState | None:
        """One attempt of a delivery ``owner`` claimed; ``None`` if its lease was lost
        (:func:`reportcore.notifying.attempt_delivery`)."""
        d = self.deps
        return attempt_delivery(
            delivery,
            outbox=d.outbox,
            jobs=d.jobs,
            sender=d.sender,
            clock=d.clock,
            rules=d.webhook_rules,
            render=render,
            owner=owner,
        )
