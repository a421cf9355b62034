"""Export throughput and memory: a feed intake export of N records to CSV and to NDJSON.

Method. The fake feed (bench/fake_feed.py: pre-encoded pages of 100 records over HTTP/1.1
keep-alive, an asyncio protocol, ~25 us of CPU a page) runs in a process of its own, so that on
two cores one core serves pages and the other exports. Each measurement then runs in a fresh
child process of its own (``--child``), so its peak RSS (VmHWM from /proc/<pid>/status, read
by the child just before it exits) is that one export's and nothing else's:

- ``export_csv`` / ``export_ndjson``: the worker's code path end to end. A job is created
  with ``reportcore.usecases.create_job`` (in-memory repository and queue: the job row is not
  what is measured) and its message is handed to ``reportcore.usecases.run_job`` with the
  real ``adapters.upstream.HttpRecordSource`` as the scaled-out worker configures it (its
  HTTP client, retries, paging in a fetch process of its own, typed msgspec decoding where
  the file is written) and the real ``adapters.filesystem.FilesystemStore`` (temporary file,
  fsync, rename) on a temporary folder, the worker's default Policy (progress throttled to
  one write a second). The job must end ``succeeded`` with N rows.
- ``source_csv`` / ``source_ndjson``: the source alone: ``HttpRecordSource.pages`` of the same
  request the export makes (typed records for CSV, raw record bytes for NDJSON), pages
  fetched and decoded, then dropped.
- ``sink_csv`` / ``sink_ndjson``: the sink alone: the first 64 pages (the fake feed's
  distinct templates) are fetched and decoded before the clock starts, then
  ``reportcore.export.write_export`` encodes, hashes and writes them round robin to N rows
  into a FilesystemStore writer and commits (fsync) it.

Printed (one figure a line): rows/s of each, ``*_ratio`` = export / min(source, sink) for
each format, ``*_peak_rss_mb`` of each export child and ``*_fetch_process_peak_rss_mb`` of
its fetch process (the two add up to what an export holds), and each run's CPU per row (all
its threads and its fetch process), which a machine busy with other work moves far less than
rows/s. ``--fetch thread`` fetches in a thread of the exporting process instead (the embedded
mode's way, and the service's before the fetch process), to compare.
``--latency-ms L`` makes the fake feed wait L ms before each answer (a feed across a network);
with ``--fetch thread``, ``--prefetch N`` sets how many pages the thread fetches ahead (default
2; 0 = fetch, decode and write in turn on one thread): together they show what overlap buys.
``--rows 5000000 --export-only`` shows that peak RSS does not grow with the size of the
export. ``--profile csv|ndjson`` runs one export under cProfile (its main thread: the
encoding, hashing and writing) and prints its top functions instead.

    .venv/bin/python bench/export.py                 # 1,000,000 rows, ~1 minute
    .venv/bin/python bench/export.py --rows 5000000 --export-only  # the flat-memory check
    .venv/bin/python bench/export.py --smoke         # ~5 s, exits 0 if every run was right
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, cpu_seconds, figure, parser, status_kb

PY = sys.executable


@contextlib.contextmanager
def fake_feed(records: int, latency_ms: float = 0.0) -> Iterator[str]:
    """The fake feed in its own process; yields its base URL."""
    feed = [PY, str(ROOT / "bench" / "fake_feed.py"), "--records", str(records), "--port", "0"]
    proc = subprocess.Popen(
        [*feed, "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"fake feed did not start: {url!r}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# --- the measurements, each run in a child process ---


def _request(fmt: str) -> object:
    from reportcore.jobs import JobType, Scope
    from reportcore.ports import SourceRequest

    return SourceRequest(
        job_id="00000000-0000-4000-8000-00000000b001",
        tenant_id="t-bench",
        job_type=JobType.FEED_INTAKE_EXPORT,
        scope=Scope(),
        upstream_filters={},
        typed=fmt == "csv",
        raw=fmt == "ndjson",
    )


def _source(url: str) -> object:
    from adapters.upstream import HttpRecordSource, UpstreamConfig

    prefetch = int(os.environ.get("BENCH_PREFETCH", "2"))
    process = os.environ.get("BENCH_FETCH_PROCESS", "1") == "1"
    return HttpRecordSource(
        UpstreamConfig(feed_url=url, token="bench", prefetch_pages=prefetch, fetch_process=process)
    )


def child_export(fmt: str, url: str, rows: int, folder: str) -> dict[str, object]:
    import msgspec

    from adapters.clock import SystemClock
    from adapters.filesystem import FilesystemStore
    from reportcore.requests import CreateRequest, validate_create
    from reportcore.testing import InMemoryJobRepository, InMemoryQueue
    from reportcore.usecases import Policy, create_job, run_job

    jobs, queue, clock = InMemoryJobRepository(), InMemoryQueue(), SystemClock()
    body = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv" if fmt == "csv" else "json"}
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
    start, cpu = time.perf_counter(), time.process_time()
    outcome = run_job(
        message,
        owner="bench",
        jobs=jobs,
        source=source,  # type: ignore[arg-type]
        store=FilesystemStore(folder),
        clock=clock,
        policy=Policy(),
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    fetch_rss_kb, fetch_cpu = _fetch_processes()
    source.close()  # type: ignore[attr-defined]
    job = jobs.get(outcome.job_id or "")
    assert job is not None
    if outcome.status != "succeeded" or job.file_path is None:
        raise RuntimeError(f"export ended {outcome.status}: {job}")
    lines = _lines(Path(folder) / job.file_path)
    if lines != rows + (fmt == "csv"):  # the CSV header
        raise RuntimeError(f"the {fmt} file has {lines} lines for {rows} rows")
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu": cpu + fetch_cpu,
        "bytes": job.size_bytes,
        "fetch_rss_kb": fetch_rss_kb,
    }


def _fetch_processes() -> tuple[int, float]:
    """Peak RSS (KiB) and CPU seconds of the source's fetch processes, if it has any."""
    import multiprocessing

    rss, cpu = 0, 0.0
    for child in multiprocessing.active_children():
        rss += status_kb(child.pid or 0, "VmHWM") or 0
        cpu += cpu_seconds(child.pid or 0)
    return rss, cpu


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def child_source(fmt: str, url: str, rows: int, folder: str) -> dict[str, object]:
    source = _source(url)
    n = 0
    start, cpu = time.perf_counter(), time.process_time()
    for page in source.pages(_request(fmt)):  # type: ignore[attr-defined]
        n += len(page.records if fmt == "csv" else page.raw)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    cpu += _fetch_processes()[1]
    source.close()  # type: ignore[attr-defined]
    if n != rows:
        raise RuntimeError(f"source gave {n} rows, not {rows}")
    return {"rows": n, "seconds": seconds, "cpu": cpu}


