"""Streaming a job's records into its file: rows or NDJSON lines, compression, hashing, progress.

Nothing here holds more than one page and one write buffer in memory, whatever the export's
size (a row format may spool to a temporary file: xlsx). Size and sha256 are computed over the
exact bytes handed to the file writer, after compression.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any

import msgspec

from .encoding import CORE_ROW_FORMATS, GzipSink, JsonShaper, RowFormats, camel, csv_line, csv_lines
from .errors import ExportFailure
from .jobs import Compression, ReportFormat, Scope
from .jobtypes import Column, JobTypeSpec
from .options import ExportOptions
from .ports import ByteSink, FileWriter, RowEncoder, SheetRequest, SourcePage

__all__ = [
    "ExportResult",
    "ProgressEstimate",
    "csv_line",
    "csv_lines",
    "page_position",
    "scope_values",
    "write_export",
]

FLUSH_BYTES = 1 << 20  # write in chunks of about 1 MiB


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    """What was written: rows (header excluded), bytes, and their sha256."""

    rows: int
    size_bytes: int
    sha256: str


def abort_keeping(abort: Callable[[], object], failure: BaseException) -> None:
    """Run ``abort`` on the way out of ``failure``: what the clean-up raises (a volume gone,
    a buffer that cannot be flushed) goes on ``failure`` as a note instead of replacing it, so
    that the job still reports why it failed (an upstream's outage, a shutdown's hand-back)."""
    try:
        abort()
    except Exception as exc:
        failure.add_note(f"and the clean-up failed: {type(exc).__name__}: {exc}")


class _HashingBuffer:
    """Collects encoded bytes, hashes them and hands them to the writer in large chunks."""

    __slots__ = ("_buf", "_hash", "_size", "_writer")

    def __init__(self, writer: FileWriter) -> None:
        self._writer = writer
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0

    def add(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buf:  # handed over, not copied: a writer copies what it keeps (FileWriter)
            chunk, self._buf = self._buf, bytearray()  # a fresh one: a view left on the old
            self._hash.update(chunk)  # one (a writer's memoryview) cannot make clear() fail
            self._size += len(chunk)
            self._writer.write(chunk)

    def result(self, rows: int) -> ExportResult:
        self.flush()
        return ExportResult(rows=rows, size_bytes=self._size, sha256=self._hash.hexdigest())


def _one_line(raw: bytes | memoryview | msgspec.Raw) -> bytes:
    """A JSON record on one line: upstream may pretty-print, but a raw CR or LF in JSON can
    only be whitespace between tokens (inside strings they are escaped), so a space will do."""
    return bytes(raw).replace(b"\r", b" ").replace(b"\n", b" ")


def scope_values(tenant_id: str, scope: Scope) -> dict[str, Any]:
    """The job's scope as the values scope columns read."""
    return {
        "tenant_id": tenant_id,
        "farm_id": scope.farm_id,
        "barn_id": scope.barn_id,
        "batch_id": scope.batch_id,
    }


def row_getter(
    spec: JobTypeSpec, columns: tuple[Column, ...] | None, scope_values: Mapping[str, Any]
) -> Callable[[Any], tuple[Any, ...]]:
    """A record's cells in ``columns`` (the job type's own when ``None``), in their order."""
    if columns is None:
        return spec.row_getter(scope_values)
    if all(c.attr is not None for c in columns):
        getter = attrgetter(*(c.attr for c in columns if c.attr is not None))
        return getter if len(columns) > 1 else lambda r: (getter(r),)

    def constant(value: Any) -> Callable[[Any], Any]:
        return lambda r: value

    parts = [
        attrgetter(c.attr) if c.attr is not None else constant(scope_values.get(c.scope or ""))
        for c in columns
    ]
    return lambda r: tuple(get(r) for get in parts)


def _open_rows(
    fmt: ReportFormat, formats: RowFormats, request: SheetRequest, out: ByteSink
) -> RowEncoder:
    factory = formats.get(fmt)
    if factory is None:
        raise ExportFailure(f"format {fmt.value} is not available in this worker")
    return factory(request, out)


