"""The HTTP API: a Litestar app over the container's ports.

Handlers are thin: they parse, call one use case of :mod:`reportcore.usecases` and shape the
answer. Around them, in one place each:

- authentication and the role check: a guard on the JWT routes (:mod:`.auth`,
  :func:`reportcore.access.authorize`), the tenant through :func:`reportcore.access.resolve_tenant`;
- errors: one mapping from :class:`reportcore.errors.ReportError` codes (and Litestar's own
  errors) to statuses, answered in the contract's envelope; nothing unexpected leaks;
- ``x-request-id`` / ``x-trace-id`` on every response and one log line per request: a small
  ASGI middleware around the whole app, so that also the router's 404/405 answers get them.

Choices the contract leaves open: a 405 and a 413 answer with code ``VALIDATION_ERROR``
(the contract's codes are a closed set); a platform_admin may name the tenant of a cancel in
its body or its query string; text containing NUL characters is refused with a 400 (the
database cannot store it).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Annotated, Any

import anyio
import msgspec
from dependency_injector import providers
from litestar import Litestar, Request, Response, Router, get, head, post
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.enums import MediaType, ScopeType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.response import Stream
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from reportcore import usecases
from reportcore.access import Action, Principal, authorize, resolve_tenant
from reportcore.errors import ReportError, ValidationError
from reportcore.ports import Clock, FileStore, JobQueue, JobRepository
from reportcore.requests import CreateRequest, validate_create, validate_list
from reportcore.usecases import Policy

from .auth import TokenVerifier
from .containers import Container
from .schemas import (
    DownloadOut,
    ErrorBody,
    ErrorEnvelope,
    JobOut,
    JobPageOut,
    NotReady,
    ReadinessChecks,
    Ready,
    TenantBody,
    download_out,
    job_out,
    page_out,
)
from .settings import SETTING_TO_VARIABLE, ConfigError

log = logging.getLogger("reportsvc.api")

API_TITLE = "FarmIQ reporting export service"
API_VERSION = "1.0.0"
JOBS_PATH = "/api/v1/reports/jobs"
MAX_BODY_BYTES = 1_048_576  # a create body is a few hundred bytes; filters lists stay far below
READY_TIMEOUT_SEC = 3.0
BEARER_SCHEME = "bearerAuth"

# the contract's error codes and their statuses; any other code is an internal error
ERROR_STATUS: Mapping[str, int] = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "REPORT_NOT_READY": 409,
    "IDEMPOTENCY_KEY_REUSED": 409,
    "JOB_NOT_CANCELLABLE": 409,
    "REPORT_EXPIRED": 410,
    "SERVICE_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}
# Litestar's own HTTP errors by status (router 404/405, body limit, body decoding)
_HTTP_CODES: Mapping[int, str] = {
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    503: "SERVICE_UNAVAILABLE",
}
_INTERNAL_MESSAGE = "internal error; quote the traceId when reporting it"

_IDS_KEY = "reportsvc.ids"
_PRINCIPAL_KEY = "reportsvc.principal"
_ID_RE = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, no spaces, at most 128 characters
_MAX_LOGGED_PATH = 512


# --- request ids and the access log ---


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


def request_ids(scope: Scope) -> RequestIds:
    """The request's ids (set by :class:`RequestContextMiddleware`; made up if it did not)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    ids = state.get(_IDS_KEY)
    if not isinstance(ids, RequestIds):
        ids = RequestIds(
            request_id=_given_id(scope, b"x-request-id") or str(uuid.uuid4()),
            trace_id=_given_id(scope, b"x-trace-id") or str(uuid.uuid4()),
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
            log.info(
                "request",
                extra={
                    "method": scope.get("method", ""),
                    "path": scope.get("path", "")[:_MAX_LOGGED_PATH],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "request_id": ids.request_id,
                    "trace_id": ids.trace_id,
                    **({"outcome": outcome} if outcome != "complete" else {}),
                },
            )


# --- errors ---


def error_response(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> Response[ErrorEnvelope]:
    """The contract's error envelope."""
    trace = request_ids(request.scope).trace_id
    return Response(
        ErrorEnvelope(error=ErrorBody(code=code, message=message, traceId=trace)),
        status_code=status,
        headers=dict(headers or {}),
        media_type=MediaType.JSON,
    )


def _internal(request: Request[Any, Any, Any], exc: BaseException) -> Response[ErrorEnvelope]:
    ids = request_ids(request.scope)
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={
            "method": request.method,
            "path": request.url.path[:_MAX_LOGGED_PATH],
            "request_id": ids.request_id,
            "trace_id": ids.trace_id,
            "error_type": type(exc).__name__,
        },
    )
    return error_response(request, 500, "INTERNAL_ERROR", _INTERNAL_MESSAGE)


def _on_report_error(request: Request[Any, Any, Any], exc: ReportError) -> Response[ErrorEnvelope]:
    status = ERROR_STATUS.get(exc.code)
    if status is None or (status >= 500 and exc.code != "SERVICE_UNAVAILABLE"):
        # a core error no request should cause (a lost transition, a broker refusal): a bug
        return _internal(request, exc)
    if status == 503:
        log.warning(
            "service unavailable",
            extra={"detail": exc.message, "trace_id": request_ids(request.scope).trace_id},
        )
    message = exc.message
    if isinstance(exc, ValidationError) and exc.field and exc.field not in message:
        message = f"{exc.field}: {message}"  # the client must learn which field to fix
    return error_response(request, status, exc.code, message)


def _validation_message(exc: ValidationException) -> str:
    problems = exc.extra if isinstance(exc.extra, list) else []
    parts: list[str] = []
    for problem in problems:
        if not isinstance(problem, dict):
            continue
        key = str(problem.get("key") or "")
        text = str(problem.get("message") or "is not valid")
        if key == "data" and problem.get("source") == "body":
            if text == "'data'":  # Litestar's wording for an absent body
                parts.append("request body is required: a JSON object")
                continue
            key = "body"
        parts.append(f"{key}: {text}" if key else text)
    return "; ".join(parts) or "request is not valid"


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorEnvelope]:
    if isinstance(exc, ValidationException):
        return error_response(request, 400, "VALIDATION_ERROR", _validation_message(exc))
    if isinstance(exc, NotFoundException):
        return error_response(request, 404, "NOT_FOUND", f"no route {request.url.path}")
    if isinstance(exc, MethodNotAllowedException):
        return error_response(
            request,
            405,
            "VALIDATION_ERROR",
            f"method {request.method} is not allowed on {request.url.path}",
            exc.headers,  # Allow: the methods the path takes (RFC 9110 requires it on a 405)
        )
    if isinstance(exc, RequestEntityTooLarge):
        return error_response(
            request, 413, "VALIDATION_ERROR", f"request body is larger than {MAX_BODY_BYTES} bytes"
        )
    status = exc.status_code
    if status >= 500 and status != 503:
        return _internal(request, exc)
    code = _HTTP_CODES.get(status, "VALIDATION_ERROR" if status < 500 else "SERVICE_UNAVAILABLE")
    detail = exc.detail if isinstance(exc, ClientException) else "request is not valid"
    if isinstance(exc.__cause__, SerializationException):
        detail = f"request body is not valid JSON: {detail}"
    return error_response(request, status, code, detail, exc.headers)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorEnvelope]:
    return _internal(request, exc)


