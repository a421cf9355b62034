"""The export pipeline: the records of one job type and scope, from a source into one file.

The worker's use case (:func:`reportcore.running.run_job`) and ``reportsvc export`` both run an
export through :func:`export_records`, so what a source is asked for, which filters apply while
streaming, how progress is estimated and that no partial file is ever left are decided here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator

import msgspec

from .encoding import CORE_ROW_FORMATS, RowFormats
from .errors import ExportFailure, ValidationError
from .export import ProgressEstimate, abort_keeping, scope_values, write_export
from .jobs import ReportFormat, Scope
from .jobtypes import JobTypeSpec
from .options import ExportOptions
from .policy import ExportLimits, limit_exceeded
from .ports import FileWriter, RecordSource, SourcePage, SourceRequest
from .requests import validate_filters


class ExportProgress(msgspec.Struct, frozen=True, kw_only=True):
    """How far an export has come: the estimated percentage (0..99) and the rows written."""

    pct: int
    rows: int


class ExportedFile(msgspec.Struct, frozen=True, kw_only=True):
    """A committed export file: where the writer put it, its rows, size and sha256."""

    location: str
    rows: int
    size_bytes: int
    sha256: str


def source_request(
    spec: JobTypeSpec,
    fmt: ReportFormat,
    scope: Scope,
    *,
    tenant_id: str,
    trace_id: str,
    limits: ExportLimits | None = None,
    checkpoint: Callable[[], None] | None = None,
    fetched: Callable[[], None] | None = None,
) -> SourceRequest:
    """What the source is asked for: typed records for CSV or for a filter applied while
    streaming, each record's upstream bytes for NDJSON. ``trace_id`` travels upstream; the
    source fetches at most ``limits.max_pages`` pages and ``limits.max_bytes`` bytes, and asks
    ``checkpoint`` while it waits, and ``fetched`` as each page arrives."""
    raw = fmt is ReportFormat.JSON
    return SourceRequest(
        job_id=trace_id,
        tenant_id=tenant_id,
        job_type=spec.job_type,
        scope=scope,
        upstream_filters=spec.upstream_filters(scope.filters),
        typed=not raw or spec.stream_predicate(scope.filters) is not None,
        raw=raw,
        max_pages=limits.max_pages if limits is not None else None,
        max_bytes=limits.max_bytes if limits is not None else None,
        checkpoint=checkpoint,
        fetched=fetched,
    )


class _BoundedWriter:
    """A :class:`FileWriter` that refuses to grow past ``limits.max_bytes``."""

    __slots__ = ("_limits", "_size", "_writer")

    def __init__(self, writer: FileWriter, limits: ExportLimits) -> None:
        self._writer = writer
        self._limits = limits
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._size += len(data)
        if self._size > self._limits.max_bytes:
            raise limit_exceeded(self._limits, "max_bytes")
        self._writer.write(data)

    def commit(self) -> str:
        return self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()


def _carry_on(progress: ExportProgress) -> None:
    """The default callback: nothing to report, nothing to check."""


def _checked_filters(spec: JobTypeSpec, scope: Scope) -> Scope:
    """``scope`` with its filters checked as a create checks them. The api stores only valid
    filters; the old service's api took any object (and its worker ignored it), so a job it
    queued may name a filter this job type does not have: that fails the job, saying which,
    rather than the export "failing unexpectedly" (or widening what it was asked for)."""
    try:
        filters = validate_filters(spec, scope.filters)
    except ValidationError as exc:
        raise ExportFailure(f"the job's filters cannot be applied: {exc.message}") from None
    return msgspec.structs.replace(scope, filters=filters)


def export_records(
    spec: JobTypeSpec,
    fmt: ReportFormat,
    scope: Scope,
    *,
    tenant_id: str,
    trace_id: str,
    source: RecordSource,
    open_file: Callable[[], FileWriter],
    on_progress: Callable[[ExportProgress], None] = _carry_on,
    before_commit: Callable[[ExportProgress], None] = _carry_on,
    options: ExportOptions | None = None,
    formats: RowFormats = CORE_ROW_FORMATS,
    limits: ExportLimits | None = None,
    checkpoint: Callable[[], None] | None = None,
    fetched: Callable[[], None] | None = None,
) -> ExportedFile:
    """Stream the records of ``scope`` from ``source`` into a file from ``open_file`` and commit it.

    ``on_progress`` is called after every page; ``before_commit`` once every record is written,
    before the file becomes visible. Either may raise to stop the export. Whatever raises (the
    source, the writer, a callback), the source is closed first, so that one fetching ahead
    in threads stops, then the file is aborted and the exception propagates: a file is either
    committed whole or not left at all. ``open_file`` raising leaves nothing to abort.
    ``options`` shape the file (see :mod:`reportcore.options`); ``formats`` are the row
    formats this process can write (the core's CSV, plus what adapters add).
    ``limits``: past its pages, rows or bytes the export fails ``EXPORT_LIMIT_EXCEEDED`` (the
    wall time is the caller's, who has the clock); ``checkpoint`` and ``fetched`` are handed
    to the source.
    """
    scope = _checked_filters(spec, scope)
    keep = spec.stream_predicate(scope.filters)
    request = source_request(
        spec,
        fmt,
        scope,
        tenant_id=tenant_id,
        trace_id=trace_id,
        limits=limits,
        checkpoint=checkpoint,
        fetched=fetched,
    )
    progress = ProgressEstimate(spec, scope)
    pages_seen = 0

    def on_page(page: SourcePage, rows: int) -> None:
        nonlocal pages_seen
        pages_seen += 1
        if limits is not None:
            if rows > limits.max_rows:
                raise limit_exceeded(limits, "max_rows")
            if pages_seen > limits.max_pages:
                raise limit_exceeded(limits, "max_pages")
        on_progress(ExportProgress(pct=progress.update(page), rows=rows))

    def pages() -> Generator[SourcePage, None, None]:
        yield from source.pages(request)

    writer = open_file()
    bounded: FileWriter = writer if limits is None else _BoundedWriter(writer, limits)
    try:
        with contextlib.closing(pages()) as stream:
            result = write_export(
                spec,
                fmt,
                stream,
                bounded,
                scope_values=scope_values(tenant_id, scope),
                keep=keep,
                on_page=on_page,
                options=options,
                formats=formats,
            )
        before_commit(ExportProgress(pct=progress.pct, rows=result.rows))
        location = writer.commit()
    except BaseException as exc:
        abort_keeping(writer.abort, exc)
        raise
    return ExportedFile(
        location=location, rows=result.rows, size_bytes=result.size_bytes, sha256=result.sha256
    )
