"""Each job type through the whole worker path (``run_job``) over in-memory adapters: the file
a user downloads has the contract's columns, upstream's values unchanged, RFC 4180 quoting,
NDJSON lines equal to upstream's bytes, stream filters applied, and progress that only rises.

Expected headers are written out here from the contract, not read from ``JOB_TYPES``, so that
a change of the table that breaks the contract fails here.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec
import pytest

from reportcore.jobs import Job, JobStatus, JobType, message_for
from reportcore.jobtypes import JOB_TYPES, JobTypeRegistry
from reportcore.ports import SourcePage, SourceRequest
from reportcore.requests import CreateRequest, validate_create
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    StaticRecordSource,
)
from reportcore.usecases import Policy
from tests.running import run_message

TENANT = "tenant-a"
FARM = "11111111-1111-4111-8111-111111111111"
BARN = "22222222-2222-4222-8222-222222222222"
BATCH = "33333333-3333-4333-8333-333333333333"
NOW = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)

FEED_HEADER = (
    "id,tenant_id,farm_id,barn_id,batch_id,device_id,source,feed_formula_id,feed_lot_id,"
    "quantity_kg,occurred_at,created_at,ingested_at,event_id,external_ref,idempotency_key,"
    "sequence,notes,created_by_user_id"
)
KPI_HEADER = "record_date,fcr,adg_g,sgr_pct,tenant_id,farm_id,barn_id,batch_id"
TELEMETRY_HEADER = (
    "id,tenant_id,farm_id,barn_id,device_id,batch_id,metric,value,unit,occurred_at,trace_id,"
    "event_id,created_at"
)
WEIGHVISION_HEADER = (
    "id,tenant_id,farm_id,barn_id,batch_id,record_date,avg_weight_kg,p10_weight_kg,"
    "p50_weight_kg,p90_weight_kg,sample_count,quality_pass_rate,created_at,updated_at"
)
HEADERS = {
    JobType.FEED_INTAKE_EXPORT: FEED_HEADER,
    JobType.KPI_FEEDING_EXPORT: KPI_HEADER,
    JobType.TELEMETRY_EXPORT: TELEMETRY_HEADER,
    JobType.WEIGHVISION_EXPORT: WEIGHVISION_HEADER,
}
# the columns a KPI file fills from the job's scope, since KPI records do not carry it
KPI_SCOPE_COLUMNS = {"tenant_id": TENANT, "farm_id": FARM, "barn_id": BARN, "batch_id": BATCH}

# text a CSV writer must quote, and text it must not mangle
TRICKY = [
    "plain",
    "comma, inside",
    'a "quoted" word',
    "line\nbreak",
    "carriage\r\nreturn",
    "trailing space ",
    "ünïcødé — ไก่ 🐔",
    '",\r\n"',
    "",
]


def feed_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [
        {
            "id": "f-1",
            "tenantId": TENANT,
            "farmId": FARM,
            "barnId": BARN,
            "batchId": BATCH,
            "deviceId": "silo-1",
            "source": "SILO_AUTO",
            "feedFormulaId": "formula-a",
            "feedLotId": "lot-1",
            "quantityKg": "10.50",  # a decimal string keeps its trailing zero
            "occurredAt": "2026-01-20T10:00:00.000Z",
            "createdAt": "2026-01-20T10:00:05.000Z",
            "ingestedAt": "2026-01-20T10:00:06.123Z",
            "eventId": "evt-1",
            "externalRef": "ERP-1",
            "idempotencyKey": "idem-1",
            "sequence": 42,
            "notes": "first",
            "createdByUserId": "user-1",
        },
        {  # the optional fields absent altogether
            "id": "f-2",
            "tenantId": TENANT,
            "farmId": FARM,
            "barnId": BARN,
            "source": "MANUAL",
            "quantityKg": "0.000001",
            "occurredAt": "2026-01-19T08:00:00Z",
            "createdAt": "2026-01-19T08:01:00Z",
        },
        {  # ... and present as null
            "id": "f-3",
            "tenantId": TENANT,
            "farmId": FARM,
            "barnId": BARN,
            "batchId": None,
            "deviceId": None,
            "source": "API_IMPORT",
            "feedFormulaId": "formula-b",
            "feedLotId": "lot-2",
            "quantityKg": "12345678901234567890.123456789",
            "occurredAt": "2026-01-18T07:00:00Z",
            "createdAt": "2026-01-18T07:00:00Z",
            "notes": None,
            "sequence": None,
        },
    ]
    for n, text in enumerate(TRICKY):
        records.append(
            {
                "id": f"f-note-{n}",
                "tenantId": TENANT,
                "farmId": FARM,
                "barnId": BARN,
                "source": "MANUAL",
                "quantityKg": "1",
                "occurredAt": f"2026-01-{17 - n // 3:02d}T0{n % 3}:00:00Z",
                "createdAt": "2026-01-17T00:00:00Z",
                "notes": text,
                "externalRef": text,
            }
        )
    return records


def kpi_records() -> list[dict[str, Any]]:
    return [
        {"recordDate": "2026-01-10", "fcr": "1.10", "adgG": "55.0", "sgrPct": "2.50"},
        {"recordDate": "2026-01-11", "fcr": "1.12", "adgG": "56.25", "sgrPct": None},
        {"recordDate": "2026-01-12", "fcr": "1.15"},
    ]


def telemetry_records() -> list[dict[str, Any]]:
    full = {
        "id": "r-1",
        "tenantId": TENANT,
        "farmId": FARM,
        "barnId": BARN,
        "deviceId": "sensor-1",
        "batchId": BATCH,
        "metric": "temperature",
        "value": "24.50",
        "unit": "°C",
        "occurredAt": "2026-01-12T12:00:00.000Z",
        "traceId": "trace, with comma",
        "eventId": "evt-r-1",
        "createdAt": "2026-01-12T12:00:00.250Z",
    }
    return [
        full,
        {**full, "id": "r-2", "metric": "humidity", "value": "61.0", "unit": "%"},
        {"id": "r-3", "occurredAt": "2026-01-11T12:00:00Z", "metric": "co2", "value": "1400"},
    ]


def weighvision_records() -> list[dict[str, Any]]:
    return [
        {
            "id": "w-1",
            "tenantId": TENANT,
            "farmId": FARM,
            "barnId": BARN,
            "batchId": BATCH,
            "recordDate": "2026-01-10",
            "avgWeightKg": "2.100",
            "p10WeightKg": "1.700",
            "p50WeightKg": "2.090",
            "p90WeightKg": "2.500",
            "sampleCount": 512,
            "qualityPassRate": "0.970",
            "createdAt": "2026-01-11T01:00:00Z",
            "updatedAt": "2026-01-11T02:00:00Z",
        },
        {"id": "w-2", "recordDate": "2026-01-11", "avgWeightKg": "2.180", "sampleCount": 0},
    ]


RECORDS: Mapping[JobType, list[dict[str, Any]]] = {
    JobType.FEED_INTAKE_EXPORT: feed_records(),
    JobType.KPI_FEEDING_EXPORT: kpi_records(),
    JobType.TELEMETRY_EXPORT: telemetry_records(),
    JobType.WEIGHVISION_EXPORT: weighvision_records(),
}
SCOPE: dict[str, Any] = {
    "farm_id": FARM,
    "barn_id": BARN,
    "batch_id": BATCH,
    "start_date": "2026-01-01",
    "end_date": "2026-01-31",
}


def camel(column: str) -> str:
    head, *rest = column.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def expected_row(job_type: JobType, record: Mapping[str, Any]) -> list[str]:
    """A record as the contract says its CSV row reads: values as sent, absent as empty."""
    row = []
    for column in HEADERS[job_type].split(","):
        if job_type is JobType.KPI_FEEDING_EXPORT and column in KPI_SCOPE_COLUMNS:
            row.append(KPI_SCOPE_COLUMNS[column])
            continue
        value = record.get(camel(column))
        row.append("" if value is None else str(value))
    return row


class ProgressLog(InMemoryJobRepository):
    """The in-memory repository, remembering every progress the worker reported."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: list[int] = []

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        now: dt.datetime,
        lease_until: dt.datetime,
        progress_pct: int | None,
    ) -> Job | None:
        if progress_pct is not None:
            self.progress.append(progress_pct)
        return super().heartbeat(job_id, owner, now, lease_until, progress_pct)


