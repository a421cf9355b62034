"""The upstream records, as the FarmIQ services send them (camelCase on the wire).

Decimals arrive as strings and stay strings; timestamps stay the text upstream sent, so that a
CSV cell is exactly the upstream value. Unknown upstream fields are ignored when decoding typed
records; NDJSON exports pass the upstream bytes through unchanged instead.

Each record declares its fields in the order of its job type's CSV columns (``jobtypes``), so
that a row is the record as a tuple (``msgspec.structs.astuple``, in C) rather than a getter
of each column in turn.
"""

from __future__ import annotations

import msgspec

Decimal = str | int | float
"""A decimal value: the contract says string ("10.5"); numbers are accepted as sent."""


class FeedIntakeRecord(msgspec.Struct, rename="camel", kw_only=True, frozen=True, gc=False):
    """One feed intake record of the feed service."""

    id: str
    tenant_id: str
    farm_id: str
    barn_id: str
    batch_id: str | None = None
    device_id: str | None = None
    source: str
    feed_formula_id: str | None = None
    feed_lot_id: str | None = None
    quantity_kg: Decimal
    occurred_at: str
    created_at: str
    ingested_at: str | None = None
    event_id: str | None = None
    external_ref: str | None = None
    idempotency_key: str | None = None
    sequence: int | None = None
    notes: str | None = None
    created_by_user_id: str | None = None


class FeedingKpiRecord(msgspec.Struct, rename="camel", kw_only=True, frozen=True, gc=False):
    """One day of feeding KPIs of a barn."""

    record_date: str
    fcr: Decimal | None = None
    adg_g: Decimal | None = None
    sgr_pct: Decimal | None = None


class TelemetryReading(msgspec.Struct, rename="camel", kw_only=True, frozen=True, gc=False):
    """One telemetry reading."""

    id: str
    tenant_id: str | None = None
    farm_id: str | None = None
    barn_id: str | None = None
    device_id: str | None = None
    batch_id: str | None = None
    metric: str | None = None
    value: Decimal | None = None
    unit: str | None = None
    occurred_at: str
    trace_id: str | None = None
    event_id: str | None = None
    created_at: str | None = None


class WeightAggregate(msgspec.Struct, rename="camel", kw_only=True, frozen=True, gc=False):
    """One day of WeighVision weight aggregates of a batch."""

    id: str | None = None
    tenant_id: str | None = None
    farm_id: str | None = None
    barn_id: str | None = None
    batch_id: str | None = None
    record_date: str
    avg_weight_kg: Decimal | None = None
    p10_weight_kg: Decimal | None = None
    p50_weight_kg: Decimal | None = None
    p90_weight_kg: Decimal | None = None
    sample_count: int | None = None
    quality_pass_rate: Decimal | None = None
    created_at: str | None = None
    updated_at: str | None = None
