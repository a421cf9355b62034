"""How cells are spelled, called directly with literal expected bytes (issue 20: mutation score):
CSV lines and their quoting, instants in a zone (whole-hour, 45-minute and mid-hour DST
offsets), the CSV encoder's header and BOM, NDJSON lines shaped by the options, gzip."""

from __future__ import annotations

import gzip
import random
import zoneinfo
from typing import Any

import msgspec
import pytest

from reportcore.encoding import (
    CsvEncoder,
    GzipSink,
    JsonShaper,
    LocalInstants,
    camel,
    csv_line,
    csv_lines,
    guarded,
)
from reportcore.jobs import CsvOptions, JobType, LineEnding
from reportcore.jobtypes import JOB_TYPES
from reportcore.options import ExportOptions
from reportcore.ports import SheetRequest
from tests.unit.test_requests import local_time_is_bangkok  # noqa: F401 (a fixture)

KPI = JOB_TYPES[JobType.KPI_FEEDING_EXPORT]
TELEMETRY = JOB_TYPES[JobType.TELEMETRY_EXPORT]
BANGKOK = zoneinfo.ZoneInfo("Asia/Bangkok")
KATHMANDU = zoneinfo.ZoneInfo("Asia/Kathmandu")
LORD_HOWE = zoneinfo.ZoneInfo("Australia/Lord_Howe")


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def add(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


# --- csv lines ---


def test_no_rows_are_no_bytes() -> None:
    assert csv_lines([]) == b""


def test_rows_of_no_cells_are_empty_lines() -> None:
    assert csv_lines([(), ()]) == b"\r\n\r\n"
    assert csv_lines([(), ()], newline="\n") == b"\n\n"


def test_a_one_column_row_of_an_empty_cell_is_two_quotes_and_others_stay_bare() -> None:
    assert csv_lines([(None,), ("a",), ("",)]) == b'""\r\na\r\n""\r\n'


def test_cells_of_none_numbers_and_text_are_spelled_as_csv_writer_does() -> None:
    rows = [(None, 1, 2.5, "x"), (None, None, None, None), ("", -3, 0.1, "y")]
    assert csv_lines(rows) == b",1,2.5,x\r\n,,,\r\n,-3,0.1,y\r\n"


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("a,b", b'"a,b"'),
        ('say "hi"', b'"say ""hi"""'),
        ("two\nlines", b'"two\nlines"'),
        ("cr\rhere", b'"cr\rhere"'),
        ("plain", b"plain"),
    ],
)
def test_only_a_cell_with_a_delimiter_quote_or_line_break_is_quoted(
    cell: str, written: bytes
) -> None:
    assert (
        csv_lines([("keep", cell), ("keep", "bare")]) == b"keep," + written + b"\r\nkeep,bare\r\n"
    )


def test_a_cell_is_quoted_for_the_delimiter_in_use_only() -> None:
    rows = [("a;b", "c,d"), ("e", "f")]
    assert csv_lines(rows, delimiter=";") == b'"a;b";c,d\r\ne;f\r\n'
    assert csv_lines(rows, delimiter="\t", newline="\n") == b"a;b\tc,d\ne\tf\n"


def test_a_none_cell_among_text_with_a_delimiter_is_empty_and_unquoted() -> None:
    assert csv_lines([(None, "x"), ("a,b", "y")]) == b',x\r\n"a,b",y\r\n'


def test_a_conversion_applies_to_its_column_unless_every_cell_is_empty() -> None:
    def upper(cells: Any) -> list[str]:
        return [c.upper() for c in cells]

    assert csv_lines([("a", "b"), ("c", "d")], convert={1: upper}) == b"a,B\r\nc,D\r\n"
    assert csv_lines([("a", None), ("c", "")], convert={1: upper}) == b"a,\r\nc,\r\n"
    assert csv_lines([("a", None), ("c", "d")], convert={1: upper}) == b"a,\r\nc,D\r\n"
    one_row = csv_lines([("a", "b")], convert={1: lambda cells: ['x"y']})
    assert one_row == b'a,"x""y"\r\n'


def test_csv_line_is_one_crlf_record() -> None:
    assert csv_line(["a", None, 3, "b,c"]) == b'a,,3,"b,c"\r\n'


# --- instants in a zone ---


def test_an_instant_in_a_whole_hour_zone_keeps_its_milliseconds_and_takes_the_offset() -> None:
    instants = LocalInstants(BANGKOK)
    assert instants.text("2025-01-31T23:07:08.123Z") == "2025-02-01T06:07:08.123+07:00"
    assert instants.text("2025-01-31T23:07:08Z") == "2025-02-01T06:07:08.000+07:00"


def test_an_instant_in_a_45_minute_zone_moves_its_minutes_too() -> None:
    instants = LocalInstants(KATHMANDU)
    assert instants.text("2025-01-31T06:07:08.123Z") == "2025-01-31T11:52:08.123+05:45"
    assert instants.text("2025-01-31T06:59:08Z") == "2025-01-31T12:44:08.000+05:45"
    assert instants.text("2025-01-31T06:14:00Z") == "2025-01-31T11:59:00.000+05:45"
    assert instants.text("2025-01-31T06:15:00Z") == "2025-01-31T12:00:00.000+05:45"


def test_an_hour_whose_offset_changes_within_it_is_spelled_per_instant() -> None:
    # Lord Howe moves from +10:30 to +11:00 at 15:30 UTC on 4 October 2025
    instants = LocalInstants(LORD_HOWE)
    assert instants.text("2025-10-04T15:10:00.000Z") == "2025-10-05T01:40:00.000+10:30"
    assert instants.text("2025-10-04T15:40:00.250Z") == "2025-10-05T02:40:00.250+11:00"
    assert instants.text("2025-10-04T15:29:59Z") == "2025-10-05T01:59:59.000+10:30"


def test_other_spellings_of_an_instant_go_through_a_datetime() -> None:
    instants = LocalInstants(BANGKOK)
    assert instants.text("2025-01-31T06:07:08.123456+00:00") == "2025-01-31T13:07:08.123456+07:00"
    assert instants.text("2025-01-31T06:07:08+01:00") == "2025-01-31T12:07:08.000+07:00"
    assert instants.text("2025-01-31T06:07:08") == "2025-01-31T13:07:08.000+07:00"  # UTC
    assert instants.text("2025-01-31T06:07:08.5Z") == "2025-01-31T13:07:08.500+07:00"
    # nanoseconds: datetime holds six digits; the others are kept as sent, not dropped
    assert instants.text("2025-01-31T06:07:08.123456789Z") == "2025-01-31T13:07:08.123456789+07:00"


@pytest.mark.parametrize("date", ["2025-01-31", "20250131", "2025-W05-5"])
def test_a_date_alone_is_no_instant_and_is_left_as_sent(date: str) -> None:
    """It was read as midnight UTC: 2025-01-31 became 2025-01-31T07:00:00.000+07:00 in an
    instant column, and a midnight date-time in xlsx, against "a value that is not an
    instant is left as upstream sent it"."""
    instants = LocalInstants(BANGKOK)
    assert instants.text(date) == date
    assert instants.local(date) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soon",
        "2025-13-31T06:07:08Z",
        "2025-01-31T06:07:08.12xZ",
        "9999-12-31T23:59:59.999Z",  # no instant after it in Bangkok
        "2025-01-31T06:07:08.123Y",
    ],
)
def test_text_that_is_no_instant_in_the_zone_is_left_as_it_is(text: str) -> None:
    assert LocalInstants(BANGKOK).text(text) == text


def test_local_is_the_instant_as_an_aware_datetime_in_the_zone() -> None:
    local = LocalInstants(BANGKOK).local("2025-01-31T23:07:08.123Z")
    assert local is not None
    assert local.isoformat() == "2025-02-01T06:07:08.123000+07:00"
    assert LocalInstants(BANGKOK).local("soon") is None


def test_a_column_of_instants_is_spelled_cell_by_cell_with_empty_cells_kept() -> None:
    instants = LocalInstants(BANGKOK)
    column = [
        "2025-01-31T23:07:08.123Z",
        "2025-01-31T23:59:59Z",
        "",
        "soon",
        "2025-01-31T23:07:08.12xZ",
        "2025-01-31T23:07:0xZ",
        "2025-01-31T23:07:08.123+00:00",
        "2025-01-31T23:07:08.123Z",
        "2025-01-31T23:07:08Z",
    ]
    assert instants.column(column) == [
        "2025-02-01T06:07:08.123+07:00",
        "2025-02-01T06:59:59.000+07:00",
        "",
        "soon",
        "2025-01-31T23:07:08.12xZ",
        "2025-01-31T23:07:0xZ",
        "2025-02-01T06:07:08.123+07:00",
        "2025-02-01T06:07:08.123+07:00",
        "2025-02-01T06:07:08.000+07:00",
    ]


