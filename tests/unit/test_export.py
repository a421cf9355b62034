"""Export encoding: CSV that any RFC 4180 reader reads back, NDJSON lines unchanged, honest
size, sha256 and progress."""

from __future__ import annotations

import csv
import datetime as dt
import enum
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reportcore import export
from reportcore.encoding import guarded
from reportcore.export import (
    ProgressEstimate,
    csv_line,
    csv_lines,
    page_position,
    scope_values,
    write_export,
)
from reportcore.jobs import (
    CsvOptions,
    Job,
    JobMessage,
    JobStatus,
    JobType,
    ReportFormat,
    Scope,
    file_name_for,
    message_for,
)
from reportcore.jobtypes import JOB_TYPES, Applied, Column, FilterSpec, JobTypeSpec, Upstream
from reportcore.options import export_options
from reportcore.ports import SourcePage
from reportcore.records import FeedingKpiRecord, FeedIntakeRecord, TelemetryReading

FEED = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]
KPI = JOB_TYPES[JobType.KPI_FEEDING_EXPORT]
TELEMETRY = JOB_TYPES[JobType.TELEMETRY_EXPORT]
WEIGHVISION = JOB_TYPES[JobType.WEIGHVISION_EXPORT]


class CollectingWriter:
    """A FileWriter that keeps the chunks it was handed."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(data))

    def commit(self) -> str:
        return "collected"

    def abort(self) -> None:
        self.chunks.clear()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def in_pages(items: list[Any], sizes: list[int]) -> Iterator[list[Any]]:
    start = 0
    for size in sizes:
        yield items[start : start + size]
        start += size
    yield items[start:]


cells = st.text(max_size=30)  # any unicode a JSON string can carry: quotes, commas, CR, LF
optional_cells = st.none() | cells
feed_records = st.builds(
    FeedIntakeRecord,
    id=cells,
    tenant_id=cells,
    farm_id=cells,
    barn_id=cells,
    source=st.sampled_from(["MANUAL", "API_IMPORT", "SILO_AUTO"]),
    quantity_kg=st.one_of(cells, st.integers()),
    occurred_at=cells,
    created_at=cells,
    batch_id=optional_cells,
    device_id=optional_cells,
    feed_formula_id=optional_cells,
    feed_lot_id=optional_cells,
    ingested_at=optional_cells,
    event_id=optional_cells,
    external_ref=optional_cells,
    idempotency_key=optional_cells,
    sequence=st.none() | st.integers(),
    notes=optional_cells,
    created_by_user_id=optional_cells,
)


def expected_row(record: FeedIntakeRecord, *, exact: bool = False) -> list[str]:
    """The cells of a record, worked out from the contract's column list; as a spreadsheet
    shows text (:func:`guarded`) unless ``exact``."""
    columns = [
        "id", "tenant_id", "farm_id", "barn_id", "batch_id", "device_id", "source",
        "feed_formula_id", "feed_lot_id", "quantity_kg", "occurred_at", "created_at",
        "ingested_at", "event_id", "external_ref", "idempotency_key", "sequence", "notes",
        "created_by_user_id",
    ]  # fmt: skip
    values = [getattr(record, c) for c in columns]
    cells = ["" if v is None else str(v) for v in values]
    return cells if exact else [guarded(c) for c in cells]


@given(
    records=st.lists(feed_records, max_size=12),
    sizes=st.lists(st.integers(min_value=0, max_value=5), max_size=4),
)
def test_csv_rows_of_any_unicode_read_back_unchanged(
    records: list[FeedIntakeRecord], sizes: list[int]
) -> None:
    writer = CollectingWriter()
    pages = (SourcePage(records=chunk) for chunk in in_pages(records, sizes))
    result = write_export(FEED, ReportFormat.CSV, pages, writer, scope_values={})
    rows = read_csv(writer.data)
    assert rows[0] == list(FEED.header)
    assert rows[1:] == [expected_row(r) for r in records]
    assert result.rows == len(records)
    assert result.size_bytes == len(writer.data)
    assert result.sha256 == hashlib.sha256(writer.data).hexdigest()
    # for machine consumers, formula_guard off: every cell exactly as sent
    exact = CollectingWriter()
    options = export_options(
        FEED, compression=None, csv=CsvOptions(formula_guard=False), columns=None, timezone=None
    )
    pages = (SourcePage(records=chunk) for chunk in in_pages(records, sizes))
    write_export(FEED, ReportFormat.CSV, pages, exact, scope_values={}, options=options)
    assert read_csv(exact.data)[1:] == [expected_row(r, exact=True) for r in records]


def test_the_csv_header_is_the_contracts_column_list() -> None:
    writer = CollectingWriter()
    write_export(FEED, ReportFormat.CSV, [], writer, scope_values={})
    assert writer.data == (
        b"id,tenant_id,farm_id,barn_id,batch_id,device_id,source,feed_formula_id,feed_lot_id,"
        b"quantity_kg,occurred_at,created_at,ingested_at,event_id,external_ref,idempotency_key,"
        b"sequence,notes,created_by_user_id\r\n"
    )


@pytest.mark.parametrize(
    ("spec", "header"),
    [
        (KPI, "record_date,fcr,adg_g,sgr_pct,tenant_id,farm_id,barn_id,batch_id"),
        (
            TELEMETRY,
            "id,tenant_id,farm_id,barn_id,device_id,batch_id,metric,value,unit,occurred_at,"
            "trace_id,event_id,created_at",
        ),
        (
            WEIGHVISION,
            "id,tenant_id,farm_id,barn_id,batch_id,record_date,avg_weight_kg,p10_weight_kg,"
            "p50_weight_kg,p90_weight_kg,sample_count,quality_pass_rate,created_at,updated_at",
        ),
    ],
    ids=["kpi", "telemetry", "weighvision"],
)
def test_csv_headers_are_the_upstream_fields_in_snake_case(spec: JobTypeSpec, header: str) -> None:
    assert ",".join(spec.header) == header


def test_kpi_rows_carry_the_jobs_scope_since_kpi_records_do_not() -> None:
    writer = CollectingWriter()
    scope = Scope(barn_id="b-1", farm_id=None, batch_id="c-1")
    records = [FeedingKpiRecord(record_date="2026-01-01", fcr="1.5", adg_g=None, sgr_pct=2)]
    write_export(
        KPI,
        ReportFormat.CSV,
        [SourcePage(records=records)],
        writer,
        scope_values=scope_values("t1", scope),
    )
    assert read_csv(writer.data)[1] == ["2026-01-01", "1.5", "", "2", "t1", "", "b-1", "c-1"]


@given(
    records=st.lists(feed_records, max_size=10),
    wanted=st.sets(st.sampled_from(["MANUAL", "API_IMPORT", "SILO_AUTO"])),
)
def test_stream_filters_keep_exactly_the_matching_records(
    records: list[FeedIntakeRecord], wanted: set[str]
) -> None:
    filters: dict[str, Any] = {"source": sorted(wanted)} if wanted else {}
    keep = FEED.stream_predicate(filters)
    assert (keep is None) == (not wanted)
    writer = CollectingWriter()
    result = write_export(
        FEED, ReportFormat.CSV, [SourcePage(records=records)], writer, scope_values={}, keep=keep
    )
    kept = [r for r in records if not wanted or r.source in wanted]
    assert read_csv(writer.data)[1:] == [expected_row(r) for r in kept]
    assert result.rows == len(kept)


def test_a_single_valued_stream_filter_is_a_string() -> None:
    keep = FEED.stream_predicate({"device_id": "d1", "source": ["MANUAL"]})
    assert keep is not None
    make = msgspec.json.decode(
        b'{"id":"1","tenantId":"t","farmId":"f","barnId":"b","source":"MANUAL",'
        b'"quantityKg":"1","occurredAt":"x","createdAt":"x","deviceId":"d1"}',
        type=FeedIntakeRecord,
    )
    assert keep(make)
    assert not keep(msgspec.structs.replace(make, device_id="d2"))
    assert not keep(msgspec.structs.replace(make, source="SILO_AUTO"))


def test_only_upstream_filters_are_sent_upstream() -> None:
    assert TELEMETRY.upstream_filters({"metric": "t", "device_id": "d"}) == {
        "metric": "t",
        "device_id": "d",
    }
    assert FEED.upstream_filters({"source": ["MANUAL"]}) == {}
    assert TELEMETRY.stream_predicate({"metric": "t"}) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    records=st.lists(st.dictionaries(st.text(), json_values, max_size=4), max_size=10),
    sizes=st.lists(st.integers(min_value=0, max_value=4), max_size=3),
)
def test_ndjson_is_each_upstream_record_unchanged_on_its_own_line(
    records: list[dict[str, Any]], sizes: list[int]
) -> None:
    raws = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    writer = CollectingWriter()
    pages = (SourcePage(raw=chunk) for chunk in in_pages(raws, sizes))
    result = write_export(FEED, ReportFormat.JSON, pages, writer, scope_values={})
    lines = writer.data.split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == raws
    assert [json.loads(line) for line in lines[:-1]] == records
    assert result.rows == len(records)
    assert result.sha256 == hashlib.sha256(writer.data).hexdigest()


def test_a_pretty_printed_upstream_record_still_takes_exactly_one_line() -> None:
    # JSON allows CR and LF between tokens; inside strings they are always escaped
    raws = [b'{\n  "id": "a",\r\n  "notes": "x\\ny"\n}', b'{"id": "b"}']
    writer = CollectingWriter()
    result = write_export(FEED, ReportFormat.JSON, [SourcePage(raw=raws)], writer, scope_values={})
    lines = writer.data.split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == [{"id": "a", "notes": "x\ny"}, {"id": "b"}]
    assert result.rows == 2 and result.size_bytes == len(writer.data)


def test_a_bare_cr_between_json_tokens_never_reaches_the_ndjson_file() -> None:
    # CR alone: json.loads accepts it as whitespace, but a line reader (and the old service's
    # consumers) split on it, so the file must carry a space there
    raws = [b'{"id": "a",\r"notes": "x"}', b'{"id":\r"b"}']
    writer = CollectingWriter()
    result = write_export(FEED, ReportFormat.JSON, [SourcePage(raw=raws)], writer, scope_values={})
    assert writer.data == b'{"id": "a", "notes": "x"}\n{"id": "b"}\n'
    assert result.rows == 2


def test_ndjson_stream_filters_use_the_typed_records_aligned_with_the_raw_ones() -> None:
    bodies = [
        {
            "id": str(i),
            "tenantId": "t",
            "farmId": "f",
            "barnId": "b",
            "source": source,
            "quantityKg": "1",
            "occurredAt": "x",
            "createdAt": "x",
            "extra": i,
        }
        for i, source in enumerate(["MANUAL", "SILO_AUTO", "MANUAL"])
    ]
    raws = [json.dumps(b).encode() for b in bodies]
    typed = [msgspec.json.decode(r, type=FeedIntakeRecord) for r in raws]
    writer = CollectingWriter()
    result = write_export(
        FEED,
        ReportFormat.JSON,
        [SourcePage(records=typed, raw=raws), SourcePage(records=[], raw=[])],
        writer,
        scope_values={},
        keep=FEED.stream_predicate({"source": ["MANUAL"]}),
    )
    assert writer.data == raws[0] + b"\n" + raws[2] + b"\n"
    assert result.rows == 2


@given(
    records=st.lists(feed_records, min_size=1, max_size=8),
    flush=st.integers(min_value=1, max_value=300),
)
def test_chunked_writes_hash_and_count_the_same_bytes(
    records: list[FeedIntakeRecord], flush: int
) -> None:
    whole = CollectingWriter()
    write_export(FEED, ReportFormat.CSV, [SourcePage(records=records)], whole, scope_values={})
    chunked = CollectingWriter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "FLUSH_BYTES", flush)
        result = write_export(
            FEED,
            ReportFormat.CSV,
            [SourcePage(records=[r]) for r in records],
            chunked,
            scope_values={},
        )
    assert chunked.data == whole.data
    assert all(len(chunk) >= flush for chunk in chunked.chunks[:-1])
    assert result.size_bytes == len(whole.data)
    assert result.sha256 == hashlib.sha256(whole.data).hexdigest()


def test_on_page_is_told_the_rows_written_so_far() -> None:
    seen: list[int] = []
    record = msgspec.json.decode(
        b'{"id":"1","occurredAt":"2026-01-01T00:00:00Z"}', type=TelemetryReading
    )
    write_export(
        TELEMETRY,
        ReportFormat.CSV,
        [
            SourcePage(records=[record, record]),
            SourcePage(records=None),
            SourcePage(records=[record]),
        ],
        CollectingWriter(),
        scope_values={},
        on_page=lambda page, rows: seen.append(rows),
    )
    assert seen == [2, 2, 3]


@given(values=st.lists(st.none() | st.text() | st.integers(), min_size=2, max_size=6))
def test_csv_line_is_one_rfc4180_record(values: list[Any]) -> None:
    line = csv_line(values)
    assert line.endswith(b"\r\n")
    assert read_csv(line) == [["" if v is None else str(v) for v in values]]


def csv_writer_bytes(rows: list[tuple[Any, ...]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode("utf-8")


# columns of one kind each, so that clean, quoted, optional and number columns all come up
csv_column_kinds = [
    st.text(max_size=6),
    st.text(alphabet=',"\r\n a\xe9\u20ac\u2028', max_size=6),
    st.none() | st.text(max_size=6),
    st.none(),
    st.integers() | st.floats() | st.booleans() | st.decimals().map(str),
    st.none() | st.integers() | st.floats() | st.booleans() | st.text(max_size=6),
]
csv_pages = st.lists(st.sampled_from(csv_column_kinds), max_size=6).flatmap(
    lambda kinds: st.lists(st.tuples(*kinds), max_size=8)
)


@given(rows=csv_pages)
def test_csv_lines_are_the_bytes_csv_writer_writes(rows: list[tuple[Any, ...]]) -> None:
    assert csv_lines(rows) == csv_writer_bytes(rows)
    assert [csv_line(row) for row in rows] == [csv_writer_bytes([row]) for row in rows]


class Shade(str, enum.Enum):  # noqa: UP042 - unlike a StrEnum, its str() is "Shade.DARK"
    DARK = "dark, very"


def test_csv_lines_quote_only_the_cells_that_need_it() -> None:
    rows = [
        ("a,b", 'say "hi"', " pad ", None, 7, 1.5, True, "x\ry", "\xe9", Shade.DARK),
        ("plain", "", "", None, -1, 1e20, False, "", "\u2028", ""),
    ]
    expected = (
        '"a,b","say ""hi""", pad ,,7,1.5,True,"x\ry",\xe9,"dark, very"\r\n'
        "plain,,,,-1,1e+20,False,,\u2028,\r\n"
    )
    assert csv_lines(rows) == expected.encode() == csv_writer_bytes(rows)


