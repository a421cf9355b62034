"""Conditional requests on the file (RFC 9110 section 13): ``If-Match``, ``If-None-Match``.

The file's ``ETag`` is its sha256, a strong validator. ``If-Range`` is honoured where ranges
are (``api.byte_range``): only on a strong match. There is no ``Last-Modified``, so the date
forms (``If-Modified-Since``, ``If-Unmodified-Since``) are ignored, as RFC 9110 allows.
"""

from __future__ import annotations

import enum
import re

_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*')


class Outcome(enum.Enum):
    """What the preconditions decide: answer normally, 304 Not Modified, or 412."""

    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"
    FAILED = "failed"


def _tags(header: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque)`` of each entity-tag of a list, or ``None`` when it is malformed."""
    tags: list[tuple[bool, str]] = []
    for part in header.split(","):
        if not part.strip():
            continue  # RFC 9110 list syntax allows empty elements
        match = _TAG.fullmatch(part)
        if match is None:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
    return tags


def _opaque(etag: str | None) -> str | None:
    return etag[1:-1] if etag and len(etag) >= 2 else None


def evaluate(if_match: str | None, if_none_match: str | None, etag: str | None) -> Outcome:
    """The outcome of the preconditions of a ``GET`` or ``HEAD`` of a representation that
    exists, whose ``ETag`` is ``etag`` (``None`` when it has none), in RFC 9110's order."""
    current = _opaque(etag)
    if if_match is not None and if_match.strip() != "*":
        tags = _tags(if_match)
        # strong comparison: a weak tag never matches
        if current is None or not tags or not any(not weak and t == current for weak, t in tags):
            return Outcome.FAILED
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return Outcome.NOT_MODIFIED
        tags = _tags(if_none_match) or []
        # weak comparison: W/"x" and "x" are the same representation here
        if current is not None and any(t == current for _, t in tags):
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED
