"""write_export and progress, called directly with literal expected values (issue 20: mutation
score): chunked writes, the bytes hashed and counted, NDJSON on one line, rows picked by the
options' columns, a format the worker lacks, and progress through the dates."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from decimal import Decimal

import msgspec
import pytest

from reportcore.errors import ExportFailure
from reportcore.export import (
    ProgressEstimate,
    page_position,
    row_getter,
    scope_values,
    write_export,
)
from reportcore.jobs import Compression, JobType, ReportFormat, Scope
from reportcore.jobtypes import JOB_TYPES
from reportcore.options import export_options
from reportcore.ports import SourcePage
from reportcore.records import FeedingKpiRecord
from tests.unit.test_export import CollectingWriter

FEED = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]
KPI = JOB_TYPES[JobType.KPI_FEEDING_EXPORT]
MIB = 1 << 20


def kpi(day: str, fcr: str = "1.5") -> FeedingKpiRecord:
    return FeedingKpiRecord(record_date=day, fcr=Decimal(fcr))


# --- the bytes handed to the writer ---


def test_bytes_go_to_the_writer_in_chunks_of_one_mib_and_the_rest_at_the_end() -> None:
    line = b'{"recordDate":"2025-01-01"}'  # 27 bytes + LF: 28
    page = SourcePage(raw=[line] * (MIB // 28))  # 1,048,572 bytes: 4 short of a chunk
    writer = CollectingWriter()
    seen: list[int] = []
    result = write_export(
        KPI,
        ReportFormat.JSON,
        [page, SourcePage(raw=[line])],
        writer,
        scope_values={},
        on_page=lambda p, rows: seen.append(len(writer.chunks)),
    )
    assert seen == [0, 1]  # the first page stays buffered; the second passes 1 MiB
    assert [len(c) for c in writer.chunks] == [MIB + 24]
    assert result.rows == MIB // 28 + 1
    assert result.size_bytes == MIB + 24
    assert result.sha256 == hashlib.sha256((line + b"\n") * (MIB // 28 + 1)).hexdigest()


def test_exactly_one_mib_is_handed_over_at_once() -> None:
    raw = b"x" * (MIB - 1)  # with its LF: exactly 1 MiB
    writer = CollectingWriter()
    seen: list[int] = []
    write_export(
        KPI,
        ReportFormat.JSON,
        [SourcePage(raw=[raw]), SourcePage(raw=[])],
        writer,
        scope_values={},
        on_page=lambda p, rows: seen.append(len(writer.chunks)),
    )
    assert seen == [1, 1]
    assert [len(c) for c in writer.chunks] == [MIB]


def test_an_export_of_nothing_writes_nothing_and_hashes_the_empty_file() -> None:
    writer = CollectingWriter()
    result = write_export(KPI, ReportFormat.JSON, [SourcePage(raw=[])], writer, scope_values={})
    assert writer.chunks == []
    assert (result.rows, result.size_bytes) == (0, 0)
    assert result.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_ndjson_lines_lose_bare_crs_and_lfs_between_tokens_and_count_their_rows() -> None:
    writer = CollectingWriter()
    rows: list[int] = []
    result = write_export(
        KPI,
        ReportFormat.JSON,
        [
            SourcePage(raw=[b'{"a":\r1}', b'{"z":0}']),
            SourcePage(raw=[b'{"b":\n2}']),
            SourcePage(raw=[b'{"c":3}']),
        ],
        writer,
        scope_values={},
        on_page=lambda p, n: rows.append(n),
    )
    assert writer.data == b'{"a": 1}\n{"z":0}\n{"b": 2}\n{"c":3}\n'
    assert rows == [2, 3, 4]
    assert result.rows == 4


def test_gzip_compresses_exactly_the_bytes_of_the_plain_export_and_hashes_the_gzip() -> None:
    writer = CollectingWriter()
    options = export_options(
        KPI, compression=Compression.GZIP, csv=None, columns=None, timezone=None
    )
    result = write_export(
        KPI,
        ReportFormat.CSV,
        [SourcePage(records=[kpi("2025-01-01")])],
        writer,
        scope_values={"tenant_id": "t1"},
        options=options,
    )
    assert gzip.decompress(writer.data) == (
        b"record_date,fcr,adg_g,sgr_pct,tenant_id,farm_id,barn_id,batch_id\r\n"
        b"2025-01-01,1.5,,,t1,,,\r\n"
    )
    assert result.size_bytes == len(writer.data)
    assert result.sha256 == hashlib.sha256(writer.data).hexdigest()


def test_ndjson_with_columns_or_a_zone_is_reshaped_line_by_line() -> None:
    writer = CollectingWriter()
    options = export_options(
        KPI, compression=None, csv=None, columns=["farm_id", "fcr"], timezone=None
    )
    write_export(
        KPI,
        ReportFormat.JSON,
        [SourcePage(raw=[b'{"recordDate":"2025-01-01","fcr":"1.5"}', b'{"fcr":"2"}'])],
        writer,
        scope_values={"farm_id": "f1"},
        options=options,
    )
    assert writer.data == b'{"farmId":"f1","fcr":"1.5"}\n{"farmId":"f1","fcr":"2"}\n'
    zoned = CollectingWriter()
    write_export(
        FEED,
        ReportFormat.JSON,
        [SourcePage(raw=[b'{"occurredAt":"2025-01-31T23:00:00Z"}'])],
        zoned,
        scope_values={},
        options=export_options(
            FEED, compression=None, csv=None, columns=None, timezone="Asia/Bangkok"
        ),
    )
    assert zoned.data == b'{"occurredAt":"2025-02-01T06:00:00.000+07:00"}\n'


def test_stream_filters_drop_csv_rows_and_ndjson_lines_alike() -> None:
    records = [kpi("2025-01-01", "1"), kpi("2025-01-02", "2"), kpi("2025-01-03", "3")]
    raws = [msgspec.json.encode(r) for r in records]
    keep = lambda r: r.fcr != Decimal("2")  # noqa: E731
    csv_writer, json_writer = CollectingWriter(), CollectingWriter()
    counted: list[int] = []
    csv_result = write_export(
        KPI,
        ReportFormat.CSV,
        [SourcePage(records=records)],
        csv_writer,
        scope_values={},
        keep=keep,
        on_page=lambda p, n: counted.append(n),
    )
    json_result = write_export(
        KPI,
        ReportFormat.JSON,
        [SourcePage(records=records, raw=raws)],
        json_writer,
        scope_values={},
        keep=keep,
    )
    assert csv_writer.data.split(b"\r\n")[1:] == [b"2025-01-01,1,,,,,,", b"2025-01-03,3,,,,,,", b""]
    assert json_writer.data == raws[0] + b"\n" + raws[2] + b"\n"
    assert (csv_result.rows, json_result.rows, counted) == (2, 2, [2])


def test_a_row_format_the_worker_lacks_fails_the_export_by_name() -> None:
    with pytest.raises(ExportFailure) as failed:
        write_export(KPI, ReportFormat.XLSX, [], CollectingWriter(), scope_values={})
    assert str(failed.value) == "format xlsx is not available in this worker"


def test_the_scope_values_are_the_tenant_and_the_jobs_ids() -> None:
    scope = Scope(farm_id="f", barn_id="b", batch_id="c")
    assert scope_values("t", scope) == {
        "tenant_id": "t",
        "farm_id": "f",
        "barn_id": "b",
        "batch_id": "c",
    }


def test_rows_are_the_cells_of_the_columns_asked_in_their_order() -> None:
    record = kpi("2025-01-01", "1.25")
    by_name = {c.name: c for c in KPI.columns}
    scope = {"tenant_id": "t1", "batch_id": "c1"}
    assert row_getter(KPI, (by_name["fcr"],), scope)(record) == (Decimal("1.25"),)
    two = (by_name["fcr"], by_name["record_date"])
    assert row_getter(KPI, two, scope)(record) == (Decimal("1.25"), "2025-01-01")
    mixed = (by_name["batch_id"], by_name["record_date"], by_name["tenant_id"])
    assert row_getter(KPI, mixed, scope)(record) == ("c1", "2025-01-01", "t1")
    scope_only = (by_name["tenant_id"], by_name["batch_id"])
    assert row_getter(KPI, scope_only, scope)(record) == ("t1", "c1")
    assert row_getter(KPI, None, scope)(record) == (
        "2025-01-01",
        Decimal("1.25"),
        None,
        None,
        "t1",
        None,
        None,
        "c1",
    )


# --- progress ---


def test_a_page_position_is_its_last_records_time_a_date_at_midnight_utc() -> None:
    page = SourcePage(records=[kpi("2025-01-09"), kpi("2025-01-05")])
    assert page_position(KPI, page) == dt.datetime(2025, 1, 5, tzinfo=dt.UTC)
    raw = SourcePage(raw=[b'{"recordDate":"2025-01-01"}', b'{"recordDate":"2025-01-07"}'])
    assert page_position(KPI, raw) == dt.datetime(2025, 1, 7, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("occurred", "position"),
    [
        ("2025-01-05T06:30:00Z", dt.datetime(2025, 1, 5, 6, 30, tzinfo=dt.UTC)),
        ("2025-01-05T06:30:00", dt.datetime(2025, 1, 5, 6, 30, tzinfo=dt.UTC)),
        ("2025-01-05T13:30:00+07:00", dt.datetime(2025, 1, 5, 6, 30, tzinfo=dt.UTC)),
        ("2025-01-05", dt.datetime(2025, 1, 5, tzinfo=dt.UTC)),
        ("20250105T12", dt.datetime(2025, 1, 5, 12, tzinfo=dt.UTC)),
        ("soon", None),
        ("2025-13-05", None),
    ],
)
def test_a_raw_page_position_reads_the_instant_naive_ones_as_utc(
    occurred: str, position: dt.datetime | None
) -> None:
    page = SourcePage(raw=[msgspec.json.encode({"occurredAt": occurred})])
    assert page_position(FEED, page) == position


@pytest.mark.parametrize("last", [b"[1]", b"{not json", b'{"occurredAt":5}', b"{}"])
def test_a_raw_page_without_a_readable_time_has_no_position(last: bytes) -> None:
    assert page_position(FEED, SourcePage(raw=[b'{"occurredAt":"2025-01-01"}', last])) is None


def test_progress_is_the_share_of_the_dates_covered_oldest_first_never_falling() -> None:
    estimate = ProgressEstimate(
        KPI, Scope(start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 1, 10))
    )
    assert estimate.pct == 0
    assert estimate.update(SourcePage(records=[kpi("2025-01-05")])) == 40
    assert estimate.update(SourcePage(records=[kpi("2025-01-03")])) == 40
    assert estimate.update(SourcePage(records=[kpi("2025-01-08")])) == 70
    assert estimate.update(SourcePage(records=[kpi("2025-02-08")])) == 99
    assert estimate.pct == 99


def test_progress_newest_first_counts_back_from_the_day_after_the_end_date() -> None:
    estimate = ProgressEstimate(
        FEED, Scope(start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 1, 10))
    )
    page = SourcePage(raw=[b'{"occurredAt":"2025-01-09T12:00:00Z"}'])
    assert estimate.update(page) == 15
    assert estimate.update(SourcePage(raw=[b'{"occurredAt":"2025-01-11T12:00:00Z"}'])) == 15


def test_progress_before_the_start_date_stays_at_0() -> None:
    estimate = ProgressEstimate(
        KPI, Scope(start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 1, 10))
    )
    assert estimate.update(SourcePage(records=[kpi("2024-12-01")])) == 0


@pytest.mark.parametrize(
    "scope",
    [
        Scope(),
        Scope(start_date=dt.date(2025, 1, 1)),
        Scope(end_date=dt.date(2025, 1, 10)),
    ],
)
def test_progress_without_both_dates_climbs_by_pages(scope: Scope) -> None:
    estimate = ProgressEstimate(KPI, scope)
    page = SourcePage(records=[kpi("2025-01-05")])
    assert [estimate.update(page) for _ in range(3)] == [2, 5, 8]
    for _ in range(500):
        estimate.update(page)
    assert estimate.pct == 98


def test_progress_of_a_page_without_a_position_climbs_by_pages() -> None:
    estimate = ProgressEstimate(
        KPI, Scope(start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 1, 10))
    )
    assert estimate.update(SourcePage(records=[])) == 2


def test_ndjson_stream_filters_refuse_raw_lines_not_aligned_with_the_typed_records() -> None:
    page = SourcePage(records=[kpi("2025-01-01")], raw=[b'{"a":1}', b'{"a":2}'])
    with pytest.raises(ValueError, match="zip"):
        write_export(
            KPI,
            ReportFormat.JSON,
            [page],
            CollectingWriter(),
            scope_values={},
            keep=lambda r: True,
        )


def test_a_record_without_the_progress_attribute_has_no_position() -> None:
    assert page_position(FEED, SourcePage(records=[kpi("2025-01-05")])) is None


def test_progress_is_the_percent_of_the_range_covered_rounded_down() -> None:
    estimate = ProgressEstimate(
        FEED, Scope(start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 1, 10))
    )
    # 4 days 14 hours of the 10 days counted back from 11 January: 45.8 %
    page = SourcePage(raw=[b'{"occurredAt":"2025-01-06T10:00:00Z"}'])
    assert estimate.update(page) == 45
