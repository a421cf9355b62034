"""A small HTTP/1.1 client for the upstream sources, over the standard library's ``http.client``.

Why not httpx: an export pages through millions of records 100 at a time, one request after
another (each page names the next), so the CPU a request costs bounds the export. On the
bench machine httpx cost ~360 us of CPU a page (its own transport, httpcore and h11 parsing
in pure Python) and ~240 us over an ``http.client`` transport (its Request, URL and Response
models alone ~45 us); ``http.client``, whose header and body reading run mostly in C, ~120 us.
The scaled-out worker fetches in a process of its own, and that process was what bounded an
NDJSON export (docs/performance.md). What the upstream sources need is small: GET, keep-alive,
timeouts, TLS, and failures told apart from answers; that is all this does.

Failures: :class:`NoAnswer` for a request that got no complete answer (not connected, timed
out, connection dropped, not HTTP), which is worth retrying, with ``timed_out`` set when a
timeout is why; :class:`BadEncoding` for an answer whose body cannot be decoded. Every
answer, whatever its status, is an :class:`Answer`: what a status means is the caller's call.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import zlib
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

_Origin = tuple[str, str, int]
_Connection = http.client.HTTPConnection


class Answer(NamedTuple):
    """An HTTP answer, its body read whole (and decoded, if it came compressed)."""

    status: int
    headers: http.client.HTTPMessage  # case-insensitive ``get``
    body: bytes


class NoAnswer(Exception):
    """The request got no complete answer; ``reason`` says what failed (never a header)."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


class BadEncoding(Exception):
    """The answer's body is in a content encoding that cannot be decoded."""


class HttpClient:
    """GET over keep-alive connections, up to ``max_idle`` idle ones kept per origin (one
    whose peer has closed it is dropped, not reused). Safe to share between threads; each
    request holds a connection of its own. ``timeout`` bounds connecting and each wait for
    the peer, not a whole answer. ``ssl_context`` defaults to the system's trust store."""

    def __init__(
        self,
        *,
        timeout: float | None,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 16,
    ) -> None:
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._bases: dict[str, tuple[_Origin, str]] = {}
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, base_url: str, target: str, headers: Mapping[str, str]) -> Answer:
        """GET ``target`` (a path and query, percent-encoded) under ``base_url`` (a scheme,
        host, optional port and optional path prefix)."""
        origin, prefix = self._base(base_url)
        connection = self._checkout(origin)
        try:
            answer = self._exchange(connection, prefix + target, headers)
        except BaseException:
            connection.close()
            raise
        self._checkin(origin, connection)
        return answer

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # --- one exchange ---

    def _exchange(self, connection: _Connection, target: str, headers: Mapping[str, str]) -> Answer:
        phase = "connect"
        try:
            if connection.sock is None:
                connection.connect()
            phase = "send"
            connection.request("GET", target, headers=headers)
            phase = "read"
            response = connection.getresponse()
            body = response.read()
        except TimeoutError as exc:  # an OSError, so first
            raise NoAnswer(f"{phase} timed out", timed_out=True) from exc
        except (http.client.HTTPException, OSError) as exc:
            raise NoAnswer(f"{phase} failed: {type(exc).__name__}") from exc
        except ValueError:  # a header or target http.client refuses to send (a CR or LF in it)
            raise NoAnswer(f"{phase} failed: a header or the target is not sendable") from None
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            body = _decoded(body, encoding)
        return Answer(response.status, response.headers, body)

    # --- connections ---

    def _base(self, base_url: str) -> tuple[_Origin, str]:
        known = self._bases.get(base_url)
        if known is None:
            parts = urlsplit(base_url)
            scheme, host = parts.scheme.lower(), parts.hostname
            if scheme not in ("http", "https") or not host:
                raise ValueError(f"not an http(s) base URL: {base_url!r}")
            port = parts.port or (443 if scheme == "https" else 80)
            known = self._bases[base_url] = ((scheme, host, port), parts.path.rstrip("/"))
        return known

    def _checkout(self, origin: _Origin) -> _Connection:
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if _reusable(connection):
                    return connection
                connection.close()
        scheme, host, port = origin
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(host, port, timeout=self._timeout)

    def _checkin(self, origin: _Origin, connection: _Connection) -> None:
        if connection.sock is not None:  # None: the answer said the connection closes
            with self._lock:
                idle = self._idle.setdefault(origin, [])
                if not self._closed and len(idle) < self._max_idle:
                    idle.append(connection)
                    return
        connection.close()


def _reusable(connection: _Connection) -> bool:
    """An idle connection can carry another request if it has nothing to read: a readable
    idle socket means the peer closed it (or sent what nobody asked for)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return False
    return not readable


def _decoded(body: bytes, encoding: str) -> bytes:
    """A body sent compressed though nobody asked (http.client asks for ``identity``)."""
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":  # zlib-wrapped as the RFC says, or raw as some servers send
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise BadEncoding(f"its {encoding} body does not decompress: {exc}") from exc
    raise BadEncoding(f"it is in the content encoding {encoding!r}, which was not asked for")
