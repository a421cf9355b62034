"""The HTTP API: a Litestar app over the container's ports.

Handlers are thin: they parse, call one method of the application
(:class:`reportcore.service.ReportService`) and shape the answer. Around them, in one place each:

- authentication and the role check: a guard on the JWT routes (:mod:`..auth`,
  :func:`reportcore.access.authorize`), the tenant through :func:`reportcore.access.resolve_tenant`;
- errors: one mapping from :class:`reportcore.errors.ReportError` codes (and Litestar's own
  errors) to statuses, answered in the contract's envelope; nothing unexpected leaks;
- ``x-request-id`` / ``x-trace-id`` on every response and one log line per request: a small
  ASGI middleware around the whole app, so that also the router's 404/405 answers get them.

Choices the contract leaves open: a 405 and a 413 answer with code ``VALIDATION_ERROR``
(the contract's codes are a closed set); a platform_admin may name the tenant of a cancel in
its body or its query string; text containing NUL characters is refused with a 400
(:func:`reportcore.requests.refuse_nul`: the database cannot store it).
"""

from __future__ import annotations

from ..schemas import JOBS_PATH
from .app import create_app
from .errors import ERROR_STATUS, error_response
from .ranges import Unsatisfiable, byte_range

__all__ = [
    "ERROR_STATUS",
    "JOBS_PATH",
    "Unsatisfiable",
    "byte_range",
    "create_app",
    "error_response",
]
