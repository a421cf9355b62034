"""The ``Range`` header of a file download, and its ``Content-Disposition``."""

from __future__ import annotations

import re

# the unit is case-insensitive (RFC 9110); [0-9], as \d takes any script's digits; spaces
# (and tabs) around "=" and "-", never inside a position ("1 0" is no 10)
_RANGE_RE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)", re.IGNORECASE)
_HUGE = 10**19  # a position past any file: what more digits than 19 come to


def _position(digits: str) -> int:
    """A position as written; longer than 19 digits, simply past any file (and never a
    4,300-digit string through ``int``, which Python refuses)."""
    return int(digits) if len(digits) <= 19 else _HUGE


class Unsatisfiable(Exception):
    """A ``Range`` that selects no byte of the file (416)."""


def byte_range(
    header: str | None, if_range: str | None, etag: str | None, size: int
) -> tuple[int, int] | None:
    """The inclusive ``(start, end)`` a ``Range`` header asks for, or ``None`` for the whole file.

    A single ``bytes=a-b`` / ``a-`` / ``-n`` range is honoured; anything else (several ranges,
    other units, ``b < a``, garbage) is ignored as RFC 9110 allows, and so is a range whose
    ``If-Range`` is not the current ETag. :class:`Unsatisfiable` when it selects no byte.
    """
    if header is None:
        return None
    if if_range is not None and (etag is None or if_range.strip() != etag):
        return None
    match = _RANGE_RE.fullmatch(header.strip(" \t"))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last n bytes
        n = _position(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = _position(first)
    if last != "" and _position(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    end = size - 1 if last == "" else min(_position(last), size - 1)  # past the end: clamped
    return start, end


def content_disposition(file_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", file_name)[:200] or "report"
    return f'attachment; filename="{safe}"'
