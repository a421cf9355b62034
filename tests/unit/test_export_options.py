"""Properties of the export options (issue 18): whatever the records and options, a CSV reads
back with Python's csv module to the same cells, gzip inflates to exactly the uncompressed
export, an xlsx reads back (openpyxl) to the same cells typed, and a ``columns`` export is the
full export with the other columns dropped."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import hashlib
import io
import math
import os
import re
import socket
import subprocess
import sys
import zipfile
import zoneinfo
from decimal import Decimal
from typing import Any

import msgspec
import openpyxl
import pytest
import xlsxwriter
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.xlsx import XlsxEncoder, remove_abandoned, row_formats
from reportcore.encoding import LocalInstants, camel, guarded
from reportcore.export import ExportResult, write_export
from reportcore.jobs import Compression, CsvOptions, JobType, LineEnding, ReportFormat
from reportcore.jobtypes import JOB_TYPES, CellKind, Column
from reportcore.options import ExportOptions, export_options
from reportcore.ports import SheetRequest, SourcePage
from reportcore.records import FeedIntakeRecord
from tests.unit.test_export import CollectingWriter

FEED = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]
KPI = JOB_TYPES[JobType.KPI_FEEDING_EXPORT]
HEADER = list(FEED.header)
KINDS = {c.name: c.kind for c in FEED.columns}
ZONES = ["UTC", "Asia/Bangkok", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]

cells = st.text(max_size=20)
optional_cells = st.none() | cells
instants = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 12, 31)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)
)
upstream_instants = instants.map(
    lambda t: t.isoformat(timespec="milliseconds") + "Z"
) | instants.map(lambda t: t.isoformat(timespec="seconds") + "Z")
any_instant = st.one_of(upstream_instants, cells)  # upstream may send anything
decimals = st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{1,6})?", fullmatch=True)


def feed_records(text: st.SearchStrategy[str] = cells) -> st.SearchStrategy[FeedIntakeRecord]:
    optional = st.none() | text
    return st.builds(
        FeedIntakeRecord,
        id=text,
        tenant_id=text,
        farm_id=text,
        barn_id=text,
        source=st.sampled_from(["MANUAL", "API_IMPORT", "SILO_AUTO"]),
        quantity_kg=st.one_of(decimals, st.integers(-(2**53), 2**53), text),
        occurred_at=upstream_instants if text is not cells else any_instant,
        created_at=upstream_instants,
        batch_id=optional,
        device_id=optional,
        feed_formula_id=optional,
        feed_lot_id=optional,
        ingested_at=st.none() | upstream_instants,
        event_id=optional,
        external_ref=optional,
        idempotency_key=optional,
        sequence=st.none() | st.integers(-(2**53), 2**53),
        notes=optional,
        created_by_user_id=optional,
    )


csv_options = st.builds(
    CsvOptions,
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    bom=st.booleans(),
    line_ending=st.sampled_from(list(LineEnding)),
    formula_guard=st.booleans(),
)
column_subsets = st.lists(st.sampled_from(HEADER), min_size=1, max_size=len(HEADER), unique=True)


def export(
    records: list[Any],
    fmt: ReportFormat = ReportFormat.CSV,
    *,
    sizes: int = 5,
    spec: Any = FEED,
    scope: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[bytes, ExportResult]:
    opts = export_options(
        spec,
        compression=options.get("compression"),
        csv=options.get("csv"),
        columns=options.get("columns"),
        timezone=options.get("timezone"),
    )
    pages = [records[i : i + sizes] for i in range(0, len(records), sizes)] or [[]]
    raws = [[msgspec.json.encode(r) for r in page] for page in pages]
    source = [SourcePage(records=page, raw=raw) for page, raw in zip(pages, raws, strict=True)]
    writer = CollectingWriter()
    result = write_export(
        spec,
        fmt,
        source,
        writer,
        scope_values=scope or {},
        options=opts,
        formats=row_formats(),
    )
    return writer.data, result


def cell(value: Any) -> str:
    return "" if value is None else str(value)


def in_zone(text: str, zone: str) -> str:
    """The reference spelling of an upstream instant in ``zone`` (slow, obviously right)."""
    local = dt.datetime.fromisoformat(text).astimezone(zoneinfo.ZoneInfo(zone))
    return local.isoformat(timespec="milliseconds")


def read_csv(data: bytes, options: CsvOptions) -> list[list[str]]:
    text = data.decode("utf-8")
    if options.bom:
        assert text.startswith("\ufeff")
        text = text[1:]
    if options.line_ending is LineEnding.LF:
        # no line ends in CR LF; a CR may only be inside a quoted cell
        assert "\r\n" not in re.sub(r'"(?:[^"]|"")*"', "", text)
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=options.delimiter))


# --- csv ---


@given(records=st.lists(feed_records(), max_size=12), options=csv_options)
def test_csv_with_any_spelling_reads_back_to_the_same_cells(
    records: list[FeedIntakeRecord], options: CsvOptions
) -> None:
    data, result = export(records, csv=options)
    rows = read_csv(data, options)
    assert rows[0] == HEADER
    shown = guarded if options.formula_guard else str  # a formula is written as text, or not
    assert rows[1:] == [[shown(cell(getattr(r, c))) for c in HEADER] for r in records]
    assert result.rows == len(records)
    assert (result.size_bytes, result.sha256) == (len(data), hashlib.sha256(data).hexdigest())


@given(records=st.lists(feed_records(), max_size=12))
def test_default_options_write_the_bytes_of_an_export_without_options(
    records: list[FeedIntakeRecord],
) -> None:
    plain, _ = export(records)
    spelled_out, _ = export(
        records,
        compression=Compression.NONE,
        csv=CsvOptions(delimiter=",", bom=False, line_ending=LineEnding.CRLF),
        columns=HEADER,
    )
    assert spelled_out == plain


# --- columns ---


@given(records=st.lists(feed_records(), max_size=12), columns=column_subsets, options=csv_options)
def test_a_columns_export_is_the_full_export_with_the_other_columns_dropped(
    records: list[FeedIntakeRecord], columns: list[str], options: CsvOptions
) -> None:
    full = read_csv(export(records, csv=options)[0], options)
    chosen = read_csv(export(records, csv=options, columns=columns)[0], options)
    at = [HEADER.index(c) for c in columns]
    assert chosen == [[row[i] for i in at] for row in full]


@given(
    records=st.lists(feed_records(), max_size=8),
    columns=column_subsets,
    zone=st.none() | st.sampled_from(ZONES),
)
def test_a_columns_ndjson_export_selects_the_upstream_keys_in_order(
    records: list[FeedIntakeRecord], columns: list[str], zone: str | None
) -> None:
    full = export(records, ReportFormat.JSON)[0].split(b"\n")[:-1]
    chosen = export(records, ReportFormat.JSON, columns=columns, timezone=zone)[0]
    lines = chosen.split(b"\n")
    assert lines[-1] == b""
    for whole, line in zip(full, lines[:-1], strict=True):
        source = msgspec.json.decode(whole)
        got = msgspec.json.decode(line)
        wanted = [camel(c) for c in columns]  # the upstream's spelling, in the order asked
        assert list(got) == wanted
        for name, key in zip(columns, wanted, strict=True):
            value = source.get(key)
            if zone is not None and KINDS[name] is CellKind.INSTANT and isinstance(value, str):
                value = LocalInstants(zoneinfo.ZoneInfo(zone)).text(value)
            assert got[key] == value


def test_a_kpi_columns_export_takes_scope_columns_from_the_job() -> None:
    from reportcore.records import FeedingKpiRecord

    day = FeedingKpiRecord(record_date="2026-01-02", fcr="1.5")
    scope = {"tenant_id": "t-1", "barn_id": "b-1"}
    data, _ = export([day], spec=KPI, scope=scope, columns=["barn_id", "record_date", "fcr"])
    assert data == b"barn_id,record_date,fcr\r\nb-1,2026-01-02,1.5\r\n"
    data, _ = export([day], ReportFormat.JSON, spec=KPI, scope=scope, columns=["tenant_id", "fcr"])
    assert data == b'{"tenantId":"t-1","fcr":"1.5"}\n'


# --- timezone ---


@given(records=st.lists(feed_records(), max_size=10), zone=st.sampled_from(ZONES))
def test_instants_are_written_in_the_zone_with_their_offset_and_the_rest_unchanged(
    records: list[FeedIntakeRecord], zone: str
) -> None:
    rows = read_csv(export(records, timezone=zone)[0], CsvOptions())
    instant_columns = {c.name for c in FEED.columns if c.kind is CellKind.INSTANT}
    for record, row in zip(records, rows[1:], strict=True):
        for name, got in zip(HEADER, row, strict=True):
            value = cell(getattr(record, name))
            if name in instant_columns and value:
                with contextlib.suppress(ValueError):  # not an instant: left as sent
                    value = in_zone(value, zone)
            assert got == guarded(value), name  # the default options keep formulas as text


@pytest.mark.parametrize(
    ("zone", "upstream", "written"),
    [
        ("Asia/Bangkok", "2025-01-30T23:00:00.000Z", "2025-01-31T06:00:00.000+07:00"),
        ("UTC", "2025-01-30T23:00:00.000Z", "2025-01-30T23:00:00.000+00:00"),
        ("America/New_York", "2025-03-09T06:59:59.999Z", "2025-03-09T01:59:59.999-05:00"),
        ("America/New_York", "2025-03-09T07:00:00.000Z", "2025-03-09T03:00:00.000-04:00"),
        ("Asia/Kathmandu", "2025-01-01T00:00:00.000Z", "2025-01-01T05:45:00.000+05:45"),
        ("Asia/Bangkok", "2025-01-30T23:00:00Z", "2025-01-31T06:00:00.000+07:00"),
        ("Asia/Bangkok", "2025-01-30T23:00:00.123456+00:00", "2025-01-31T06:00:00.123456+07:00"),
        ("Asia/Bangkok", "not an instant", "not an instant"),
        ("Asia/Kathmandu", "2025-01-01T00:59:59Z", "2025-01-01T06:44:59.000+05:45"),
        ("Australia/Lord_Howe", "2025-04-05T14:59:59.999Z", "2025-04-06T01:59:59.999+11:00"),
        ("Australia/Lord_Howe", "2025-04-05T15:00:00.000Z", "2025-04-06T01:30:00.000+10:30"),
        ("Asia/Bangkok", "2025-01-30T23:0a:00Z", "2025-01-30T23:0a:00Z"),
        ("Asia/Bangkok", "2025-01-30T23:00:00.12Z", "2025-01-31T06:00:00.120+07:00"),
    ],
)
def test_an_instant_in_a_zone_is_spelled_with_milliseconds_and_its_offset(
    zone: str, upstream: str, written: str
) -> None:
    instants = LocalInstants(zoneinfo.ZoneInfo(zone) if zone != "UTC" else dt.UTC)
    assert instants.text(upstream) == written
    assert instants.text(upstream) == written  # and again, from the cache
    assert instants.column([upstream, "", upstream]) == [written, "", written]


# --- gzip ---


@given(
    records=st.lists(feed_records(), max_size=12),
    fmt=st.sampled_from([ReportFormat.CSV, ReportFormat.JSON]),
    options=csv_options,
    zone=st.none() | st.sampled_from(ZONES),
)
def test_gzip_inflates_to_exactly_the_uncompressed_export(
    records: list[FeedIntakeRecord], fmt: ReportFormat, options: CsvOptions, zone: str | None
) -> None:
    spelling = options if fmt is ReportFormat.CSV else None
    plain, _ = export(records, fmt, csv=spelling, timezone=zone)
    packed, result = export(records, fmt, csv=spelling, timezone=zone, compression=Compression.GZIP)
    assert gzip.decompress(packed) == plain
    assert (result.size_bytes, result.sha256) == (len(packed), hashlib.sha256(packed).hexdigest())
    assert result.rows == len(records)
    again, _ = export(records, fmt, csv=spelling, timezone=zone, compression=Compression.GZIP)
    assert again == packed  # a fixed header: the same export is the same bytes
    assert packed[4:8] == b"\0\0\0\0"  # mtime 0


# --- xlsx ---

# text an XML document can hold as it is (no control characters but tab and LF)
sheet_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
    | st.sampled_from(["\t", "\n"]),
    max_size=20,
)
# a decimal as upstream writes one, exponent included ("0E0", "1.5e-3")
DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def excel_exact(text: str) -> bool:
    """Whether Excel holds ``text`` as written, read independently of the adapter: at most 15
    significant digits (Excel's precision), and a float that neither overflows ("1E999") nor
    vanishes ("1e-400")."""
    if not DECIMAL.fullmatch(text) or len(text) > 80:
        return False
    exact = Decimal(text)
    number = float(text)
    significant = len(exact.normalize().as_tuple().digits)
    if exact == 0:
        return True
    # nor below Excel's smallest number (2.2250738585072E-308, a float's smallest normal)
    return significant <= 15 and math.isfinite(number) and abs(number) >= 2.2250738585072014e-308


def sheet_rows(data: bytes) -> list[tuple[Any, ...]]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    rows: list[tuple[Any, ...]] = []
    for sheet in book.worksheets:
        rows.extend(sheet.iter_rows(values_only=True))
    return rows


@pytest.mark.parametrize(
    ("sent", "cell"),
    [
        ("123456789.123456789", "123456789.123456789"),  # 18 digits: Excel would keep 15
        ("1e-400", "1e-400"),  # a float would be 0
        ("1e400", "1e400"),
        (9007199254740991, "9007199254740991"),  # 16 digits: Excel shows ...990
        ("900719925474099", 900719925474099.0),
        ("1000000000000000000", 1e18),  # one significant digit
        ("1.10", 1.1),
        (0.30000000000000004, "0.30000000000000004"),  # a float of 17 digits: Excel shows 0.3
        (1234567890.1234567, "1234567890.1234567"),
        (0.25, 0.25),
        ("1e-310", "1e-310"),  # below Excel's smallest number: a subnormal float
        (1e-310, "1e-310"),
        ("2.5e-308", 2.5e-308),
    ],
)
def test_an_xlsx_number_cell_only_where_excel_keeps_every_digit(sent: Any, cell: Any) -> None:
    out = Sink()
    request = SheetRequest(columns=(Column("v", kind=CellKind.NUMBER),), options=ExportOptions())
    encoder = XlsxEncoder(request, out)
    encoder.add([(sent,)])
    encoder.close()
    assert sheet_rows(out.data) == [("v",), (cell,)]


def expected_cell(kind: CellKind, value: Any, zone: str) -> Any:
    if value is None or value == "":
        return value
    if kind is CellKind.NUMBER:
        if isinstance(value, float):  # decoded as a float already: its shortest spelling
            return value if excel_exact(repr(value)) else repr(value)
        if excel_exact(str(value)):
            return float(value)
        return str(value)  # text, every digit as sent
    if kind is CellKind.INSTANT:
        return dt.datetime.fromisoformat(value).astimezone(zoneinfo.ZoneInfo(zone))
    return value


def same_cell(got: Any, wanted: Any) -> bool:
    if isinstance(wanted, dt.datetime):
        # Excel keeps a date-time as a fraction of days: equal to the millisecond
        assert isinstance(got, dt.datetime)
        return abs(got - wanted.replace(tzinfo=None)) < dt.timedelta(milliseconds=1)
    return bool(got == wanted)


@settings(max_examples=30, deadline=None)
@given(
    records=st.lists(feed_records(sheet_text), max_size=8),
    columns=st.none() | column_subsets,
    zone=st.sampled_from(ZONES),
)
def test_xlsx_reads_back_to_the_same_cells_typed(
    records: list[FeedIntakeRecord], columns: list[str] | None, zone: str
) -> None:
    data, result = export(records, ReportFormat.XLSX, columns=columns, timezone=zone)
    assert data[:2] == b"PK"
    assert (result.rows, result.size_bytes) == (len(records), len(data))
    names = columns or HEADER
    rows = sheet_rows(data)
    assert rows[0] == tuple(names)
    # a sheet does not end in empty rows: a last record of no cells is not seen as a row
    assert len(rows) <= len(records) + 1
    rows += [(None,) * len(names)] * (len(records) + 1 - len(rows))
    for record, row in zip(records, rows[1:], strict=True):
        for name, got in zip(names, row, strict=True):
            wanted = expected_cell(KINDS[name], getattr(record, name), zone)
            assert same_cell(got, wanted), (name, got, wanted)


class Sink:
    """A ByteSink that keeps what it is given."""

    def __init__(self) -> None:
        self.data = b""

    def add(self, data: bytes) -> None:
        self.data += data


def sheet_request(columns: Any) -> SheetRequest:
    return SheetRequest(columns=tuple(columns), options=ExportOptions())


def test_the_first_day_of_excels_calendar_is_a_date_not_a_time_of_day() -> None:
    """xlsxwriter takes any time on 1900-01-01 for a time of day alone: serial 0, which Excel
    shows as 1900-01-00 and openpyxl reads as a time (a placeholder date, not rare)."""
    sink = Sink()
    columns = (Column("at", kind=CellKind.INSTANT), Column("day", kind=CellKind.DATE))
    encoder = XlsxEncoder(sheet_request(columns), sink)
    encoder.add(
        [
            ("1900-01-01T00:00:00.000Z", "1900-01-01"),
            ("1900-01-01T06:30:00.000Z", "1900-01-02"),
            ("1900-01-02T00:00:00.000Z", "1900-03-01"),
        ]
    )
    encoder.close()
    assert sheet_rows(sink.data)[1:] == [
        (dt.datetime(1900, 1, 1), dt.datetime(1900, 1, 1)),
        (dt.datetime(1900, 1, 1, 6, 30), dt.datetime(1900, 1, 2)),
        (dt.datetime(1900, 1, 2), dt.datetime(1900, 3, 1)),
    ]


def test_rows_past_a_sheets_limit_continue_on_a_next_sheet_with_the_header() -> None:
    sink = Sink()
    columns = [c for c in FEED.columns if c.name in ("id", "sequence")]
    encoder = XlsxEncoder(sheet_request(columns), sink, max_rows=3)  # a header and two rows
    encoder.add([(f"r{i}", i) for i in range(5)])
    encoder.close()
    encoder.abort()
    book = openpyxl.load_workbook(io.BytesIO(sink.data), read_only=True)
    assert book.sheetnames == ["report", "report (2)", "report (3)"]
    sheets = [list(s.iter_rows(values_only=True)) for s in book.worksheets]
    assert sheets == [
        [("id", "sequence"), ("r0", 0), ("r1", 1)],
        [("id", "sequence"), ("r2", 2), ("r3", 3)],
        [("id", "sequence"), ("r4", 4)],
    ]


def test_an_aborted_xlsx_export_leaves_no_temporary_file(tmp_path: Any) -> None:
    encoder = XlsxEncoder(sheet_request(FEED.columns), Sink(), tmp_dir=str(tmp_path))
    encoder.add([tuple("x" for _ in FEED.columns)])
    encoder.abort()
    assert list(tmp_path.iterdir()) == []


def test_workbooks_of_dead_workers_are_removed_and_no_others(tmp_path: Any) -> None:
    """A worker killed while building a workbook (SIGKILL, the OOM killer) ran no abort: its
    folder in TMPDIR (~70 MB at 150,000 rows) stayed for good, one more at each crash."""
    encoder = XlsxEncoder(
        SheetRequest(columns=(Column("v"),), options=ExportOptions()), Sink(), tmp_dir=str(tmp_path)
    )
    encoder.add([("live",)])
    (ours,) = os.listdir(tmp_path)
    host = socket.gethostname()
    assert ours.startswith(f"export-xlsx-{host}-{os.getpid()}-")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = f"export-xlsx-{host}-{int(gone.stdout)}-abc"
    others = [
        f"export-xlsx-{host}-{os.getppid()}-abc",  # a live process's
        f"export-xlsx-another-host-{int(gone.stdout)}-abc",  # a shared TMPDIR's other host
        "export-xlsx-unrelated",
    ]
    for name in [dead, *others]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.xlsx").write_bytes(b"x" * 100)
    assert remove_abandoned(str(tmp_path)) == [dead]
    assert sorted(os.listdir(tmp_path)) == sorted([ours, *others])
    encoder.close()


@pytest.mark.parametrize("where", ["folder", "workbook", "rows"])
def test_an_xlsx_workbook_whose_temporary_space_fails_is_storage_failed_saying_so(
    where: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workbook is built in the worker's TMPDIR: its failure read "export file could not
    be written" (or, from xlsxwriter's zip, failed the export as a bug: FileCreateError)."""
    from xlsxwriter.exceptions import FileCreateError
    from xlsxwriter.worksheet import Worksheet

    from reportcore.errors import StorageFailure

    def full(*args: Any, **kwargs: Any) -> Any:
        error = OSError(28, "No space left on device")
        raise FileCreateError(error) if where == "workbook" else error

    def build() -> None:
        tmp_dir = str(tmp_path / "gone") if where == "folder" else str(tmp_path)
        encoder = XlsxEncoder(sheet_request(FEED.columns), Sink(), tmp_dir=tmp_dir)
        try:
            with monkeypatch.context() as patched:
                if where == "workbook":
                    patched.setattr(xlsxwriter.Workbook, "close", full)
                else:
                    patched.setattr(Worksheet, "write_string", full)
                encoder.add([tuple("x" for _ in FEED.columns)])
                encoder.close()
        finally:
            encoder.abort()

    with pytest.raises(StorageFailure) as failed:
        build()
    reason = "No such file or directory" if where == "folder" else "No space left on device"
    assert failed.value.message == (
        f"the worker's temporary files (TMPDIR) could not be written: {reason}"
    )
    assert list(tmp_path.iterdir()) == []


# a record whose text cells a spreadsheet could take for something else
FORMULAS = FeedIntakeRecord(
    id='=HYPERLINK("http://evil")',
    tenant_id="t",
    farm_id="f",
    barn_id="b",
    source="MANUAL",
    quantity_kg="12345678901234567890",  # more digits than a double holds: text
    occurred_at="2025-01-01T00:00:00.000Z",
    created_at="0001-01-01T00:00:00.000Z",  # before Excel's calendar: text
    notes="http://example.com",
)


@pytest.mark.parametrize(
    "text",
    [
        "<r>Bins A & B refilled</r>",  # was written raw: a workbook no reader opens
        "<r>  spaced  </r>",
        # was written raw into the sheet's XML: a live formula cell of upstream's choosing
        '<r><t>ok</t></r></is></c><c r="Z2" t="str"><f>HYPERLINK("https://evil.example/x",'
        '"Click")</f><v>Click</v></c><c r="Y2" t="inlineStr"><is><r><t>.</t></r>',
    ],
)
def test_text_shaped_like_rich_text_xml_is_written_as_its_characters(text: str) -> None:
    # xlsxwriter's constant_memory mode takes any text between <r> and </r> for rich-text XML
    record = msgspec.structs.replace(FORMULAS, id="i", notes=text)
    data = export([record], ReportFormat.XLSX, columns=["id", "notes"])[0]
    assert sheet_rows(data) == [("id", "notes"), ("i", text)]
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        assert b"<f>" not in book.read("xl/worksheets/sheet1.xml")


def test_text_that_looks_like_a_formula_stays_text() -> None:
    record = FORMULAS
    columns = ["id", "quantity_kg", "created_at", "notes"]
    rows = sheet_rows(export([record], ReportFormat.XLSX, columns=columns)[0])
    assert rows[1] == (
        '=HYPERLINK("http://evil")',
        "12345678901234567890",
        "0001-01-01T00:00:00.000Z",
        "http://example.com",
    )
