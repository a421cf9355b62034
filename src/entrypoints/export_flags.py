"""The flags of ``reportsvc export`` as a create request's body: the scope, the filters, and one
flag per export option of the API."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from reportcore.jobs import ReportFormat
from reportcore.jobtypes import JOB_TYPES

_DELIMITERS = {",": ",", ";": ";", "|": "|", "tab": "\t", "\\t": "\t", "\t": "\t"}


def _one_of(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def _scope_help(field: str, what: str) -> str:
    """``what``, and which job types require ``field``, as the core's job types say."""
    needing = [name for name, spec in JOB_TYPES.items() if field in spec.required_scope]
    return f"{what}; required by {', '.join(needing)}" if needing else f"{what}; optional"


def add_request_flags(export: argparse.ArgumentParser) -> None:
    """Add the job type, format, tenant, scope and filters to ``export``. The valid job types
    and formats are listed from the core's, not enforced by argparse: the core checks them as
    it checks an API request, in one line (``reportsvc: invalid export: ...``)."""
    export.add_argument(
        "--job-type", required=True, help=f"one of {_one_of(list(JOB_TYPES))} (docs/job-types.md)"
    )
    formats = [f"{f} (NDJSON)" if f is ReportFormat.JSON else str(f) for f in ReportFormat]
    export.add_argument(
        "--format", default=str(ReportFormat.CSV), help=f"{_one_of(formats)}; default %(default)s"
    )
    export.add_argument("--tenant", help="tenant id (default with --demo: the demo tenant)")
    export.add_argument("--farm-id", help=_scope_help("farm_id", "the farm's UUID"))
    export.add_argument("--barn-id", help=_scope_help("barn_id", "the barn's UUID"))
    export.add_argument("--batch-id", help=_scope_help("batch_id", "the batch's UUID"))
    export.add_argument(
        "--start-date", help=_scope_help("start_date", "first day, YYYY-MM-DD, inclusive")
    )
    export.add_argument(
        "--end-date", help=_scope_help("end_date", "last day, YYYY-MM-DD, inclusive")
    )
    export.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a filter of the job type (repeatable; a repeated key means any of the values)",
    )


def add_option_flags(export: argparse.ArgumentParser) -> None:
    """Add ``--compression``, ``--csv-*``, ``--columns`` and ``--timezone`` to ``export``."""
    export.add_argument("--compression", help="none or gzip (csv and json only); default none")
    export.add_argument(
        "--csv-delimiter", help="csv cell delimiter: ',' (default), ';', '|' or 'tab'"
    )
    export.add_argument(
        "--csv-bom",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start a csv file with a UTF-8 byte order mark (for Excel); default no",
    )
    export.add_argument("--csv-line-ending", help="crlf (default) or lf")
    export.add_argument(
        "--csv-formula-guard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write a csv cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first; "
        "not a number) as text, with a leading ' and quoted; default yes "
        "(--no-csv-formula-guard: every cell exactly as sent, for machine consumers)",
    )
    export.add_argument(
        "--columns", help="comma-separated subset of the job type's columns, in that order"
    )
    export.add_argument(
        "--timezone", help="IANA zone instants are written in, with their offset (Asia/Bangkok)"
    )


def option_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The create request's option fields named by the flags (absent ones left out)."""
    fields: dict[str, Any] = {}
    if args.compression is not None:
        fields["compression"] = args.compression
    csv: dict[str, Any] = {}
    if args.csv_delimiter is not None:
        csv["delimiter"] = _DELIMITERS.get(args.csv_delimiter, args.csv_delimiter)
    if args.csv_bom is not None:
        csv["bom"] = args.csv_bom
    if args.csv_line_ending is not None:
        csv["line_ending"] = args.csv_line_ending
    if args.csv_formula_guard is not None:
        csv["formula_guard"] = args.csv_formula_guard
    if csv:
        fields["csv"] = csv
    if args.columns is not None:
        fields["columns"] = [name.strip() for name in args.columns.split(",")]
    if args.timezone is not None:
        fields["timezone"] = args.timezone
    return fields


def filters(items: Sequence[str]) -> dict[str, Any]:
    """``--filter key=value`` flags as a filters object; a repeated key means any of its values.
    ``ValueError`` for an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--filter must be key=value, got {item!r}")
        if key in out:
            prior = out[key]
            out[key] = [*prior, value] if isinstance(prior, list) else [prior, value]
        else:
            out[key] = value
    return out


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The create request the flags spell, to be checked as the API checks one."""
    return {
        "job_type": args.job_type,
        "format": args.format,
        "farm_id": args.farm_id,
        "barn_id": args.barn_id,
        "batch_id": args.batch_id,
        "start_date": args.start_date,
        "end_date": args.end_date,
        "filters": filters(args.filter),
        **option_fields(args),
    }
