"""Streaming a job's records into its file: CSV and NDJSON encoders, hashing, progress.

Nothing here holds more than one page and one write buffer in memory, whatever the export's
size. Size and sha256 are computed over the exact bytes handed to the file writer.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from .jobs import ReportFormat, Scope
from .jobtypes import JobTypeSpec
from .ports import FileWriter, SourcePage

FLUSH_BYTES = 1 << 20  # write in chunks of about 1 MiB


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    """What was written: rows (header excluded), bytes, and their sha256."""

    rows: int
    size_bytes: int
    sha256: str


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
        if self._buf:
            chunk = bytes(self._buf)
            self._hash.update(chunk)
            self._size += len(chunk)
            self._writer.write(chunk)
            self._buf.clear()

    def result(self, rows: int) -> ExportResult:
        self.flush()
        return ExportResult(rows=rows, size_bytes=self._size, sha256=self._hash.hexdigest())


def csv_lines(rows: Sequence[Sequence[Any]]) -> bytes:
    """RFC 4180 CSV lines, byte for byte what ``csv.writer`` writes: CRLF-terminated, minimal
    quoting, ``None`` as an empty cell. All rows of a call have one width (a job's columns).

    csv.writer works value by value, which bounds a large export (docs/performance.md has the
    figures). Here ``str.join`` does most of the work, a column of the page at a time: a column
    of text joins as it is, and its joined text shows at once whether any cell needs quotes (a
    comma beyond the join's own, a quote, a line break); only a column that fails either is
    converted (``None`` as an empty cell, text, a str enum's too, as is, anything else through
    ``str()``, which agrees with ``repr`` on floats) or quoted cell by cell, in comprehensions
    (a function call a cell would cost as much as the conversion). Rows of fewer than two
    cells are left to csv.writer, for its special case: a lone empty cell is written ``""``
    (an empty line would be no record at all).
    """
    if not rows:
        return b""
    if len(rows[0]) < 2:
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue().encode("utf-8")
    columns: list[Sequence[str]] = []
    for values in zip(*rows, strict=True):
        try:
            cells: Sequence[str] = values
            joined = ",".join(cells)
        except TypeError:  # a None or a number among them
            if values.count(None) == len(values):  # an optional field nobody fills in
                cells = [""] * len(values)
            else:
                cells = ["" if v is None else v if isinstance(v, str) else str(v) for v in values]
            joined = ",".join(cells)
        if joined.count(",") != len(rows) - 1 or '"' in joined or "\r" in joined or "\n" in joined:
            cells = [
                '"' + c.replace('"', '""') + '"'
                if "," in c or '"' in c or "\r" in c or "\n" in c
                else c
                for c in cells
            ]
        columns.append(cells)
    return ("\r\n".join(map(",".join, zip(*columns, strict=True))) + "\r\n").encode("utf-8")


def csv_line(values: Iterable[Any]) -> bytes:
    """One RFC 4180 CSV line (CRLF-terminated, minimal quoting, ``None`` as an empty cell)."""
    return csv_lines([tuple(values)])


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


def write_export(
    spec: JobTypeSpec,
    fmt: ReportFormat,
    pages: Iterable[SourcePage],
    writer: FileWriter,
    *,
    scope_values: Mapping[str, Any],
    keep: Callable[[Any], bool] | None = None,
    on_page: Callable[[SourcePage, int], None] | None = None,
) -> ExportResult:
    """Encode every page into ``writer``; ``on_page(page, rows_so_far)`` after each page.

    CSV rows come from typed records through the job type's columns; NDJSON lines are the
    upstream bytes of each record, unchanged but for line breaks between JSON tokens (an
    upstream that pretty-prints would otherwise spread a record over several lines). ``keep``
    drops records (stream filters); for NDJSON it needs typed records aligned with the raw ones.
    """
    out = _HashingBuffer(writer)
    rows = 0
    if fmt is ReportFormat.CSV:
        out.add(csv_lines([spec.header]))
        row_of = spec.row_getter(scope_values)
        for page in pages:
            records = page.records or ()
            if keep is not None:
                records = [r for r in records if keep(r)]
            out.add(csv_lines(list(map(row_of, records))))
            rows += len(records)
            if on_page is not None:
                on_page(page, rows)
    else:
        for page in pages:
            raws = page.raw or ()
            if keep is not None:
                records = page.records or ()
                raws = [raw for raw, rec in zip(raws, records, strict=True) if keep(rec)]
            if raws:
                lines = b"\n".join(raws) + b"\n"
                if lines.count(b"\n") != len(raws) or b"\r" in lines:
                    lines = b"\n".join(map(_one_line, raws)) + b"\n"
                out.add(lines)
                rows += len(raws)
            if on_page is not None:
                on_page(page, rows)
    return out.result(rows)


# --- progress ---


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


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
            return _instant(last.get(_camel(spec.progress_attr)))
    return None


class ProgressEstimate:
    """Percent done, 0..99 while running (100 is only ever set with success), never falling.

    For a date-bounded export it is the share of the date range covered by the records seen so
    far; without both bounds it climbs towards 99 with every page, never reaching it.
    """

    def __init__(self, spec: JobTypeSpec, scope: Scope) -> None:
        self._spec = spec
        self._pages = 0
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
            span = (self._end - self._start).total_seconds()
            done = (self._end - pos) if self._spec.newest_first else (pos - self._start)
            pct = 100.0 * done.total_seconds() / span
        else:
            pct = 99.0 * (1.0 - 0.97**self._pages)
        self.pct = max(self.pct, min(99, max(0, int(pct))))
        return self.pct
