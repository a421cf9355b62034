"""Slow and idle clients: time limits on reading a request and a cap on open connections.

uvicorn times out only idle keep-alive connections: a client that opens a connection and sends
half a request head (or half a body) holds a file descriptor forever; enough of them exhaust
the process's descriptors, and then even ``/api/health`` is refused. The protocol class made
here (passed to ``uvicorn.Config(http=...)``) adds, per connection:

- a deadline on the request head (from the connection, or from the first byte of the next
  request on a kept-alive one, to the end of the headers), and one on the body (from the end
  of the headers to its last byte); a connection that misses one is closed;
- a cap on open connections: a connection beyond it closes the oldest connection that is
  waiting for a request (a slow client's, or an idle kept-alive one) to make room, so a fresh
  request such as a health probe is answered; when every connection is busy with a request
  being answered, the new one is closed instead.

All of it runs on the server's one event loop thread: the shared bookkeeping needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, ClassVar

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..settings import Settings

log = logging.getLogger("reportsvc.api")

_CAP_LOG_INTERVAL_SEC = 60.0  # a flood closes thousands of connections: say so once a minute


_DEFAULTS = Settings()  # the limits' defaults are the settings' (HTTP_* variables)


class ConnectionLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How long a client may take to send a request, and how many may be connected at once."""

    header_timeout_sec: float = _DEFAULTS.http_header_timeout_sec
    body_timeout_sec: float = _DEFAULTS.http_body_timeout_sec
    max_connections: int = _DEFAULTS.http_max_connections


class _Waiting:
    """Connections waiting for (part of) a request, oldest first; the ones a full server may
    close. One per server: every connection of it shares this."""

    def __init__(self) -> None:
        self._order: dict[GuardedHttpToolsProtocol, None] = {}
        self.last_cap_log = 0.0

    def add(self, conn: GuardedHttpToolsProtocol) -> None:
        self._order.pop(conn, None)
        self._order[conn] = None  # to the end: it waits from now

    def discard(self, conn: GuardedHttpToolsProtocol) -> None:
        self._order.pop(conn, None)

    def oldest_except(self, conn: GuardedHttpToolsProtocol) -> GuardedHttpToolsProtocol | None:
        return next((c for c in self._order if c is not conn), None)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines and a connection cap (see the module).

    Use :func:`guarded_protocol` for a class bound to one server's limits.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    waiting: ClassVar[_Waiting] = _Waiting()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()
        if not transport.is_closing():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.waiting.discard(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:  # the next request on a kept-alive connection
            self._await_head()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout_sec, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self.waiting.discard(self)  # being answered now: not a connection to close for room

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._read_deadline is None:
            self.waiting.add(self)  # idle until its next request (uvicorn's keep-alive limit)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse (a raw non-ASCII byte in the query
        string, which curl sends as typed; a broken request line), in the contract's envelope
        with the ids every answer carries: uvicorn's own is a text/plain line without them."""
        request_id, trace_id = str(uuid.uuid4()), str(uuid.uuid4())  # independent, as ever
        body = msgspec.json.encode(
            {
                "error": {
                    "code": "VALIDATION_ERROR",
                    "message": "the request is not valid HTTP/1.1: a malformed request line "
                    "or header (a byte outside ASCII in the path or query must be "
                    "percent-encoded)",
                    "traceId": trace_id,
                }
            }
        )
        head = [
            b"HTTP/1.1 400 Bad Request",
            *(name + b": " + value for name, value in self.server_state.default_headers),
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"x-request-id: " + request_id.encode(),
            b"x-trace-id: " + trace_id.encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

    # --- deadlines ---

    def _await_head(self) -> None:
        self.waiting.add(self)
        self._arm(self.limits.header_timeout_sec, "head")

    def _arm(self, seconds: float, part: str) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(seconds, self._too_slow, part, seconds)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self, part: str, seconds: float) -> None:
        self._read_deadline = None
        self.waiting.discard(self)
        if not self.transport.is_closing():
            # DEBUG: a flood of slow clients must not become a flood of log lines
            log.debug("closing a slow client", extra={"missing": part, "after_sec": seconds})
            self.transport.close()

    # --- the cap ---

    def evict(self) -> None:
        """Close this waiting connection to make room for a new one."""
        self.waiting.discard(self)
        self._disarm()
        self.transport.close()

    def _make_room(self) -> None:
        victim = self.waiting.oldest_except(self)
        if victim is not None:
            victim.evict()
        else:  # every other connection is being answered: this one has to wait its turn
            self.transport.close()
        now = time.monotonic()
        if now - self.waiting.last_cap_log >= _CAP_LOG_INTERVAL_SEC:
            self.waiting.last_cap_log = now
            log.warning(
                "connection cap reached; closing waiting connections to make room",
                extra={"max_connections": self.limits.max_connections},
            )


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for one server: its ``limits`` and its own waiting list."""
    return type(
        "ServerHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "waiting": _Waiting()},
    )
