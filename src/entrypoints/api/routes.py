"""The HTTP routes: thin handlers that parse, call one use case and shape the answer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from litestar import Request, Response, get, head, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import (
    ClientException,
    NotFoundException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.response import Stream

from reportcore import usecases
from reportcore.access import Action, Principal
from reportcore.requests import ListRequest
from reportcore.service import ReportService

from .. import conditional
from ..runtime import tracing
from ..schemas import (
    JOBS_PATH,
    CreateRequest,
    DownloadOut,
    ErrorEnvelope,
    JobOut,
    JobPageOut,
    NotReady,
    Ready,
    TenantBody,
    decode_cursor,
    download_out,
    named_tenant,
    page_out,
    shown_out,
)
from .errors import error_specs
from .guards import Readiness, header_key, list_header
from .ranges import Unsatisfiable, byte_range, content_disposition

BEARER_SCHEME = "bearerAuth"


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


@head(
    "/api/health",
    media_type=MediaType.TEXT,
    sync_to_thread=False,
    tags=["health"],
    operation_id="healthHead",
)
def health_head() -> Response[None]:
    """Liveness for probes that ask with ``HEAD``: the headers ``GET`` answers, no body."""
    # Response[None] is what Litestar requires of a HEAD handler; b"" is the empty body it
    # renders for any media type (mypy: None expected, hence the ignore)
    return Response(b"", media_type=MediaType.TEXT, headers={"content-length": "2"})  # type: ignore[arg-type]


def no_html_404(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the docs router: an unknown ``/api-docs/<path>`` is the envelope's 404."""
    # Litestar answers an unknown /api-docs/<path> with its own HTML page; only that handler
    # takes a path parameter, and every other 404 here is the envelope
    if "path" in connection.path_params:
        raise NotFoundException


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
        **error_specs(400, 401, 403, 409, 413, 429, 503),
    },
)
def create_job(
    data: JSONBody[CreateRequest],
    principal: NamedDependency[Principal],
    reports: NamedDependency[ReportService],
    idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
) -> Response[JobOut]:
    """Create an export job (201), or answer an identical earlier one (200, replay header)."""
    request = data.to_core()
    key = header_key(idempotency_key)
    with tracing.span("create job") as span:
        created = reports.create(request, principal, header_key=key)
        job = created.shown.job
        span.set(
            {
                "report.tenant_id": job.tenant_id,
                "report.job_id": job.id,
                "report.job_type": str(job.job_type),
                "report.replayed": created.replayed,
                "report.enqueued": created.enqueued,
            }
        )
    if created.replayed:
        return Response(
            shown_out(created.shown), status_code=200, headers={"x-idempotent-replay": "true"}
        )
    return Response(
        shown_out(created.shown),
        status_code=201,
        headers={"location": f"{JOBS_PATH}/{job.id}"},
    )


@get(
    "/",
    sync_to_thread=True,
    operation_id="listJobs",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 503),
)
def list_jobs(
    tenant: NamedDependency[str],
    reports: NamedDependency[ReportService],
    status: FromQuery[str | None] = None,
    job_type: FromQuery[str | None] = None,
    created_from: FromQuery[str | None] = None,
    created_to: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
    schedule_id: FromQuery[str | None] = None,
) -> JobPageOut:
    """The tenant's jobs, newest first, ``limit`` (1..100, default 25) at a time."""
    wanted = ListRequest(
        status=status,
        job_type=job_type,
        created_from=created_from,
        created_to=created_to,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit,
        schedule_id=schedule_id,
    )
    return page_out(reports.list_jobs(tenant, wanted))


@get(
    "/{jobId:str}",
    sync_to_thread=True,
    operation_id="getJob",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 404, 503),
)
def get_job(
    jobId: FromPath[str],
    tenant: NamedDependency[str],
    reports: NamedDependency[ReportService],
) -> JobOut:
    """One job of the tenant."""
    return shown_out(reports.get(jobId, tenant))


@get(
    "/{jobId:str}/download",
    sync_to_thread=True,
    operation_id="issueDownload",
    opt={"action": Action.READ},
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 404, 409, 410, 503),
)
def issue_download(
    jobId: FromPath[str],
    tenant: NamedDependency[str],
    reports: NamedDependency[ReportService],
) -> DownloadOut:
    """A short-lived URL of a succeeded job's file (409 until it succeeded, 410 once gone)."""
    return download_out(reports.issue_download(jobId, tenant))


@post(
    "/{jobId:str}/cancel",
    sync_to_thread=True,
    operation_id="cancelJob",
    opt={"action": Action.CANCEL},
    status_code=200,
    security=_SECURED,
    tags=_TAGS,
    responses=error_specs(400, 401, 403, 404, 409, 503),
)
def cancel_job(
    jobId: FromPath[str],
    principal: NamedDependency[Principal],
    reports: NamedDependency[ReportService],
    data: JSONBody[TenantBody | None] = None,
    tenant_id: FromQuery[str | None] = None,
    tenantId: FromQuery[str | None] = None,
) -> JobOut:
    """Cancel a queued or running job (409 once it finished); returns the job."""
    body = data or TenantBody()
    named = named_tenant(body.tenant_id, body.tenantId, tenant_id, tenantId)
    return shown_out(reports.cancel(jobId, principal, named))