def _error_specs(*statuses: int) -> dict[int, ResponseSpec]:
    words = {
        400: "VALIDATION_ERROR: the request is not valid; the message names the field",
        401: "UNAUTHORIZED: missing, invalid or expired token",
        403: "FORBIDDEN: the role or tenant does not allow this",
        404: "NOT_FOUND: no such job for this tenant",
        409: "REPORT_NOT_READY, IDEMPOTENCY_KEY_REUSED or JOB_NOT_CANCELLABLE",
        410: "REPORT_EXPIRED: the file was deleted by retention",
        413: "VALIDATION_ERROR: the request body is too large",
        500: "INTERNAL_ERROR",
        503: "SERVICE_UNAVAILABLE: the database does not answer",
    }
    return {
        s: ResponseSpec(data_container=ErrorEnvelope, description=words[s], generate_examples=False)
        for s in (*statuses, 500)
    }


# --- edge checks ---


def named_tenant(*names: str | None) -> str | None:
    """The one tenant a request names (``tenant_id`` / ``tenantId``), if any; 400 if two differ."""
    given = {n for n in names if n}
    if len(given) > 1:
        raise ValidationError("tenant_id and tenantId name different tenants", field="tenant_id")
    return given.pop() if given else None


def refuse_nul(value: Any, field: str = "") -> None:
    """400 when any text in ``value`` (a validated request, as builtins) holds a NUL."""
    if isinstance(value, str):
        if "\x00" in value:
            name = field or "request"
            raise ValidationError(f"{name} must not contain NUL characters", field=name or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key, field)
            refuse_nul(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list | tuple):
        for item in value:
            refuse_nul(item, field)