def test_a_lone_empty_cell_is_written_as_two_quotes_as_csv_writer_does() -> None:
    assert csv_lines([("",), (None,), ("a",), (",",)]) == b'""\r\n""\r\na\r\n","\r\n'
    assert csv_line([None]) == b'""\r\n'
    assert csv_line([None, ""]) == b",\r\n"
    assert csv_lines([(), ()]) == b"\r\n\r\n"
    assert csv_lines([]) == b""


def test_the_rows_of_one_csv_lines_call_must_have_one_width() -> None:
    with pytest.raises(ValueError, match="zip"):
        csv_lines([("a", "b"), ("c",)])


def test_scope_columns_must_follow_record_columns() -> None:
    spec = msgspec.structs.replace(
        KPI, columns=(Column("tenant_id", scope="tenant_id"), *KPI.columns)
    )
    with pytest.raises(ValueError, match=r"^scope columns must come after record columns$"):
        spec.row_getter({"tenant_id": "t"})


def test_a_one_column_export_writes_one_cell_rows() -> None:
    spec = JobTypeSpec(
        job_type=JobType.TELEMETRY_EXPORT,
        upstream=Upstream.TELEMETRY,
        record_type=TelemetryReading,
        required_scope=(),
        filters={},
        columns=(Column("id", attr="id"),),
        progress_attr="occurred_at",
        newest_first=True,
    )
    with_scope = msgspec.structs.replace(spec, columns=(*spec.columns, Column("t", scope="t")))
    record = TelemetryReading(id="r1", occurred_at="x")
    assert spec.row_getter({})(record) == ("r1",)
    assert with_scope.row_getter({"t": "t1"})(record) == ("r1", "t1")