_REDIRECT = ResponseSpec(
    None, description="REPORT_DOWNLOAD_REDIRECT=1: the object's presigned URL in Location"
)
# what a GET or HEAD of the file may answer besides 200: the conditional requests' 304 and 412
# (and a GET the redirect to the object store)
_CONDITIONAL_RESPONSES = {
    304: ResponseSpec(None, description="If-None-Match names the current ETag: no body"),
    412: ResponseSpec(
        ErrorEnvelope, description="VALIDATION_ERROR: If-Match names no current ETag"
    ),
    **error_specs(400, 401, 403, 404, 410, 503),
}
_FILE_RESPONSES = {
    302: _REDIRECT,
    206: ResponseSpec(bytes, description="the requested byte range", media_type="*/*"),
    416: ResponseSpec(ErrorEnvelope, description="VALIDATION_ERROR: the Range selects no byte"),
    **_CONDITIONAL_RESPONSES,
}
_FILE_PATH = "/{jobId:str}/file"  # under JOBS_PATH


def _file_headers(file: usecases.FileToServe) -> dict[str, str]:
    headers = {
        "content-type": file.mime_type,
        "content-disposition": content_disposition(file.file_name),
        "accept-ranges": "bytes",
        "cache-control": "private, no-store",
    }
    if file.sha256:
        headers["etag"] = f'"{file.sha256}"'
    return headers


def _preconditions(
    request: Request[Any, Any, Any], headers: Mapping[str, str]
) -> Response[None] | None:
    """304 when the client's copy is current, 412 when ``If-Match`` fails, else ``None``.
    Every line of either header counts: a handler's ``HeaderParameter`` holds only the first
    (the parameters stay, for the OpenAPI document)."""
    outcome = conditional.evaluate(
        list_header(request, "If-Match"), list_header(request, "If-None-Match"), headers.get("etag")
    )
    if outcome is conditional.Outcome.FAILED:
        raise ClientException(
            detail="If-Match names no current version of the file", status_code=412
        )
    if outcome is conditional.Outcome.NOT_MODIFIED:
        # RFC 9110 15.4.5: the headers a 200 would carry that describe the version, no body
        kept = {k: v for k, v in headers.items() if k in ("etag", "cache-control")}
        # b"" in a Response[None] (a HEAD handler's type): as in health_head
        return Response(b"", status_code=304, headers=kept, media_type=MediaType.TEXT)  # type: ignore[arg-type]
    return None


def _redirect(file: usecases.FileToServe) -> Response[None] | None:
    """302 to the store's own URL of the file, when it gave one (after the token checks)."""
    if file.direct_url is None:
        return None
    headers = {"location": file.direct_url, "cache-control": "private, no-store"}
    # b"" in a Response[None] (a HEAD handler's type): as in health_head
    return Response(b"", status_code=302, headers=headers, media_type=MediaType.TEXT)  # type: ignore[arg-type]


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
    request: Request[Any, Any, Any],
    jobId: FromPath[str],
    reports: NamedDependency[ReportService],
    token: FromQuery[str | None] = None,
    range_header: Annotated[str | None, HeaderParameter(name="Range")] = None,
    if_range: Annotated[str | None, HeaderParameter(name="If-Range")] = None,
    if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match")] = None,
) -> Response[Any]:
    """The file a download token grants, streamed; a single byte ``Range`` is honoured, and
    ``If-Match`` / ``If-None-Match`` / ``If-Range`` as RFC 9110 says."""
    file = reports.open_file(jobId, token)
    headers = _file_headers(file)
    unchanged = _preconditions(request, headers)
    if unchanged is not None:
        return unchanged
    # the client sends its Range again to the object store, which honours it
    moved = _redirect(file)
    if moved is not None:
        return moved
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
    chunks: Iterator[bytes] = reports.read(file, start, end) if size else iter(())
    return Stream(chunks, status_code=status, headers=headers, media_type=file.mime_type)


@head(
    _FILE_PATH,
    sync_to_thread=True,
    operation_id="fileHeaders",
    tags=_TAGS,
    responses=_CONDITIONAL_RESPONSES,
    response_description="the file's headers (text/csv or application/x-ndjson), no body",
    media_type="*/*",
)
def file_head(
    request: Request[Any, Any, Any],
    jobId: FromPath[str],
    reports: NamedDependency[ReportService],
    token: FromQuery[str | None] = None,
    if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match")] = None,
) -> Response[None]:
    """The headers ``GET`` would answer with, without the file. Never a redirect, even where
    ``GET`` redirects to the object store: a presigned URL is signed for one method, and a
    ``HEAD`` of a URL signed for ``GET`` is refused there (S3's SigV4 signs the method)."""
    file = reports.open_file(jobId, token)
    headers = _file_headers(file)
    unchanged = _preconditions(request, headers)
    if unchanged is not None:
        return unchanged
    headers["content-length"] = str(file.size_bytes)
    # b"", not None: Litestar renders None only for text and JSON types, and an NDJSON HEAD
    # would be a 500 (and Litestar requires Response[None] of a HEAD handler: the ignore)
    return Response(b"", status_code=200, headers=headers, media_type=file.mime_type)  # type: ignore[arg-type]
