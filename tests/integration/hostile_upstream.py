"""An upstream that answers what a test's function says, over real HTTP: for the misbehaviours
the demo upstream's faults cannot play (a fresh cursor on every page, records of another
tenant, pages that page back in time forever)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

Answer = Callable[[str, dict[str, list[str]]], bytes]
"""path, query -> the JSON body of a 200."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in one segment: no delayed-ACK wait
    wbufsize = 64 * 1024
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        with self.server.lock:
            self.server.seen.append(query)
        body = self.server.answer(url.path, query)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: list[dict[str, list[str]]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class Hostile:
    def __init__(self, server: _Server) -> None:
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"

    @property
    def requests(self) -> int:
        with self._server.lock:
            return len(self._server.seen)

    def queries(self) -> list[dict[str, list[str]]]:
        with self._server.lock:
            return list(self._server.seen)


@contextmanager
def hostile_upstream(answer: Answer) -> Iterator[Hostile]:
    server = _Server(answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Hostile(server)
    finally:
        server.shutdown()
        server.server_close()
