"""Idempotency: when is a create with a used key a replay, and when a conflict."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import IdempotencyKeyReused
from .jobs import Job, JobType, ReportFormat, Scope


def fingerprint(job_type: JobType, fmt: ReportFormat, scope: Scope) -> str:
    """A canonical digest of what a create request asks for.

    Key order, the spelling of defaults (absent vs null vs empty filters), the order of a
    filter's values and the tenant do not change it; any difference in type, format, scope or
    in the values a filter accepts does. It is computed from the stored job too, so rows
    written by the old service compare the same way.
    """
    canonical: dict[str, Any] = {
        "job_type": job_type.value,
        "format": fmt.value,
        "farm_id": scope.farm_id,
        "barn_id": scope.barn_id,
        "batch_id": scope.batch_id,
        "start_date": scope.start_date.isoformat() if scope.start_date else None,
        "end_date": scope.end_date.isoformat() if scope.end_date else None,
        "filters": _canonical_filters(scope.filters or {}),
    }
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


def _canonical_filters(filters: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each filter as the sorted set of values it accepts.

    ``"A"``, ``["A"]`` and ``["A", "A"]`` ask for the same records, and rows written by the old
    service hold lists in the order the client sent them: neither may turn a replay into a 409.
    """
    return {
        key: sorted({msgspec.json.encode(v, order="sorted").decode() for v in _as_list(value)})
        for key, value in filters.items()
    }


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


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
