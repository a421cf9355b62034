"""What a service process loads and holds: kept small, because a worker's peak RSS is a target
(issue 16: <= 100 MB at 1,000,000 rows to S3; tests/integration/test_s3_worker_memory.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

from adapters.upstream.windows import Task, WindowRun
from adapters.upstream.wire import Fetched

PROBE = """
import sys
import entrypoints.worker
import httpx
loaded = sorted(m for m in ("rich", "click", "pygments") if m in sys.modules)
try:
    httpx.main()
except SystemExit as exc:
    said = str(exc)
print(loaded, said, sep="\\n")
"""


def test_a_service_process_does_not_load_httpxs_command_line_client() -> None:
    """httpx imports its CLI (click, rich, pygments: ~6 MB) whenever Litestar has installed
    them; a process that imports reportsvc first gets a stand-in that says it is not there."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["[]", "httpx's command line client is not loaded in reportsvc processes"]


def test_the_windows_of_a_run_share_one_memory_budget_however_many_there_are() -> None:
    """32 windows of 20 pages, read slowly: the spools never hold more than the run's budget
    in memory together (the rest waits in their files), and the pages come out in order."""
    page = 1000

    def window(n: int) -> Task:
        def pages(stop: threading.Event) -> Iterator[Fetched]:
            for i in range(20):
                yield Fetched(bytes([n % 256, i]) * (page // 2))

        return pages

    run = WindowRun([window(n) for n in range(32)], threads=4, budget=5 * page)
    held: list[int] = []
    got: list[bytes] = []
    try:
        for item in run.answers():
            held.append(run.budget.used)
            got.append(bytes(item.body[:2]))
    finally:
        run.close()
    assert got == [bytes([n, i]) for n in range(32) for i in range(20)]
    assert max(held) <= 5 * page
    assert run.budget.used == 0


XLSX_PROBE = """
import sys
from reportcore.jobs import ReportFormat
from entrypoints.containers import row_formats
formats = row_formats()
print(sorted(f.value for f in formats), "xlsxwriter" in sys.modules)
"""


def test_a_worker_loads_xlsxwriter_only_for_an_xlsx_export() -> None:
    """The worker's row formats name xlsx, but xlsxwriter (~3 MB of code) waits for the first
    xlsx export instead of coming with every worker's first job."""
    out = subprocess.run(
        [sys.executable, "-c", XLSX_PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert out == "['csv', 'xlsx'] False\n"
