"""Issue 6 item 8: graceful shutdown (SIGTERM) of real ``reportsvc worker`` and ``api`` processes.

Worker: SIGTERM stops consuming; the export in progress hands its job back (``running ->
queued``, lease released, temporary removed) at once, also mid-page (the transport's watchdog
abandons the request in flight within 0.2 s, whatever the upstream does), the message goes
back to the queue, and the process exits 0. Bound: the stop ticks of the consumer and the
publisher, and the export's next page or the watchdog's tick. A new worker then runs the job again
(``attempts`` 2) to a correct file: a hand-back is a new attempt of the job-level retry policy.

API: SIGTERM closes the listener at once (new connections are refused) and lets every request
already being served finish (uvicorn's graceful shutdown, up to 30 s), then exits 0. Here a
download is read slowly while the signal comes, and creates are arriving; the download ends
complete, every create that was answered 201 is a job that succeeds, and a create the shutdown
cut off before an answer is sent again with its idempotency key to a new API: it is then either
created or replayed, never lost or doubled.
"""

from __future__ import annotations

import csv
import hashlib
import io
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from entrypoints.runtime.serving import GRACEFUL_SHUTDOWN_SEC

from ..integration.procs import start_api
from .job_stack import FEED_PATH, JOBS, Stack, feed_job, kpi_job, running_stack

PAGE_SEC = 1.0
# the page in flight, then the consumer's stop tick (0.2 s), the idle publisher's (1 s), closing
# the connections; with room for a loaded CI machine
WORKER_EXIT_BOUND_SEC = PAGE_SEC + 3.0
# the slow download's remaining seconds, then the exit; uvicorn would cut requests still
# running after GRACEFUL_SHUTDOWN_SEC (30 s), which the complete download shows it did not
API_EXIT_BOUND_SEC = float(GRACEFUL_SHUTDOWN_SEC)
SOCKET_BUFFERS_MAX = 4 * 1024 * 1024 + 256 * 1024  # send buffer, receive window, asyncio's


