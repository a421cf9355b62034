"""End to end: 2,000 small jobs through the API, two workers, until every one succeeded.

Method. As bench/api.py: a fresh PostgreSQL database and RabbitMQ vhost on the shared servers,
``reportsvc migrate``, then real processes: the fast fake feed (bench/fake_feed.py) serving 5
intake records (one page) to every export, one ``reportsvc api`` and two ``reportsvc worker``
processes with ``WORKER_CONCURRENCY`` jobs each at a time (8 here, raised from the default 1:
small jobs spend most of their time waiting on PostgreSQL, the broker and the feed, so one at a
time leaves a worker idle; ``--concurrency`` changes it). The workers run from the start.
Then 32 keep-alive clients create the jobs (feed intake exports, CSV, unique requests, each
answered 201) as fast as the API takes them, while this process counts the jobs per status in
the database every 50 ms until all are ``succeeded`` (any ``failed`` or ``cancelled`` fails the
run). Figures, one a line: the time to create them all, the time from the first create until
the last job succeeded, and jobs/s over that whole time (the end-to-end figure), plus the
drain rate once creation ended and the CPU each process used per job.

    .venv/bin/python bench/e2e.py            # 2,000 jobs, ~30 s
    .venv/bin/python bench/e2e.py --smoke    # 200 jobs, ~10 s
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import (
    CLIENTS,
    JOBS,
    TENANT,
    Connection,
    cpu_seconds,
    create_body,
    figure,
    request,
    service,
)
from tests.integration.procs import base_env, start_api, start_worker, user_token

FEED_RECORDS = 5
TIMEOUT_SEC = 100.0


async def create_all(base_url: str, token: str, total: int) -> float:
    """Create ``total`` jobs with ``CLIENTS`` connections; returns when the last was answered."""
    auth = {"authorization": f"Bearer {token}"}
    counter = iter(range(total))
    conns = [await Connection.open(base_url) for _ in range(CLIENTS)]

    async def client(conn: Connection) -> None:
        for i in counter:
            answer = await conn.send(request("POST", JOBS, auth, create_body(i)))
            if answer.status != 201:
                raise SystemExit(f"create answered {answer.status}: {answer.body[:300]!r}")

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    for c in conns:
        c.close()
    return time.perf_counter() - began


def statuses(conn: psycopg.Connection[tuple[str, int]]) -> dict[str, int]:
    rows = conn.execute("SELECT status::text, count(*) FROM report_jobs GROUP BY 1").fetchall()
    return {status: n for status, n in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 jobs, ~10 s")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8, help="WORKER_CONCURRENCY")
    args = parser.parse_args()
    total = args.jobs or (200 if args.smoke else 2000)

    # one tenant makes every job here: let it hold every slot, as the figures always had
    with service(
        WORKER_CONCURRENCY=str(args.concurrency),
        WORKER_TENANT_CONCURRENCY=str(args.concurrency),
    ) as (procs, env):
        feed = procs.start(
            "fake-feed",
            [
                sys.executable,
                str(Path(__file__).with_name("fake_feed.py")),
                "--records",
                str(FEED_RECORDS),
            ],
            base_env(),
        )
        feed_url = feed.wait_for(r"(http://[\w.-]+:\d+)").group(1)
        env["CLOUD_FEED_SERVICE_URL"] = feed_url
        api, url = start_api(procs, env)
        workers = [start_worker(procs, env) for _ in range(2)]
        token = user_token(env, TENANT, "tenant_admin", sub="bench")
        cpu0 = cpu_seconds(api.pid), sum(cpu_seconds(w.pid) for w in workers)

        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as db:
            began = time.perf_counter()
            created_sec = asyncio.run(create_all(url, token, total))
            counts: dict[str, int] = {}
            while True:
                counts = statuses(db)
                if counts.get("failed") or counts.get("cancelled"):
                    raise SystemExit(f"jobs did not succeed: {counts}")
                if counts.get("succeeded", 0) == total:
                    break
                if time.perf_counter() - began > TIMEOUT_SEC:
                    raise SystemExit(f"not done in {TIMEOUT_SEC:.0f}s: {counts}")
                time.sleep(0.05)
            done_sec = time.perf_counter() - began
        api_cpu = cpu_seconds(api.pid) - cpu0[0]
        worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu0[1]

        figure("jobs", total)
        figure("worker_processes", len(workers))
        figure("worker_concurrency", args.concurrency)
        figure("create_all_s", created_sec, "s")
        figure("create_req_s", total / created_sec, "req/s")
        figure("all_succeeded_s", done_sec, "s")
        figure("e2e_jobs_s", total / done_sec, "jobs/s")
        if done_sec > created_sec + 0.05:
            figure("drain_after_create_s", done_sec - created_sec, "s")
        figure("api_cpu_ms_per_job", api_cpu / total * 1000, "ms")
        figure("worker_cpu_ms_per_job", worker_cpu / total * 1000, "ms")
        for w in workers:
            if w.returncode() is not None:
                raise SystemExit(f"worker exited:\n{w.describe()}")


if __name__ == "__main__":
    main()
