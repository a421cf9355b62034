"""Idempotency: when is a create with a used key a replay, and when a conflict."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .errors import IdempotencyKeyReused
from .jobs import Job, JobType, ReportFormat, Scope


def fingerprint(job_type: JobType, fmt: ReportFormat, scope: Scope) -> str:
    """A canonical digest of what a create request asks for.

    Key order, the spelling of defaults (absent vs null vs empty filters) and the tenant do not
    change it; any difference in type, format, scope or filters does. It is computed from the
    stored job too, so rows written by the old service compare the same way.
    """
    canonical: dict[str, Any] = {
        "job_type": job_type.value,
        "format": fmt.value,
        "farm_id": scope.farm_id,
        "barn_id": scope.barn_id,
        "batch_id": scope.batch_id,
        "start_date": scope.start_date.isoformat() if scope.start_date else None,
        "end_date": scope.end_date.isoformat() if scope.end_date else None,
        "filters": scope.filters or {},
    }
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


def job_fingerprint(job: Job) -> str:
    """The fingerprint of the request that created ``job``."""
    return fingerprint(job.job_type, job.format, job.scope)


def check_replay(existing: Job, requested_fingerprint: str) -> Job:
    """``existing`` if the request is the same one again, else :class:`IdempotencyKeyReused`."""
    if job_fingerprint(existing) != requested_fingerprint:
        raise IdempotencyKeyReused(
            "idempotency_key was already used for a different request; use a new key"
        )
    return existing
