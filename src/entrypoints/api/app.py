"""The app factory: the routes, guards, error handlers and OpenAPI document, wired to a
container."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from dependency_injector import providers
from litestar import Litestar, Request, Response, Router
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from reportcore.access import authorize
from reportcore.errors import ReportError
from reportcore.service import ReportService
from reportsvc import __version__

from ..auth import TokenVerifier
from ..bodies import ClientDisconnected, StrictRequest
from ..containers import Container
from ..schedule_schemas import SCHEDULES_PATH
from ..schemas import JOBS_PATH
from ..settings import required_value
from .docs import CSP_HEADER, OfflineSwaggerPlugin, docs_asset
from .errors import (
    MAX_BODY_BYTES,
    on_client_disconnected,
    on_http_error,
    on_report_error,
    on_unexpected,
)
from .guards import (
    PRINCIPAL_KEY,
    Readiness,
    action_of,
    provide_principal,
    provide_query_tenant,
    refuse_repeated_headers,
    refuse_repeated_query,
)
from .metrics import HttpMetricsMiddleware, prometheus_metrics
from .middleware import RequestContextMiddleware
from .routes import (
    BEARER_SCHEME,
    cancel_job,
    create_job,
    download_file,
    file_head,
    get_job,
    health,
    health_head,
    issue_download,
    list_jobs,
    no_html_404,
    ready,
)
from .schedule_routes import (
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedules,
    update_schedule,
)

API_TITLE = "FarmIQ reporting export service"
# the service's one version (reportsvc.__version__): the document describes this build
API_VERSION = __version__


def create_app(container: Container) -> Litestar:
    """The HTTP API over ``container``'s ports.

    Raises :class:`ConfigError` when ``JWT_SECRET`` or ``REPORT_DOWNLOAD_SECRET`` is missing.
    Resources the app initialises at startup it also closes at shutdown; resources already
    initialised by the caller (a process sharing them with a worker) are left to the caller.
    """
    settings = container.settings()
    verifier = TokenVerifier(
        required_value(settings.jwt_secret, "jwt_secret"),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        clock=container.clock(),
    )
    required_value(settings.download_secret, "download_secret")
    readiness = Readiness(container.reports)

    def authenticate(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        if connection.scope.get("method") == "OPTIONS":
            # Litestar's own OPTIONS answer (204 with Allow) names the methods of the path and
            # nothing of anyone's data: it needs no token, and it has no action to authorize
            return
        principal = verifier.principal(connection.headers.get("authorization"))
        authorize(principal, action_of(handler))
        connection.scope["state"][PRINCIPAL_KEY] = principal

    # the application (every use case over the container's ports) and the readiness checks:
    # plain annotated functions, so that Litestar reads their signatures
    def provide_reports() -> ReportService:
        # built on the first request, once the resources it holds are open (startup, below)
        return container.reports()

    def provide_readiness() -> Readiness:
        return readiness

    @contextlib.asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        started = [p for p in container.traverse(types=[providers.Resource]) if not p.initialized]
        for provider in started:
            provider.init()
        try:
            yield
        finally:
            for provider in reversed(started):
                provider.shutdown()

    allowed: dict[str, str] = {}  # path template -> its methods, filled once the app is built

    async def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
        if request.method != "OPTIONS":
            refuse_repeated_query(request)
            refuse_repeated_headers(request)
            return None
        # Litestar 2.25's own OPTIONS answer names only the methods its route knew when it was
        # first built (POST, not GET, on the jobs path): answer from the finished route table
        methods = allowed.get(request.scope.get("path_template", ""), "OPTIONS")
        return Response(None, status_code=204, headers={"allow": methods})

    jobs_router = Router(
        path=JOBS_PATH,
        route_handlers=[create_job, list_jobs, get_job, issue_download, cancel_job],
        guards=[authenticate],
        dependencies={
            "principal": Provide(provide_principal, sync_to_thread=False),
            "tenant": Provide(provide_query_tenant, sync_to_thread=False),
        },
    )
    schedules_router = Router(
        path=SCHEDULES_PATH,
        route_handlers=[
            create_schedule,
            list_schedules,
            get_schedule,
            update_schedule,
            delete_schedule,
        ],
        guards=[authenticate],
        dependencies={
            "principal": Provide(provide_principal, sync_to_thread=False),
            "tenant": Provide(provide_query_tenant, sync_to_thread=False),
        },
    )
    # Its own router, not the app: Litestar 2.25 wraps the first of two sync_to_thread
    # handlers registered on one path at app level twice, and it then answers 500.
    files_router = Router(path=JOBS_PATH, route_handlers=[download_file, file_head])
    app = Litestar(
        route_handlers=[
            health,
            health_head,
            ready,
            prometheus_metrics,
            docs_asset,
            jobs_router,
            files_router,
            schedules_router,
        ],
        dependencies={
            "reports": Provide(provide_reports, sync_to_thread=False),
            "readiness": Provide(provide_readiness, sync_to_thread=False),
        },
        exception_handlers={
            ReportError: on_report_error,
            HTTPException: on_http_error,
            ClientDisconnected: on_client_disconnected,
            Exception: on_unexpected,
        },
        openapi_config=OpenAPIConfig(
            title=API_TITLE,
            version=API_VERSION,
            path="/api-docs",
            openapi_router=Router(
                "/api-docs",
                route_handlers=[],
                include_in_schema=False,
                guards=[no_html_404],
                response_headers=[CSP_HEADER],
            ),
            # Swagger UI from the installed package, no CDN: the docs work offline (docs.py)
            render_plugins=[OfflineSwaggerPlugin(path="/"), JsonRenderPlugin()],
            components=Components(
                security_schemes={
                    BEARER_SCHEME: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        bearer_format="JWT",
                        description="HS256 JWT with sub, roles, tenant_id, iss, aud, exp",
                    )
                }
            ),
        ),
        response_headers=[
            ResponseHeader(
                name="x-request-id", documentation_only=True, description="echoed or generated"
            ),
            ResponseHeader(
                name="x-trace-id", documentation_only=True, description="echoed or generated"
            ),
        ],
        lifespan=[resources],
        before_request=answer_options,
        request_class=StrictRequest,
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the process configures logging (entrypoints.runtime.logs)
    )
    allowed.update(
        (route.path_format, ", ".join(sorted(route.methods)))
        for route in app.routes
        if isinstance(route, HTTPRoute)
    )
    # App-level `middleware=` runs per route, after routing: it would never see the router's
    # own 404/405 answers. Wrapping the app's ASGI handler puts the ids on every response.
    app.asgi_handler = HttpMetricsMiddleware(RequestContextMiddleware(app.asgi_handler))
    return app
