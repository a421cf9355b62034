"""Export options: what a client may ask of an export's file besides its records.

Every option is optional; a job without any writes exactly the bytes it always did. The values
here are checked (:func:`validate_options`), stored on the job, and read back by the worker from
the job row, never from the queue message (old messages carry none).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from .errors import ValidationError
from .jobs import Compression, CsvOptions, Job, LineEnding, ReportFormat
from .jobtypes import JOB_TYPES, Column, JobTypeSpec

__all__ = [
    "PLAIN_CSV",
    "Compression",
    "CsvOptions",
    "ExportOptions",
    "LineEnding",
    "check_applies",
    "export_options",
    "options_of",
    "validate_columns",
    "validate_timezone",
    "zone_of",
]

MAX_TIMEZONE = 64
PLAIN_CSV = CsvOptions()


class ExportOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Every option of one export, defaults filled in: what the encoders read.

    ``columns`` are the job type's columns in the order asked (all of them by default);
    ``timezone`` is ``None`` when none was asked: instants are then written as upstream sent
    them, byte for byte as before the option existed.
    """

    compression: Compression = Compression.NONE
    csv: CsvOptions = PLAIN_CSV
    columns: tuple[Column, ...] | None = None
    timezone: str | None = None

    def columns_of(self, spec: JobTypeSpec) -> tuple[Column, ...]:
        """The columns written, in order."""
        return self.columns if self.columns is not None else spec.columns

    @property
    def zone(self) -> dt.tzinfo | None:
        """The zone instants are written in, or ``None`` (as upstream sent them)."""
        return None if self.timezone is None else zone_of(self.timezone)


def zone_of(name: str) -> dt.tzinfo:
    """The IANA zone ``name``; ``UTC`` is the fixed UTC zone. Raises ``KeyError`` (zoneinfo's
    ``ZoneInfoNotFoundError``), ``ValueError`` or ``OSError`` for a name that is no zone here."""
    if name == "UTC":
        return dt.UTC
    # imported when first needed: zoneinfo loads sysconfig's generated module, which
    # `import reportcore` must not (tests/unit/test_purity.py)
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


# Files of the zone database that are no IANA zone: "localtime" is each machine's own zone
# (a worker elsewhere would write another), "Factory" and "posixrules" are the database's
# own, "posix/" and "right/" copies of it (right/ counting leap seconds) where a system has them
_NOT_IANA = frozenset({"localtime", "Factory", "posixrules"})
_NOT_IANA_FOLDERS = ("posix/", "right/")


def validate_timezone(name: str | None) -> str | None:
    """An IANA zone name the machine knows, or a 400 naming ``timezone``."""
    if name is None:
        return None
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_TIMEZONE:
        raise ValidationError("timezone must be an IANA time zone name", field="timezone")
    try:
        if name in _NOT_IANA or name.startswith(_NOT_IANA_FOLDERS):
            raise KeyError(name)
        zone_of(name)
    except (KeyError, ValueError, OSError):  # unknown, malformed ("../x"), a folder ("America")
        shown = name if name.isprintable() else repr(name)
        raise ValidationError(
            f"unknown time zone {shown!r}; use an IANA name such as Asia/Bangkok",
            field="timezone",
        ) from None
    return name


def validate_columns(spec: JobTypeSpec, columns: Sequence[str] | None) -> list[str] | None:
    """A subset of ``spec``'s columns in the order given, or a 400 naming the bad one."""
    if columns is None:
        return None
    known = {c.name for c in spec.columns}
    if not isinstance(columns, list) or not columns:
        raise ValidationError("columns must be a non-empty list of column names", field="columns")
    seen: set[str] = set()
    for index, name in enumerate(columns):
        field = f"columns[{index}]"
        if not isinstance(name, str) or name not in known:
            shown = name[:100] if isinstance(name, str) else name
            raise ValidationError(
                f"unknown column {shown!r} for {spec.job_type}; allowed: {', '.join(spec.header)}",
                field=field,
            )
        if name in seen:
            raise ValidationError(f"column {name!r} is named twice", field=field)
        seen.add(name)
    return list(columns)


def check_applies(
    fmt: ReportFormat, compression: Compression | None, csv: CsvOptions | None
) -> None:
    """400 for an option the format has no use for (so that nobody believes it applied)."""
    if csv is not None and fmt is not ReportFormat.CSV:
        raise ValidationError("csv options apply to format csv only", field="csv")
    if compression is Compression.GZIP and fmt is ReportFormat.XLSX:
        raise ValidationError(
            "compression applies to csv and json only (an xlsx file is compressed already)",
            field="compression",
        )


def export_options(
    spec: JobTypeSpec,
    *,
    compression: Compression | None,
    csv: CsvOptions | None,
    columns: Sequence[str] | None,
    timezone: str | None,
) -> ExportOptions:
    """The options of a job as the encoders read them, from what is stored on it."""
    by_name = {c.name: c for c in spec.columns}
    return ExportOptions(
        compression=compression or Compression.NONE,
        csv=csv or PLAIN_CSV,
        columns=tuple(by_name[n] for n in columns) if columns is not None else None,
        timezone=timezone,
    )


def options_of(job: Job, spec: JobTypeSpec | None = None) -> ExportOptions:
    """The export options stored on ``job`` (``spec``: its job type's, by default the service's)."""
    return export_options(
        spec if spec is not None else JOB_TYPES[job.job_type],
        compression=job.compression,
        csv=job.csv,
        columns=job.columns,
        timezone=job.timezone,
    )