_RANGE_RE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


class Unsatisfiable(Exception):
    """A ``Range`` that selects no byte of the file (416)."""


def byte_range(
    header: str | None, if_range: str | None, etag: str | None, size: int
) -> tuple[int, int] | None:
    """The inclusive ``(start, end)`` a ``Range`` header asks for, or ``None`` for the whole file.

    A single ``bytes=a-b`` / ``a-`` / ``-n`` range is honoured; anything else (several ranges,
    other units, ``b < a``, garbage) is ignored as RFC 9110 allows, and so is a range whose
    ``If-Range`` is not the current ETag. :class:`Unsatisfiable` when it selects no byte.
    """
    if header is None:
        return None
    if if_range is not None and (etag is None or if_range.strip() != etag):
        return None
    match = _RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end


def _content_disposition(file_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", file_name)[:200] or "report"
    return f'attachment; filename="{safe}"'


# --- authentication (the guard of the JWT routes) and dependencies ---


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal the guard verified for this request."""
    principal = connection.scope["state"].get(_PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        # a JWT route outside the guarded router would be a wiring bug, never anonymous access
        raise RuntimeError("route has no authenticated principal")
    return principal


def _action(handler: BaseRouteHandler) -> Action:
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


class Readiness:
    """Asks the database and the broker, each in its own thread and bounded in time."""

    def __init__(self, container: Container, timeout_sec: float | None = None) -> None:
        self._container = container
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
            tasks.start_soon(run, "database", lambda: self._container.jobs().ping())
            tasks.start_soon(run, "queue", lambda: self._container.queue().ping())
        return ReadinessChecks(database=results["database"], queue=results["queue"])


# --- handlers ---


@get(
    "/api/health",
    media_type=MediaType.TEXT,
    sync_to_thread=False,
    tags=["health"],
    operation_id="health",
)
def health() -> str:
    """Liveness: the process answers."""
    return "OK"


@get(
    "/api/ready",
    operation_id="ready",
    tags=["health"],
    responses={503: ResponseSpec(data_container=NotReady, description="a backing service is down")},
)
async def ready(readiness: NamedDependency[Readiness]) -> Response[Ready | NotReady]:
    """Readiness: 200 when PostgreSQL and RabbitMQ answer, else 503 naming what does not."""
    checks = await readiness.check()
    if checks.database == "ok" and checks.queue == "ok":
        return Response(Ready(), status_code=200)
    return Response(NotReady(checks=checks), status_code=503)


_SECURED: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]
_TAGS = ["report jobs"]


@post(
    "/",
    sync_to_thread=True,
    operation_id="createJob",
    opt={"action": Action.CREATE},
    status_code=201,
    security=_SECURED,
    tags=_TAGS,
    responses={
        200: ResponseSpec(JobOut, description="replay of an earlier identical create"),
        **_error_specs(400, 401, 403, 409, 413, 503),
    },
)
def create_job(
    data: JSONBody[CreateRequest],
    principal: NamedDependency[Principal],
    jobs: NamedDependency[JobRepository],
    queue: NamedDependency[JobQueue],
    clock: NamedDependency[Clock],
    policy: NamedDependency[Policy],
    idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
) -> Response[JobOut]:
    """Create an export job (201), or answer an identical earlier one (200, replay header)."""
    tenant = resolve_tenant(principal, named_tenant(data.tenant_id, data.tenantId))
    valid = validate_create(data, header_key=idempotency_key)
    refuse_nul(msgspec.to_builtins(valid))
    created = usecases.create_job(
        valid,
        tenant_id=tenant,
        requested_by=principal.subject,
        jobs=jobs,
        queue=queue,
        clock=clock,
        policy=policy,
    )
    if created.replayed:
        return Response(
            job_out(created.job), status_code=200, headers={"x-idempotent-replay": "true"}
        )
    return Response(
        job_out(created.job),
        status_code=201,
        headers={"location": f"{JOBS_PATH}/{created.job.id}"},
    )


@get(
    "/",
    sync_to_thread=True,
    operation_id="listJobs",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=_error_specs(400, 401, 403, 503),
)
def list_jobs(
    tenant: NamedDependency[str],
    jobs: NamedDependency[JobRepository],
    status: FromQuery[str | None] = None,
    job_type: FromQuery[str | None] = None,
    created_from: FromQuery[str | None] = None,
    created_to: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
) -> JobPageOut:
    """The tenant's jobs, newest first, ``limit`` (1..100, default 25) at a time."""
    wanted = validate_list(
        status=status,
        job_type=job_type,
        created_from=created_from,
        created_to=created_to,
        cursor=cursor,
        limit=limit,
    )
    refuse_nul(msgspec.to_builtins(wanted))
    return page_out(usecases.list_jobs(wanted, tenant_id=tenant, jobs=jobs))


@get(
    "/{jobId:str}",
    sync_to_thread=True,
    operation_id="getJob",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=_error_specs(400, 401, 403, 404, 503),
)
def get_job(
    jobId: FromPath[str],
    tenant: NamedDependency[str],
    jobs: NamedDependency[JobRepository],
) -> JobOut:
    """One job of the tenant."""
    return job_out(usecases.get_job(jobId, tenant_id=tenant, jobs=jobs))


@get(
    "/{jobId:str}/download",
    sync_to_thread=True,
    operation_id="issueDownload",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=_error_specs(400, 401, 403, 404, 409, 410, 503),
)
def issue_download(
    jobId: FromPath[str],
    tenant: NamedDependency[str],
    jobs: NamedDependency[JobRepository],
    store: NamedDependency[FileStore],
    clock: NamedDependency[Clock],
    policy: NamedDependency[Policy],
    download_secret: NamedDependency[bytes],
) -> DownloadOut:
    """A short-lived URL of a succeeded job's file (409 until it succeeded, 410 once gone)."""
    link = usecases.issue_download(
        jobId,
        tenant_id=tenant,
        jobs=jobs,
        store=store,
        clock=clock,
        secret=download_secret,
        policy=policy,
    )
    return download_out(link)


@post(
    "/{jobId:str}/cancel",
    sync_to_thread=True,
    operation_id="cancelJob",
    opt={"action": Action.CANCEL},
    status_code=200,
    security=_SECURED,
    tags=_TAGS,
    responses=_error_specs(400, 401, 403, 404, 409, 503),
)
def cancel_job(
    jobId: FromPath[str],
    principal: NamedDependency[Principal],
    jobs: NamedDependency[JobRepository],
    clock: NamedDependency[Clock],
    data: JSONBody[TenantBody | None] = None,
    tenant_id: FromQuery[str | None] = None,
    tenantId: FromQuery[str | None] = None,
) -> JobOut:
    """Cancel a queued or running job (409 once it finished); returns the job."""
    body = data or TenantBody()
    tenant = resolve_tenant(
        principal, named_tenant(body.tenant_id, body.tenantId, tenant_id, tenantId)
    )
    return job_out(usecases.cancel_job(jobId, tenant_id=tenant, jobs=jobs, clock=clock))


_FILE_RESPONSES = {
    206: ResponseSpec(bytes, description="the requested byte range", media_type="*/*"),
    416: ResponseSpec(ErrorEnvelope, description="VALIDATION_ERROR: the Range selects no byte"),
    **_error_specs(400, 401, 403, 404, 410, 503),
}
_FILE_PATH = "/{jobId:str}/file"  # under JOBS_PATH


def _file_headers(file: usecases.FileToServe) -> dict[str, str]:
    headers = {
        "content-type": file.mime_type,
        "content-disposition": _content_disposition(file.file_name),
        "accept-ranges": "bytes",
        "cache-control": "private, no-store",
    }
    if file.sha256:
        headers["etag"] = f'"{file.sha256}"'
    return headers


def _open_file(
    jobId: str,
    token: str | None,
    jobs: JobRepository,
    store: FileStore,
    clock: Clock,
    download_secret: bytes,
) -> usecases.FileToServe:
    return usecases.open_file(
        jobId, token, jobs=jobs, store=store, clock=clock, secret=download_secret
    )


@get(
    _FILE_PATH,
    sync_to_thread=True,
    operation_id="downloadFile",
    tags=_TAGS,
    responses=_FILE_RESPONSES,
    response_description="the file: text/csv or application/x-ndjson",
    media_type="*/*",
)
def download_file(
    jobId: FromPath[str],
    jobs: NamedDependency[JobRepository],
    store: NamedDependency[FileStore],
    clock: NamedDependency[Clock],
    download_secret: NamedDependency[bytes],
    token: FromQuery[str | None] = None,
    range_header: Annotated[str | None, HeaderParameter(name="Range")] = None,
    if_range: Annotated[str | None, HeaderParameter(name="If-Range")] = None,
) -> Stream:
    """The file a download token grants, streamed; a single byte ``Range`` is honoured."""
    file = _open_file(jobId, token, jobs, store, clock, download_secret)
    headers = _file_headers(file)
    size = file.size_bytes
    try:
        wanted = byte_range(range_header, if_range, headers.get("etag"), size)
    except Unsatisfiable:
        raise ClientException(
            detail=f"range not satisfiable: the file has {size} bytes",
            status_code=416,
            headers={"content-range": f"bytes */{size}"},
        ) from None
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    headers["content-length"] = str(end - start + 1 if size else 0)
    chunks: Iterator[bytes] = store.read(file.location, start, end) if size else iter(())
    return Stream(chunks, status_code=status, headers=headers, media_type=file.mime_type)


@head(
    _FILE_PATH,
    sync_to_thread=True,
    operation_id="fileHeaders",
    tags=_TAGS,
    responses=_error_specs(400, 401, 403, 404, 410, 503),
    response_description="the file's headers (text/csv or application/x-ndjson), no body",
    media_type="*/*",
)
def file_head(
    jobId: FromPath[str],
    jobs: NamedDependency[JobRepository],
    store: NamedDependency[FileStore],
    clock: NamedDependency[Clock],
    download_secret: NamedDependency[bytes],
    token: FromQuery[str | None] = None,
) -> Response[None]:
    """The headers ``GET`` would answer with, without the file."""
    file = _open_file(jobId, token, jobs, store, clock, download_secret)
    headers = {**_file_headers(file), "content-length": str(file.size_bytes)}
    # b"", not None: Litestar renders None only for text and JSON types, and an NDJSON HEAD
    # would be a 500
    return Response(b"", status_code=200, headers=headers, media_type=file.mime_type)


# --- the app ---


def _required(value: str | None, setting: str) -> str:
    if not value:
        raise ConfigError(f"{SETTING_TO_VARIABLE[setting]} is required but not set")
    return value


def create_app(container: Container) -> Litestar:
    """The HTTP API over ``container``'s ports.

    Raises :class:`ConfigError` when ``JWT_SECRET`` or ``REPORT_DOWNLOAD_SECRET`` is missing.
    Resources the app initialises at startup it also closes at shutdown; resources already
    initialised by the caller (a process sharing them with a worker) are left to the caller.
    """
    settings = container.settings()
    verifier = TokenVerifier(
        _required(settings.jwt_secret, "jwt_secret"),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    secret = _required(settings.download_secret, "download_secret").encode()
    readiness = Readiness(container)

    def authenticate(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        principal = verifier.principal(connection.headers.get("authorization"))
        authorize(principal, _action(handler))
        connection.scope["state"][_PRINCIPAL_KEY] = principal

    # one plain annotated function per port: Litestar reads the signature and checks the value
    def provide_jobs() -> JobRepository:
        return container.jobs()

    def provide_queue() -> JobQueue:
        return container.queue()

    def provide_store() -> FileStore:
        return container.store()

    def provide_clock() -> Clock:
        return container.clock()

    def provide_policy() -> Policy:
        return container.policy()

    def provide_download_secret() -> bytes:
        return secret

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

    jobs_router = Router(
        path=JOBS_PATH,
        route_handlers=[create_job, list_jobs, get_job, issue_download, cancel_job],
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
        route_handlers=[health, ready, jobs_router, files_router],
        dependencies={
            "jobs": Provide(provide_jobs, sync_to_thread=False),
            "queue": Provide(provide_queue, sync_to_thread=False),
            "store": Provide(provide_store, sync_to_thread=False),
            "clock": Provide(provide_clock, sync_to_thread=False),
            "policy": Provide(provide_policy, sync_to_thread=False),
            "download_secret": Provide(provide_download_secret, sync_to_thread=False),
            "readiness": Provide(provide_readiness, sync_to_thread=False),
        },
        exception_handlers={
            ReportError: _on_report_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
        openapi_config=OpenAPIConfig(
            title=API_TITLE,
            version=API_VERSION,
            path="/api-docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin()],
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
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the process configures logging (reportsvc.entrypoints.logs)
    )
    # App-level `middleware=` runs per route, after routing: it would never see the router's
    # own 404/405 answers. Wrapping the app's ASGI handler puts the ids on every response.
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler)
    return app
