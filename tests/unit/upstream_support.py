"""HTTP for the record source's unit tests: a handler plays the upstream service behind
``httpx.MockTransport``, under the same ``httpx.Client`` (hooks, headers) the service uses.

Handlers take an ``httpx.Request`` and return an ``httpx.Response``; one that raises
``httpx.ConnectError`` or ``httpx.ReadTimeout`` plays a request that got no answer.

The transport's own tests need a real socket instead: :class:`TcpServer`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


def transport(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


class TcpServer:
    """A TCP server on 127.0.0.1 that hands each connection to ``handle(conn, stop)`` on a
    thread of its own (``stop`` is set by :meth:`close`) and counts the connections."""

    def __init__(self, handle: Callable[[socket.socket, threading.Event], None]) -> None:
        self._handle = handle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/page"
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                conn, _ = self._listener.accept()
                self.connections += 1  # one accepting thread: no lock needed
                threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._handle(conn, self._stop)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def read_request_head(conn: socket.socket) -> bool:
    """Read a request's head; False if the client left before it was whole."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        head += chunk
    return True
