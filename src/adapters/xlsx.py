"""The xlsx row format: one sheet with a header row and typed cells, in constant memory.

xlsxwriter's ``constant_memory`` mode writes each row to a temporary file as soon as the next
one starts, so memory stays flat whatever the row count; the workbook (a zip) is assembled into
a temporary file on :meth:`XlsxEncoder.close` and its bytes are then copied into the export's
sink, which hashes them and hands them to the file store. The file store itself never needs
to seek.

Cells: numbers as numbers, instants as date-times with a date format (the wall time of the
job's timezone, UTC by default: Excel has no offsets), dates as dates, everything else as text
(never as a formula or a link). A sheet holds at most 1,048,576 rows, the header included;
rows past that continue on a next sheet (``report (2)``, ...) that starts with the header too.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import xlsxwriter
from xlsxwriter.exceptions import FileCreateError
from xlsxwriter.format import Format
from xlsxwriter.utility import _preserve_whitespace
from xlsxwriter.worksheet import Worksheet

from adapters import tempfiles
from reportcore.encoding import CORE_ROW_FORMATS, LocalInstants, RowFormats
from reportcore.jobs import ReportFormat
from reportcore.jobtypes import CellKind
from reportcore.ports import ByteSink, SheetRequest

EXCEL_MAX_ROWS = 1_048_576  # rows of one sheet, header included
EXCEL_MAX_TEXT = 32_767  # characters of one cell
SHEET_NAME = "report"
INSTANT_FORMAT = "yyyy-mm-dd hh:mm:ss.000"
DATE_FORMAT = "yyyy-mm-dd"
COPY_CHUNK = 1 << 20
# a decimal as upstream writes it; a number cell only with at most 15 significant digits,
# what Excel keeps (it shows 9007199254740991 as ...990): longer ones stay text, no digit lost
_DECIMAL = re.compile(r"-?([0-9]{1,40})(?:\.([0-9]{1,40}))?(?:[eE][-+]?[0-9]{1,3})?")
_EXCEL_DIGITS = 15
_EXCEL_YEARS = range(1900, 10000)

Put = Callable[[Worksheet, int, int, Any], object]


# A workbook's folder is export-xlsx-<host>-<pid>-<random> in TMPDIR: a worker killed while
# building one (SIGKILL, the OOM killer) runs no abort, and its folder (~70 MB at 150,000
# rows) stays; the next worker on the host removes those whose process is gone.
_FOLDER = "export-xlsx-"


def _host_prefix() -> str:
    """What every workbook folder of this host starts with."""
    return f"{_FOLDER}{socket.gethostname()}-"


def _folder_prefix() -> str:
    return f"{_host_prefix()}{os.getpid()}-"


def remove_abandoned(tmp_dir: str | None = None) -> list[str]:
    """Remove the workbook folders in ``tmp_dir`` (``TMPDIR``) that processes of this host
    left when they died; return their names. A folder of a live process is kept (a pid
    reused since is a leak, not a loss), as is every other host's (a shared ``TMPDIR``)."""
    folder = tmp_dir or tempfile.gettempdir()
    ours = _host_prefix()
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid, dash, _ = name.removeprefix(ours).partition("-")
        if not name.startswith(ours) or not dash or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process's own workbooks (another export under way)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        return True
    return True


class _TextSheet(Worksheet):
    """A sheet whose text cells are only ever text.

    In ``constant_memory`` mode xlsxwriter writes a text that starts with ``<r>`` and ends with
    ``</r>`` into the sheet's XML as it is, taking it for rich text: from an upstream's free
    text that is a workbook no reader opens (``<r>A & B</r>``) or a cell of its choosing (a
    formula, a link). This encoder writes no rich text, so every text goes the escaped way.
    """

    def _xml_rich_inline_string(self, string: str, attributes: Any = ()) -> None:
        self._xml_inline_string(string, _preserve_whitespace(string), list(attributes))


