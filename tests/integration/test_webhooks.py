"""Issue 18 (webhooks) through real processes: ``api`` and ``worker`` over PostgreSQL and
RabbitMQ, and a real HTTP receiver in this test.

- a receiver that fails its first three deliveries gets the fourth, each signed, all with one
  delivery id, the waits doubling from ``REPORT_WEBHOOK_RETRY_BASE_SEC``;
- a worker SIGKILLed after finishing a job but before the receiver got its webhook (the
  receiver refuses connections until after the kill) delivers it after a restart; a job
  cancelled in the api while no worker runs is announced too (the api writes its outbox row).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from reportcore.jobs import JobType
from reportcore.webhooks import verify_signature

from .procs import (
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_demo_upstream,
    start_worker,
    user_token,
)
from .test_end_to_end import demo_scope

SECRET = "integration-webhook-secret-0123456789"
RETRY_BASE_SEC = 0.2
DEADLINE_SEC = 60.0


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server that answers each POST with the next status of ``script`` (200 once
    it runs out) and records what it got."""

    script: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, bound: socket.socket | None = None) -> ThreadingHTTPServer:
        """Serve on a port of its own, or on ``bound``: a socket the test bound (and kept from
        listening) earlier, so that its port never lay free for another process to take."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.got.append(
                        Received(
                            time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body
                        )
                    )
                    status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        if bound is None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        else:
            server = ThreadingHTTPServer(bound.getsockname(), Handler, bind_and_activate=False)
            server.socket.close()
            server.socket = bound
            server.server_address = bound.getsockname()
            server.server_activate()  # listen(): connections are accepted from now on
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def wait_for(self, count: int, within: float = DEADLINE_SEC) -> list[Received]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= count:
                    return list(self.got)
            time.sleep(0.05)
        pytest.fail(f"the receiver got {len(self.got)} deliveries, not {count}")


def refusing_socket() -> socket.socket:
    """A socket bound to a free local port and not listening: the kernel refuses connections
    to the port (RST) while it is held, and no other process can bind it (no SO_REUSEADDR).
    :meth:`Receiver.serve` takes it over to listen on the same port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield Receiver()


def webhook_env(database_url: str, amqp_url: str, tmp_path: Path, upstream: str) -> dict[str, str]:
    return service_env(
        database_url,
        amqp_url,
        tmp_path / "exports",
        upstream,
        REPORT_WEBHOOK_ALLOWED_HOSTS="http://127.0.0.1",
        REPORT_WEBHOOK_SECRET=SECRET,
        REPORT_WEBHOOK_RETRY_BASE_SEC=str(RETRY_BASE_SEC),
        REPORT_WEBHOOK_MAX_ATTEMPTS="8",
    )


def create(http: httpx.Client, notify_url: str) -> dict[str, Any]:
    job_type = JobType.KPI_FEEDING_EXPORT
    answer = http.post(
        "/api/v1/reports/jobs",
        json={
            "job_type": job_type.value,
            "format": "csv",
            "notify_url": notify_url,
            **demo_scope(job_type),
        },
    )
    assert answer.status_code == 201, answer.text
    job: dict[str, Any] = answer.json()
    assert job["notify_url"] == notify_url and job["notification"] is None
    return job


def wait_job(http: httpx.Client, job_id: str, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SEC
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/api/v1/reports/jobs/{job_id}").json()
        if done(job):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} never got there: {job}")


def check_signed(delivery: Received) -> dict[str, Any]:
    header = delivery.headers["x-farmiq-signature"]
    assert verify_signature(SECRET.encode(), header, delivery.body, now=time.time()), header
    assert not verify_signature(
        b"another-secret-0123456789", header, delivery.body, now=time.time()
    )
    assert delivery.headers["content-type"] == "application/json"
    event: dict[str, Any] = json.loads(delivery.body)
    return event


