"""The ``Range`` header of a file download, and its ``Content-Disposition``."""

from __future__ import annotations

import re

_RANGE_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")  # \d takes any script's digits


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
    match = _RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    end = size - 1 if last == "" else min(int(last), size - 1)
    return start, end


def content_disposition(file_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", file_name)[:200] or "report"
    return f'attachment; filename="{safe}"'
