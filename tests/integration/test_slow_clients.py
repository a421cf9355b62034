"""Issue 13 finding 6: slow clients cannot starve a real ``reportsvc api`` of connections.

About 21,000 half-sent requests once exhausted the process's file descriptors and
``/api/health`` was refused until they closed. Here the api runs under a descriptor limit
below the number of stalled clients (as in production, only smaller), so without a cap on open
connections it could not even accept the health probe.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from .procs import REPORTSVC, Proc, Procs, run_reportsvc, service_env

STALLED = 2_000
FD_LIMIT = 1_500  # the api's RLIMIT_NOFILE: fewer than STALLED
CAP = 1_000
HALF_HEAD = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: "
HALF_BODY = (
    b"POST /api/v1/reports/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"job_type":'
)


def _start_api(procs: Procs, env: dict[str, str]) -> tuple[Proc, str]:
    # prlimit: the api gets fewer descriptors than there are stalled clients
    argv = ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", *REPORTSVC]
    proc = procs.start("api", [*argv, "api"], env)
    url = proc.wait_for(r"msg=listening .*?url=(http://\S+)").group(1)
    proc.wait_http(url + "/api/health")
    return proc, url


def _stall(url: str, count: int, payload: bytes) -> list[socket.socket]:
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    opened = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=5)
        sock.sendall(payload)
        opened.append(sock)
    return opened


def _closed_by_server(sockets: list[socket.socket], within_sec: float) -> int:
    """How many of ``sockets`` the server closed (EOF or reset) within ``within_sec``."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + within_sec
    while closed < len(sockets) and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(timeout=left):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except ConnectionError:
                data = b""
            if data == b"":
                closed += 1
                selector.unregister(sock)
    selector.close()
    return closed


@pytest.fixture
def api_env(database_url: str, amqp_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = service_env(database_url, amqp_url, tmp_path / "exports", "http://127.0.0.1:9")
    assert run_reportsvc(env, "migrate").returncode == 0
    yield env


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_two_thousand_stalled_sockets_leave_api_health_answering(
    api_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**api_env, "HTTP_MAX_CONNECTIONS": str(CAP), "HTTP_HEADER_TIMEOUT_SEC": "120"}
    sockets: list[socket.socket] = []
    with Procs(tmp_path / "logs") as procs:
        api, url = _start_api(procs, env)
        try:
            sockets = _stall(url, STALLED // 2, HALF_HEAD) + _stall(url, STALLED // 2, HALF_BODY)
            started = time.monotonic()
            answer = httpx.get(url + "/api/health", timeout=10)
            assert answer.status_code == 200 and answer.text == "OK"
            assert time.monotonic() - started < 5
            # the oldest waiting connections made room: the api holds at most CAP of them
            assert _closed_by_server(sockets, within_sec=5) >= STALLED - CAP
            assert _open_fds(api.pid) < CAP + 100
            # and it still serves, request after request
            with httpx.Client(base_url=url, timeout=10) as client:
                assert all(client.get("/api/health").status_code == 200 for _ in range(20))
        finally:
            for sock in sockets:
                sock.close()
        assert "Traceback" not in api.output(), api.describe()


def test_a_request_head_or_body_not_complete_in_time_is_closed(
    api_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**api_env, "HTTP_HEADER_TIMEOUT_SEC": "1", "HTTP_BODY_TIMEOUT_SEC": "1.5"}
    sockets: list[socket.socket] = []
    with Procs(tmp_path / "logs") as procs:
        api, url = _start_api(procs, env)
        try:
            silent = _stall(url, 100, b"")
            heads = _stall(url, 200, HALF_HEAD)
            bodies = _stall(url, 200, HALF_BODY)
            sockets = silent + heads + bodies
            started = time.monotonic()
            assert _closed_by_server(sockets, within_sec=8) == len(sockets)
            assert time.monotonic() - started > 0.5  # closed by the deadline, not at once
            assert httpx.get(url + "/api/health", timeout=5).status_code == 200
            # a client that sends its request in time is unaffected by the deadlines
            with httpx.Client(base_url=url, timeout=10) as client:
                for _ in range(3):
                    assert client.get("/api/health").status_code == 200
                    time.sleep(0.4)  # kept alive across the gaps, each shorter than a deadline
        finally:
            for sock in sockets:
                sock.close()
        assert "Traceback" not in api.output(), api.describe()


def test_a_request_uvicorn_cannot_parse_is_answered_in_the_envelope(
    api_env: dict[str, str], tmp_path: Path
) -> None:
    """A raw non-ASCII byte in the query (curl sends "?status=queu\u00e9d" as typed) got
    uvicorn's own 400: text/plain, no envelope, no x-request-id or x-trace-id."""
    with Procs(tmp_path / "logs") as procs:
        api, url = _start_api(procs, api_env)
        (sock,) = _stall(
            url,
            1,
            "GET /api/v1/reports/jobs?status=queu\u00e9d HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        )
        with sock:
            sock.settimeout(5)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status, *lines = head.decode("ascii").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        assert status == "HTTP/1.1 400 Bad Request"
        assert headers["content-type"] == "application/json"
        assert int(headers["content-length"]) == len(body)
        error = msgspec.json.decode(body)["error"]
        assert error["code"] == "VALIDATION_ERROR" and "percent-encoded" in error["message"]
        assert error["traceId"] == headers["x-trace-id"] != headers["x-request-id"]
        assert httpx.get(url + "/api/health", timeout=5).status_code == 200
        assert "Traceback" not in api.output(), api.describe()