class XlsxEncoder:
    """A :class:`reportcore.ports.RowEncoder` writing one workbook (see the module doc)."""

    def __init__(
        self,
        request: SheetRequest,
        out: ByteSink,
        *,
        max_rows: int = EXCEL_MAX_ROWS,
        tmp_dir: str | None = None,
    ) -> None:
        if max_rows < 2:
            raise ValueError("a sheet must hold the header and at least one row")
        self._out = out
        self._columns = request.columns
        self._max_rows = max_rows
        # one folder for the workbook and xlsxwriter's per-sheet row files: abort removes it all
        try:
            self._dir = tempfile.mkdtemp(prefix=_folder_prefix(), dir=tmp_dir)
        except OSError as exc:
            raise tempfiles.failure(exc) from exc
        self._path = os.path.join(self._dir, "report.xlsx")
        self._book: xlsxwriter.Workbook | None = xlsxwriter.Workbook(
            self._path,
            {
                "constant_memory": True,
                "tmpdir": self._dir,
                "use_zip64": True,  # a sheet of a million wide rows passes 4 GiB unzipped
                "strings_to_formulas": False,  # a cell "=cmd()" from upstream stays text
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        self._instant_format = self._book.add_format({"num_format": INSTANT_FORMAT})
        self._date_format = self._book.add_format({"num_format": DATE_FORMAT})
        self._instants = LocalInstants(request.options.zone or dt.UTC)
        self._puts = [self._put_for(c.kind) for c in self._columns]
        self._sheets = 0
        try:  # a sheet's row file, in the same folder
            self._sheet = self._new_sheet()
        except OSError as exc:
            self.abort()
            raise tempfiles.failure(exc) from exc
        self._row = 1

    def _new_sheet(self) -> Worksheet:
        assert self._book is not None
        self._sheets += 1
        name = SHEET_NAME if self._sheets == 1 else f"{SHEET_NAME} ({self._sheets})"
        sheet = self._book.add_worksheet(name, worksheet_class=_TextSheet)
        for index, column in enumerate(self._columns):
            if column.kind is CellKind.INSTANT:
                sheet.set_column(index, index, 23)
            elif column.kind is CellKind.DATE:
                sheet.set_column(index, index, 11)
        for index, column in enumerate(self._columns):
            sheet.write_string(0, index, column.name)
        return sheet

    def _put_for(self, kind: CellKind) -> Put:
        if kind is CellKind.NUMBER:
            return _put_number
        if kind is CellKind.INSTANT:
            return self._put_instant
        if kind is CellKind.DATE:
            return self._put_date
        return _put_text

    def _put_instant(self, sheet: Worksheet, row: int, col: int, value: Any) -> object:
        local = self._instants.local(value) if isinstance(value, str) else None
        if local is None or local.year not in _EXCEL_YEARS:
            return _put_text(sheet, row, col, value)
        return _put_when(sheet, row, col, local.replace(tzinfo=None), self._instant_format)

    def _put_date(self, sheet: Worksheet, row: int, col: int, value: Any) -> object:
        try:
            day = dt.date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            day = None
        if day is None or day.year not in _EXCEL_YEARS:
            return _put_text(sheet, row, col, value)
        # as the midnight starting it: the same serial number as the date, and the type
        # xlsxwriter's annotations take
        midnight = dt.datetime.combine(day, dt.time())
        return _put_when(sheet, row, col, midnight, self._date_format)

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Write ``rows`` below the ones before, on a next sheet when this one is full (into
        xlsxwriter's row files: a full ``TMPDIR`` is the worker's temporary space failing)."""
        try:
            self._add(rows)
        except OSError as exc:
            raise tempfiles.failure(exc) from exc

    def _add(self, rows: Sequence[Sequence[Any]]) -> None:
        puts = self._puts
        for values in rows:
            if self._row >= self._max_rows:
                self._sheet = self._new_sheet()
                self._row = 1
            sheet, row = self._sheet, self._row
            for col, value in enumerate(values):
                if value is not None:
                    puts[col](sheet, row, col, value)
            self._row += 1

    def close(self) -> None:
        """Assemble the workbook and copy its bytes into the sink."""
        if self._book is None:
            return
        try:  # the workbook is assembled in the worker's temporary space
            self._book.close()
            spooled = open(self._path, "rb")  # noqa: SIM115
        except (OSError, FileCreateError) as exc:
            raise tempfiles.failure(exc) from exc  # the book kept: abort closes its row files
        self._book = None
        with spooled:
            while chunk := spooled.read(COPY_CHUNK):  # a failing sink is the export file's
                self._out.add(chunk)

    def abort(self) -> None:
        """Drop the workbook and its temporary files; safe to call after :meth:`close` or twice."""
        book, self._book = self._book, None
        if book is not None:
            # an unfinished workbook holds each sheet's row file open (constant_memory mode)
            for sheet in book.worksheets():
                handle = getattr(sheet, "row_data_fh", None)
                if handle is not None:
                    handle.close()
        shutil.rmtree(self._dir, ignore_errors=True)


_FIRST_DAY = dt.datetime(1900, 1, 1)  # Excel's serial 1


def _put_when(sheet: Worksheet, row: int, col: int, when: dt.datetime, fmt: Format) -> object:
    """A date-time cell. xlsxwriter takes any time on 1900-01-01 for a time of day alone
    (serial 0, which Excel shows as 1900-01-00): that day's serial is written here."""
    if when.date() == _FIRST_DAY.date():
        return sheet.write_number(row, col, 1 + (when - _FIRST_DAY) / dt.timedelta(days=1), fmt)
    return sheet.write_datetime(row, col, when, fmt)


def _put_text(sheet: Worksheet, row: int, col: int, value: Any) -> object:
    text = value if isinstance(value, str) else str(value)
    return sheet.write_string(row, col, text[:EXCEL_MAX_TEXT])


def _put_number(sheet: Worksheet, row: int, col: int, value: Any) -> object:
    number: float | int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value if _fits_excel(str(value)) else None
    elif isinstance(value, float):  # its shortest spelling: 0.30000000000000004 has 17 digits
        number = value if _fits_excel(repr(value)) else None
    elif isinstance(value, str) and _fits_excel(value):
        number = float(value)
    if number is None:
        return _put_text(sheet, row, col, value)
    return sheet.write_number(row, col, number)


def _fits_excel(text: str) -> bool:
    """Whether the decimal ``text`` is a number Excel holds as written: at most 15 significant
    digits, and a float that neither overflows nor vanishes (1e400, 1e-400 stay text), nor is
    below Excel's smallest (a subnormal: 1e-310 was written 9.999999999999969E-311)."""
    found = _DECIMAL.fullmatch(text)
    if found is None:
        return False
    digits = (found.group(1) + (found.group(2) or "")).strip("0")
    if len(digits) > _EXCEL_DIGITS:
        return False
    number = float(text)
    if number == 0:
        return not digits
    return math.isfinite(number) and abs(number) >= sys.float_info.min


def row_formats() -> RowFormats:
    """The core's row formats and xlsx: what a worker of this service writes."""
    return {**CORE_ROW_FORMATS, ReportFormat.XLSX: XlsxEncoder}
