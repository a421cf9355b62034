"""How cells are spelled in a file: CSV lines, instants in a zone, NDJSON lines shaped by the
export options, gzip. The encoders of row formats are looked up in a :data:`RowFormats` table:
the core brings CSV, an adapter adds xlsx (a workbook needs a library the core does not take).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from .jobs import ReportFormat
from .jobtypes import CellKind, Column
from .ports import ByteSink, RowEncoder, SheetRequest

UTF8_BOM = b"\xef\xbb\xbf"
# above this many cached hours (11 years) an instant cache starts afresh: bounds its memory
MAX_CACHED_HOURS = 100_000


# Spreadsheet formulas (OWASP "CSV Injection"): Excel, LibreOffice and Google Sheets run a cell
# that starts with one of these as a formula (=HYPERLINK(...), +cmd|..., @SUM(...)); a tab or a
# CR first is read the same way by some of them. A number (-5, +1.5e3) is left as it is.
FORMULA_STARTS = frozenset("=+-@\t\r")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def guarded(cell: str) -> str:
    """``cell`` as a spreadsheet shows text: a cell that would start a formula gets a leading
    ``'`` (which the spreadsheets hide and read as "this is text"); any other cell as it is."""
    if cell and cell[0] in FORMULA_STARTS and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


@functools.cache
def _after_delimiter(d: str) -> re.Pattern[str]:
    """A delimiter followed by a character that starts a formula."""
    return re.compile(re.escape(d) + "[" + re.escape("".join(sorted(FORMULA_STARTS))) + "]")


def _may_start_formula(joined: str, d: str) -> bool:
    """Whether a cell of the column may start a formula: the first cell's first character, or
    one right after a delimiter of the joined column (a cell holding the delimiter itself can
    only make this say yes when no cell does, never the reverse). One regex scan of the column,
    not a substring search for each character: a column of UUIDs is full of ``-``."""
    if not joined:
        return False
    if joined[0] in FORMULA_STARTS:
        return True
    return _after_delimiter(d).search(joined) is not None


# an instant has a time after a T (or a space); its fraction of a second, however long
_HAS_TIME = re.compile(r"\d[Tt ]\d")
_FRACTION = re.compile(r"\d\d:\d\d:\d\d[.,](\d+)")

_NUMBERS = frozenset((int, float, Decimal))
_NONE = frozenset((type(None),))
_TEXT_OR_NONE = frozenset((str, type(None)))


