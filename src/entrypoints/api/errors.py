"""Domain and framework errors mapped, in one place, to the contract's error envelope."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from litestar import Request, Response
from litestar.enums import MediaType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec

from reportcore.errors import ReportError, TooManyJobs, ValidationError

from ..auth import BearerRefused
from ..bodies import ClientDisconnected
from ..echo import MAX_ECHO, bounded
from ..schemas import (
    ErrorBody,
    ErrorEnvelope,
)
from .middleware import DISCONNECTED_KEY, MAX_LOGGED_PATH, request_ids

log = logging.getLogger("reportsvc.api")

MAX_BODY_BYTES = 1_048_576  # a create body is a few hundred bytes; filters lists stay far below
MAX_MESSAGE = 1000  # an error message never grows with the input beyond this

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
    "TOO_MANY_SCHEDULES": 429,
    "TOO_MANY_JOBS": 429,
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


def error_response(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> Response[ErrorEnvelope]:
    """The contract's error envelope."""
    trace = request_ids(request.scope).trace_id
    # each echo of input is bounded where it is made; this bounds the whole, whatever the source
    message = bounded(message, MAX_MESSAGE)
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
            "path": request.url.path[:MAX_LOGGED_PATH],
            "request_id": ids.request_id,
            "trace_id": ids.trace_id,
            "error_type": type(exc).__name__,
        },
    )
    return error_response(request, 500, "INTERNAL_ERROR", _INTERNAL_MESSAGE)


def on_report_error(request: Request[Any, Any, Any], exc: ReportError) -> Response[ErrorEnvelope]:
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
        message = f"{bounded(exc.field)}: {message}"  # the client must learn which field to fix
    headers = {}
    if isinstance(exc, TooManyJobs):
        headers["Retry-After"] = str(exc.retry_after_sec)
    if isinstance(exc, BearerRefused):
        headers["WWW-Authenticate"] = exc.challenge
    return error_response(request, status, exc.code, message, headers)


def _validation_message(exc: ValidationException) -> str:
    problems = exc.extra if isinstance(exc.extra, list) else []
    parts: list[str] = []
    for problem in problems:
        if not isinstance(problem, dict):
            continue
        key = bounded(str(problem.get("key") or ""))
        # msgspec's wording quotes the value it refused, of any length
        text = bounded(str(problem.get("message") or "is not valid"), MAX_ECHO + 40)
        if key == "data" and problem.get("source") == "body":
            if text == "'data'":  # Litestar's wording for an absent body
                parts.append("request body is required: a JSON object")
                continue
            key = "body"
        parts.append(f"{key}: {text}" if key else text)
    return "; ".join(parts) or "request is not valid"


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorEnvelope]:
    if isinstance(exc, ValidationException):
        return error_response(request, 400, "VALIDATION_ERROR", _validation_message(exc))
    if isinstance(exc, NotFoundException):
        return error_response(request, 404, "NOT_FOUND", f"no route {bounded(request.url.path)}")
    if isinstance(exc, MethodNotAllowedException):
        return error_response(
            request,
            405,
            "VALIDATION_ERROR",
            f"method {bounded(request.method)} is not allowed on {bounded(request.url.path)}",
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
    detail = (
        bounded(exc.detail, MAX_ECHO + 40)
        if isinstance(exc, ClientException)
        else "request is not valid"
    )
    if isinstance(exc.__cause__, SerializationException):
        detail = f"request body is not valid JSON: {detail}"
    return error_response(request, status, code, detail, exc.headers)


def on_client_disconnected(
    request: Request[Any, Any, Any], exc: ClientDisconnected
) -> Response[ErrorEnvelope]:
    # Not an error of ours and nobody to answer: the access log line says what happened
    # (outcome=client_disconnected); the response below goes nowhere.
    request.scope["state"][DISCONNECTED_KEY] = True
    return error_response(
        request, 400, "VALIDATION_ERROR", "the client disconnected before its body was complete"
    )


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorEnvelope]:
    return _internal(request, exc)


def error_specs(*statuses: int) -> dict[int, ResponseSpec]:
    words = {
        400: "VALIDATION_ERROR: the request is not valid; the message names the field",
        401: "UNAUTHORIZED: missing, invalid or expired token",
        403: "FORBIDDEN: the role or tenant does not allow this",
        404: "NOT_FOUND: no such job for this tenant",
        409: "REPORT_NOT_READY, IDEMPOTENCY_KEY_REUSED or JOB_NOT_CANCELLABLE",
        410: "REPORT_EXPIRED: the file was deleted by retention",
        429: "TOO_MANY_JOBS: the tenant has REPORT_MAX_UNFINISHED_JOBS queued or running jobs; "
        "Retry-After says when to try again; TOO_MANY_SCHEDULES: the tenant has "
        "REPORT_MAX_SCHEDULES schedules",
        413: "VALIDATION_ERROR: the request body is too large",
        500: "INTERNAL_ERROR",
        503: "SERVICE_UNAVAILABLE: the database does not answer",
    }
    return {
        s: ResponseSpec(data_container=ErrorEnvelope, description=words[s], generate_examples=False)
        for s in (*statuses, 500)
    }
