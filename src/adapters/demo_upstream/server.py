"""The demo upstream's HTTP server: routes, fault injection, and the requests it saw."""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from reportcore.ports import Clock

from .draws import BadRequest, Query
from .faults import Fault, Faults, SeenRequest
from .samples import DemoData

_ROUTES: Mapping[str, Callable[[DemoData, Query], Any]] = {
    "/api/v1/feed/intake-records": DemoData.feed_intake,
    "/api/v1/kpi/feeding": DemoData.kpi_feeding,
    "/api/v1/telemetry/readings": DemoData.telemetry,
    "/api/v1/weighvision/weight-aggregates": DemoData.weighvision,
}
MALFORMED_BODY = b'{"items": [{"id": "7f3c'


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], demo: DemoUpstream) -> None:
        self.demo = demo
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out and left is the point of a hang fault, not an error
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake handler threads idling on kept-alive connections, so they end."""
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            # OSError: the client closed it meanwhile, and the thread is ending anyway
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the exporters reuse connections
    # headers and body leave in one segment: on a kept-alive connection Nagle's algorithm
    # would otherwise hold the body until the client's delayed ACK
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read :attr:`DemoUpstream.requests` instead."""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = msgspec.json.encode({"error": {"code": code, "message": message}})
        self._send(status, body)

    def _hostile_body(self, fault: Fault) -> None:
        """A 200 whose body is what a misbehaving upstream sends: huge, inflating to far
        more, or dripped a byte at a time; the client leaving ends it."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for name, value in fault.headers.items():
            self.send_header(name, value)
        if fault.length:
            self.send_header("Content-Length", str(len(fault.body) * fault.repeat))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        stopping = self.server.demo.stopping
        try:
            for _ in range(fault.repeat):
                if fault.drip_sec <= 0:
                    self.wfile.write(fault.body)
                    continue
                for at in range(len(fault.body)):
                    self.wfile.write(fault.body[at : at + 1])
                    self.wfile.flush()
                    if stopping.wait(fault.drip_sec):
                        return
            self.wfile.flush()
        except OSError:  # the client gave up on the page: what the caps are for
            self.close_connection = True

    def do_GET(self) -> None:
        demo = self.server.demo
        url = urlsplit(self.path)
        seen = SeenRequest(
            method="GET",
            path=url.path,
            params=parse_qs(url.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        demo.record(seen)
        if url.path == "/api/health":
            self._send(200, b'"OK"')
            return
        fault = demo.faults.take(url.path)
        if fault is not None and fault.kind == "hang":
            demo.stopping.wait(fault.seconds)
        elif fault is not None and fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        elif fault is not None and fault.kind == "malformed":
            self._send(200, MALFORMED_BODY)
            return
        elif fault is not None and fault.kind == "body":
            self._hostile_body(fault)
            return
        elif fault is not None:
            after = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            body = msgspec.json.encode(
                {"error": {"code": "INJECTED", "message": f"injected {fault.status}"}}
            )
            self._send(fault.status, body, after)
            return
        if demo.token is not None and seen.headers.get("authorization") != f"Bearer {demo.token}":
            self._error(401, "UNAUTHORIZED", "missing or invalid service token")
            return
        route = _ROUTES.get(url.path)
        if route is None:
            self._error(404, "NOT_FOUND", f"no route GET {url.path}")
            return
        try:
            answer = route(demo.data, Query(seen.params))
        except BadRequest as exc:
            self._error(400, "VALIDATION_ERROR", str(exc))
            return
        self._send(200, msgspec.json.encode(answer))


class DemoUpstream:
    """The demo upstream: a real HTTP server on a background thread.

    ``per_day`` feed intake records and ``readings_per_day`` telemetry readings a day (size
    knobs for big exports), ``per_timestamp`` readings share each timestamp; ``token`` makes
    every request need ``Authorization: Bearer <token>``; ``inclusive_to`` says whether a
    reading at exactly ``to`` is included (real services differ; the exporter copes with both).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        per_day: int = 24,
        readings_per_day: int = 288,
        per_timestamp: int = 3,
        token: str | None = None,
        inclusive_to: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.data = DemoData(
            seed=seed,
            per_day=per_day,
            readings_per_day=readings_per_day,
            per_timestamp=per_timestamp,
            inclusive_to=inclusive_to,
            clock=clock,
        )
        self.token = token
        self.faults = Faults()
        self.stopping = threading.Event()
        self._requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    def record(self, seen: SeenRequest) -> None:
        """Keep a request for :attr:`requests`."""
        with self._lock:
            self._requests.append(seen)

    @property
    def requests(self) -> list[SeenRequest]:
        """Every request received so far (health checks included), oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[SeenRequest]:
        """The requests received for ``path``."""
        return [r for r in self.requests if r.path == path]

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen (port 0: any free one) and serve on a thread; returns the base URL."""
        if self._server is not None:
            raise RuntimeError("the demo upstream is already running")
        self.stopping.clear()
        self._server = _Server((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
        if ":" in shown:
            shown = f"[{shown}]"
        self.base_url = f"http://{shown}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="demo-upstream",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; hanging answers are cut short and open connections closed."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> DemoUpstream:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