def write_export(
    spec: JobTypeSpec,
    fmt: ReportFormat,
    pages: Iterable[SourcePage],
    writer: FileWriter,
    *,
    scope_values: Mapping[str, Any],
    keep: Callable[[Any], bool] | None = None,
    on_page: Callable[[SourcePage, int], None] | None = None,
    options: ExportOptions | None = None,
    formats: RowFormats = CORE_ROW_FORMATS,
) -> ExportResult:
    """Encode every page into ``writer``; ``on_page(page, rows_so_far)`` after each page.

    Row formats (CSV, and whatever ``formats`` adds: xlsx) take typed records through the
    columns of the job type (or of ``options.columns``); NDJSON lines are the upstream bytes of
    each record, unchanged but for line breaks between JSON tokens (an upstream that
    pretty-prints would otherwise spread a record over several lines), unless ``columns`` or a
    ``timezone`` reshape them. ``keep`` drops records (stream filters); for NDJSON it needs
    typed records aligned with the raw ones. Without ``options`` the bytes are the contract's.
    """
    options = options or ExportOptions()
    hashed = _HashingBuffer(writer)
    gzip = GzipSink(hashed) if options.compression is Compression.GZIP else None
    out: ByteSink = gzip or hashed
    rows = 0
    if fmt is not ReportFormat.JSON:
        columns = options.columns_of(spec)
        encoder = _open_rows(fmt, formats, SheetRequest(columns=columns, options=options), out)
        try:
            row_of = row_getter(spec, options.columns, scope_values)
            for page in pages:
                records = page.records or ()
                if keep is not None:
                    records = [r for r in records if keep(r)]
                if records:
                    encoder.add(list(map(row_of, records)))
                rows += len(records)
                if on_page is not None:
                    on_page(page, rows)
            encoder.close()
        except BaseException as exc:
            abort_keeping(encoder.abort, exc)
            raise
        encoder.abort()
    else:
        shaper = None
        if options.columns is not None or options.timezone is not None:
            shaper = JsonShaper(options.columns, spec.columns, scope_values, options.zone)
        for page in pages:
            raws = page.raw or ()
            if keep is not None:
                records = page.records or ()
                raws = [raw for raw, rec in zip(raws, records, strict=True) if keep(rec)]
            if raws:
                if shaper is not None:
                    lines = b"\n".join(map(shaper.line, raws)) + b"\n"
                else:
                    lines = b"\n".join(raws) + b"\n"
                    if lines.count(b"\n") != len(raws) or b"\r" in lines:
                        lines = b"\n".join(map(_one_line, raws)) + b"\n"
                out.add(lines)
                rows += len(raws)
            if on_page is not None:
                on_page(page, rows)
    if gzip is not None:
        gzip.finish()
    return hashed.result(rows)


# --- progress ---


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time.min, tzinfo=dt.UTC)
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def page_position(spec: JobTypeSpec, page: SourcePage) -> dt.datetime | None:
    """The time reached by the last record of ``page`` (its progress attribute)."""
    if page.records:
        return _instant(getattr(page.records[-1], spec.progress_attr, None))
    if page.raw:
        try:
            last = msgspec.json.decode(page.raw[-1])
        except msgspec.DecodeError:
            return None
        if isinstance(last, dict):
            return _instant(last.get(camel(spec.progress_attr)))
    return None


class ProgressEstimate:
    """Percent done, 0..99 while running (100 is only ever set with success), never falling.

    For a date-bounded export it is the share of the date range covered by the records seen so
    far; without both bounds it climbs towards 99 with every page, never reaching it.
    """

    def __init__(self, spec: JobTypeSpec, scope: Scope) -> None:
        self._spec = spec
        self._pages = 0
        self._placed = False  # a page has shown where in the date range the export stands
        self.pct = 0
        self._start = (
            dt.datetime.combine(scope.start_date, dt.time.min, tzinfo=dt.UTC)
            if scope.start_date
            else None
        )
        self._end = (
            dt.datetime.combine(scope.end_date, dt.time.min, tzinfo=dt.UTC) + dt.timedelta(days=1)
            if scope.end_date
            else None
        )

    def update(self, page: SourcePage) -> int:
        """Take one more page into account; returns the new percentage."""
        self._pages += 1
        pct: float
        pos = page_position(self._spec, page)
        if self._start is not None and self._end is not None and pos is not None:
            self._placed = True
            span = (self._end - self._start).total_seconds()
            done = (self._end - pos) if self._spec.newest_first else (pos - self._start)
            pct = 100.0 * done.total_seconds() / span
        elif self._placed:  # (set only by a page of a dated export)
            # an empty page (a time window with no records, a gap in the data) says nothing
            # of where the export stands: the page count's estimate jumped to ~75 % there
            return self.pct
        else:
            pct = 99.0 * (1.0 - 0.97**self._pages)
        self.pct = max(self.pct, min(99, max(0, int(pct))))
        return self.pct