class BytesSource:
    """Upstream pages given as the exact bytes a service sent (``{"items": [...]}`` bodies),
    split and decoded as the HTTP source does: records typed and/or raw, aligned."""

    def __init__(self, bodies: Sequence[bytes]) -> None:
        self.bodies = bodies
        self.requests: list[SourceRequest] = []

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        self.requests.append(request)
        record_type = JOB_TYPES[request.job_type].record_type
        typed_page: Any = msgspec.defstruct("Typed", [("items", list[record_type])])  # type: ignore[valid-type]
        raw_page: Any = msgspec.defstruct("Raw", [("items", list[msgspec.Raw])])
        for body in self.bodies:
            typed = msgspec.json.decode(body, type=typed_page).items if request.typed else None
            raw = msgspec.json.decode(body, type=raw_page).items if request.raw else None
            yield SourcePage(records=typed, raw=raw)


class Export(msgspec.Struct, kw_only=True):
    """What one run left behind."""

    job: Job
    data: bytes
    progress: list[int]
    requests: list[SourceRequest]

    def rows(self) -> list[list[str]]:
        return list(csv.reader(io.StringIO(self.data.decode("utf-8"), newline="")))

    def lines(self) -> list[bytes]:
        assert self.data == b"" or self.data.endswith(b"\n")
        return self.data.splitlines()