def test_a_column_in_a_45_minute_zone_moves_the_minutes_of_each_cell() -> None:
    instants = LocalInstants(KATHMANDU)
    column = ["2025-01-31T06:07:08.123Z", "2025-01-31T06:20:00Z", "2025-01-31T06:07:08.123Z"]
    assert instants.column(column) == [
        "2025-01-31T11:52:08.123+05:45",
        "2025-01-31T12:05:00.000+05:45",
        "2025-01-31T11:52:08.123+05:45",
    ]


# --- the csv encoder ---


def sheet(columns: tuple[Any, ...], options: ExportOptions) -> tuple[Sink, CsvEncoder]:
    out = Sink()
    return out, CsvEncoder(SheetRequest(columns=columns, options=options), out)


def test_the_csv_encoder_writes_a_bom_then_the_header_in_the_asked_spelling() -> None:
    spelling = CsvOptions(delimiter=";", bom=True, line_ending=LineEnding.LF)
    out, encoder = sheet(KPI.columns[:3], ExportOptions(csv=spelling))
    encoder.add([("2025-01-01", "1,5", None)])
    encoder.close()
    assert out.data == b"\xef\xbb\xbfrecord_date;fcr;adg_g\n2025-01-01;1,5;\n"


def test_the_csv_encoder_writes_no_bom_unless_asked() -> None:
    out, encoder = sheet(KPI.columns[:2], ExportOptions())
    encoder.add([("2025-01-01", "1,5")])
    assert out.data == b'record_date,fcr\r\n2025-01-01,"1,5"\r\n'


def test_the_csv_encoder_writes_only_instant_columns_in_the_zone() -> None:
    columns = (TELEMETRY.columns[9], TELEMETRY.columns[0])  # occurred_at (instant), id (text)
    assert (columns[0].name, columns[1].name) == ("occurred_at", "id")
    out, encoder = sheet(columns, ExportOptions(timezone="Asia/Bangkok"))
    encoder.add([("2025-01-31T23:07:08.123Z", "2025-01-31T23:07:08.123Z")])
    encoder.abort()
    assert out.data == (
        b"occurred_at,id\r\n2025-02-01T06:07:08.123+07:00,2025-01-31T23:07:08.123Z\r\n"
    )


# --- ndjson ---


def test_camel_is_upstreams_spelling_of_a_snake_case_name() -> None:
    assert camel("created_by_user_id") == "createdByUserId"
    assert camel("fcr") == "fcr"


def test_a_shaped_line_has_the_asked_keys_in_order_with_scope_values_from_the_job() -> None:
    columns = (KPI.columns[1], KPI.columns[5], KPI.columns[0])  # fcr, farm_id (scope), record_date
    shaper = JsonShaper(columns, KPI.columns, {"farm_id": "f1", "tenant_id": "t1"}, None)
    line = shaper.line(msgspec.Raw(b'{"recordDate":"2025-01-01","fcr":"1.5","farmId":"x"}'))
    assert line == b'{"fcr":"1.5","farmId":"f1","recordDate":"2025-01-01"}'


def test_a_shaped_line_writes_instants_in_the_zone_and_leaves_the_rest() -> None:
    occurred = TELEMETRY.columns[9]
    shaper = JsonShaper(None, TELEMETRY.columns, {}, BANGKOK)
    raw = b'{"id":"2025-01-31T23:07:08Z","occurredAt":"2025-01-31T23:07:08Z","value":1}'
    assert shaper.line(raw) == (
        b'{"id":"2025-01-31T23:07:08Z","occurredAt":"2025-02-01T06:07:08.000+07:00","value":1}'
    )
    chosen = JsonShaper((occurred,), TELEMETRY.columns, {}, BANGKOK)
    assert chosen.line(raw) == b'{"occurredAt":"2025-02-01T06:07:08.000+07:00"}'
    assert chosen.line(b'{"occurredAt":null}') == b'{"occurredAt":null}'
    assert chosen.line(b"{}") == b'{"occurredAt":null}'


def test_a_shaped_line_keeps_the_upstreams_numbers_byte_for_byte() -> None:
    """Reshaping decoded a record to Python values and encoded it again: 1.10 became 1.1,
    18 digits a float, 1e-400 0.0; and 1e400 failed the decode, so that line went out as
    sent, keys the user left out included, beside reshaped lines."""
    occurred = TELEMETRY.columns[9]
    value = next(c for c in TELEMETRY.columns if c.name == "value")
    chosen = JsonShaper((occurred, value), TELEMETRY.columns, {}, BANGKOK)
    for number in (b"1.10", b"1e400", b"1e-400", b"123456789012345678.5", b"-0", b"1E5"):
        raw = b'{"occurredAt":"2025-01-31T23:07:08Z","value":%s,"notes":"private"}' % number
        assert chosen.line(raw) == (
            b'{"occurredAt":"2025-02-01T06:07:08.000+07:00","value":%s}' % number
        )