def csv_lines(
    rows: Sequence[Sequence[Any]],
    delimiter: str = ",",
    newline: str = "\r\n",
    convert: Mapping[int, Callable[[Sequence[str]], list[str]]] | None = None,
    guard: frozenset[int] = frozenset(),
) -> bytes:
    """CSV lines with minimal quoting, ``None`` as an empty cell; with the defaults, byte for
    byte what ``csv.writer`` writes (RFC 4180, CRLF). All rows of a call have one width.

    csv.writer works value by value, which bounds a large export (docs/performance.md has the
    figures). Here ``str.join`` does most of the work, a column of the page at a time: a column
    of text joins as it is, and its joined text shows at once whether any cell needs quotes (a
    delimiter beyond the join's own, a quote, a line break); only a column that fails either
    is converted (``None`` as an empty cell, text, a str enum's too, as is, anything else
    through ``str()``, which agrees with ``repr`` on floats) or quoted cell by cell, in
    comprehensions (a function call a cell would cost as much as the conversion). ``convert``
    maps a column's index to a
    function of its cells (as text) giving the cells written (instants written in a zone).
    ``guard`` names the columns whose cells are written so that a spreadsheet shows them as
    text (:func:`guarded`, then quoted). A row of one empty cell is written ``""``, as
    csv.writer does: an empty line would be no record at all.
    """
    if not rows:
        return b""
    d = delimiter
    limit = len(rows) - 1
    columns: list[Sequence[str]] = []
    for index, values in enumerate(zip(*rows, strict=True)):
        try:
            cells: Sequence[str] = values
            joined = d.join(cells)
        except TypeError:  # a None or a number among them
            kinds = set(map(type, values))
            if kinds <= _NUMBERS:  # str() is their text: converted in C, not cell by cell
                cells = list(map(str, values))
            elif kinds == _NONE:  # an optional field nobody fills in
                cells = [""] * len(values)
            elif kinds <= _TEXT_OR_NONE:
                cells = [v or "" for v in values]
            else:
                cells = ["" if v is None else v if isinstance(v, str) else str(v) for v in values]
            joined = d.join(cells)
        if convert is not None and index in convert and len(joined) > limit:  # not all empty
            cells = convert[index](cells)
            joined = d.join(cells)
        if index in guard and _may_start_formula(joined, d):
            # a guarded cell is quoted too (OWASP's advice), the others as ever
            columns.append(
                [
                    '"' + g.replace('"', '""') + '"'
                    if (g := guarded(c)) is not c or d in c or '"' in c or "\r" in c or "\n" in c
                    else c
                    for c in cells
                ]
            )
            continue
        if joined.count(d) != limit or '"' in joined or "\r" in joined or "\n" in joined:
            cells = [
                '"' + c.replace('"', '""') + '"'
                if d in c or '"' in c or "\r" in c or "\n" in c
                else c
                for c in cells
            ]
        columns.append(cells)
    if not columns:  # rows of no cells: empty lines, as csv.writer writes them
        return (newline * len(rows)).encode("utf-8")
    if len(columns) == 1:
        lines = ['""' if c == "" else c for c in columns[0]]
    else:
        lines = list(map(d.join, zip(*columns, strict=True)))
    return (newline.join(lines) + newline).encode("utf-8")


def csv_line(values: Sequence[Any]) -> bytes:
    """One RFC 4180 CSV line (CRLF-terminated, minimal quoting, ``None`` as an empty cell)."""
    return csv_lines([tuple(values)])


# --- instants in a zone ---


_Hour = tuple[str | None, tuple[str, ...] | None, str, str]
"""One UTC hour in a zone whose offset holds for all of it: the local ``YYYY-MM-DDTHH`` (when
the offset is whole hours) or each minute's local ``YYYY-MM-DDTHH:MM``, the offset as written
(``+07:00``), and ``.000`` + the offset (for instants upstream sent without milliseconds).
A plain tuple: it is read for every instant cell, and indexing a tuple is the fastest."""