@pytest.mark.parametrize("spec", list(JOB_TYPES.values()), ids=str)
def test_a_row_is_each_column_of_the_record_in_order_then_the_scope(spec: JobTypeSpec) -> None:
    """The service's records declare their fields in their columns' order, so that a row is
    the record as a tuple (the fast way); a row is what a getter of each column gives."""
    attrs = [c.attr for c in spec.columns if c.attr is not None]
    assert [f.name for f in msgspec.structs.fields(spec.record_type)] == attrs
    scope = {"tenant_id": "t1", "farm_id": "f1", "barn_id": "b1", "batch_id": None}
    values = {name: f"{name}-value" for name in attrs}
    record = spec.record_type(**values)
    expected = tuple(values[a] for a in attrs) + tuple(
        scope[c.scope] for c in spec.columns if c.scope is not None
    )
    assert spec.row_getter(scope)(record) == expected
    if all(c.scope is None for c in spec.columns):  # and the row is the record's own tuple
        assert spec.row_getter(scope) is msgspec.structs.astuple


def test_a_record_type_whose_fields_are_not_the_columns_gets_its_rows_column_by_column() -> None:
    class Reading(msgspec.Struct):
        unit: str
        id: str
        value: str

    spec = msgspec.structs.replace(
        TELEMETRY,
        record_type=Reading,
        columns=(
            Column("id", attr="id"),
            Column("value", attr="value"),
            Column("unit", attr="unit"),
        ),
    )
    reading = Reading(unit="kg", id="r1", value="2")
    assert spec.row_getter({})(reading) == ("r1", "2", "kg")
    plain = msgspec.structs.replace(spec, record_type=dict)  # not a struct at all
    assert plain.row_getter({})(reading) == ("r1", "2", "kg")
    scoped = msgspec.structs.replace(spec, columns=(*spec.columns, Column("t", scope="t")))
    assert scoped.row_getter({"t": "t1"})(reading) == ("r1", "2", "kg", "t1")