def test_a_pretty_printed_record_is_shaped_onto_one_line_with_its_values_as_sent() -> None:
    shaper = JsonShaper(None, TELEMETRY.columns, {}, None)
    raw = b'{\n  "id": "1",\r\n  "value": 1.10,\n  "meta": {\n    "a": [1E5,\n 2]\n  }\n}'
    line = shaper.line(raw)
    assert b"\n" not in line and b"\r" not in line
    assert line == b'{"id":"1","value":1.10,"meta":{"a": [1E5, 2]}}'
    assert msgspec.json.decode(line) == msgspec.json.decode(raw)


def test_a_line_that_is_no_json_object_is_left_as_sent_on_one_line() -> None:
    shaper = JsonShaper(None, TELEMETRY.columns, {}, BANGKOK)
    assert shaper.line(b"[1,\r\n2]") == b"[1,  2]"
    assert shaper.line(b'{"a":\n') == b'{"a": '


# --- gzip ---


def test_gzip_is_a_stream_with_mtime_0_that_inflates_to_what_it_was_given() -> None:
    out = Sink()
    packed = GzipSink(out)
    packed.add(b"a" * 1000)
    packed.add(b"")
    packed.add(b"b\r\n")
    packed.finish()
    data = out.data
    assert data[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags
    assert data[4:8] == b"\x00\x00\x00\x00"  # mtime 0: the same export is the same bytes
    assert gzip.decompress(data) == b"a" * 1000 + b"b\r\n"
    assert b"" not in out.chunks


def test_gzip_compresses_at_level_6_by_default() -> None:
    # text of many short repeated words: levels 5, 6 and 7 each write other bytes for it
    draw = random.Random(0)
    words = [bytes(draw.choice(b"abcd") for _ in range(draw.randint(3, 9))) for _ in range(300)]
    text = b" ".join(draw.choice(words) for _ in range(20_000))
    packed: dict[int | None, bytes] = {}
    for level in (None, 5, 6, 7):
        sink = Sink()
        gz = GzipSink(sink) if level is None else GzipSink(sink, level)
        gz.add(text)
        gz.finish()
        packed[level] = sink.data
    assert packed[None] == packed[6]
    assert packed[5] != packed[6] != packed[7]
    assert gzip.decompress(packed[None]) == text


@pytest.mark.usefixtures("local_time_is_bangkok")
def test_an_instant_without_an_offset_is_utc_whatever_the_machines_zone() -> None:
    instants = LocalInstants(KATHMANDU)
    assert instants.text("2025-01-31T06:07:08") == "2025-01-31T11:52:08.000+05:45"
    local = instants.local("2025-01-31T06:07:08.250")
    assert local is not None
    assert local.isoformat() == "2025-01-31T11:52:08.250000+05:45"


# near misses of upstream's two spellings, in an hour already seen: none is an instant
NEAR_MISSES = [
    "2025-01-31T23x07:08Z",
    "2025-01-31T23:07x08Z",
    "2025-01-31T23:07:08Zx",
    "2025-01-31T23:07:08z",
    "2025-01-31T23:07:08+",
    "2025-01-31T23:x7:08Z",
    "2025-01-31T23:07:x8Z",
    "2025-01-31T23:07:08.",
    "2025-01-31T23:07:08.123Zx",
    "2025-01-31T23:07:08x123Z",
    "2025-01-31T23:07:08.123x",
    "2025-01-31T23:07:08.123z",
    "2025-01-31T23:x7:08.123Z",
    "2025-01-31T23:07:x8.123Z",
    "2025-01-31T23:07:08.x23Z",
    "2025-01-31T23:07:08.123xZ",
]


@pytest.mark.parametrize("cell", NEAR_MISSES)
def test_a_near_miss_of_an_instant_in_an_hour_already_seen_is_left_as_it_is(cell: str) -> None:
    instants = LocalInstants(BANGKOK)
    seen = "2025-01-31T23:00:00.000Z"
    assert instants.column([seen, cell]) == ["2025-02-01T06:00:00.000+07:00", cell]
    assert instants.text(cell) == cell


# a minute or second past 59, or digits other than ASCII's, make no instant: the fast path must
# leave the text as the slow one does
OUT_OF_RANGE = [
    "2025-01-31T23:60:00Z",
    "2025-01-31T23:07:60Z",
    "2025-01-31T23:99:08.123Z",
    "2025-01-31T23:07:61.123Z",
    "2025-01-31T23:07:99Z",
    "2025-01-31T23:07:08.\u0661\u0662\u0663Z",  # Arabic-Indic digits: str.isdigit, no ISO 8601
    "2025-01-31T23:0\u0667:08Z",
    "2025-01-31T23:07:\u0660\u0668.123Z",
]


@pytest.mark.parametrize("zone", [BANGKOK, KATHMANDU], ids=["whole-hour", "45-minute"])
@pytest.mark.parametrize("cell", OUT_OF_RANGE)
def test_a_minute_or_second_past_59_or_non_ascii_digits_are_no_instant_and_left_as_they_are(
    zone: zoneinfo.ZoneInfo, cell: str
) -> None:
    instants = LocalInstants(zone)
    seen = "2025-01-31T23:59:59.999Z"
    assert instants.column([seen, cell, seen])[1] == cell
    assert instants.text(cell) == cell
    assert instants.local(cell) is None


def test_the_last_minute_and_second_of_an_hour_are_instants_in_either_zone() -> None:
    assert LocalInstants(BANGKOK).column(["2025-01-31T23:59:59Z", "2025-01-31T23:59:59.999Z"]) == [
        "2025-02-01T06:59:59.000+07:00",
        "2025-02-01T06:59:59.999+07:00",
    ]
    assert LocalInstants(KATHMANDU).text("2025-01-31T23:59:59Z") == "2025-02-01T05:44:59.000+05:45"


def test_a_line_shaped_by_columns_alone_keeps_its_instants_as_sent() -> None:
    occurred, unit = TELEMETRY.columns[9], TELEMETRY.columns[8]
    shaper = JsonShaper((occurred, unit), TELEMETRY.columns, {}, None)
    raw = b'{"unit":"kg","occurredAt":"2025-01-31T23:07:08Z"}'
    assert shaper.line(raw) == b'{"occurredAt":"2025-01-31T23:07:08Z","unit":"kg"}'


# --- spreadsheet formulas (OWASP "CSV Injection") ---


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(1+1)", "'@SUM(1+1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-abc", "'-abc"),
        ("=", "'="),
        # numbers, and text that starts with anything else, are written as they are
        ("-5", "-5"),
        ("+1.5e3", "+1.5e3"),
        ("-.5", "-.5"),
        ("-12.", "-12."),
        ("a=b", "a=b"),
        ("", ""),
        (" =x", " =x"),
    ],
)
def test_a_cell_a_spreadsheet_would_run_is_written_as_text(cell: str, shown: str) -> None:
    assert guarded(cell) == shown


