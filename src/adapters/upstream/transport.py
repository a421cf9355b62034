"""An httpx transport over the standard library's ``http.client``, behind the same
``httpx.Client`` (its URL, headers, hooks, proxies from the environment and gzip decoding).

Why a transport of our own: an export pages through millions of records 100 at a time, and on
two cores the CPU a request costs bounds a fast export. httpx's own transport parses in pure
Python (httpcore, h11); ``http.client`` reads headers and bodies mostly in C. bench/export.py
``--transport`` measures both; docs/performance.md has the figures that decided it.

Failures are httpx's own exceptions (``ConnectError``, ``ReadTimeout``...), so that code above
the client cannot tell the transports apart. Each request holds a keep-alive connection of its
own; up to ``max_idle`` idle ones are kept per origin (one the peer has closed is dropped).
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading

import httpx

_Origin = tuple[str, str, int]
_Connection = http.client.HTTPConnection


class StdlibTransport(httpx.BaseTransport):
    """GET (or any method without a body) over pooled ``http.client`` connections."""

    def __init__(
        self, *, timeout: float | None, ssl_context: ssl.SSLContext, max_idle: int = 16
    ) -> None:
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        connection = self._checkout(origin)
        try:
            status, headers, body = self._exchange(connection, request)
        except BaseException:
            connection.close()
            raise
        self._checkin(origin, connection)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _exchange(
        self, connection: _Connection, request: httpx.Request
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        phase = "connect"
        try:
            if connection.sock is None:
                connection.connect()
            phase = "send"
            connection.putrequest(
                request.method,
                request.url.raw_path.decode("ascii"),
                skip_host=True,
                skip_accept_encoding=True,
            )
            for name, value in request.headers.raw:
                connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
            connection.endheaders()
            phase = "read"
            response = connection.getresponse()
            body = response.read()
        except TimeoutError as exc:  # an OSError, so first
            if phase == "connect":
                raise httpx.ConnectTimeout(f"{phase} timed out", request=request) from exc
            raise httpx.ReadTimeout(f"{phase} timed out", request=request) from exc
        except (http.client.HTTPException, OSError) as exc:
            reason = f"{phase} failed: {type(exc).__name__}"
            if phase == "connect":
                raise httpx.ConnectError(reason, request=request) from exc
            raise httpx.ReadError(reason, request=request) from exc
        except ValueError:  # a header or target http.client refuses to send (a CR or LF in it)
            raise httpx.LocalProtocolError(
                f"{phase} failed: a header or the target is not sendable", request=request
            ) from None
        return response.status, response.getheaders(), body

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