def test_sigterm_to_a_worker_mid_export_hands_the_job_back_and_a_new_worker_finishes_it(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with running_stack(database_url, amqp_url, tmp_path, upstream={"per_day": 100}) as stack:
        first = stack.worker
        assert first is not None
        stack.upstream.faults.hang(PAGE_SEC, times=14, path=FEED_PATH)
        job_id = stack.create(feed_job("2026-01-05", "2026-01-18"))
        stack.wait_for(
            "the export under way",
            lambda: len(stack.upstream.times_of(FEED_PATH)) >= 3,
            30.0,
        )
        assert stack.job(job_id)["status"] == "running"

        began = time.monotonic()
        first.send(signal.SIGTERM)
        code = first.wait(WORKER_EXIT_BOUND_SEC + 10.0)
        took = time.monotonic() - began
        print(
            f"worker SIGTERM mid-export -> exited in {took:.2f}s (bound {WORKER_EXIT_BOUND_SEC}s)"
        )
        assert code == 0, first.describe()
        assert took <= WORKER_EXIT_BOUND_SEC

        handed = stack.job(job_id)
        assert handed["status"] == "queued", handed
        assert handed["lease_owner"] is None and handed["attempts"] == 1, handed
        assert stack.files() == [], "the temporary of the abandoned run was left"
        lines = stack.worker_lines(first, job_id)
        assert len(lines) == 1 and "disposition=requeue" in lines[0], lines

        stack.upstream.faults.clear()
        second = stack.start_worker()
        job = stack.wait_status(job_id)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2, job
        path = Path(job["file_path"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == job["sha256"]
        ids = [row["id"] for row in csv.DictReader(io.StringIO(path.read_text()))]
        assert len(ids) == 1400 and len(set(ids)) == 1400
        assert stack.files() == [path]
        assert stack.wait_worker_lines(second, job_id), "the new worker did not run it"


def test_sigterm_mid_page_of_a_dripping_upstream_exits_within_seconds(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    # issue 26, row 5: a page dripped a byte every 2 s (each read under the 10 s timeout)
    # held the worker past SIGTERM; the page in flight is now abandoned within 0.2 s
    with running_stack(database_url, amqp_url, tmp_path, upstream={"per_day": 100}) as stack:
        worker = stack.worker
        assert worker is not None
        stack.upstream.faults.body(b'{"items": []}' * 100, drip_sec=2.0, path=FEED_PATH)
        job_id = stack.create(feed_job("2026-01-05", "2026-01-18"))
        stack.wait_for(
            "the dripped page under way",
            lambda: len(stack.upstream.times_of(FEED_PATH)) >= 1,
            30.0,
        )
        time.sleep(1.0)
        assert stack.job(job_id)["status"] == "running"

        began = time.monotonic()
        worker.send(signal.SIGTERM)
        code = worker.wait(WORKER_EXIT_BOUND_SEC + 10.0)
        took = time.monotonic() - began
        print(f"worker SIGTERM mid dripped page -> exited in {took:.2f}s")
        assert code == 0, worker.describe()
        assert took <= WORKER_EXIT_BOUND_SEC
        handed = stack.job(job_id)
        assert handed["status"] == "queued" and handed["lease_owner"] is None, handed
        assert stack.files() == []


class SlowDownload(threading.Thread):
    """GET ``url`` over a socket with a small receive buffer, read slowly, so that the server is
    still sending when the test signals it."""

    def __init__(self, base_url: str, url: str) -> None:
        super().__init__(name="slow-download", daemon=True)
        parts = urlsplit(base_url)
        assert parts.hostname is not None and parts.port is not None
        self.address = (parts.hostname, parts.port)
        self.url = url
        self.data = bytearray()
        self.started = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
                sock.connect(self.address)
                host = f"{self.address[0]}:{self.address[1]}"
                request = f"GET {self.url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                sock.sendall(request.encode())
                while chunk := sock.recv(16384):
                    self.data += chunk
                    self.started.set()
                    time.sleep(0.01)  # at most about 1.6 MB/s
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()

    def response(self) -> tuple[str, dict[str, str], bytes]:
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        status, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, body


class Creator(threading.Thread):
    """Creates jobs one after another, each on a new connection, until the API is gone."""

    def __init__(self, stack: Stack, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stack = stack
        self.created: list[str] = []
        self.cut: list[dict[str, Any]] = []  # sent, but no answer came back
        self.refused = 0

    def run(self) -> None:
        for n in range(40):
            body = {**kpi_job("2026-01-05", "2026-01-06"), "idempotency_key": f"{self.name}-{n}"}
            try:
                with self.stack.http() as http:
                    answer = http.post(JOBS, json=body)
            except httpx.ConnectError:
                self.refused += 1
                return
            except httpx.TransportError:
                self.cut.append(body)
                continue
            assert answer.status_code == 201, answer.text
            self.created.append(answer.json()["id"])
            time.sleep(0.02)


def test_sigterm_to_the_api_finishes_requests_in_flight_exits_0_and_loses_no_job(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with running_stack(
        database_url,
        amqp_url,
        tmp_path,
        upstream={"per_day": 1200},
        WORKER_CONCURRENCY="2",
        WORKER_TENANT_CONCURRENCY="2",  # one tenant: it may hold both slots
    ) as stack:
        # a file of about 6 MB to download slowly: more than the kernel's socket buffers hold
        # (net.ipv4.tcp_wmem's 4 MiB at most), so the API is still sending when signalled
        big = stack.wait_status(stack.create(feed_job("2026-01-05", "2026-01-18")))
        assert big["status"] == "succeeded", big
        with stack.http() as http:
            url = http.get(f"{JOBS}/{big['id']}/download").json()["download_url"]
        download = SlowDownload(stack.base_url, url)
        download.start()
        assert download.started.wait(10.0)
        creators = [Creator(stack, f"creator-{uuid.uuid4().hex[:6]}-{i}") for i in range(3)]
        for creator in creators:
            creator.start()
        stack.wait_for("creates answered", lambda: sum(len(c.created) for c in creators) >= 6, 20.0)

        began = time.monotonic()
        received_before = len(download.data)
        stack.api.send(signal.SIGTERM)
        code = stack.api.wait(API_EXIT_BOUND_SEC + 30.0)
        took = time.monotonic() - began
        print(f"api SIGTERM -> exited in {took:.2f}s (bound {API_EXIT_BOUND_SEC}s)")
        assert code == 0, stack.api.describe()
        assert took < API_EXIT_BOUND_SEC
        download.join(30.0)
        for creator in creators:
            creator.join(30.0)

        # the download in flight went on after the signal and ended complete
        assert download.error is None, download.error
        status, headers, body = download.response()
        assert status == "HTTP/1.1 200 OK", status
        assert received_before < int(headers["content-length"])
        assert len(body) > SOCKET_BUFFERS_MAX, "the file fits in the socket buffers"
        # the API waited for the client to take what did not fit in the buffers
        assert took >= 0.3, took
        assert len(body) == int(headers["content-length"]) == big["size_bytes"]
        assert hashlib.sha256(body).hexdigest() == big["sha256"]
        assert all(c.refused == 1 for c in creators), "a creator ended before the API did"

        # no job lost: every 201 is a job; cut-off creates sent again with their key to a new
        # API are created now or replayed, never doubled
        created = [job_id for c in creators for job_id in c.created]
        cut = [body for c in creators for body in c.cut]
        print(f"creates: {len(created)} answered 201, {len(cut)} cut off by the shutdown")
        _, stack.base_url = start_api(stack.procs, stack.env)
        with stack.http() as http:
            for body in cut:
                again = http.post(JOBS, json=body)
                assert again.status_code in (200, 201), again.text
                created.append(again.json()["id"])
        assert len(set(created)) == len(created)
        jobs = stack.jobs()
        assert set(jobs) == {big["id"], *created}
        stack.wait_for(
            "every job succeeded",
            lambda: all(j["status"] == "succeeded" for j in stack.jobs().values()),
            30.0,
        )
