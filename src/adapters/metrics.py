"""The service's Prometheus metrics: every metric declared once, on one registry.

The core never sees these: the adapters and entrypoints count what passes through them
(``adapters.metering`` wraps the job repository and the queue, the worker records
its exports, the upstream client's event hooks count requests, the API's middleware counts
requests by route template). docs/operations.md lists every metric.

Every label takes its value from a closed set: a job type, format, status or error code of the
core (anything else is ``other``), an HTTP method (else ``OTHER``), a route template (else
``unmatched``), an upstream name. Never a job id, a tenant id or a path as requested, so that the
number of series stays bounded however many jobs and tenants there are.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from reportcore import errors
from reportcore.jobs import JobStatus, JobType, ReportFormat
from reportcore.jobtypes import Upstream

# no `<name>_created` sample beside every counter and histogram series: it doubles the series
# (and the scrape's cost) for a start time Prometheus does not need to compute rates
disable_created_metrics()

REGISTRY = CollectorRegistry()
"""Our own registry (not the library's global one): what /metrics shows is what we declare
here, plus the process, platform and GC collectors."""

process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

OTHER = "other"
NONE = "none"  # the error_code of a job that did not fail


def _codes(base: type[errors.ReportError] = errors.ReportError) -> frozenset[str]:
    found: set[str] = set()
    pending: list[type[errors.ReportError]] = [base]
    while pending:
        cls = pending.pop()
        found.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(found)


ERROR_CODES = _codes()
"""The core's closed set of error codes (every ``ReportError`` subclass's ``code``)."""
FAILURE_CODES = _codes(errors.ExportFailure)
"""The codes a job can fail with: ``ExportFailure`` and its subclasses (WORKER_LOST too)."""
JOB_TYPES = frozenset(t.value for t in JobType)
FORMATS = frozenset(f.value for f in ReportFormat)
STATUSES = frozenset(s.value for s in JobStatus)
UPSTREAMS = frozenset(u.name.lower() for u in Upstream)  # feed, telemetry, weighvision
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")  # an upstream answer's (error: none)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


def bounded(value: object, allowed: Iterable[str], other: str = OTHER) -> str:
    """``value`` as a label if it is one of ``allowed``, else ``other``."""
    text = str(value) if value is not None else ""
    return text if text in allowed else other


def error_code_label(code: str | None) -> str:
    """An error code of the core, ``none`` for no code, ``other`` for anything else."""
    if not code:
        return NONE
    return code if code in ERROR_CODES else OTHER


# --- jobs (the API counts creates and cancels, the worker finishes, recovery fails lost ones) ---

JOBS_CREATED = Counter(
    "reportsvc_jobs_created",
    "Jobs stored by a create (replays of an idempotency key are not counted).",
    ["type", "format"],
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "reportsvc_jobs_finished",
    "Jobs that reached a terminal status, by status and error_code (none unless failed).",
    ["type", "status", "error_code"],
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge(
    "reportsvc_jobs_running",
    "Jobs this worker process is exporting now (claimed, lease held).",
    registry=REGISTRY,
)

# seconds: a small export takes well under a second, a year of telemetry many minutes
_EXPORT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
EXPORT_DURATION = Histogram(
    "reportsvc_export_duration_seconds",
    "Time from taking a job's message to its file being committed, of succeeded exports.",
    ["type", "format"],
    buckets=_EXPORT_BUCKETS,
    registry=REGISTRY,
)
EXPORT_ROWS = Counter(
    "reportsvc_export_rows",
    "Rows written into succeeded export files.",
    ["type", "format"],
    registry=REGISTRY,
)
EXPORT_BYTES = Counter(
    "reportsvc_export_bytes",
    "Bytes of succeeded export files.",
    ["type", "format"],
    registry=REGISTRY,
)

# --- the queue ---

PUBLISH_FAILURES = Counter(
    "reportsvc_publish_failures",
    "Job messages the broker did not confirm (the job waits for recovery to publish it).",
    registry=REGISTRY,
)

# --- upstream services ---

UPSTREAM_REQUESTS = Counter(
    "reportsvc_upstream_requests",
    "Requests sent to an upstream service (retries included), by answer class: "
    "2xx, 3xx, 4xx, 5xx, or error (no answer: connect error, timeout).",
    ["upstream", "status_class"],
    registry=REGISTRY,
)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPSTREAM_DURATION = Histogram(
    "reportsvc_upstream_request_duration_seconds",
    "Time from sending an upstream request to its answer's headers (or to its failure).",
    ["upstream"],
    buckets=_UPSTREAM_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_RETRIES = Counter(
    "reportsvc_upstream_retries",
    "Upstream requests sent again after a transient failure (429, 5xx, timeout, connect error).",
    ["upstream"],
    registry=REGISTRY,
)
UPSTREAM_FOREIGN_RECORDS = Counter(
    "reportsvc_upstream_foreign_records",
    "Upstream records naming another tenant than the export's (each fails its export "
    "UPSTREAM_BAD_RESPONSE; none is written).",
    ["upstream"],
    registry=REGISTRY,
)

UPSTREAM_RECORDS_DROPPED = Counter(
    "reportsvc_upstream_records_dropped",
    "Upstream records an export did not write, by reason: out_of_range (outside the time "
    "window asked for) or repeated_id (an id the window already had at that instant or on "
    "that or the page before).",
    ["upstream", "reason"],
    registry=REGISTRY,
)
UPSTREAM_WINDOW_SPLITS = Counter(
    "reportsvc_upstream_window_splits",
    "Times an idle window thread took over the older part of a running time window.",
    ["upstream"],
    registry=REGISTRY,
)

# --- the HTTP API ---

HTTP_REQUESTS = Counter(
    "reportsvc_http_requests",
    "HTTP requests answered by the API, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HTTP_DURATION = Histogram(
    "reportsvc_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of its body), by route template and method.",
    ["route", "method"],
    buckets=_HTTP_BUCKETS,
    registry=REGISTRY,
)

# --- schedules (each worker's scheduler; entrypoints.scheduler) ---

SCHEDULES = Gauge(
    "reportsvc_schedules",
    "Schedules of every tenant, by state: active, paused, and skipping (active, and its latest "
    "occurrence made no job because its template no longer validates).",
    ["state"],
    registry=REGISTRY,
)
SCHEDULE_OCCURRENCES = Counter(
    "reportsvc_schedule_occurrences",
    "Occurrences of schedules this process handled, by outcome: created (a job) or skipped.",
    ["outcome"],
    registry=REGISTRY,
)
# every state and outcome from the start: a dashboard and an alert find the series before the
# first scheduler pass (0 in a process that runs none, harmless under max())
for _state in ("active", "paused", "skipping"):
    SCHEDULES.labels(state=_state)
for _outcome in ("created", "skipped"):
    SCHEDULE_OCCURRENCES.labels(outcome=_outcome)
# seconds: a scheduler ticks every few seconds; after downtime the latest occurrence is late
_LAG_BUCKETS = (1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
SCHEDULE_LAG = Histogram(
    "reportsvc_schedule_lag_seconds",
    "How long after its occurrence a schedule's job was created.",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)


def start_worker_series() -> None:
    """Create at 0 the series a worker counts that the alerts take a ``rate()`` of: every job
    type's ``succeeded`` and its ``failed`` by each failure code, every upstream by each answer
    class. A counter series is otherwise born at its first count, at 1: ``rate()`` never sees
    that step, so ReportJobFailureRatioHigh and ReportUpstreamFailing would miss the first
    failure of each label set. Called when a worker is made (``entrypoints.worker.Worker``):
    the api counts none of them, so the upstream series are served by workers only, from their
    start (ReportWorkerAbsent fires on their absence). Idempotent: a series already counted
    keeps its value."""
    for job_type in JOB_TYPES:
        JOBS_FINISHED.labels(job_type, "succeeded", NONE)
        for code in FAILURE_CODES:
            JOBS_FINISHED.labels(job_type, "failed", code)
    for upstream in UPSTREAMS:
        for status_class in STATUS_CLASSES:
            UPSTREAM_REQUESTS.labels(upstream, status_class)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus since 2.0 reads (prometheus-client's own
``CONTENT_TYPE_LATEST`` names version 1.0.0, which older servers do not know)."""


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus's text format."""
    return generate_latest(registry)


__all__ = [
    "CONTENT_TYPE",
    "EXPORT_BYTES",
    "EXPORT_DURATION",
    "EXPORT_ROWS",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "JOBS_CREATED",
    "JOBS_FINISHED",
    "JOBS_RUNNING",
    "PUBLISH_FAILURES",
    "REGISTRY",
    "SCHEDULES",
    "SCHEDULE_LAG",
    "SCHEDULE_OCCURRENCES",
    "UPSTREAM_DURATION",
    "UPSTREAM_FOREIGN_RECORDS",
    "UPSTREAM_RECORDS_DROPPED",
    "UPSTREAM_REQUESTS",
    "UPSTREAM_RETRIES",
    "UPSTREAM_WINDOW_SPLITS",
    "bounded",
    "error_code_label",
    "exposition",
    "start_worker_series",
]
