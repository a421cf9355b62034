"""Running one queue message in tests, naming each port it needs.

:func:`reportcore.running.run_job` takes the service's :class:`~reportcore.deps.Deps` and the
worker's :class:`~reportcore.running.RunContext`; most tests wire only the ports a run touches,
and this builds both from them (a run never uses the webhook outbox or sender).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from reportcore.deps import Deps
from reportcore.encoding import CORE_ROW_FORMATS, RowFormats
from reportcore.fairness import TenantSlots
from reportcore.jobtypes import JOB_TYPES, JobTypeRegistry
from reportcore.policy import Policy
from reportcore.ports import Clock, FileStore, JobQueue, JobRepository, RecordSource
from reportcore.running import LeaseKeeper, RunContext, RunOutcome, no_lease_keeper, run_job
from reportcore.testing import InMemoryQueue, RecordingWebhookSender


def run_message(
    body: bytes,
    *,
    owner: str,
    jobs: JobRepository,
    source: RecordSource,
    store: FileStore,
    clock: Clock,
    policy: Policy,
    stopping: Callable[[], bool] = lambda: False,
    keep_lease: LeaseKeeper = no_lease_keeper,
    shares: TenantSlots | None = None,
    queue: JobQueue | None = None,
    formats: RowFormats = CORE_ROW_FORMATS,
    job_types: JobTypeRegistry = JOB_TYPES,
    progressed: Callable[[], None] | None = None,
    pause: Callable[[float], object] | None = None,
) -> RunOutcome:
    """:func:`run_job` over these ports (a queue that keeps what it is given, when none)."""
    deps = Deps(
        jobs=jobs,
        queue=queue if queue is not None else InMemoryQueue(),
        store=store,
        clock=clock,
        source=source,
        outbox=getattr(jobs, "outbox", None),  # type: ignore[arg-type]
        sender=RecordingWebhookSender(),
        policy=policy,
        formats=formats,
        job_types=job_types,
    )
    run = RunContext(owner=owner, stopping=stopping, keep_lease=keep_lease, shares=shares)
    if progressed is not None:
        run = msgspec.structs.replace(run, progressed=progressed)
    if pause is not None:  # a test's clock's advance: a retry's wait passes in no time
        run = msgspec.structs.replace(run, pause=pause)
    return run_job(body, deps, run)
