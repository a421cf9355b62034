"""What users run: one big feed intake export through `reportsvc api` + `reportsvc worker`.

Method. A fresh PostgreSQL database and RabbitMQ vhost (as bench/api.py), ``reportsvc
migrate``, one ``reportsvc api``; the fake feed (bench/fake_feed.py) in a process of its own,
answering each page after ``--latency-ms``, with ``--rows`` records placed over
2021-01-01..2025-02-28 as ``--distribution`` says (``even``, ``newest-1pct``, ``spikes``,
``power``, ``recent``: issue 27's table; several comma-separated, default all five). For each
distribution and format, a job over that whole range is created through the API and run by a
fresh ``reportsvc worker`` process twice: first with ``UPSTREAM_CONCURRENCY=1`` (one window,
pages one after another: the sequential rate of this feed in this run), then with
``--concurrency`` (default 8, the default of the service). The job must succeed with every
record.

Printed per export (one figure a line, prefixed ``<distribution>_<format>_``): rows/s over the
job's own run (``finished_at - started_at`` as the worker stored them), its ratio to the
sequential rate, upstream requests (counted by the fake feed) against N/100 (the target is
<= 1.05 x N/100 + 64), the worker's CPU per record (utime + stime from /proc/<pid>/stat, from
the create to the job's end) and, apart, its system part (stime: the kernel's share, which a
profile of Python frames does not show), its peak RSS (VmHWM); then the machine's load
average, since the machine may be shared.

``--two-core`` (and every smoke run) exports CSV a third time through issue 27's two-core
experiment (bench/two_core: the worker fetches, a child process decodes and encodes; not the
product, a measurement of that design against it): its file must have the product's sha256,
and it prints its rows/s, ratio, the worker's CPU a record and peak RSS, and the child's (its
CPU from the create on: the child starts with the worker). ``--two-core-fetch`` (and every
smoke run) exports each format once more through the experiment's other split
(bench/two_core/two_core_fetch.py: a child process fetches, the worker decodes and encodes),
printed and checked the same way.

    .venv/bin/python bench/worker.py --rows 120000 --latency-ms 20
    .venv/bin/python bench/worker.py --rows 200000 --latency-ms 2 --distribution even,recent
    .venv/bin/python bench/worker.py --rows 200000 --latency-ms 0 --no-sequential  # CPU a record
    .venv/bin/python bench/worker.py --rows 200000 --latency-ms 2 --distribution even --two-core
    .venv/bin/python bench/worker.py --rows 200000 --latency-ms 2 --formats csv --two-core-fetch
    .venv/bin/python bench/worker.py --smoke      # ~15 s: 3,000 records, two distributions
    PY_SPY=/path/to/py-spy .venv/bin/python bench/worker.py ...  # and a profile of each export
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import TENANT, figure, service
from common import cpu_times, parser, status_kb
from fake_feed import DISTRIBUTIONS
from tests.integration.procs import Proc, Procs, start_api, start_worker, user_token

FIRST, LAST = "2021-01-01", "2025-02-28"
PAGE = 100
FORMATS = {"csv": "csv", "ndjson": "json"}
TIMEOUT_SEC = 900.0
# py-spy's binary, to record a sampling profile of each windowed export's worker (raw stacks,
# one file an export, in PY_SPY_OUT)
PY_SPY = os.environ.get("PY_SPY", "")
PY_SPY_OUT = os.environ.get("PY_SPY_OUT", "/tmp")
# the worker of the two-core experiment (bench/two_core/sitecustomize.py)
TWO_CORE = {
    "TWO_CORE_EXPERIMENT": "1",
    "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent / "two_core"), os.environ.get("PYTHONPATH", "")]
    ),
}

# its other split: the fetching in a child process (bench/two_core/two_core_fetch.py)
FETCH = {"TWO_CORE_EXPERIMENT": "fetch"}


def start_feed(procs: Procs, rows: int, distribution: str, latency_ms: float) -> str:
    script = Path(__file__).with_name("fake_feed.py")
    argv = [sys.executable, str(script), "--records", str(rows), "--port", "0"]
    argv += ["--distribution", distribution, "--first", FIRST, "--last", LAST]
    argv += ["--latency-ms", str(latency_ms)]
    feed = procs.start(f"fake-feed-{distribution}", argv, os.environ.copy())
    return feed.wait_for(r"(http://[\w.-]+:\d+)", timeout=120).group(1)


def feed_requests(feed_url: str) -> int:
    with urllib.request.urlopen(feed_url + "/__requests", timeout=10) as answer:
        return int(answer.read())


def create(api_url: str, token: str, fmt: str) -> str:
    body = {
        "job_type": "FEED_INTAKE_EXPORT",
        "format": FORMATS[fmt],
        "tenant_id": TENANT,
        "start_date": FIRST,
        "end_date": LAST,
    }
    req = urllib.request.Request(
        api_url + "/api/v1/reports/jobs",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as answer:
        job: dict[str, Any] = json.load(answer)
    return str(job["id"])


def wait_done(db: psycopg.Connection[Any], job_id: str, worker: Proc) -> tuple[float, int]:
    """The job's own run time (s) and rows, once it succeeded."""
    deadline = time.monotonic() + TIMEOUT_SEC
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT status::text, extract(epoch FROM finished_at - started_at), row_count,"
            " error_code, error_message FROM report_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
        assert row is not None
        status, seconds, rows, code, message = row
        if status == "succeeded":
            return float(seconds), int(rows)
        if status in ("failed", "cancelled"):
            raise SystemExit(f"the export {status}: {code} {message}\n{worker.describe()}")
        if worker.returncode() is not None:
            raise SystemExit(f"the worker exited:\n{worker.describe()}")
        time.sleep(0.05)
    raise SystemExit(f"the export did not end in {TIMEOUT_SEC:.0f} s")


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def export(
    procs: Procs,
    env: dict[str, str],
    db: psycopg.Connection[Any],
    api_url: str,
    token: str,
    fmt: str,
    concurrency: int,
) -> dict[str, float]:
    """One export by a fresh worker with ``UPSTREAM_CONCURRENCY=concurrency``."""
    worker = start_worker(procs, env | {"UPSTREAM_CONCURRENCY": str(concurrency)})
    spy = None
    try:
        if PY_SPY and concurrency > 1:  # a sampling profile of the worker over the export
            out = Path(PY_SPY_OUT) / f"worker-{fmt}-{worker.pid}.txt"
            argv = [PY_SPY, "record", "-p", str(worker.pid), "-f", "raw", "-o", str(out)]
            spy = subprocess.Popen([*argv, "-r", "250", "--gil"], stdout=subprocess.DEVNULL)
            time.sleep(1.0)
        requests0, cpu0 = feed_requests(env["CLOUD_FEED_SERVICE_URL"]), cpu_times(worker.pid)
        # a two-core experiment's child, started with the worker: its CPU from here on
        child_cpu0 = {c: sum(cpu_times(c)) for c in map(int, _children(worker.pid))}
        job_id = create(api_url, token, fmt)
        seconds, rows = wait_done(db, job_id, worker)
        user, system = (b - a for a, b in zip(cpu0, cpu_times(worker.pid), strict=True))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        requests = feed_requests(env["CLOUD_FEED_SERVICE_URL"]) - requests0
        peak_kb = status_kb(worker.pid, "VmHWM") or 0
        children = [int(c) for c in _children(worker.pid)]
        child_cpu = sum(sum(cpu_times(c)) - child_cpu0.get(c, 0.0) for c in children)
        child_kb = sum(status_kb(c, "VmHWM") or 0 for c in children)
        (sha,) = db.execute("SELECT sha256 FROM report_jobs WHERE id = %s", (job_id,)).fetchone()
    finally:
        worker.stop()
    return {
        "sha256": sha,
        "child_cpu_us": 1e6 * child_cpu / max(1, rows),
        "child_peak_mb": child_kb * 1024 / 1e6,
        "rows": rows,
        "rows_s": rows / seconds,
        "requests": requests,
        "cpu_us": 1e6 * (user + system) / max(1, rows),
        "sys_us": 1e6 * system / max(1, rows),
        "peak_mb": peak_kb * 1024 / 1e6,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=120_000, help="records in the feed")
    p.add_argument("--latency-ms", type=float, default=20.0, help="the fake feed's answer delay")
    p.add_argument("--distribution", default=",".join(DISTRIBUTIONS), help="where records lie")
    p.add_argument("--formats", default="csv,ndjson", help=f"of {', '.join(FORMATS)}")
    p.add_argument("--concurrency", type=int, default=8, help="UPSTREAM_CONCURRENCY")
    p.add_argument("--no-sequential", action="store_true", help="skip the sequential export")
    p.add_argument(
        "--two-core",
        action="store_true",
        help="also export CSV through bench/two_core (issue 27's experiment: decoding and "
        "encoding in a second process) and compare",
    )
    p.add_argument(
        "--two-core-fetch",
        action="store_true",
        help="also export through bench/two_core's other split (fetching in a second process, "
        "decoding and encoding in the worker) and compare",
    )
    args = p.parse_args()
    rows, distributions = args.rows, args.distribution.split(",")
    if args.smoke:
        rows, distributions, args.formats = 3000, ["even", "newest-1pct"], "csv"
        # the experiments' files must stay the product's, byte for byte
        args.two_core = args.two_core_fetch = True
    figure("rows", rows, "records")
    figure("latency_ms", args.latency_ms, "ms")
    figure("concurrency", args.concurrency)
    # the range is four years: wider than the default cap, as a dashboard may send
    with service(REPORT_MAX_RANGE_DAYS="FEED_INTAKE_EXPORT=3000") as (procs, env):
        _, api_url = start_api(procs, env)
        token = user_token(env, TENANT, "tenant_admin", sub="bench")
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as db:
            for distribution in distributions:
                env["CLOUD_FEED_SERVICE_URL"] = start_feed(
                    procs, rows, distribution, args.latency_ms
                )
                for fmt in args.formats.split(","):
                    name = f"{distribution}_{fmt}"
                    sequential = None
                    if not args.no_sequential:
                        sequential = export(procs, env, db, api_url, token, fmt, 1)
                        figure(f"{name}_sequential", sequential["rows_s"], "rows/s")
                    run = export(procs, env, db, api_url, token, fmt, args.concurrency)
                    if run["rows"] != rows:
                        raise SystemExit(f"{name}: {run['rows']} rows of {rows}")
                    figure(name, run["rows_s"], "rows/s")
                    if sequential is not None:
                        figure(f"{name}_ratio", run["rows_s"] / sequential["rows_s"])
                    figure(f"{name}_requests", run["requests"])
                    figure(f"{name}_requests_per_n_100", run["requests"] / (rows / PAGE))
                    figure(f"{name}_request_limit", 1.05 * rows / PAGE + 64)
                    figure(f"{name}_cpu_per_record", run["cpu_us"], "us")
                    figure(f"{name}_cpu_per_record_system", run["sys_us"], "us")
                    figure(f"{name}_peak_rss_mb", run["peak_mb"], "MB")
                    experiments = []
                    if args.two_core and fmt == "csv":
                        experiments.append(("two_core", TWO_CORE))
                    if args.two_core_fetch:
                        experiments.append(("two_core_fetch", TWO_CORE | FETCH))
                    for label, extra in experiments:
                        two = export(procs, env | extra, db, api_url, token, fmt, args.concurrency)
                        if two["sha256"] != run["sha256"]:
                            raise SystemExit(f"{name}: the {label} file differs")
                        figure(f"{name}_{label}", two["rows_s"], "rows/s")
                        if sequential is not None:
                            figure(f"{name}_{label}_ratio", two["rows_s"] / sequential["rows_s"])
                        figure(f"{name}_{label}_cpu_per_record", two["cpu_us"], "us")
                        figure(f"{name}_{label}_child_cpu_per_record", two["child_cpu_us"], "us")
                        figure(f"{name}_{label}_peak_rss_mb", two["peak_mb"], "MB")
                        figure(f"{name}_{label}_child_peak_rss_mb", two["child_peak_mb"], "MB")
    figure("load_average_1min", os.getloadavg()[0])


if __name__ == "__main__":
    main()
