"""What a job's file is called and served as, and what its queue message and scope carry
(issue 20: mutation score), with the contract's literal values."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from reportcore.jobs import (
    Compression,
    Job,
    JobStatus,
    JobType,
    LineEnding,
    ReportFormat,
    Scope,
    file_name_for,
    message_for,
    mime_type_for,
    stored_extension,
)
from tests.clock import pinned_now

# the tests read the tests' clock: test_any_day.py runs them again on awkward days
pytestmark = pytest.mark.clock

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.mark.parametrize(
    ("fmt", "compression", "extension", "mime", "name"),
    [
        (ReportFormat.CSV, None, "csv", "text/csv; charset=utf-8", "kpi_feeding_export.csv"),
        (
            ReportFormat.CSV,
            Compression.NONE,
            "csv",
            "text/csv; charset=utf-8",
            "kpi_feeding_export.csv",
        ),
        (
            ReportFormat.CSV,
            Compression.GZIP,
            "csv.gz",
            "application/gzip",
            "kpi_feeding_export.csv.gz",
        ),
        (ReportFormat.JSON, None, "json", "application/x-ndjson", "kpi_feeding_export.json"),
        (
            ReportFormat.JSON,
            Compression.NONE,
            "json",
            "application/x-ndjson",
            "kpi_feeding_export.json",
        ),
        (
            ReportFormat.JSON,
            Compression.GZIP,
            "ndjson.gz",
            "application/gzip",
            "kpi_feeding_export.ndjson.gz",
        ),
        (ReportFormat.XLSX, None, "xlsx", XLSX_MIME, "kpi_feeding_export.xlsx"),
        (ReportFormat.XLSX, Compression.NONE, "xlsx", XLSX_MIME, "kpi_feeding_export.xlsx"),
    ],
)
def test_a_stored_file_is_named_and_served_by_its_format_and_compression(
    fmt: ReportFormat, compression: Compression | None, extension: str, mime: str, name: str
) -> None:
    assert stored_extension(fmt, compression) == extension
    assert mime_type_for(fmt, compression) == mime
    assert file_name_for(JobType.KPI_FEEDING_EXPORT, fmt, compression) == name


def test_without_compression_named_the_file_is_the_plain_one() -> None:
    assert stored_extension(ReportFormat.JSON) == "json"
    assert mime_type_for(ReportFormat.CSV) == "text/csv; charset=utf-8"
    assert file_name_for(JobType.WEIGHVISION_EXPORT, ReportFormat.XLSX) == "weighvision_export.xlsx"


def test_csv_lines_end_in_crlf_or_lf_as_asked() -> None:
    assert LineEnding.CRLF.chars == "\r\n"
    assert LineEnding.LF.chars == "\n"


def test_succeeded_failed_and_cancelled_are_the_terminal_statuses() -> None:
    assert [s.value for s in JobStatus if s.is_terminal] == ["succeeded", "failed", "cancelled"]


def a_job() -> Job:
    now = pinned_now()
    return Job(
        id="j7",
        tenant_id="t9",
        requested_by=None,
        job_type=JobType.FEED_INTAKE_EXPORT,
        format=ReportFormat.CSV,
        farm_id="f1",
        barn_id="b2",
        batch_id="c3",
        start_date=dt.date(2025, 2, 1),
        end_date=dt.date(2025, 2, 28),
        filters={"source": ["MANUAL"]},
        created_at=now,
        updated_at=now,
    )


def test_the_queue_message_carries_the_whole_scope_and_filters() -> None:
    assert msgspec.json.decode(msgspec.json.encode(message_for(a_job()))) == {
        "job_id": "j7",
        "tenant_id": "t9",
        "job_type": "FEED_INTAKE_EXPORT",
        "format": "csv",
        "scope": {
            "farm_id": "f1",
            "barn_id": "b2",
            "batch_id": "c3",
            "start_date": "2025-02-01",
            "end_date": "2025-02-28",
            "filters": {"source": ["MANUAL"]},
        },
        "requested_by": None,
    }


def test_a_jobs_scope_is_its_ids_dates_and_a_copy_of_its_filters() -> None:
    job = a_job()
    scope = job.scope
    assert scope == Scope(
        farm_id="f1",
        barn_id="b2",
        batch_id="c3",
        start_date=dt.date(2025, 2, 1),
        end_date=dt.date(2025, 2, 28),
        filters={"source": ["MANUAL"]},
    )
    scope.filters["source"] = ["API_IMPORT"]
    assert job.filters == {"source": ["MANUAL"]}
