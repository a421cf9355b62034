"""Who is calling and for which tenant (the JWT routes' guard), and the readiness probe."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromQuery

from reportcore.access import Action, Principal, resolve_tenant
from reportcore.errors import ReportError, ValidationError
from reportcore.service import ReportService

from ..schemas import (
    ReadinessChecks,
    named_tenant,
)

log = logging.getLogger("reportsvc.api")

READY_TIMEOUT_SEC = 3.0
PRINCIPAL_KEY = "reportsvc.principal"


def header_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header as text, or a 400: header bytes are read as Latin-1, so
    a UTF-8 key would be stored as mojibake; only printable ASCII is taken."""
    if value is not None and not (value.isascii() and value.isprintable()):
        raise ValidationError(
            "Idempotency-Key header must be printable ASCII", field="idempotency_key"
        )
    return value


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal the guard verified for this request."""
    principal = connection.scope["state"].get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        # a JWT route outside the guarded router would be a wiring bug, never anonymous access
        raise RuntimeError("route has no authenticated principal")
    return principal


def action_of(handler: BaseRouteHandler) -> Action:
    action = handler.opt.get("action")
    if not isinstance(action, Action):
        raise RuntimeError(f"JWT route {handler} declares no action")
    return action


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller, as the guard verified it."""
    return principal_of(request)


def provide_query_tenant(
    principal: NamedDependency[Principal],
    tenant_id: FromQuery[str | None] = None,
    tenantId: FromQuery[str | None] = None,  # the dashboard's spelling
) -> str:
    """The tenant a GET acts for (a platform_admin names it in the query)."""
    return resolve_tenant(principal, named_tenant(tenant_id, tenantId))


def refuse_repeated_query(request: Request[Any, Any, Any]) -> None:
    """Every query parameter of the contract holds one value: one given twice is a 400 naming
    it, not the last one silently (``tenantId=b&tenantId=a``, ``token=x&token=y``: a proxy
    that reads the first would disagree with us about whose data it is)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise ValidationError("is given more than once; give it once", field=name)
        seen.add(name)


# headers of one value: a second line is a 400 naming it, as a repeated query parameter is
# (two Idempotency-Key lines: a proxy keeping the last would disagree with us on the job's key)
SINGLE_HEADERS = frozenset((b"authorization", b"idempotency-key", b"range", b"if-range"))


def refuse_repeated_headers(request: Request[Any, Any, Any]) -> None:
    """A header of :data:`SINGLE_HEADERS` sent on two lines is a 400 naming it."""
    seen: set[bytes] = set()
    for name, _ in request.scope["headers"]:
        name = name.lower()
        if name in SINGLE_HEADERS:
            if name in seen:
                raise ValidationError(
                    "header is given more than once; give it once", field=name.decode()
                )
            seen.add(name)


def list_header(request: Request[Any, Any, Any], name: str) -> str | None:
    """A list header (``If-Match``) as one value: its lines joined by ", ", as RFC 9110
    (5.3) reads lines of one field; ``None`` when absent."""
    lines = request.headers.getall(name, [])
    return ", ".join(lines) if lines else None


class Readiness:
    """Asks the database and the broker, each in its own thread and bounded in time."""

    def __init__(
        self, reports: Callable[[], ReportService], timeout_sec: float | None = None
    ) -> None:
        self._reports = reports
        self._timeout = READY_TIMEOUT_SEC if timeout_sec is None else timeout_sec

    async def _probe(self, name: str, ping: Callable[[], None]) -> str:
        answer = f"no answer within {self._timeout:g}s"
        with anyio.move_on_after(self._timeout):
            try:
                await anyio.to_thread.run_sync(ping, abandon_on_cancel=True)
                answer = "ok"
            except ReportError as exc:
                answer = exc.message
            except Exception as exc:  # readiness reports a broken dependency, it never fails
                log.warning("readiness probe failed", exc_info=exc, extra={"check": name})
                answer = f"error: {type(exc).__name__}"
        return answer

    async def check(self) -> ReadinessChecks:
        """Both checks, run at once."""
        results: dict[str, str] = {}

        async def run(name: str, ping: Callable[[], None]) -> None:
            results[name] = await self._probe(name, ping)

        async with anyio.create_task_group() as tasks:
            deps = self._reports().deps
            tasks.start_soon(run, "database", deps.jobs.ping)
            tasks.start_soon(run, "queue", deps.queue.ping)
        return ReadinessChecks(database=results["database"], queue=results["queue"])