def test_filter_specs_describe_themselves_for_error_messages() -> None:
    assert FilterSpec(name="m", applied=Applied.UPSTREAM, record_attr="m").describe() == "m: string"
    spec = FilterSpec(
        name="s", applied=Applied.STREAM, record_attr="s", choices=frozenset({"B", "A"}), many=True
    )
    assert spec.describe() == "s: string or list of strings (A|B)"


# --- progress ---


def kpi_page(*days: str) -> SourcePage:
    return SourcePage(records=[FeedingKpiRecord(record_date=d) for d in days])


def test_progress_of_an_oldest_first_export_is_the_share_of_the_dates_covered() -> None:
    estimate = ProgressEstimate(
        KPI, Scope(start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 10))
    )
    assert estimate.update(kpi_page("2026-01-01", "2026-01-03")) == 20
    assert estimate.update(kpi_page("2026-01-06")) == 50
    assert estimate.update(kpi_page("2026-01-02")) == 50  # never falls back
    assert estimate.update(kpi_page("2026-01-10")) == 90
    assert estimate.update(kpi_page("2026-02-10")) == 99  # 100 is only for success


def test_progress_of_a_newest_first_export_counts_back_from_the_end_date() -> None:
    estimate = ProgressEstimate(
        TELEMETRY, Scope(start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 4))
    )
    page = SourcePage(records=[TelemetryReading(id="1", occurred_at="2026-01-04T00:00:00+00:00")])
    assert estimate.update(page) == 25
    later = SourcePage(records=[TelemetryReading(id="2", occurred_at="2026-01-02T00:00:00")])
    assert estimate.update(later) == 75
    assert (
        estimate.update(SourcePage(records=[TelemetryReading(id="3", occurred_at="later")])) == 75
    )


