"""The export options as flags of ``reportsvc export``: one flag per option of the API."""

from __future__ import annotations

import argparse
from typing import Any

_DELIMITERS = {",": ",", ";": ";", "|": "|", "tab": "\t", "\\t": "\t", "\t": "\t"}


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
    if csv:
        fields["csv"] = csv
    if args.columns is not None:
        fields["columns"] = [name.strip() for name in args.columns.split(",")]
    if args.timezone is not None:
        fields["timezone"] = args.timezone
    return fields