def test_a_guarded_column_quotes_its_guarded_cells_and_leaves_the_others() -> None:
    rows = [("=1+1", "-5", "plain"), ("ok", '@x"y', "a;b")]
    assert csv_lines(rows, guard=frozenset({0, 1, 2})) == (
        b'"\'=1+1",-5,plain\r\nok,"\'@x""y",a;b\r\n'
    )
    assert csv_lines(rows, delimiter=";", guard=frozenset({0, 2})) == (
        b'"\'=1+1";-5;plain\r\nok;"@x""y";"a;b"\r\n'
    )
    # beside a guarded cell, a cell with a quote (or a line break) is quoted as ever
    assert csv_lines([("=1",), ('a"b',), ("c\nd",)], guard=frozenset({0})) == (
        b'"\'=1"\r\n"a""b"\r\n"c\nd"\r\n'
    )
    # a cell holding the delimiter before a formula character is not a cell starting one
    assert csv_lines([("a,=b",), ("c",)], guard=frozenset({0})) == b'"a,=b"\r\nc\r\n'


def test_an_export_writes_formulas_as_text_by_default_and_exactly_when_asked() -> None:
    from reportcore.encoding import CsvEncoder
    from reportcore.jobs import CsvOptions
    from reportcore.jobtypes import Column
    from reportcore.options import ExportOptions
    from reportcore.ports import SheetRequest

    class Sink:
        def __init__(self) -> None:
            self.data = b""

        def add(self, data: bytes) -> None:
            self.data += data

    columns = (Column("note", attr="note"),)
    for guard, written in (
        (True, b'note\r\n"\'=HYPERLINK(1)"\r\n'),
        (False, b"note\r\n=HYPERLINK(1)\r\n"),
    ):
        sink = Sink()
        options = ExportOptions(csv=CsvOptions(formula_guard=guard))
        encoder = CsvEncoder(SheetRequest(columns=columns, options=options), sink)
        encoder.add([("=HYPERLINK(1)",)])
        assert sink.data == written
