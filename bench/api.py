"""API throughput and latency: create, get and list against a real ``reportsvc api``.

Method. A fresh PostgreSQL database and a fresh RabbitMQ vhost are created on the shared
servers (as tests/conftest.py does) and dropped at the end; ``reportsvc migrate`` and then
``reportsvc api`` run as real processes with the environment of tests/integration/procs.py (no
upstream is called: creates only store and publish). Two api processes by default
(``--api-processes``): one Python process runs on one core at a time, the contract scales the
api out as separate processes, and the machine has two cores; the clients' connections are
spread evenly over them. A bearer token comes from ``reportsvc token``. The load generator is
this process: 32 asyncio tasks, each with its own keep-alive HTTP/1.1 connection (a minimal
client on asyncio streams: httpx would cost more CPU per request than the server does on some
routes), each sending its next request as soon as the previous answer is read, for a fixed time
per phase. Phases, one after the other:

- ``health``: GET /api/health, the server's floor (no auth, no database);
- ``create``: POST /api/v1/reports/jobs, a feed intake export, no idempotency key (each a new
  job: one INSERT ... ON CONFLICT and one confirmed publish);
- ``create_at_500``: the same offered at 500 requests/s (an open load: request i is due at
  i/500 s and its latency counts from then), the latency of the target rate rather than of a
  saturated server (where 32 clients make p50 = 32 / throughput by Little's law);
- ``create_key``: the same with a unique ``Idempotency-Key`` header per request;
- ``get``: GET /api/v1/reports/jobs/{id}, cycling over the jobs created above;
- ``list``: GET /api/v1/reports/jobs (limit 25, the default page).

Every answer's status is checked (201 for creates, 200 otherwise); any other fails the run. For
each phase it prints requests/s and p50/p99 latency (from just before the request is written to
the end of its body), one figure per line, plus the CPU the api processes and the load
generator used per request: ``loadgen_capacity_req_s`` is what the generator could drive with a
whole core to itself, so a figure far below it is the server's, not the generator's;
``machine_busy_pct`` is the share of both cores busy (anything else running on the machine
counts, so a figure taken beside other work reads low). The created jobs are left queued (no
worker runs), which the measured routes do not read.

    .venv/bin/python bench/api.py            # ~6 s a phase, ~50 s in all
    .venv/bin/python bench/api.py --smoke    # 0.6 s phases, ~10 s; exit 0: all answers right
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import cpu_seconds, figure  # noqa: E402  (bench/, the script's own folder)
from tests.integration.procs import (  # noqa: E402
    Procs,
    run_reportsvc,
    service_env,
    user_token,
)

CLIENTS = 32
CREATE_RATE = 500  # the target: latency of creates offered at this rate
PG = os.environ.get("TEST_PG_HOST", "127.0.0.1"), int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("TEST_PG_DB", "test")
AMQP = os.environ.get("TEST_AMQP_HOST", "127.0.0.1"), int(os.environ.get("TEST_AMQP_PORT", "5672"))
JOBS = "/api/v1/reports/jobs"
TENANT = "t-bench"


# --- throwaway database and vhost, like tests/conftest.py ---


def pg_url(db: str) -> str:
    return f"postgresql://{PG_USER}@{PG[0]}:{PG[1]}/{db}"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url(PG_ADMIN_DB), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(pg_url(PG_ADMIN_DB), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise SystemExit("rabbitmqctl is needed to create a vhost")
    subprocess.run([exe, "-q", *args], check=True, capture_output=True, timeout=60)


def _add_vhost(vhost: str) -> str:
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@{AMQP[0]}:{AMQP[1]}/{quote(vhost, safe='')}"


@contextlib.contextmanager
def service(
    upstream_url: str = "http://127.0.0.1:9", **overrides: str
) -> Iterator[tuple[Procs, dict[str, str]]]:
    """A fresh database and vhost, migrated; yields the process group and the environment.

    rabbitmqctl takes about a second a call, so the vhost is made (and deleted) on a thread
    while the database is created and migrated (and dropped).
    """
    vhost = f"bench_{uuid.uuid4().hex[:12]}"
    with (
        tempfile.TemporaryDirectory(prefix="reportsvc-bench-") as tmp,
        ThreadPoolExecutor(1) as background,
    ):
        made = background.submit(_add_vhost, vhost)
        try:
            with fresh_database() as database_url:
                env = service_env(
                    database_url, "amqp://pending", Path(tmp) / "exports", upstream_url
                )
                env.update(overrides)
                done = run_reportsvc(env, "migrate")
                if done.returncode != 0:
                    raise SystemExit(f"migrate failed: {done.stderr}")
                env["RABBITMQ_URL"] = made.result()
                try:
                    with Procs(Path(tmp) / "logs") as procs:
                        yield procs, env
                finally:
                    background.submit(_rabbitmqctl, "delete_vhost", vhost)
        finally:
            if made.exception() is not None:  # partly made, or not at all: remove what is
                background.submit(_rabbitmqctl, "delete_vhost", vhost)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def api_cpu(apis: Sequence[tuple[str, int]]) -> float:
    return sum(cpu_seconds(pid) for _, pid in apis)


# --- the load generator ---


class Answer:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> Answer:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
                break
        body = await self.reader.readexactly(length) if length else b""
        return Answer(status, body)

    def close(self) -> None:
        self.writer.close()


def request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: bench"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Phase:
    """The outcome of one phase."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.bad: list[tuple[int, bytes]] = []
        self.bodies: list[bytes] = []
        self.seconds = 0.0
        self.loadgen_cpu = 0.0
        self.server_cpu = 0.0
        self.machine_busy = 0.0

    def report(self) -> None:
        n = len(self.latencies)
        lat = sorted(self.latencies)
        figure(f"{self.name}_req_s", n / self.seconds, "req/s")
        figure(f"{self.name}_p50_ms", lat[n // 2] * 1000 if n else 0, "ms")
        figure(f"{self.name}_p99_ms", lat[min(n - 1, n * 99 // 100)] * 1000 if n else 0, "ms")
        if n:
            figure(f"{self.name}_api_cpu_ms_per_req", self.server_cpu / n * 1000, "ms")
            figure(f"{self.name}_loadgen_capacity_req_s", n / max(self.loadgen_cpu, 1e-9), "req/s")
        figure(f"{self.name}_machine_busy_pct", self.machine_busy * 100, "%")


async def run_phase(
    name: str,
    apis: Sequence[tuple[str, int]],
    make: Callable[[int], bytes],
    expect: int,
    seconds: float,
    keep_bodies: bool = False,
    rate: float | None = None,
) -> Phase:
    """``CLIENTS`` connections sending ``make(i)`` (i counts requests) for ``seconds``.

    With ``rate``, request i is due at ``i / rate`` seconds into the phase (an open load: the
    clients take the next due request when free) and its latency counts from when it was due,
    so a server that falls behind is charged for the wait, not only for the service time.
    """
    phase = Phase(name)
    conns = [await Connection.open(apis[k % len(apis)][0]) for k in range(CLIENTS)]
    counter = iter(range(10**12))
    clock = time.perf_counter
    stop_at = 0.0

    async def client(conn: Connection) -> None:
        while clock() < stop_at:
            i = next(counter)
            raw = make(i)
            began = clock()
            if rate is not None:
                due = start + i / rate
                if due >= stop_at:
                    return
                if due > began:
                    await asyncio.sleep(due - began)
                began = due
            answer = await conn.send(raw)
            phase.latencies.append(clock() - began)
            if answer.status != expect:
                phase.bad.append((answer.status, answer.body[:300]))
            elif keep_bodies:
                phase.bodies.append(answer.body)

    cpu0, srv0, box0 = time.process_time(), api_cpu(apis), machine_cpu()
    start = began = clock()
    stop_at = began + seconds
    await asyncio.gather(*(client(c) for c in conns))
    phase.seconds = clock() - began
    phase.loadgen_cpu = time.process_time() - cpu0
    phase.server_cpu = api_cpu(apis) - srv0
    box1 = machine_cpu()
    phase.machine_busy = (box1[0] - box0[0]) / max(box1[1] - box0[1], 1e-9)
    for c in conns:
        c.close()
    if phase.bad:
        status, body = phase.bad[0]
        raise SystemExit(f"{name}: {len(phase.bad)} wrong answers, first {status}: {body!r}")
    return phase


def create_body(i: int) -> bytes:
    day = f"2026-01-{1 + i % 28:02d}"
    return (
        b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv","tenant_id":"' + TENANT.encode() + b'",'
        b'"start_date":"' + day.encode() + b'","end_date":"' + day.encode() + b'"}'
    )


async def bench(apis: Sequence[tuple[str, int]], token: str, seconds: float) -> None:
    import msgspec

    auth = {"authorization": f"Bearer {token}"}
    run = 0  # keeps the keys of two runs on one database apart

    health = request("GET", "/api/health")
    (await run_phase("health", apis, lambda i: health, 200, seconds)).report()

    def create(i: int) -> bytes:
        return request("POST", JOBS, auth, create_body(i))

    made = await run_phase("create", apis, create, 201, seconds, True)
    made.report()
    run += 1

    def create_paced(i: int) -> bytes:
        return request("POST", JOBS, auth, create_body(i))

    at = await run_phase(
        f"create_at_{CREATE_RATE}",
        apis,
        create_paced,
        201,
        seconds,
        rate=CREATE_RATE,
    )
    at.report()

    def create_key(i: int) -> bytes:
        headers = {**auth, "idempotency-key": f"bench-{run}-{i}"}
        return request("POST", JOBS, headers, create_body(i))

    (await run_phase("create_key", apis, create_key, 201, seconds)).report()

    ids = [msgspec.json.decode(b)["id"] for b in made.bodies[:5000]]
    gets = [request("GET", f"{JOBS}/{job_id}", auth) for job_id in ids]
    (await run_phase("get", apis, lambda i: gets[i % len(gets)], 200, seconds)).report()

    listing = request("GET", f"{JOBS}?limit=25", auth)
    (await run_phase("list", apis, lambda i: listing, 200, seconds)).report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="~10 s: short phases")
    parser.add_argument("--seconds", type=float, default=None, help="length of each phase")
    parser.add_argument(
        "--api-processes",
        type=int,
        default=2,
        help="reportsvc api processes (default 2, one a core), connections spread over them",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra api setting"
    )
    args = parser.parse_args()
    seconds = args.seconds or (0.6 if args.smoke else 6.0)
    # one tenant creates thousands of jobs that no worker runs: no cap of unfinished jobs (a
    # create at the cap is a cheap 429, not the create path this bench measures)
    extra = {"REPORT_MAX_UNFINISHED_JOBS": "0", **dict(item.split("=", 1) for item in args.env)}
    with service(**extra) as (procs, env):
        # started together, then waited for: each takes a second or two to come up
        started = [procs.reportsvc("api", env, "api") for _ in range(args.api_processes)]
        apis = []
        for api in started:
            url = api.wait_for(r"msg=listening .*?url=(http://\S+)").group(1)
            api.wait_http(url + "/api/health")
            apis.append((url, api.pid))
        token = user_token(env, TENANT, "tenant_admin", sub="bench")
        figure("clients", CLIENTS)
        figure("api_processes", len(apis))
        asyncio.run(bench(apis, token, seconds))


if __name__ == "__main__":
    main()
