"""Request and trace ids on every response, and the access log."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("reportsvc.api")

_IDS_KEY = "reportsvc.ids"
DISCONNECTED_KEY = "reportsvc.client_disconnected"  # set when the client left mid-body
_ID_RE = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, no spaces, at most 128 characters
MAX_LOGGED_PATH = 512


class RequestIds(msgspec.Struct, frozen=True):
    """The ids a request is known by in responses, logs and error envelopes."""

    request_id: str
    trace_id: str


def _given_id(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            text = value.decode("latin-1")
            return text if _ID_RE.fullmatch(text) else None
    return None


def request_ids(scope: Scope, *, default_trace_id: str | None = None) -> RequestIds:
    """The request's ids (set by :class:`RequestContextMiddleware`; made up if it did not).
    Without an ``x-trace-id`` the trace id is ``default_trace_id`` (with tracing on: the
    request span's), else a new UUID."""
    state: dict[str, Any] = scope.setdefault("state", {})
    ids = state.get(_IDS_KEY)
    if not isinstance(ids, RequestIds):
        ids = RequestIds(
            request_id=_given_id(scope, b"x-request-id") or str(uuid.uuid4()),
            trace_id=_given_id(scope, b"x-trace-id") or default_trace_id or str(uuid.uuid4()),
        )
        state[_IDS_KEY] = ids
    return ids


class RequestContextMiddleware:
    """Puts ``x-request-id`` and ``x-trace-id`` on every response and logs one line per
    request: method, path (never the query string: download tokens travel there), status,
    duration and ids. Headers (``Authorization`` above all) are never logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        ids = request_ids(scope)
        tagged = [
            (b"x-request-id", ids.request_id.encode("ascii")),
            (b"x-trace-id", ids.trace_id.encode("ascii")),
        ]
        status = 0
        started = time.perf_counter()

        async def send_tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() not in (b"x-request-id", b"x-trace-id")
                ]
                message = {**message, "headers": [*headers, *tagged]}
            await send(message)

        outcome = "complete"
        try:
            await self.app(scope, receive, send_tagged)
        except BaseException:
            outcome = "aborted"  # failed after the response started; the server drops it
            raise
        finally:
            if scope["state"].get(DISCONNECTED_KEY):
                outcome = "client_disconnected"
            log.info(
                "request",
                extra={
                    "method": scope.get("method", ""),
                    "path": scope.get("path", "")[:MAX_LOGGED_PATH],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "request_id": ids.request_id,
                    "trace_id": ids.trace_id,
                    **({"outcome": outcome} if outcome != "complete" else {}),
                },
            )
