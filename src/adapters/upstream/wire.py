"""The upstream services' pages as they come over the wire, and the values the parts of this
package hand each other about them (:class:`Call`, :class:`Fetched`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from operator import getitem
from typing import Any, Generic, TypeVar, cast
from urllib.parse import quote, urlencode

import msgspec

from reportcore.errors import UpstreamBadResponse
from reportcore.jobs import JobType
from reportcore.jobtypes import JOB_TYPES, Applied, Upstream
from reportcore.records import (
    FeedingKpiRecord,
    FeedIntakeRecord,
    TelemetryReading,
    WeightAggregate,
)

T = TypeVar("T")


class ItemsPage(msgspec.Struct, Generic[T]):
    """``{"items": [...]}``: KPI feeding and WeighVision answers."""

    items: list[T]


class CursorPage(msgspec.Struct, Generic[T]):
    """``{"items": [...], "nextCursor": id|null}``: feed intake answers."""

    items: list[T]
    nextCursor: str | int | None = None


class CursorOnly(msgspec.Struct):
    """What feed paging needs of a page when its records are decoded elsewhere."""

    nextCursor: str | int | None = None


class RecordKey(msgspec.Struct, rename="camel", frozen=True):
    """What paging by time needs of a record: its id and when it occurred."""

    id: str
    occurred_at: str


def keyed(record: type[msgspec.Struct]) -> type[RecordKey]:
    """The :class:`RecordKey` of ``record`` with its ``tenantId``, as required or optional as in
    ``record``: what a window reads of every page. The windows' one parse of a page is also its
    :func:`checked` one (what identifies a record, and its tenant), so that an NDJSON export
    parses a page twice (this, then its raw records), not three times."""
    fields = {f.name: f for f in msgspec.structs.fields(record)}
    for name in ("id", "occurred_at"):
        if name not in fields or not fields[name].required or fields[name].type is not str:
            raise TypeError(f"{record.__name__}.{name} is no required str: no windows' key")
    tenant = fields.get("tenant_id")
    if tenant is None:
        raise TypeError(f"{record.__name__} has no tenant_id to check: no windows' key")
    extra = ("tenant_id", tenant.type) if tenant.required else ("tenant_id", tenant.type, None)
    key = msgspec.defstruct(
        f"{record.__name__}Key", [extra], bases=(RecordKey,), rename="camel", frozen=True, gc=False
    )
    return cast("type[RecordKey]", key)


class Decoders(msgspec.Struct, frozen=True):
    """The decoders of one kind of answer, built once: records typed, records raw, and
    records checked (:func:`checked`: what a raw record must be); ``tenant``: the records
    carry ``tenantId``."""

    typed: msgspec.json.Decoder[Any]
    raw: msgspec.json.Decoder[Any]
    check: msgspec.json.Decoder[Any]
    tenant: bool
    # an NDJSON export with a filter applied while streaming: the check's fields, the filters'
    # and the progress's, typed; no other field of the record is read (docs/api.md)
    filtered: msgspec.json.Decoder[Any]


_IDENTIFYING = ("id", "record_date", "tenant_id")


def checked(record: type[msgspec.Struct], also: Sequence[str] = ()) -> type[msgspec.Struct]:
    """``record`` cut to what identifies it (``id``, ``recordDate``) and ``tenantId``, as
    required or optional as in ``record``: an NDJSON export decodes each record through it, so
    that what is not a record (not an object, no ``id``) is refused as a CSV export refuses
    it, and its tenant is checked, at about half the CPU of building the typed record (the
    other fields are skipped, not built; docs/performance.md). ``also``: more fields kept,
    as ``record`` declares them."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(record):
        if field.name in also:
            fields.append((field.name, field.type, field.default))
            continue
        if field.name not in _IDENTIFYING:
            continue
        if field.required:
            fields.append((field.name, field.type))
        elif field.name in ("tenant_id", "id"):  # checked, or keyed on, where sent
            fields.append((field.name, field.type, None))
    name = f"{record.__name__}{'Filtered' if also else 'Check'}"
    return msgspec.defstruct(name, fields, rename="camel", kw_only=True, frozen=True, gc=False)


def _decoders(
    page: Callable[[Any], Any], record: type[msgspec.Struct], job_type: JobType
) -> Decoders:
    tenant = any(f.name == "tenant_id" for f in msgspec.structs.fields(record))
    spec = JOB_TYPES[job_type]
    streamed = [f.record_attr for f in spec.filters.values() if f.applied is Applied.STREAM]
    return Decoders(
        typed=msgspec.json.Decoder(page(record)),
        raw=msgspec.json.Decoder(page(msgspec.Raw)),
        check=msgspec.json.Decoder(page(checked(record))),
        tenant=tenant,
        filtered=msgspec.json.Decoder(page(checked(record, (*streamed, spec.progress_attr)))),
    )


