"""Domain errors, each with the stable code of the contract.

The HTTP layer maps codes to statuses in one place; the core only raises.
Export failures (what ends a job as ``failed``) carry the ``error_code`` stored on the job.
"""

from __future__ import annotations


class ReportError(Exception):
    """Base of every error the core raises on purpose; ``code`` is part of the contract."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(ReportError):
    """A request that can never succeed as sent (HTTP 400)."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(ReportError):
    """No credentials, or credentials that do not verify (HTTP 401)."""

    code = "UNAUTHORIZED"


class Forbidden(ReportError):
    """Verified credentials that do not allow this (HTTP 403)."""

    code = "FORBIDDEN"


class NotFound(ReportError):
    """No such job for this tenant; another tenant's job is indistinguishable (HTTP 404)."""

    code = "NOT_FOUND"


class ReportNotReady(ReportError):
    """The job has not succeeded (yet), so there is nothing to download (HTTP 409)."""

    code = "REPORT_NOT_READY"


class IdempotencyKeyReused(ReportError):
    """The idempotency key was used before by this tenant for a different request (HTTP 409)."""

    code = "IDEMPOTENCY_KEY_REUSED"


class JobNotCancellable(ReportError):
    """The job is already finished (HTTP 409)."""

    code = "JOB_NOT_CANCELLABLE"


class ReportExpired(ReportError):
    """The file was deleted by retention, or the download token has expired (HTTP 410)."""

    code = "REPORT_EXPIRED"


class TooManyJobs(ReportError):
    """The tenant has as many unfinished (queued or running) jobs as it may; a create waits
    until some have finished (HTTP 429 with ``Retry-After``)."""

    code = "TOO_MANY_JOBS"
    #: the ``Retry-After`` a client is given: about the time a job of a backlog takes
    retry_after_sec = 30

    @classmethod
    def at(cls, limit: int) -> TooManyJobs:
        """The error of a tenant holding ``limit`` unfinished jobs."""
        return cls(
            f"the tenant has {limit} queued or running jobs, the most it may have "
            "(REPORT_MAX_UNFINISHED_JOBS); create more once some have finished"
        )


class ServiceUnavailable(ReportError):
    """A backing service (database, broker, store) does not answer (HTTP 503)."""

    code = "SERVICE_UNAVAILABLE"


class InvalidTransition(ReportError):
    """A status change the lifecycle does not allow; names ``from`` and ``to``."""

    code = "INVALID_TRANSITION"

    def __init__(self, current: str, event: str, target: str | None = None) -> None:
        to = target if target is not None else "?"
        super().__init__(f"transition {event!r} not allowed from {current!r} (to {to!r})")
        self.current = current
        self.event = event
        self.target = target


class QueueUnavailable(ReportError):
    """The broker did not confirm a publish; the job stays queued and is published later."""

    code = "QUEUE_UNAVAILABLE"


# --- Export failures: these end a job as ``failed`` with their code as ``error_code``. ---


class ExportFailure(ReportError):
    """Base of failures that end a job; ``retryable`` ones may be retried by the worker."""

    code = "EXPORT_FAILED"
    retryable = False


class UpstreamUnavailable(ExportFailure):
    """Upstream kept failing transiently (connect error, timeout, 429, 5xx) after every retry."""

    code = "UPSTREAM_UNAVAILABLE"


class UpstreamRejected(ExportFailure):
    """Upstream answered with a 4xx other than 429: retrying would not help."""

    code = "UPSTREAM_REJECTED"


class UpstreamBadResponse(ExportFailure):
    """Upstream answered 2xx with a body that is not the documented page."""

    code = "UPSTREAM_BAD_RESPONSE"


class ExportLimitExceeded(ExportFailure):
    """The export went past one of its limits (pages, rows, bytes, wall time: see
    :class:`reportcore.policy.ExportLimits`); the message names the limit and its variable."""

    code = "EXPORT_LIMIT_EXCEEDED"


class StorageFailure(ExportFailure):
    """The export file could not be written (disk full, unwritable folder)."""

    code = "STORAGE_FAILED"


class WorkerLost(ExportFailure):
    """The job's worker died on every attempt."""

    code = "WORKER_LOST"


class ExportCancelled(ReportError):
    """Raised inside a running export when the job was cancelled or its lease was lost."""

    code = "EXPORT_CANCELLED"


class TooManySchedules(ReportError):
    """The tenant has as many schedules as it may (``REPORT_MAX_SCHEDULES``; HTTP 429)."""

    code = "TOO_MANY_SCHEDULES"