def test_an_empty_page_of_a_dated_export_leaves_the_progress_where_it_was() -> None:
    """A time window without records (a barn empty between flocks) gives an empty page: its
    page count's estimate (99 x (1 - 0.97^n)) jumped the export to ~75 % and kept it there."""
    estimate = ProgressEstimate(
        TELEMETRY, Scope(start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 4))
    )
    page = SourcePage(records=[TelemetryReading(id="1", occurred_at="2026-01-04T00:00:00Z")])
    for _ in range(44):
        assert estimate.update(page) == 25
    assert estimate.update(SourcePage()) == 25
    later = SourcePage(records=[TelemetryReading(id="2", occurred_at="2026-01-03T00:00:00Z")])
    assert estimate.update(later) == 50


def test_progress_of_ndjson_pages_reads_the_last_raw_record() -> None:
    estimate = ProgressEstimate(
        WEIGHVISION, Scope(start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 4))
    )
    assert estimate.update(SourcePage(raw=[b'{"recordDate": "2026-01-02"}'])) == 25
    assert estimate.update(SourcePage(raw=[b"not json"])) == 25
    assert estimate.update(SourcePage(raw=[b"[1, 2]"])) == 25
    assert estimate.update(SourcePage(raw=[b'{"recordDate": 20260103}'])) == 25


def test_progress_without_both_dates_climbs_with_the_pages_and_never_reaches_99() -> None:
    estimate = ProgressEstimate(FEED, Scope(start_date=dt.date(2026, 1, 1)))
    seen = [estimate.update(SourcePage()) for _ in range(1000)]
    assert seen[0] in range(1, 10)
    assert seen == sorted(seen)
    assert seen[10] > seen[0] and seen[100] > seen[10]
    assert seen[-1] == 98


