"""The one export pipeline (worker and ``reportsvc export``): a file is committed whole or not
left at all, whatever stops it."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from reportcore.errors import UpstreamUnavailable
from reportcore.jobs import JobType, ReportFormat, Scope
from reportcore.jobtypes import JOB_TYPES
from reportcore.pipeline import ExportProgress, export_records
from reportcore.testing import StaticRecordSource

SPEC = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]


def feed_record(i: int, source: str = "MANUAL") -> dict[str, Any]:
    return {
        "id": f"rec-{i:05d}",
        "tenantId": "tenant-a",
        "farmId": "farm-1",
        "barnId": "barn-1",
        "source": source,
        "quantityKg": f"{i}.5",
        "occurredAt": f"2026-01-01T00:{i % 60:02d}:00Z",
        "createdAt": "2026-01-01T00:00:00Z",
    }


class Writer:
    """A FileWriter that remembers how it ended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: str | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def commit(self) -> str:
        self.ended = "committed"
        return "here"

    def abort(self) -> None:
        self.ended = "aborted"


RECORDS = {JobType.FEED_INTAKE_EXPORT.value: [feed_record(i) for i in range(7)]}


def run(writer: Writer, **kwargs: Any) -> Any:
    return export_records(
        SPEC,
        kwargs.pop("fmt", ReportFormat.CSV),
        kwargs.pop("scope", Scope()),
        tenant_id="tenant-a",
        trace_id="trace-1",
        source=kwargs.pop("source", StaticRecordSource(RECORDS, page_size=2)),
        open_file=lambda: writer,
        **kwargs,
    )


def test_an_export_commits_every_row_and_reports_rising_progress_after_each_page() -> None:
    writer = Writer()
    seen: list[ExportProgress] = []
    exported = run(writer, on_progress=seen.append)
    assert writer.ended == "committed" and exported.location == "here"
    header, *rows = csv.reader(io.StringIO(writer.data.decode(), newline=""))
    assert header[0] == "id"
    assert exported.rows == len(rows) == 7
    assert [p.rows for p in seen] == [2, 4, 6, 7]
    assert [p.pct for p in seen] == sorted(p.pct for p in seen)


def test_filters_applied_while_streaming_ask_the_source_for_typed_records_also_for_ndjson() -> None:
    source = StaticRecordSource(
        {JobType.FEED_INTAKE_EXPORT.value: [feed_record(1), feed_record(2, "SILO_AUTO")]}
    )
    writer = Writer()
    scope = Scope(filters={"source": ["MANUAL"]})
    exported = run(writer, fmt=ReportFormat.JSON, scope=scope, source=source)
    assert exported.rows == 1
    (request,) = source.requests
    assert request.raw and request.typed and request.job_id == "trace-1"


def test_an_upstream_failure_aborts_the_file_and_propagates() -> None:
    writer = Writer()
    source = StaticRecordSource(RECORDS, fail_with=UpstreamUnavailable("feed service down"))
    with pytest.raises(UpstreamUnavailable):
        run(writer, source=source)
    assert writer.ended == "aborted"


def test_a_callback_that_refuses_stops_the_export_and_aborts_the_file() -> None:
    class Stop(Exception):
        pass

    def refuse(progress: ExportProgress) -> None:
        raise Stop

    for hook in ("on_progress", "before_commit"):
        writer = Writer()
        with pytest.raises(Stop):
            run(writer, **{hook: refuse})
        assert writer.ended == "aborted", hook


def test_a_file_that_cannot_be_opened_leaves_nothing_and_fetches_nothing() -> None:
    source = StaticRecordSource(RECORDS)

    def cannot_open() -> Writer:
        raise OSError("read-only file system")

    with pytest.raises(OSError):
        export_records(
            SPEC,
            ReportFormat.CSV,
            Scope(),
            tenant_id="tenant-a",
            trace_id="trace-1",
            source=source,
            open_file=cannot_open,
        )
    assert source.requests == []


def test_before_commit_sees_the_last_pages_progress_and_every_row() -> None:
    beats: list[ExportProgress] = []
    before: list[ExportProgress] = []
    run(Writer(), on_progress=beats.append, before_commit=before.append)
    assert [b.rows for b in beats] == [2, 4, 6, 7]
    assert before == [beats[-1]]
    assert before[0].rows == 7 and isinstance(before[0].pct, int)