class LocalInstants:
    """Instants (ISO 8601 text, as upstream sends them) as wall-clock times of one zone.

    Upstream's spellings ``YYYY-MM-DDTHH:MM:SS.mmmZ`` and ``...:SSZ`` are rewritten by slicing text,
    without a datetime per cell: what each UTC hour is locally is worked out once and cached
    (unless the zone's offset changes within that hour: then, and for any other spelling, a
    datetime does it). Text that is no instant is left as it is.
    """

    def __init__(self, zone: dt.tzinfo) -> None:
        self._zone = zone
        self._hours: dict[str, _Hour | None] = {}

    def _aware(self, text: str) -> dt.datetime | None:
        if not _HAS_TIME.search(text):  # a date alone is no instant: left as sent
            return None
        try:
            t = dt.datetime.fromisoformat(text)
        except (ValueError, TypeError):
            return None
        t = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t
        try:
            return t.astimezone(self._zone)
        except (OverflowError, ValueError):  # at the very ends of the calendar
            return None

    def local(self, text: str) -> dt.datetime | None:
        """The instant as an aware datetime in the zone, or ``None`` if ``text`` is none."""
        return self._aware(text)

    def _hour(self, key: str) -> _Hour | None:
        if len(self._hours) >= MAX_CACHED_HOURS:
            self._hours.clear()
        found: _Hour | None = None
        start, end = self._aware(key + ":00:00.000Z"), self._aware(key + ":59:59.999Z")
        if start is not None and end is not None and start.utcoffset() == end.utcoffset():
            offset = start.isoformat()[19:]
            if len(offset) == 6 and offset.endswith(":00"):
                found = (start.isoformat()[:13], None, offset, ".000" + offset)
            elif len(offset) == 6:  # +05:45: the minutes move too
                minute = dt.timedelta(minutes=1)
                local = [(start + m * minute).isoformat()[:16] for m in range(60)]
                found = (None, tuple(local), offset, ".000" + offset)
        self._hours[key] = found
        return found

    def text(self, text: str) -> str:
        """``text`` written in the zone with its offset: ``2025-01-31T06:00:00.000+07:00``."""
        if _sliceable(text):
            key = text[:13]
            found = self._hours[key] if key in self._hours else self._hour(key)
            if found is not None:
                hour, minutes, offset, _ = found
                rest = text[13:23] if len(text) == 24 else text[13:19] + ".000"
                if hour is not None:
                    return hour + rest + offset
                if minutes is not None:
                    return minutes[int(text[14:16])] + rest[3:] + offset
        local = self._aware(text)
        if local is None:
            return text
        fine = _FRACTION.search(text)
        if fine is not None and len(fine.group(1)) > 6:  # nanoseconds: every digit kept
            whole = local.replace(microsecond=0).isoformat()
            return whole[:19] + "." + fine.group(1) + whole[19:]
        spec = "milliseconds" if local.microsecond % 1000 == 0 else "microseconds"
        return local.isoformat(timespec=spec)

    def column(self, cells: Sequence[str]) -> list[str]:
        """:meth:`text` of each non-empty cell (a page's column at a time: fewer calls)."""
        hours = self._hours
        out: list[str] = []
        append = out.append
        for c in cells:
            # the common case inline (a zone of whole-hour offsets, an hour already seen); the
            # checks are _sliceable's, the cheapest first
            found = hours.get(c[:13])
            if found is not None and found[0] is not None and c[13:19] in _MINUTE_SECOND:
                n = len(c)
                if n == 20 and c[19] == "Z":
                    append(found[0] + c[13:19] + found[3])
                    continue
                if n == 24 and c[19:] in _MILLISECONDS_Z:
                    append(found[0] + c[13:23] + found[2])
                    continue
            append(self.text(c) if c else c)
        return out


_MINUTE_SECOND = frozenset(f":{m:02d}:{s:02d}" for m in range(60) for s in range(60))
"""``:MM:SS`` of every minute and second of an hour (``:60:00`` is none): one set lookup checks
the separators and both numbers' digits and ranges."""
_MILLISECONDS_Z = frozenset(f".{ms:03d}Z" for ms in range(1000))
"""``.mmmZ`` for every millisecond: ASCII digits only (``str.isdigit`` takes ``١٢٣`` too, which
no ISO 8601 parser does)."""


