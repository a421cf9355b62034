"""Export throughput and memory: a bounded feed intake export of N records, CSV and NDJSON,
against a fake feed that answers each page after ``--latency-ms``.

Method. The fake feed (bench/fake_feed.py: ``start``/``end`` inclusive, ``cursor``, ``limit``
default 25 capped at 100, like the real feed service; every connection answered concurrently
after the delay) runs in a process of its own. Each measurement runs in a fresh child process
(``--child``), so its peak RSS (VmHWM) is that one export's and nothing else's:

- ``sequential``: the sequential page rate of the same feed over the same range: the real
  ``HttpRecordSource`` with ``concurrency=1`` (pages of 100 one after another, decoded, then
  dropped), for up to ``--sequential-sec`` seconds or the whole range;
- ``export_csv`` / ``export_ndjson``: the worker's code path end to end: a job created with
  ``create_job`` (in-memory repository and queue), its message handed to ``run_job`` with the
  real ``HttpRecordSource`` (``--concurrency`` windows, ``--transport``) and the real
  ``FilesystemStore`` on a temporary folder. The job must end ``succeeded`` with N rows.
- ``export_xlsx``: the same with ``format: xlsx`` (the xlsxwriter adapter, constant memory);
  ``export_csv_options``: CSV with the export options of ``--csv-options`` (a JSON object of
  create-request fields; by default ``;``, a BOM, LF, ten of the columns and Asia/Bangkok).

Printed (one figure a line): ``sequential`` rows/s and its CPU per page (the transport
comparison: run once with ``--transport httpx`` and once with ``stdlib``), each export's
rows/s, ``*_ratio`` = export / sequential page rate, peak RSS, CPU per row and per page
(of the whole process, of ``run_job``'s thread, the exporter, and of the rest, the window
threads) and the fake feed's CPU per page (its process, measured from the outside).

    .venv/bin/python bench/export.py --rows 200000 --latency-ms 2
    .venv/bin/python bench/export.py --rows 1000000 --export-only   # peak RSS at 1M rows
    .venv/bin/python bench/export.py --rows 1000000 --export-only --formats xlsx
    .venv/bin/python bench/export.py --rows 200000 --export-only --formats csv,csv_options
    .venv/bin/python bench/export.py --smoke          # ~10 s, exits 0 if every run was right
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, cpu_seconds, fake_feed, figure, parser, status_kb

PY = sys.executable
PAGE = 100  # records a page: the feed's cap, which the exports ask for
# the create request's format of each measured export
FORMATS = {"csv": "csv", "ndjson": "json", "xlsx": "xlsx", "csv_options": "csv"}
CSV_OPTIONS = {
    "csv": {"delimiter": ";", "bom": True, "line_ending": "lf"},
    "columns": [
        "id",
        "farm_id",
        "barn_id",
        "device_id",
        "source",
        "quantity_kg",
        "occurred_at",
        "created_at",
        "ingested_at",
        "sequence",
    ],
    "timezone": "Asia/Bangkok",
}


# --- the measurements, each run in a child process ---


def _request(fmt: str, rows: int) -> object:
    import datetime as dt

    from reportcore.jobs import JobType, Scope
    from reportcore.ports import SourceRequest

    first, last = _dates(rows)
    return SourceRequest(
        job_id="00000000-0000-4000-8000-00000000b001",
        tenant_id="t-bench",
        job_type=JobType.FEED_INTAKE_EXPORT,
        scope=Scope(start_date=dt.date.fromisoformat(first), end_date=dt.date.fromisoformat(last)),
        upstream_filters={},
        typed=fmt == "csv",
        raw=fmt == "ndjson",
    )


def _source(url: str, concurrency: int | None = None) -> object:
    from adapters.upstream import HttpRecordSource, UpstreamConfig

    return HttpRecordSource(
        UpstreamConfig(
            feed_url=url,
            token="bench",
            concurrency=concurrency or int(os.environ["BENCH_CONCURRENCY"]),
            transport=os.environ["BENCH_TRANSPORT"],
        )
    )


def _dates(rows: int) -> tuple[str, str]:
    from fake_feed import NEWEST, oldest

    return oldest(rows).date().isoformat(), NEWEST.date().isoformat()


def child_export(fmt: str, url: str, rows: int, folder: str) -> dict[str, object]:
    import msgspec

    from adapters.clock import SystemClock
    from adapters.filesystem import FilesystemStore
    from entrypoints.containers import row_formats  # the worker's: xlsx loaded lazily
    from reportcore.deps import Deps
    from reportcore.requests import CreateRequest, validate_create
    from reportcore.running import RunContext, run_job
    from reportcore.testing import InMemoryJobRepository, InMemoryQueue, RecordingWebhookSender
    from reportcore.usecases import create_job

    jobs, queue, clock = InMemoryJobRepository(), InMemoryQueue(), SystemClock()
    first, last = _dates(rows)
    body = {
        "job_type": "FEED_INTAKE_EXPORT",
        "format": FORMATS[fmt],
        "start_date": first,
        "end_date": last,
    }
    if fmt == "csv_options":
        body.update(json.loads(os.environ["BENCH_CSV_OPTIONS"]))
    create_job(
        validate_create(msgspec.convert(body, CreateRequest)),
        tenant_id="t-bench",
        requested_by="bench",
        jobs=jobs,
        queue=queue,
        clock=clock,
    )
    message = queue.take()
    assert message is not None
    source = _source(url)
    start, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    deps = Deps(
        jobs=jobs,
        queue=queue,
        store=FilesystemStore(folder),
        clock=clock,
        source=source,  # type: ignore[arg-type]
        outbox=jobs.outbox,
        sender=RecordingWebhookSender(),
        formats=row_formats(),
    )
    outcome = run_job(message, deps, RunContext(owner="bench"))
    main_cpu = time.thread_time() - main_cpu
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    source.close()  # type: ignore[attr-defined]
    job = jobs.get(outcome.job_id or "")
    assert job is not None
    if outcome.status != "succeeded" or job.file_path is None:
        raise RuntimeError(f"export ended {outcome.status}: {job}")
    if job.row_count != rows:
        raise RuntimeError(f"the {fmt} export wrote {job.row_count} rows of {rows}")
    if fmt != "xlsx" and job.compression is None:
        lines = _lines(Path(folder) / job.file_path)
        if lines != rows + (fmt != "ndjson"):  # the CSV header
            raise RuntimeError(f"the {fmt} file has {lines} lines for {rows} rows")
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu": cpu,
        "exporter_cpu": main_cpu,  # run_job's thread; the rest is the window threads'
        "bytes": job.size_bytes,
    }


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def child_sequential(fmt: str, url: str, rows: int, folder: str) -> dict[str, object]:
    """Pages one after another, decoded and dropped, for up to BENCH_SEQUENTIAL_SEC."""
    source = _source(url, concurrency=1)
    limit = float(os.environ["BENCH_SEQUENTIAL_SEC"])
    n = pages = 0
    start, cpu = time.perf_counter(), time.process_time()
    for page in source.pages(_request(fmt, rows)):  # type: ignore[attr-defined]
        n += len(page)
        pages += 1
        if time.perf_counter() - start > limit:
            break
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    source.close()  # type: ignore[attr-defined]
    return {"rows": n, "pages": pages, "seconds": seconds, "cpu": cpu}


CHILDREN = {"export": child_export, "sequential": child_sequential}


def run_child(kind: str, fmt: str, url: str, rows: int, profile: bool = False) -> dict[str, float]:
    """One measurement in a fresh process; its result with the process's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        args = [PY, __file__, "--child", kind, fmt, url, str(rows), folder]
        if profile:
            args.append("--profile-child")
        done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {fmt} failed:\n{done.stderr}")
    if profile:
        print(done.stdout)
        return {}
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child_main(argv: list[str]) -> None:
    kind, fmt, url, rows, folder, *rest = argv
    sys.path.insert(0, str(ROOT / "src"))
    if rest == ["--profile-child"]:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(CHILDREN[kind], fmt, url, int(rows), folder)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    result = CHILDREN[kind](fmt, url, int(rows), folder)
    result["peak_rss_kb"] = status_kb(os.getpid(), "VmHWM") or 0
    print(json.dumps(result), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=200_000, help="records to export")
    p.add_argument("--profile", choices=sorted(FORMATS), help="cProfile one export instead")
    p.add_argument("--export-only", action="store_true", help="skip the sequential rate")
    p.add_argument(
        "--formats",
        help=f"which to measure, of {', '.join(FORMATS)} (default csv,ndjson; --smoke: all)",
    )
    p.add_argument(
        "--csv-options",
        default=json.dumps(CSV_OPTIONS),
        help="create-request fields of the csv_options export (JSON object)",
    )
    p.add_argument("--latency-ms", type=float, default=0.0, help="the fake feed's answer delay")
    p.add_argument("--concurrency", type=int, default=8, help="UPSTREAM_CONCURRENCY")
    p.add_argument("--transport", choices=("stdlib", "httpx"), default="stdlib")
    p.add_argument("--sequential-sec", type=float, default=10.0, help="cap of the sequential run")
    args = p.parse_args()
    rows = 20_000 if args.smoke else args.rows
    formats = args.formats or (",".join(FORMATS) if args.smoke else "csv,ndjson")
    os.environ["BENCH_CONCURRENCY"] = str(args.concurrency)  # the children read these
    os.environ["BENCH_TRANSPORT"] = args.transport
    os.environ["BENCH_CSV_OPTIONS"] = args.csv_options
    os.environ["BENCH_SEQUENTIAL_SEC"] = str(2.0 if args.smoke else args.sequential_sec)
    with fake_feed(rows, args.latency_ms) as feed:
        if args.profile:
            run_child("export", args.profile, feed.url, rows, profile=True)
            return
        figure("rows", rows, "records")
        figure("latency_ms", args.latency_ms, "ms")
        figure("concurrency", args.concurrency)
        sequential = 0.0
        if not args.export_only:
            seq = run_child("sequential", "csv", feed.url, rows)
            sequential = seq["rows"] / seq["seconds"]
            figure("sequential", sequential, "rows/s")
            figure("sequential_cpu_per_page", 1e6 * seq["cpu"] / seq["pages"], "us")
        for fmt in formats.split(","):
            feed_cpu = cpu_seconds(feed.pid)
            export = run_child("export", fmt, feed.url, rows)
            feed_cpu = cpu_seconds(feed.pid) - feed_cpu
            rate = export["rows"] / export["seconds"]
            pages = export["rows"] / PAGE
            figure(f"export_{fmt}", rate, "rows/s")
            if sequential:
                figure(f"export_{fmt}_ratio", rate / sequential)
            figure(f"export_{fmt}_peak_rss_mb", export["peak_rss_kb"] * 1024 / 1e6, "MB")
            figure(f"export_{fmt}_seconds", export["seconds"], "s")
            figure(f"export_{fmt}_cpu_per_row", 1e6 * export["cpu"] / export["rows"], "us")
            figure(f"export_{fmt}_cpu_per_page", 1e6 * export["cpu"] / pages, "us")
            figure(
                f"export_{fmt}_exporter_cpu_per_page", 1e6 * export["exporter_cpu"] / pages, "us"
            )
            windows_cpu = export["cpu"] - export["exporter_cpu"]
            figure(f"export_{fmt}_windows_cpu_per_page", 1e6 * windows_cpu / pages, "us")
            figure(f"export_{fmt}_fake_feed_cpu_per_page", 1e6 * feed_cpu / pages, "us")


if __name__ == "__main__":
    main()
