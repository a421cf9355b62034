"""The API's server spans (tracing on only: imported by the CLI once tracing is set up)."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode

from .middleware import MAX_LOGGED_PATH, request_ids

# probes and scrapes, every few seconds from every orchestrator: no trace each time
UNTRACED_PATHS = frozenset({"/api/health", "/api/ready", "/metrics"})


class ServerSpans:
    """A server span per HTTP request, continuing the request's ``traceparent``.

    Wraps the request-id middleware, so that the access log line is written inside the span,
    and a request without ``x-trace-id`` answers with the span's trace id there (the error
    envelope's ``traceId`` then finds the trace). The query string is never recorded: download
    tokens travel in it.
    """

    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        if scope.get("path") in UNTRACED_PATHS:
            with suppress_instrumentation():
                await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope.get("headers", ())
        }
        method = str(scope.get("method", ""))
        attributes: dict[str, str] = {
            "http.request.method": method,
            "url.path": str(scope.get("path", ""))[:MAX_LOGGED_PATH],
            "url.scheme": str(scope.get("scheme", "http")),
        }
        with self._tracer.start_as_current_span(
            method,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            request_ids(scope, default_trace_id=format(span.get_span_context().trace_id, "032x"))

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                route = scope.get("path_template")
                if isinstance(route, str):  # set by the router once it found the handler
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