def child_sink(fmt: str, url: str, rows: int, folder: str) -> dict[str, object]:
    from adapters.filesystem import FilesystemStore
    from reportcore.export import scope_values, write_export
    from reportcore.jobs import JobType, ReportFormat, Scope
    from reportcore.jobtypes import JOB_TYPES

    source = _source(url)
    held = list(itertools.islice(source.pages(_request(fmt)), 64))  # type: ignore[attr-defined]
    source.close()  # type: ignore[attr-defined]
    per_page = len(held[0].records if fmt == "csv" else held[0].raw)
    pages = itertools.islice(itertools.cycle(held), rows // per_page)
    writer = FilesystemStore(folder).create("t-bench", "sink", fmt)
    start, cpu = time.perf_counter(), time.process_time()
    result = write_export(
        JOB_TYPES[JobType.FEED_INTAKE_EXPORT],
        ReportFormat.CSV if fmt == "csv" else ReportFormat.JSON,
        pages,
        writer,
        scope_values=scope_values("t-bench", Scope()),
    )
    writer.commit()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rows": result.rows, "seconds": seconds, "cpu": cpu}


CHILDREN = {"export": child_export, "source": child_source, "sink": child_sink}


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
    p.add_argument(
        "--rows", type=int, default=1_000_000, help="records to export (a multiple of 100)"
    )
    p.add_argument("--profile", choices=("csv", "ndjson"), help="cProfile one export instead")
    p.add_argument(
        "--export-only", action="store_true", help="skip the limits (for the 5M memory check)"
    )
    p.add_argument("--formats", default="csv,ndjson", help="which formats to measure")
    p.add_argument("--latency-ms", type=float, default=0.0, help="the fake feed's answer delay")
    p.add_argument("--prefetch", type=int, default=2, help="pages the source fetches ahead")
    p.add_argument(
        "--fetch", choices=("process", "thread"), default="process", help="where fetching runs"
    )
    args = p.parse_args()
    os.environ["BENCH_PREFETCH"] = str(args.prefetch)  # the children read it
    os.environ["BENCH_FETCH_PROCESS"] = "1" if args.fetch == "process" else "0"
    rows = 20_000 if args.smoke else args.rows
    with fake_feed(rows, args.latency_ms) as url:
        if args.profile:
            run_child("export", args.profile, url, rows, profile=True)
            return
        figure("rows", rows, "records")
        for fmt in args.formats.split(","):
            kinds = ("export",) if args.export_only else ("source", "sink", "export")
            runs = {kind: run_child(kind, fmt, url, rows) for kind in kinds}
            rate = {kind: r["rows"] / r["seconds"] for kind, r in runs.items()}
            for kind in kinds:
                figure(f"{kind}_{fmt}", rate[kind], "rows/s")
            if not args.export_only:
                figure(f"export_{fmt}_ratio", rate["export"] / min(rate["source"], rate["sink"]))
            export = runs["export"]
            figure(f"export_{fmt}_peak_rss_mb", export["peak_rss_kb"] * 1024 / 1e6, "MB")
            fetch_mb = export.get("fetch_rss_kb", 0) * 1024 / 1e6
            figure(f"export_{fmt}_fetch_process_peak_rss_mb", fetch_mb, "MB")
            figure(f"export_{fmt}_seconds", runs["export"]["seconds"], "s")
            for kind, r in runs.items():  # robust on a busy machine, unlike rows/s
                figure(f"{kind}_{fmt}_cpu_per_row", 1e6 * r["cpu"] / r["rows"], "us")


if __name__ == "__main__":
    main()
