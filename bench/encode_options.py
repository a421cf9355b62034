"""Exporter CPU of the CSV export options, in process (no HTTP, no file): 100,000 feed intake
records in pages of 100 written by ``write_export`` to a writer that drops the bytes; the best
of three runs, in microseconds of CPU a page.

    .venv/bin/python bench/encode_options.py
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from reportcore.export import write_export
from reportcore.jobs import CsvOptions, JobType, LineEnding, ReportFormat
from reportcore.jobtypes import JOB_TYPES
from reportcore.options import ExportOptions, export_options
from reportcore.ports import SourcePage
from reportcore.records import FeedIntakeRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parser
from export import CSV_OPTIONS

SPEC = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]
COLUMNS = CSV_OPTIONS["columns"]  # the same subset bench/export.py's csv_options exports
SPELLING = CsvOptions(delimiter=";", bom=True, line_ending=LineEnding.LF)


class Drop:
    """A FileWriter that keeps nothing."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def commit(self) -> str:
        return ""

    def abort(self) -> None:
        pass


def pages(n: int = 100_000) -> list[SourcePage]:
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    records = []
    for i in range(n):
        at = (base + dt.timedelta(seconds=37 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        records.append(
            FeedIntakeRecord(
                id=f"id-{i}",
                tenant_id="t",
                farm_id="f",
                barn_id="b",
                source="MANUAL",
                quantity_kg=f"{i}.5",
                occurred_at=at,
                created_at=at,
                ingested_at=at,
                sequence=i,
                device_id="d",
            )
        )
    return [SourcePage(records=records[i : i + 100]) for i in range(0, n, 100)]


def options(**fields: Any) -> ExportOptions:
    values: dict[str, Any] = {"compression": None, "csv": None, "columns": None, "timezone": None}
    return export_options(SPEC, **{**values, **fields})


CASES = {
    "plain": options(),
    "spelling_columns": options(csv=SPELLING, columns=COLUMNS),
    "spelling_columns_bangkok": options(csv=SPELLING, columns=COLUMNS, timezone="Asia/Bangkok"),
    "all_columns_bangkok": options(csv=SPELLING, timezone="Asia/Bangkok"),
    "all_columns_kathmandu": options(timezone="Asia/Kathmandu"),
}


def main() -> None:
    args = parser(__doc__).parse_args()
    source = pages(5_000 if args.smoke else 100_000)
    for name, opts in CASES.items():
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            write_export(SPEC, ReportFormat.CSV, source, Drop(), scope_values={}, options=opts)
            best = min(best, time.process_time() - start)
        print(f"{name} {best * 1e6 / len(source):.0f} us/page")


if __name__ == "__main__":
    main()