DECODERS: Mapping[JobType, Decoders] = {
    job_type: _decoders(partial(getitem, page), record, job_type)
    for job_type, page, record in (
        (JobType.FEED_INTAKE_EXPORT, CursorPage, FeedIntakeRecord),
        (JobType.KPI_FEEDING_EXPORT, ItemsPage, FeedingKpiRecord),
        (JobType.TELEMETRY_EXPORT, list, TelemetryReading),
        (JobType.WEIGHVISION_EXPORT, ItemsPage, WeightAggregate),
    )
}
READING_KEYS = msgspec.json.Decoder(list[keyed(TelemetryReading)])  # type: ignore[misc]
FEED_KEYS = msgspec.json.Decoder(CursorPage[keyed(FeedIntakeRecord)])  # type: ignore[misc]
FEED_CURSOR = msgspec.json.Decoder(CursorOnly)


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream endpoint of one job: who answers, where, and for which job."""

    upstream: Upstream
    base_url: str
    path: str
    trace_id: str

    def describe(self) -> str:
        return f"GET {self.path}"


class Fetched(msgspec.Struct, frozen=True):
    """One answer as a pager fetched it: its bytes, and which of its records to keep (``None``:
    all; a window drops the records that belong to its neighbour)."""

    body: bytes
    keep: tuple[bool, ...] | None = None
    # the page's keys and their instants when the pager read them (the window reads them
    # again otherwise); dropped before the page is spooled
    keys: Sequence[RecordKey] | None = None
    instants: Sequence[dt.datetime] | None = None


def decode(call: Call, decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """``body`` through ``decoder``; an unreadable page is the upstream's fault (msgspec raises
    ``UnicodeDecodeError``, not its ``DecodeError``, for invalid UTF-8 inside a string, and
    ``RecursionError`` for JSON nested ~1,000 deep, even in a field it skips).

    A string holding half of a UTF-16 surrogate pair (``"\\ud83d"``: a JavaScript service
    cutting a string mid-emoji, ``JSON.stringify`` writes that) is read with U+FFFD in its
    place: msgspec refuses it, and one such note failed the whole export."""
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        mended = _mend_surrogates(body) if isinstance(exc, msgspec.DecodeError) else None
        if mended is not None:
            try:
                return decoder.decode(mended)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                pass  # unreadable for another reason too: said as the first one
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise UpstreamBadResponse(
            f"{call.upstream.value} sent an unreadable page for {call.describe()}: {reason}"
        ) from exc


# a JSON string escape: \uXXXX (its four hex digits), or \ and any one character
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_REPLACEMENT = b"\\ufffd"  # as long as the escape it replaces: offsets stay


def _mend_surrogates(body: bytes) -> bytes | None:
    """``body`` with each lone surrogate escape (a high one not followed at once by a low one,
    a low one not preceded by a high one) written ``\\ufffd``; ``None`` if it has none."""
    if b"\\u" not in body:
        return None
    lone: list[tuple[int, int]] = []
    high: tuple[int, int] | None = None  # a high surrogate's escape waiting for its low one
    for m in _ESCAPE.finditer(body):
        code = int(m.group(1), 16) if m.group(1) is not None else -1
        if 0xDC00 <= code <= 0xDFFF and high is not None and high[1] == m.start():
            high = None  # a pair
            continue
        if high is not None:
            lone.append(high)
            high = None
        if 0xD800 <= code <= 0xDBFF:
            high = m.span()
        elif 0xDC00 <= code <= 0xDFFF:
            lone.append(m.span())
    if high is not None:
        lone.append(high)
    if not lone:
        return None
    mended = bytearray(body)
    for start, end in lone:
        mended[start:end] = _REPLACEMENT
    return bytes(mended)


_CURSOR_KEY = b'"nextCursor"'


def next_cursor(call: Call, body: bytes) -> str | int | None:
    """A feed page's ``nextCursor``, read from the end of the body when it is the page's last
    key (as the feed service writes it), so the records are not parsed for it: they are
    decoded where the file is written, which finds a page unreadable all the same.

    The tail from the key's last occurrence is read as an object of its own: that succeeds only
    if the key is the last one of the object that ends the body, the page itself (a key of a
    record's nested object would be followed by the closing of the record and the list; a
    quote inside a string is escaped). Any other layout is decoded whole.
    """
    at = body.rfind(_CURSOR_KEY)
    if at >= 0:
        try:
            return FEED_CURSOR.decode(b"{" + body[at:]).nextCursor
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass  # not the page's last key: read the whole page below
    page: CursorOnly = decode(call, FEED_CURSOR, body)
    return page.nextCursor


def kept(items: Sequence[T], keep: Sequence[bool]) -> list[T]:
    return [item for item, k in zip(items, keep, strict=True) if k]


# --- instants and queries ---


def instant_text(value: dt.datetime) -> str:
    """An instant as upstream reads it: UTC, milliseconds, ``Z``."""
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def instants_of(call: Call, keys: Sequence[RecordKey]) -> list[dt.datetime]:
    """Each record's ``occurredAt``; one that does not read as an instant is a bad page."""
    try:
        return [parse_instant(k.occurred_at) for k in keys]
    except ValueError as exc:
        raise UpstreamBadResponse(
            f"{call.upstream.value} sent a record with an unreadable occurredAt for "
            f"{call.describe()}: {exc}"
        ) from exc


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def query(params: Mapping[str, Any]) -> str:
    """``params`` as a percent-encoded query string (a list value as the key repeated)."""
    return urlencode(params, doseq=True, quote_via=quote)


def and_(q: str, key: str, value: str) -> str:
    """``q`` and one more parameter: a page's cursor or window, added to the parameters
    encoded once for the whole export rather than encoding them all again for each page."""
    pair = f"{key}={quote(value, safe='')}"
    return f"{q}&{pair}" if q else pair