def export(
    job_type: JobType,
    fmt: str,
    *,
    records: Sequence[Mapping[str, Any]] | None = None,
    source: Any = None,
    filters: Mapping[str, Any] | None = None,
    page_size: int = 2,
) -> Export:
    """Create a job of ``job_type`` and run it to its end; the job must succeed."""
    jobs = ProgressLog()
    store = InMemoryFileStore()
    clock = FakeClock(NOW)
    body = {"job_type": job_type.value, "format": fmt, **SCOPE}
    if filters is not None:
        body["filters"] = dict(filters)
    valid = validate_create(msgspec.convert(body, CreateRequest))
    scope = valid.scope
    job = Job(
        id=str(uuid.uuid4()),
        tenant_id=TENANT,
        requested_by="u-1",
        job_type=valid.job_type,
        format=valid.format,
        farm_id=scope.farm_id,
        barn_id=scope.barn_id,
        batch_id=scope.batch_id,
        start_date=scope.start_date,
        end_date=scope.end_date,
        filters=dict(scope.filters),
        created_at=NOW,
        updated_at=NOW,
    )
    jobs.add(job)
    if source is None:
        given = RECORDS[job_type] if records is None else records
        source = StaticRecordSource({job_type.value: list(given)}, page_size=page_size)
    outcome = run_message(
        msgspec.json.encode(message_for(job)),
        owner="worker-1",
        jobs=jobs,
        source=source,
        store=store,
        clock=clock,
        # a heartbeat after every page, so that every progress step is seen
        policy=Policy(heartbeat_sec=0),
    )
    done = jobs.get(job.id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED, (outcome, done.error_code, done.error_message)
    assert done.file_path == f"mem://{TENANT}/{job.id}/report.{fmt}"
    data = store.files[done.file_path]
    assert done.size_bytes == len(data)
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    return Export(job=done, data=data, progress=jobs.progress, requests=source.requests)


# --- CSV ---


@pytest.mark.parametrize("job_type", list(JobType))
def test_the_csv_header_is_the_contracts_column_list(job_type: JobType) -> None:
    data = export(job_type, "csv").data
    assert data.split(b"\r\n", 1)[0].decode() == HEADERS[job_type]


@pytest.mark.parametrize("job_type", list(JobType))
def test_each_csv_row_is_its_upstream_record_with_values_unchanged(job_type: JobType) -> None:
    rows = export(job_type, "csv").rows()
    assert rows[1:] == [expected_row(job_type, r) for r in RECORDS[job_type]]


def test_decimal_strings_keep_their_digits_and_trailing_zeros() -> None:
    rows = export(JobType.FEED_INTAKE_EXPORT, "csv").rows()
    quantity = rows[0].index("quantity_kg")
    assert [r[quantity] for r in rows[1:4]] == [
        "10.50",
        "0.000001",
        "12345678901234567890.123456789",
    ]
    kpi = export(JobType.KPI_FEEDING_EXPORT, "csv").rows()
    assert kpi[1][:4] == ["2026-01-10", "1.10", "55.0", "2.50"]


def test_absent_and_null_upstream_fields_are_empty_cells() -> None:
    rows = export(JobType.FEED_INTAKE_EXPORT, "csv").rows()
    header = rows[0]
    sparse, nulls = dict(zip(header, rows[2], strict=True)), dict(zip(header, rows[3], strict=True))
    for column in ("batch_id", "device_id", "ingested_at", "sequence", "notes"):
        assert sparse[column] == ""
        assert nulls[column] == ""
    kpi = export(JobType.KPI_FEEDING_EXPORT, "csv").rows()
    assert kpi[2][3] == "" and kpi[3][2:4] == ["", ""]


def test_quotes_commas_line_breaks_and_unicode_read_back_with_any_csv_reader() -> None:
    rows = export(JobType.FEED_INTAKE_EXPORT, "csv").rows()
    header = rows[0]
    notes, ref = header.index("notes"), header.index("external_ref")
    tricky_rows = rows[4:]
    assert [r[notes] for r in tricky_rows] == TRICKY
    assert [r[ref] for r in tricky_rows] == TRICKY
    assert all(len(r) == len(header) for r in rows)


def test_csv_is_rfc4180_crlf_records_with_minimal_doubled_quote_quoting() -> None:
    data = export(
        JobType.FEED_INTAKE_EXPORT,
        "csv",
        records=[
            {
                "id": "q-1",
                "tenantId": TENANT,
                "farmId": FARM,
                "barnId": BARN,
                "source": "MANUAL",
                "quantityKg": "2",
                "occurredAt": "2026-01-02T00:00:00Z",
                "createdAt": "2026-01-02T00:00:00Z",
                "notes": 'say "hi", then\nleave',
            }
        ],
    ).data
    line = f"q-1,{TENANT},{FARM},{BARN},,,MANUAL,,,2,2026-01-02T00:00:00Z,2026-01-02T00:00:00Z,"
    line += ',,,,,"say ""hi"", then\nleave",\r\n'
    assert data == (FEED_HEADER + "\r\n" + line).encode()


def test_an_export_without_records_is_the_header_alone() -> None:
    for job_type in JobType:
        data = export(job_type, "csv", records=[]).data
        assert data == (HEADERS[job_type] + "\r\n").encode()
        assert export(job_type, "json", records=[]).data == b""


# --- NDJSON ---


@pytest.mark.parametrize("job_type", list(JobType))
def test_ndjson_lines_are_the_upstream_records_byte_for_byte(job_type: JobType) -> None:
    done = export(job_type, "json")
    assert done.lines() == [msgspec.json.encode(r) for r in RECORDS[job_type]]
    assert done.job.mime_type == "application/x-ndjson"


def test_ndjson_keeps_upstreams_own_spelling_of_each_record() -> None:
    # key order, spacing, escapes and fields unknown to us are upstream's business
    first = (
        b'{ "recordDate" :"2026-01-10","fcr":1.10,  "adgG":"55", "extra":{"nested":[1,2]},'
        b'"note":"caf\\u00e9 \\"x\\""}'
    )
    second = b'{"sgrPct":null,"recordDate":"2026-01-11"}'
    third = b'{"recordDate":"2026-01-12","fcr":1E+2}'
    bodies = [b'{"items":[' + first + b" , " + second + b"]}", b'{"items": [' + third + b"]}"]
    done = export(JobType.KPI_FEEDING_EXPORT, "json", source=BytesSource(bodies))
    assert done.lines() == [first, second, third]


def test_ndjson_without_stream_filters_asks_upstream_for_raw_records_only() -> None:
    request = export(JobType.WEIGHVISION_EXPORT, "json").requests[0]
    assert (request.raw, request.typed) == (True, False)
    csv_request = export(JobType.WEIGHVISION_EXPORT, "csv").requests[0]
    assert (csv_request.raw, csv_request.typed) == (False, True)


# --- filters ---


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_feed_source_filter_keeps_only_records_of_those_sources_in_order(fmt: str) -> None:
    done = export(JobType.FEED_INTAKE_EXPORT, fmt, filters={"source": ["SILO_AUTO", "API_IMPORT"]})
    want = [r for r in RECORDS[JobType.FEED_INTAKE_EXPORT] if r["source"] != "MANUAL"]
    assert [r["id"] for r in want] == ["f-1", "f-3"]
    if fmt == "csv":
        assert done.rows()[1:] == [expected_row(JobType.FEED_INTAKE_EXPORT, r) for r in want]
    else:
        assert done.lines() == [msgspec.json.encode(r) for r in want]
    request = done.requests[0]
    assert request.upstream_filters == {}, "feed filters are applied while streaming"
    assert request.typed, "a stream filter needs the typed records"


@pytest.mark.parametrize(
    ("filters", "ids"),
    [
        ({"device_id": "silo-1"}, ["f-1"]),
        ({"feed_formula_id": ["formula-b", "formula-a"]}, ["f-1", "f-3"]),
        ({"feed_lot_id": "lot-2"}, ["f-3"]),
        ({"source": "MANUAL", "feed_formula_id": "formula-a"}, []),
        ({"source": "SILO_AUTO", "feed_lot_id": ["lot-1", "lot-2"]}, ["f-1"]),
    ],
)
def test_every_feed_stream_filter_applies_and_together_they_all_must_match(
    filters: dict[str, Any], ids: list[str]
) -> None:
    rows = export(JobType.FEED_INTAKE_EXPORT, "csv", filters=filters).rows()
    assert [r[0] for r in rows[1:]] == ids


def test_telemetry_filters_are_sent_upstream_not_applied_to_the_stream() -> None:
    done = export(JobType.TELEMETRY_EXPORT, "csv", filters={"metric": "temperature"})
    assert done.requests[0].upstream_filters == {"metric": "temperature"}
    # upstream answers for the filter; the exporter adds no second opinion
    assert len(done.rows()) - 1 == len(RECORDS[JobType.TELEMETRY_EXPORT])


# --- progress ---


def many_feed_records(days: int, per_day: int) -> list[dict[str, Any]]:
    start = dt.datetime(2026, 1, 31, 23, tzinfo=dt.UTC)
    return [
        {
            "id": f"m-{d}-{i}",
            "tenantId": TENANT,
            "farmId": FARM,
            "barnId": BARN,
            "source": "MANUAL",
            "quantityKg": "1.0",
            "occurredAt": (start - dt.timedelta(days=d, hours=i)).isoformat(),
            "createdAt": "2026-02-01T00:00:00Z",
        }
        for d in range(days)
        for i in range(per_day)
    ]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize(
    "job_type", [JobType.FEED_INTAKE_EXPORT, JobType.TELEMETRY_EXPORT], ids=lambda t: t.value
)
def test_progress_rises_through_the_date_range_and_ends_at_100(job_type: JobType, fmt: str) -> None:
    records = many_feed_records(days=31, per_day=3)
    if job_type is JobType.TELEMETRY_EXPORT:
        records = [{"id": r["id"], "occurredAt": r["occurredAt"]} for r in records]
    done = export(job_type, fmt, records=records, page_size=10)
    assert done.progress == sorted(done.progress), "progress fell"
    assert all(0 <= p <= 99 for p in done.progress)
    assert len(set(done.progress)) >= 5, f"progress barely moved: {done.progress}"
    assert done.progress[-1] >= 90
    assert done.job.progress_pct == 100
    written = len(done.rows()) - 1 if fmt == "csv" else len(done.lines())  # rows by a CSV reader
    assert written == len(records)


def test_progress_of_an_oldest_first_export_rises_day_by_day() -> None:
    records = [
        {"recordDate": (dt.date(2026, 1, 1) + dt.timedelta(days=n)).isoformat(), "fcr": "1.0"}
        for n in range(31)
    ]
    done = export(JobType.KPI_FEEDING_EXPORT, "csv", records=records, page_size=4)
    assert done.progress == sorted(done.progress)
    assert len(set(done.progress)) >= 5
    assert done.job.progress_pct == 100


def test_a_registry_lists_its_job_types_and_never_replaces_one_silently() -> None:
    feed = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]
    registry = JobTypeRegistry([feed])
    assert list(registry) == ["FEED_INTAKE_EXPORT"] and len(registry) == 1
    with pytest.raises(ValueError, match=r"^job type 'FEED_INTAKE_EXPORT' is already registered$"):
        JobTypeRegistry([feed, feed])
    assert registry["FEED_INTAKE_EXPORT"] is feed
