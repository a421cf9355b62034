"""Fairness between tenants: whose turn it is across the queue, how many unfinished jobs one
tenant may have, and the share of a worker's export slots one tenant may hold at once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from .errors import TooManyJobs
from .jobs import Job, JobStatus
from .lifecycle import UNFINISHED


def unfinished(jobs: Iterable[Job], tenant_id: str) -> int:
    """How many of ``jobs`` are ``tenant_id``'s and queued or running."""
    return sum(1 for job in jobs if job.tenant_id == tenant_id and job.status in UNFINISHED)


def check_cap(jobs: Iterable[Job], job: Job, max_unfinished: int | None) -> None:
    """Raise :class:`TooManyJobs` if ``job``'s tenant has ``max_unfinished`` unfinished
    ``jobs`` already (``None``: no cap)."""
    if max_unfinished is not None and unfinished(jobs, job.tenant_id) >= max_unfinished:
        raise TooManyJobs.at(max_unfinished)


def next_in_turn(jobs: Iterable[Job]) -> Job | None:
    """The queued job whose turn it is (:meth:`reportcore.ports.JobRepository.next_in_turn`):
    the oldest queued job of the tenant running the fewest jobs; among those, the tenant whose
    latest job started longest ago (never: first), then the one waiting longest."""
    every = list(jobs)
    queued: dict[str, list[Job]] = {}
    for job in every:
        if job.status is JobStatus.QUEUED:
            queued.setdefault(job.tenant_id, []).append(job)

    def turn(tenant: str) -> tuple[object, ...]:
        own = [j for j in every if j.tenant_id == tenant]
        running = sum(1 for j in own if j.status is JobStatus.RUNNING)
        starts = [j.started_at for j in own if j.started_at is not None]
        waiting = min(j.created_at for j in queued[tenant])
        # the flag puts a tenant that never started before any that did; the start compares
        # only among those that did
        return (running, bool(starts), max(starts, default=waiting), waiting, tenant)

    if not queued:
        return None
    tenant = min(queued, key=turn)
    return min(queued[tenant], key=lambda j: (j.created_at, j.id))


class TenantSlots:
    """Counts the exports each tenant runs in one worker process, up to ``per_tenant``.

    A tenant at its share has its next job deferred (sent to the back of the queue), so that a
    tenant with a long backlog cannot hold every slot while another tenant's job waits.
    Thread-safe: the worker's handler threads share one.
    """

    def __init__(self, per_tenant: int) -> None:
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        self.per_tenant = per_tenant
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, tenant_id: str) -> bool:
        """Take a slot for ``tenant_id``; ``False`` when it already holds its share."""
        with self._lock:
            if self._running[tenant_id] >= self.per_tenant:
                return False
            self._running[tenant_id] += 1
            return True

    def give_back(self, tenant_id: str) -> None:
        """Return a slot :meth:`take` gave."""
        with self._lock:
            self._running[tenant_id] -= 1
            if self._running[tenant_id] <= 0:
                del self._running[tenant_id]

    def running(self, tenant_id: str) -> int:
        """How many slots ``tenant_id`` holds now."""
        with self._lock:
            return self._running[tenant_id]


def default_share(concurrency: int) -> int:
    """One slot fewer than the worker has (at least one): another tenant always finds one."""
    return max(1, concurrency - 1)
