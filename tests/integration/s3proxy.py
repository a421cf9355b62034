"""A small HTTP proxy in front of the tests' S3 server, to make it fail the way a real store
does: refuse one part upload (``500 InternalError``, which S3 itself answers when a part cannot
be stored), or be unreachable (once the server behind it is stopped, every connection is
dropped without an answer, as a TCP load balancer in front of a dead server does). Everything
else is relayed unchanged, ``Host`` included, so the client's signatures still hold."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection"})
_REFUSED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>part refused by the test proxy</Message></Error>"
)


class S3Proxy:
    """``with S3Proxy(upstream) as proxy:`` relays ``proxy.url`` to ``upstream``.

    ``refuse_part(n, times)``: the first ``times`` uploads of part ``n`` answer 500.
    ``on_part_stored(n, action)``: ``action()`` runs once part ``n`` is stored upstream, before
    the client hears so (a test stops the server there, mid-export).
    """

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        self._lock = threading.Lock()
        self._refusals: dict[int, int] = {}
        self._actions: dict[int, Any] = {}
        self.part_attempts: dict[int, int] = {}
        self.dropped = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads the counters, not a log

            def _relay(self) -> None:
                proxy.relay(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def refuse_part(self, number: int, times: int) -> None:
        with self._lock:
            self._refusals[number] = times

    def on_part_stored(self, number: int, action: Any) -> None:
        with self._lock:
            self._actions[number] = action

    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        query = parse_qs(urlsplit(handler.path).query)
        part = (
            int(query["partNumber"][0]) if handler.command == "PUT" and "partNumber" in query else 0
        )
        action = None
        with self._lock:
            if part:
                self.part_attempts[part] = self.part_attempts.get(part, 0) + 1
                if self._refusals.get(part, 0) > 0:
                    self._refusals[part] -= 1
                    self._answer(handler, 500, {"Content-Type": "application/xml"}, _REFUSED)
                    return
                action = self._actions.pop(part, None)
        try:
            upstream = http.client.HTTPConnection(self._host, self._port, timeout=30)
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            got = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP}
            status = answer.status
            upstream.close()
        except OSError:
            with self._lock:
                self.dropped += 1
            handler.close_connection = True  # no answer at all: the store is gone
            return
        if action is not None:
            action()
        self._answer(handler, status, got, data, head=handler.command == "HEAD")

    @staticmethod
    def _answer(
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        data: bytes,
        head: bool = False,
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                handler.send_header(name, value)
        handler.send_header("Content-Length", headers.get("Content-Length", str(len(data))))
        handler.end_headers()
        if not head:
            handler.wfile.write(data)

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