def test_a_receiver_that_fails_three_times_gets_the_fourth_signed_delivery(
    database_url: str, amqp_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script = [503, 500, 404]
    server = receiver.serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/reports"
    try:
        with Procs(tmp_path / "logs") as procs:
            from adapters.demo_upstream import DEMO_TENANT

            env = webhook_env(database_url, amqp_url, tmp_path, start_demo_upstream(procs))
            assert run_reportsvc(env, "migrate").returncode == 0
            _, base_url = start_api(procs, env)
            start_worker(procs, env)
            token = user_token(env, DEMO_TENANT, "tenant_admin")
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as http:
                job = create(http, url)
                got = receiver.wait_for(4)
                shown = wait_job(
                    http, job["id"], lambda j: (j["notification"] or {}).get("state") == "delivered"
                )
    finally:
        server.shutdown()
        server.server_close()

    assert len(got) == 4, "delivered on the fourth attempt, and not sent again"
    events = [check_signed(d) for d in got]
    assert {e["type"] for e in events} == {"report_job.succeeded"}
    assert events[0]["job"]["id"] == job["id"] and events[0]["job"]["status"] == "succeeded"
    assert len({d.body for d in got}) == 1, "retries send the same body"
    ids = {d.headers["x-farmiq-delivery"] for d in got}
    assert len(ids) == 1 and ids == {d.headers["idempotency-key"] for d in got}
    # the waits double from the base (0.2 s, 0.4 s, 0.8 s); the poll adds a little
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    for n, gap in enumerate(gaps):
        assert gap >= RETRY_BASE_SEC * 2**n * 0.9, gaps
    assert shown["notification"] == {"state": "delivered", "attempts": 4, "last_error": None}
    assert shown["status"] == "succeeded"


def test_a_worker_killed_before_delivering_delivers_after_restart(
    database_url: str, amqp_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    # nothing listens here until after the kill: connections are refused
    refusing = refusing_socket()
    url = f"http://127.0.0.1:{refusing.getsockname()[1]}/hooks"
    server = None
    try:
        with Procs(tmp_path / "logs") as procs:
            from adapters.demo_upstream import DEMO_TENANT

            env = webhook_env(database_url, amqp_url, tmp_path, start_demo_upstream(procs))
            # slow retries: the killed worker tries once or twice at most
            env["REPORT_WEBHOOK_RETRY_BASE_SEC"] = "1"
            assert run_reportsvc(env, "migrate").returncode == 0
            _, base_url = start_api(procs, env)
            token = user_token(env, DEMO_TENANT, "tenant_admin")
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as http:
                # cancelled in the api while no worker runs: the api wrote its delivery
                cancelled = create(http, url)
                answer = http.post(f"/api/v1/reports/jobs/{cancelled['id']}/cancel")
                assert answer.status_code == 200, answer.text
                assert answer.json()["notification"] == {
                    "state": "pending",
                    "attempts": 0,
                    "last_error": None,
                }
                finished = create(http, url)
                worker = start_worker(procs, env)
                wait_job(http, finished["id"], lambda j: j["status"] == "succeeded")
                # the job ended and its delivery is in the outbox, not at the receiver
                pending = outbox_rows(database_url)
                assert {r[0] for r in pending} == {cancelled["id"], finished["id"]}
                assert {r[1] for r in pending} == {"pending"}
                assert worker.kill() != 0
                assert receiver.got == []

                server = receiver.serve(refusing)
                start_worker(procs, env)
                # should the kill have hit a sender mid-attempt, its lease (60 s) runs out first
                got = receiver.wait_for(2, within=DEADLINE_SEC + 60)
                wait_job(
                    http,
                    finished["id"],
                    lambda j: (j["notification"] or {}).get("state") == "delivered",
                )
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        refusing.close()

    events = {e["job"]["id"]: e["type"] for e in (check_signed(d) for d in got)}
    assert events == {
        cancelled["id"]: "report_job.cancelled",
        finished["id"]: "report_job.succeeded",
    }
    assert len({d.headers["x-farmiq-delivery"] for d in got}) == 2


def outbox_rows(database_url: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT job_id, state, attempts FROM report_webhook_deliveries ORDER BY job_id"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _read_request(conn: socket.socket) -> None:
    """Read one whole request (head and ``Content-Length`` body), so that nothing is left
    unread when the connection closes (that would reset it)."""
    data = b""
    while True:
        head, found, rest = data.partition(b"\r\n\r\n")
        if found:
            lengths = [
                int(line.partition(b":")[2])
                for line in head.split(b"\r\n")[1:]
                if line.partition(b":")[0].strip().lower() == b"content-length"
            ]
            if len(rest) >= sum(lengths):
                return
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk


@dataclass
class DrippingReceiver:
    """A real TCP server that reads each request and then drips an HTTP status line one byte
    every ``every_sec``; records when each connection opened and when the sender cut it."""

    every_sec: float
    connections: list[tuple[float, float | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> socket.socket:
        listener = socket.create_server(("127.0.0.1", 0))

        def accept() -> None:
            while not self.done.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return listener

    def _drip(self, conn: socket.socket) -> None:
        with self.lock:
            n = len(self.connections)
            self.connections.append((time.monotonic(), None))
        with conn:
            conn.settimeout(5.0)
            with contextlib.suppress(OSError):
                _read_request(conn)
            # between two bytes, wait for the sender to hang up: recv answers b"" at once then
            conn.settimeout(self.every_sec)
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
                if self.done.is_set():
                    return
                try:
                    if conn.recv(1) == b"":
                        break  # the sender cut the connection
                except TimeoutError:
                    pass  # still connected: the next byte
                except OSError:
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
            with self.lock:
                self.connections[n] = (self.connections[n][0], time.monotonic())

    def close(self, listener: socket.socket) -> None:
        self.done.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()


def test_a_dripping_receiver_is_cut_off_at_the_deadline_and_delays_no_other(
    database_url: str, amqp_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """Issue 26, row 13: the dripping receiver's status line would take about 80 s (each byte
    well within any read timeout); the healthy receiver's delivery goes out meanwhile, and the
    dripping attempt ends at REPORT_WEBHOOK_TIMEOUT_SEC."""
    deadline = 6.0
    dripping = DrippingReceiver(every_sec=2.0)
    listener = dripping.serve()
    drip_url = f"http://127.0.0.1:{listener.getsockname()[1]}/hooks"
    server = receiver.serve()
    healthy_url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        with Procs(tmp_path / "logs") as procs:
            from adapters.demo_upstream import DEMO_TENANT

            env = webhook_env(database_url, amqp_url, tmp_path, start_demo_upstream(procs))
            env["REPORT_WEBHOOK_TIMEOUT_SEC"] = str(deadline)
            env["REPORT_WEBHOOK_RETRY_BASE_SEC"] = "60"  # one attempt at the dripping one
            assert run_reportsvc(env, "migrate").returncode == 0
            _, base_url = start_api(procs, env)
            start_worker(procs, env)
            token = user_token(env, DEMO_TENANT, "tenant_admin")
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as http:
                slow = create(http, drip_url)
                wait_until(lambda: len(dripping.connections) >= 1, "the dripping attempt")
                # the sender is now held by the dripping receiver, as in the issue
                began = time.monotonic()
                healthy = create(http, healthy_url)
                [got] = receiver.wait_for(1)
                shown = wait_job(
                    http,
                    healthy["id"],
                    lambda j: (j["notification"] or {}).get("state") == "delivered",
                )
                cut = wait_job(
                    http,
                    slow["id"],
                    lambda j: (j["notification"] or {}).get("attempts") == 1,
                )
    finally:
        dripping.close(listener)
        server.shutdown()
        server.server_close()

    # the old sender delivered it only once the dripping line was complete (about 80 s)
    assert got.at - began < 30.0, f"the healthy receiver waited {got.at - began:.1f} s"
    assert shown["notification"] == {"state": "delivered", "attempts": 1, "last_error": None}
    assert check_signed(got)["job"]["id"] == healthy["id"]
    notification = cut["notification"]
    assert notification["state"] == "pending", "a failed attempt, retried after the backoff"
    assert "deadline of 6 s" in notification["last_error"]
    opened, closed = dripping.connections[0]
    assert closed is not None, "the dripping connection was never cut"
    assert deadline * 0.9 <= closed - opened <= deadline + 6.0, closed - opened


def wait_until(check: Any, what: str, within: float = DEADLINE_SEC) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
