"""The first and last dates a job may name export end to end, for every job type: through the
real record sources (time windows included) and the demo upstream over HTTP, nothing overflows
at 1970-01-01 or 9999-12-30 (end_date 9999-12-31 once crashed the worker)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.demo_upstream import DEMO_BARN_ID
from reportcore.requests import EARLIEST_DATE, LATEST_DATE

pytestmark = pytest.mark.integration

JOB_TYPES = ["FEED_INTAKE_EXPORT", "TELEMETRY_EXPORT", "WEIGHVISION_EXPORT", "KPI_FEEDING_EXPORT"]


@pytest.mark.parametrize("day", [EARLIEST_DATE, LATEST_DATE], ids=str)
@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_the_edge_dates_export_every_record_of_their_day(
    tmp_path: Path, job_type: str, day: object
) -> None:
    output = tmp_path / "edge.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "entrypoints.cli",
            "export",
            "--demo",
            "--job-type",
            job_type,
            "--barn-id",
            DEMO_BARN_ID,
            "--start-date",
            str(day),
            "--end-date",
            str(day),
            "--output",
            str(output),
        ],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    header, *rows = csv.reader(io.StringIO(output.read_text(encoding="utf-8"), newline=""))
    assert rows, "the demo holds records on every day"
    at = header.index("occurred_at") if "occurred_at" in header else header.index("record_date")
    assert {row[at][:10] for row in rows} == {str(day)}