@given(days=st.lists(st.dates(dt.date(2025, 12, 1), dt.date(2026, 2, 28)).map(str), max_size=20))
def test_progress_never_falls_and_stays_within_0_and_99(days: list[str]) -> None:
    estimate = ProgressEstimate(
        KPI, Scope(start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 31))
    )
    seen = [estimate.update(kpi_page(d)) for d in days]
    assert seen == sorted(seen)
    assert all(0 <= p <= 99 for p in seen)


def test_an_empty_page_has_no_position() -> None:
    assert page_position(FEED, SourcePage()) is None
    assert page_position(FEED, SourcePage(records=[], raw=[])) is None


# --- values around the export ---


def test_source_pages_count_their_records() -> None:
    assert len(SourcePage()) == 0
    assert len(SourcePage(records=[1, 2])) == 2
    assert len(SourcePage(raw=[b"{}"])) == 1


@pytest.mark.parametrize(
    ("fmt", "extension", "mime"),
    [
        (ReportFormat.CSV, "csv", "text/csv; charset=utf-8"),
        (ReportFormat.JSON, "json", "application/x-ndjson"),
    ],
)
def test_each_format_has_its_extension_and_content_type(
    fmt: ReportFormat, extension: str, mime: str
) -> None:
    assert (fmt.extension, fmt.mime_type) == (extension, mime)
    assert file_name_for(JobType.TELEMETRY_EXPORT, fmt) == f"telemetry_export.{extension}"


def test_the_queue_message_is_the_old_services_shape() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    job = Job(
        id="j1",
        tenant_id="t1",
        requested_by="u1",
        job_type=JobType.KPI_FEEDING_EXPORT,
        format=ReportFormat.JSON,
        barn_id="b1",
        start_date=dt.date(2026, 1, 1),
        end_date=dt.date(2026, 1, 31),
        created_at=now,
        updated_at=now,
    )
    assert job.status is JobStatus.QUEUED and job.progress_pct == 0
    assert msgspec.json.decode(msgspec.json.encode(message_for(job))) == {
        "job_id": "j1",
        "tenant_id": "t1",
        "job_type": "KPI_FEEDING_EXPORT",
        "format": "json",
        "scope": {
            "farm_id": None,
            "barn_id": "b1",
            "batch_id": None,
            "start_date": "2026-01-01",
            "end_date": "2026-01-31",
            "filters": {},
        },
        "requested_by": "u1",
    }
    no_dates = msgspec.structs.replace(job, start_date=None, end_date=None)
    scope = message_for(no_dates).scope
    assert scope is not None and (scope["start_date"], scope["end_date"]) == (None, None)
    assert msgspec.json.decode(b'{"job_id": "j1"}', type=JobMessage) == JobMessage(job_id="j1")


def test_progress_reads_a_raw_records_camel_case_attribute_of_three_words() -> None:
    # a consumer's job type may name any snake_case attribute; upstream JSON spells it camelCase
    spec = msgspec.structs.replace(FEED, progress_attr="reading_taken_at")
    page = SourcePage(raw=[msgspec.Raw(b'{"readingTakenAt": "2026-01-05T12:00:00Z"}')])
    assert page_position(spec, page) == dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)


def test_a_writer_keeping_a_view_of_each_chunk_still_gets_every_byte_unchanged() -> None:
    """The exporter hands its buffer over without a copy and starts a fresh one; a writer that
    keeps a view of what it was handed (instead of a copy) must neither break the export nor
    see those bytes change later."""

    class ViewKeeper:
        def __init__(self) -> None:
            self.views: list[memoryview] = []

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.views.append(memoryview(data))

        def commit(self) -> str:
            return "memory"

        def abort(self) -> None:
            self.views.clear()

    line = b'{"recordDate":"2025-01-01","fcr":"1.5"}'
    pages = [SourcePage(raw=[line] * 10_000) for _ in range(8)]  # ~3.2 MB: several chunks
    writer = ViewKeeper()
    result = write_export(
        JOB_TYPES[JobType.KPI_FEEDING_EXPORT],
        ReportFormat.JSON,
        pages,
        writer,
        scope_values={},
    )
    written = b"".join(bytes(v) for v in writer.views)
    assert len(writer.views) > 1
    assert written == (line + b"\n") * 80_000
    assert result.size_bytes == len(written)
    assert result.sha256 == hashlib.sha256(written).hexdigest()
