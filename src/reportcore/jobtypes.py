"""Job types as data: for each, its upstream service, required scope, filters and columns.

The service's four are :data:`JOB_TYPES`; a consumer of the library adds its own with
:meth:`JobTypeRegistry.extended` (a new registry: the service's stays as it is) and a record
source for it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Any

import msgspec

from .jobs import JobType
from .records import FeedingKpiRecord, FeedIntakeRecord, TelemetryReading, WeightAggregate


class Upstream(enum.StrEnum):
    """The FarmIQ services records come from; values name them in error messages."""

    FEED = "feed service"
    TELEMETRY = "telemetry service"
    WEIGHVISION = "weighvision read model"


class Applied(enum.StrEnum):
    """Where a filter takes effect."""

    UPSTREAM = "upstream"  # passed as a query parameter
    STREAM = "stream"  # applied by the exporter to each record


class FilterSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One allowed key of a job type's ``filters`` object."""

    name: str
    applied: Applied
    record_attr: str
    choices: frozenset[str] | None = None
    many: bool = False  # a list of values (any of) is accepted, not only one string

    def describe(self) -> str:
        """The key and its type as shown in validation messages."""
        kind = "string or list of strings" if self.many else "string"
        if self.choices:
            kind += " (" + "|".join(sorted(self.choices)) + ")"
        return f"{self.name}: {kind}"


class CellKind(enum.StrEnum):
    """What a column holds, for formats with typed cells (xlsx) and for the timezone option."""

    TEXT = "text"
    NUMBER = "number"  # a decimal (upstream sends most as strings) or an integer
    INSTANT = "instant"  # an ISO 8601 instant: written in the job's timezone when one is asked
    DATE = "date"  # YYYY-MM-DD, never shifted by a timezone


class Column(msgspec.Struct, frozen=True):
    """A CSV column: its header and where its value comes from.

    ``attr`` names a record attribute; ``scope`` names a job scope field instead (the same
    value on every row, for exports whose records do not carry their scope).
    """

    name: str
    attr: str | None = None
    scope: str | None = None
    kind: CellKind = CellKind.TEXT


class JobTypeSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that differs between job types, in one value.

    ``job_type`` and ``upstream`` are the service's enums for its own job types; a consumer's
    job type names itself and its source with plain strings.
    """

    job_type: JobType | str
    upstream: Upstream | str
    record_type: type
    required_scope: tuple[str, ...]
    filters: Mapping[str, FilterSpec]
    columns: tuple[Column, ...]
    progress_attr: str
    newest_first: bool
    # the widest start_date..end_date a job may name (days, both ends included): bounds the
    # work one job can ask of the upstream and of a worker slot; configurable per job type
    max_range_days: int = 366

    @property
    def header(self) -> tuple[str, ...]:
        """The CSV header row."""
        return tuple(c.name for c in self.columns)

    def upstream_filters(self, filters: Mapping[str, Any]) -> dict[str, Any]:
        """The subset of validated ``filters`` that the upstream applies."""
        return {k: v for k, v in filters.items() if self.filters[k].applied is Applied.UPSTREAM}

    def stream_predicate(self, filters: Mapping[str, Any]) -> Callable[[Any], bool] | None:
        """A predicate over records for the filters applied while streaming, or ``None``."""
        tests: list[tuple[Callable[[Any], Any], frozenset[str]]] = []
        for key, value in filters.items():
            spec = self.filters[key]
            if spec.applied is Applied.STREAM:
                wanted = frozenset([value] if isinstance(value, str) else value)
                tests.append((attrgetter(spec.record_attr), wanted))
        if not tests:
            return None

        def keep(record: Any) -> bool:
            return all(get(record) in wanted for get, wanted in tests)

        return keep

    def row_getter(self, scope_values: Mapping[str, Any]) -> Callable[[Any], tuple[Any, ...]]:
        """A function from a record to its CSV row (``None`` becomes an empty cell)."""
        attrs = [c.attr for c in self.columns if c.attr is not None]
        consts = tuple(scope_values.get(c.scope) for c in self.columns if c.scope is not None)
        if any(c.attr is None for c in self.columns[: len(attrs)]):
            raise ValueError("scope columns must come after record columns")
        if getattr(self.record_type, "__struct_fields__", None) == tuple(attrs):
            # every field of the record, in its order (the service's records are declared in
            # their columns' order): the record as a tuple, in C, at a fifth of the CPU
            whole = msgspec.structs.astuple
            return whole if not consts else lambda r: whole(r) + consts
        getter = attrgetter(*attrs)
        if len(attrs) == 1:
            return lambda r: (getter(r), *consts)
        if not consts:
            return getter
        return lambda r: getter(r) + consts


class JobTypeRegistry(Mapping[str, JobTypeSpec]):
    """Job types by name (a :class:`JobType` is its name): each one's :class:`JobTypeSpec`.

    A registry is a value: it is built once from its specs and never changes, and a service (or
    a library user) passes the one it runs with to the use cases (:class:`reportcore.deps.Deps`).
    A name taken twice is a ``ValueError``, never a silent replacement.
    """

    def __init__(self, specs: Iterable[JobTypeSpec] = ()) -> None:
        self._specs: dict[str, JobTypeSpec] = {}
        for spec in specs:
            name = str(spec.job_type)
            if name in self._specs:
                raise ValueError(f"job type {name!r} is already registered")
            self._specs[name] = spec

    def extended(self, *specs: JobTypeSpec) -> JobTypeRegistry:
        """A new registry with these job types and ``specs``; this one is left as it is."""
        return JobTypeRegistry([*self._specs.values(), *specs])

    def __getitem__(self, job_type: str) -> JobTypeSpec:
        return self._specs[str(job_type)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


_KINDS = {
    **dict.fromkeys(("occurred_at", "created_at", "ingested_at", "updated_at"), CellKind.INSTANT),
    "record_date": CellKind.DATE,
    **dict.fromkeys(
        (
            "quantity_kg",
            "sequence",
            "fcr",
            "adg_g",
            "sgr_pct",
            "value",
            "avg_weight_kg",
            "p10_weight_kg",
            "p50_weight_kg",
            "p90_weight_kg",
            "sample_count",
            "quality_pass_rate",
        ),
        CellKind.NUMBER,
    ),
}


def _columns(*pairs: str) -> tuple[Column, ...]:
    return tuple(Column(name, attr=name, kind=_KINDS.get(name, CellKind.TEXT)) for name in pairs)


_SCOPE_COLUMNS = tuple(
    Column(name, scope=name) for name in ("tenant_id", "farm_id", "barn_id", "batch_id")
)

FEED_SOURCES = frozenset({"MANUAL", "API_IMPORT", "SILO_AUTO"})

JOB_TYPES = JobTypeRegistry(
    [
        JobTypeSpec(
            job_type=JobType.FEED_INTAKE_EXPORT,
            upstream=Upstream.FEED,
            record_type=FeedIntakeRecord,
            required_scope=(),
            filters={
                "source": FilterSpec(
                    name="source",
                    applied=Applied.STREAM,
                    record_attr="source",
                    choices=FEED_SOURCES,
                    many=True,
                ),
                "device_id": FilterSpec(
                    name="device_id", applied=Applied.STREAM, record_attr="device_id", many=True
                ),
                "feed_formula_id": FilterSpec(
                    name="feed_formula_id",
                    applied=Applied.STREAM,
                    record_attr="feed_formula_id",
                    many=True,
                ),
                "feed_lot_id": FilterSpec(
                    name="feed_lot_id", applied=Applied.STREAM, record_attr="feed_lot_id", many=True
                ),
            },
            columns=_columns(
                "id",
                "tenant_id",
                "farm_id",
                "barn_id",
                "batch_id",
                "device_id",
                "source",
                "feed_formula_id",
                "feed_lot_id",
                "quantity_kg",
                "occurred_at",
                "created_at",
                "ingested_at",
                "event_id",
                "external_ref",
                "idempotency_key",
                "sequence",
                "notes",
                "created_by_user_id",
            ),
            progress_attr="occurred_at",
            newest_first=True,
        ),
        JobTypeSpec(
            job_type=JobType.KPI_FEEDING_EXPORT,
            upstream=Upstream.FEED,
            record_type=FeedingKpiRecord,
            required_scope=("barn_id", "start_date", "end_date"),
            filters={},
            columns=_columns("record_date", "fcr", "adg_g", "sgr_pct") + _SCOPE_COLUMNS,
            progress_attr="record_date",
            newest_first=False,
        ),
        JobTypeSpec(
            job_type=JobType.TELEMETRY_EXPORT,
            upstream=Upstream.TELEMETRY,
            record_type=TelemetryReading,
            required_scope=(),
            filters={
                "metric": FilterSpec(name="metric", applied=Applied.UPSTREAM, record_attr="metric"),
                "device_id": FilterSpec(
                    name="device_id", applied=Applied.UPSTREAM, record_attr="device_id"
                ),
            },
            columns=_columns(
                "id",
                "tenant_id",
                "farm_id",
                "barn_id",
                "device_id",
                "batch_id",
                "metric",
                "value",
                "unit",
                "occurred_at",
                "trace_id",
                "event_id",
                "created_at",
            ),
            progress_attr="occurred_at",
            newest_first=True,
            max_range_days=92,  # a reading every few minutes per sensor: far denser than the others
        ),
        JobTypeSpec(
            job_type=JobType.WEIGHVISION_EXPORT,
            upstream=Upstream.WEIGHVISION,
            record_type=WeightAggregate,
            required_scope=("start_date", "end_date"),
            filters={},
            columns=_columns(
                "id",
                "tenant_id",
                "farm_id",
                "barn_id",
                "batch_id",
                "record_date",
                "avg_weight_kg",
                "p10_weight_kg",
                "p50_weight_kg",
                "p90_weight_kg",
                "sample_count",
                "quality_pass_rate",
                "created_at",
                "updated_at",
            ),
            progress_attr="record_date",
            newest_first=False,
        ),
    ]
)
