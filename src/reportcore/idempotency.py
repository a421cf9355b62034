"""Idempotency: when is a create with a used key a replay, and when a conflict."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import IdempotencyKeyReused
from .jobs import Compression, CsvOptions, Job, ReportFormat, Scope
from .requests import uuid_or_none


def asked_options(
    compression: Compression | None = None,
    csv: CsvOptions | None = None,
    columns: list[str] | None = None,
    timezone: str | None = None,
) -> dict[str, Any]:
    """The export options a request named, as builtins (absent ones left out)."""
    asked = {"compression": compression, "csv": csv, "columns": columns, "timezone": timezone}
    return {k: msgspec.to_builtins(v) for k, v in asked.items() if v is not None}


def fingerprint(
    job_type: str,
    fmt: ReportFormat,
    scope: Scope,
    options: Mapping[str, Any] | None = None,
) -> str:
    """A canonical digest of what a create request asks for.

    Key order, the spelling of defaults (absent vs null vs empty filters), the order of a
    filter's values and the tenant do not change it; any difference in type, format, scope or
    in the values a filter accepts does; so does any export option (``options``, see
    :func:`asked_options`). It is computed from the stored job too, so rows written by the old
    service (which have no options) compare the same way.
    """
    canonical: dict[str, Any] = {
        "job_type": str(job_type),
        "format": fmt.value,
        "farm_id": _canonical_id(scope.farm_id),
        "barn_id": _canonical_id(scope.barn_id),
        "batch_id": _canonical_id(scope.batch_id),
        "start_date": scope.start_date.isoformat() if scope.start_date else None,
        "end_date": scope.end_date.isoformat() if scope.end_date else None,
        "filters": _canonical_filters(scope.filters or {}),
    }
    if options:  # only then: a request without options digests as it always did
        canonical["options"] = dict(options)
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


def _canonical_id(value: str | None) -> str | None:
    """A scope id as a request's is read (a UUID, lower-case, hyphenated): rows the old
    service wrote hold them as the client sent them (``5B0F...``), and a replay of that
    request across the switch-over is the same request, not a 409."""
    if value is None:
        return None
    return uuid_or_none(value) or value


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
    options = asked_options(job.compression, job.csv, job.columns, job.timezone)
    return fingerprint(job.job_type, job.format, job.scope, options)


def check_replay(existing: Job, requested_fingerprint: str) -> Job:
    """``existing`` if the request is the same one again, else :class:`IdempotencyKeyReused`."""
    if job_fingerprint(existing) != requested_fingerprint:
        raise IdempotencyKeyReused(
            "idempotency_key was already used for a different request; use a new key"
        )
    return existing