def _sliceable(text: str) -> bool:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` or ``YYYY-MM-DDTHH:MM:SSZ``, upstream's two spellings, as
    far as slicing needs (the date and hour are checked once an hour, by parsing them; the minute,
    second and millisecond here, as ASCII digits in range)."""
    n = len(text)
    return (
        (text[19:] == "Z" if n == 20 else n == 24 and text[19:] in _MILLISECONDS_Z)
        and text[10] == "T"
        and text[13:19] in _MINUTE_SECOND
    )


# --- CSV ---


class CsvEncoder:
    """The CSV row format: header, then each page's rows, spelled by the job's csv options."""

    def __init__(self, request: SheetRequest, out: ByteSink) -> None:
        options = request.options.csv
        self._out = out
        self._delimiter = options.delimiter
        self._newline = options.line_ending.chars
        # every column: a number-kind or instant column is text from upstream too
        self._guard = (
            frozenset(range(len(request.columns))) if options.formula_guard else frozenset()
        )
        zone = request.options.zone
        self._convert: dict[int, Callable[[Sequence[str]], list[str]]] | None = None
        if zone is not None:
            instants = LocalInstants(zone)
            self._convert = {
                i: instants.column
                for i, c in enumerate(request.columns)
                if c.kind is CellKind.INSTANT
            }
        if options.bom:
            out.add(UTF8_BOM)
        out.add(csv_lines([tuple(c.name for c in request.columns)], *self._spelling()))

    def _spelling(self) -> tuple[str, str]:
        return self._delimiter, self._newline

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        self._out.add(csv_lines(rows, self._delimiter, self._newline, self._convert, self._guard))

    def close(self) -> None:
        """Everything is written as it comes."""

    def abort(self) -> None:
        """Nothing is held."""


RowEncoderFactory = Callable[[SheetRequest, ByteSink], RowEncoder]
RowFormats = Mapping[ReportFormat, RowEncoderFactory]
"""The encoders of formats whose records are written as rows of the job type's columns."""

CORE_ROW_FORMATS: RowFormats = {ReportFormat.CSV: CsvEncoder}


# --- NDJSON ---


def camel(name: str) -> str:
    """``created_by_user_id`` -> ``createdByUserId``: the upstream's spelling of a field."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


class JsonShaper:
    """NDJSON lines reshaped by the options: only the ``columns`` asked (keys in upstream
    spelling, in that order; a scope column from the job), instants in ``zone``."""

    def __init__(
        self,
        columns: Sequence[Column] | None,
        all_columns: Sequence[Column],
        scope_values: Mapping[str, Any],
        zone: dt.tzinfo | None,
    ) -> None:
        self._keys: list[tuple[str, str | None, Any]] | None = None
        if columns is not None:
            self._keys = [
                (
                    camel(c.attr or c.name),
                    c.attr,
                    None if c.attr else scope_values.get(c.scope or ""),
                )
                for c in columns
            ]
        self._instants = LocalInstants(zone) if zone is not None else None
        chosen = columns if columns is not None else all_columns
        self._instant_keys = [
            camel(c.attr) for c in chosen if c.attr and c.kind is CellKind.INSTANT
        ]

    def line(self, raw: bytes | memoryview | msgspec.Raw) -> bytes:
        """One record's line, without its line break. The values kept are the upstream's own
        bytes (a number is never re-spelled: ``1.10``, ``1e400``, 18 digits), but for the
        instants rewritten in the zone and line breaks between a nested value's tokens."""
        data = bytes(raw)
        try:
            record: Any = _RAW_FIELDS.decode(data)
        except msgspec.DecodeError:
            record = None
        if not isinstance(record, dict):  # not an object: nothing to select, left as sent
            return data.replace(b"\r", b" ").replace(b"\n", b" ")
        if self._keys is not None:
            record = {
                key: (record.get(key) if attr is not None else const)
                for key, attr, const in self._keys
            }
        if b"\n" in data or b"\r" in data:  # pretty-printed: each value's tokens on one line
            for key, value in record.items():
                if isinstance(value, msgspec.Raw):
                    record[key] = msgspec.Raw(msgspec.json.format(bytes(value), indent=0))
        if self._instants is not None:
            for key in self._instant_keys:
                value = record.get(key)
                if isinstance(value, msgspec.Raw) and bytes(value).startswith(b'"'):
                    record[key] = self._instants.text(msgspec.json.decode(value, type=str))
        return msgspec.json.encode(record)


_RAW_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


# --- compression ---


class GzipSink:
    """Compresses what it is given into ``out``: a gzip stream with a fixed header (mtime 0),
    so that the same export is the same bytes."""

    def __init__(self, out: ByteSink, level: int = 6) -> None:
        self._out = out
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)  # 16 + 15: gzip container

    def add(self, data: bytes) -> None:
        chunk = self._zlib.compress(data)
        if chunk:
            self._out.add(chunk)

    def finish(self) -> None:
        """Write what the compressor still holds and the gzip trailer."""
        self._out.add(self._zlib.flush())
