"""``GET /metrics`` of the API, and the middleware that counts every request by route.

``/metrics`` needs no token, like ``/api/health``: it sits outside the guarded jobs router.
It names no tenant, job or path as requested (adapters.metrics bounds every label), so it
tells a scraper nothing of anyone's data; keep the port off the internet all the same.
"""

from __future__ import annotations

import time

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from adapters import metrics


@get(
    "/metrics",
    operation_id="metrics",  # in the OpenAPI document, as the contract lists every route
    tags=["health"],
    media_type="text/plain; version=0.0.4",
    # a scrape may read the job store (reportsvc dev and all register the worker's gauges):
    # never on the event loop
    sync_to_thread=True,
)
def prometheus_metrics() -> Response[bytes]:
    """The Prometheus text exposition of this process's metrics."""
    # Litestar adds "; charset=utf-8" to a text/ type itself
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")


class HttpMetricsMiddleware:
    """Counts each HTTP request (``reportsvc_http_requests_total``) and times it to the end of
    its body (``reportsvc_http_request_duration_seconds``), labelled by the route TEMPLATE the
    router matched (``/api/v1/reports/jobs/{jobId}``), never the path as requested; a
    request no route matched is ``unmatched``. Wraps the app's ASGI handler, outside routing,
    so that the router's own 404 and 405 answers are counted too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        status = 0
        started = time.perf_counter()

        async def send_seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            route = scope.get("path_template") or metrics.UNMATCHED_ROUTE
            method = metrics.bounded(scope.get("method"), metrics.METHODS, "OTHER")
            metrics.HTTP_REQUESTS.labels(route, method, str(status) if status else "none").inc()
            metrics.HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)
