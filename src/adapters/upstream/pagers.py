"""Paging one upstream endpoint over one time window: the answers, in upstream order, with
what to keep of each.

A :class:`Bounds` is a window of an export's range (the whole range when the export is not cut
into windows): the query values of its lower and upper ends, and ``below``, the instant from
which records belong to the next newer window. Adjacent windows share that instant as their
bound, so a record on it comes back from both and is kept by the newer one only, whatever the
precision of its timestamp; see :mod:`adapters.upstream.windows`.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Generator, Sequence

import msgspec

from reportcore.errors import UpstreamBadResponse

from .wire import (
    FEED_KEYS,
    READING_KEYS,
    Call,
    Fetched,
    RecordKey,
    and_,
    decode,
    instant_text,
    instants_of,
    next_cursor,
    parse_instant,
)

_ONE_MS = dt.timedelta(milliseconds=1)
_LAST_TO = dt.datetime.max.replace(tzinfo=dt.UTC) - _ONE_MS  # the newest ``to`` there can be
_FIRST_TO = dt.datetime.min.replace(tzinfo=dt.UTC)  # and the oldest
# the longest cursor sent back: FarmIQ's are ids of tens of characters; one of 64 KiB would make
# httpx refuse the URL (InvalidURL, no transport error: the export failed as a bug)
MAX_CURSOR = 8 * 1024

Get = Callable[[str], bytes]
"""The body of a 2xx answer to the pager's endpoint with a query (retries inside)."""

Pager = Generator[Fetched, None, None]
"""A window's answers: a generator, so that a window thread told to stop can close it (and
its ``finally`` blocks run) before it is exhausted."""


class Bounds(msgspec.Struct, frozen=True, kw_only=True):
    """One window: its lower and upper query values (``None``: not sent) and ``below``."""

    lower: str | None = None
    upper: str | None = None
    below: dt.datetime | None = None


def single(get: Get, query: str) -> Pager:
    """KPI feeding and WeighVision: one answer holds the whole range."""
    yield Fetched(get(query))


def feed_intake(get: Get, call: Call, query: str, bounds: Bounds) -> Pager:
    """Page by cursor within ``start``/``end`` (both inclusive). Pages come newest first, so
    only the first ones of a window can hold records of the newer window: their instants are
    read until a page ends below the bound, the others' cursor alone."""
    if bounds.lower is not None:
        query = and_(query, "start", bounds.lower)
    if bounds.upper is not None:
        query = and_(query, "end", bounds.upper)
    below = bounds.below
    loop = CursorLoop()
    cursor: str | None = None
    while True:
        body = get(query if cursor is None else and_(query, "cursor", cursor))
        if below is not None:
            page = decode(call, FEED_KEYS, body)
            instants = instants_of(call, page.items)
            flags = tuple(t < below for t in instants)
            if instants and instants[-1] < below:
                below = None  # the rest of the window is older still
            following = page.nextCursor
            yield Fetched(body, None if all(flags) else flags, page.items, instants)
        else:
            following = next_cursor(call, body)
            yield Fetched(body)
        if following is None:
            return
        cursor = str(following)
        if len(cursor) > MAX_CURSOR:
            raise UpstreamBadResponse(
                f"{call.upstream.value} sent a cursor of {len(cursor)} characters for "
                f"{call.describe()}, more than the {MAX_CURSOR} one may be: paging on it "
                f"would ask a URL no server takes"
            )
        if loop.repeats(cursor):
            raise UpstreamBadResponse(
                f"{call.upstream.value} repeated the cursor {cursor!r} for "
                f"{call.describe()}; paging would never end"
            )


def telemetry(get: Get, call: Call, query: str, bounds: Bounds, limit: int) -> Pager:
    """Page backwards by time: the service has no cursor and answers newest first.

    After a full page the next request ends just after the oldest instant seen (``to`` =
    that instant + 1 ms, right whether the service reads ``to`` as inclusive or exclusive);
    readings newer than it, or at it and already emitted, are skipped. So no reading is lost
    or repeated however many share a timestamp, unless more than a whole page share one: that
    cannot be paged past, and fails rather than truncates. A window's own ``below`` is its
    first boundary, exclusive: readings at it are the newer window's.
    """
    floor: dt.datetime | None = None  # readings older than ``from`` are not the window's
    if bounds.lower is not None:
        query = and_(query, "from", bounds.lower)
        floor = parse_instant(bounds.lower)
    upper = bounds.upper
    boundary = bounds.below  # everything at or newer than it is emitted (or not ours)
    exclusive = boundary is not None
    emitted_at_boundary: set[str] = set()
    service = call.upstream.value
    while True:
        body = get(query if upper is None else and_(query, "to", upper))
        keys: Sequence[RecordKey] = decode(call, READING_KEYS, body)
        instants = instants_of(call, keys)
        keep = tuple(
            boundary is None
            or t < boundary
            or (t == boundary and not exclusive and k.id not in emitted_at_boundary)
            for k, t in zip(keys, instants, strict=True)
        )
        yield Fetched(body, None if all(keep) else keep, keys, instants)
        if len(keys) < limit:
            if keys:
                _no_cap(get, call, query, min(instants), floor, len(keys), limit)
            return
        oldest, newest = min(instants), max(instants)
        if floor is not None and oldest < floor:
            # a service that ignores ``from`` would page back in time forever: nothing older
            # is asked for (what is older than ``from`` the window drops and counts:
            # windows.py, reportsvc_upstream_records_dropped_total)
            return
        if oldest == newest:
            raise UpstreamBadResponse(
                f"{service} filled a whole page (limit {limit}) of {call.describe()} with "
                f"readings at one instant, {keys[0].occurred_at}: the rest of that instant "
                f"cannot be paged to, and the export would silently lose readings"
            )
        if boundary is not None and oldest >= boundary:
            raise UpstreamBadResponse(
                f"{service} did not page back in time for {call.describe()} (to={upper} "
                f"answered readings up to {keys[0].occurred_at}); paging would never end"
            )
        # oldest < boundary here: every reading at the old boundary is behind us
        emitted_at_boundary = {k.id for k, t in zip(keys, instants, strict=True) if t == oldest}
        boundary, exclusive = oldest, False
        if oldest > _LAST_TO:  # the next ``to`` would be past the last instant there is
            raise UpstreamBadResponse(
                f"{service} sent readings of {call.describe()} at "
                f"{keys[list(instants).index(oldest)].occurred_at}, past any range there is"
            )
        upper = instant_text(oldest + _ONE_MS)


def _no_cap(
    get: Get,
    call: Call,
    query: str,
    oldest: dt.datetime,
    floor: dt.datetime | None,
    answered: int,
    limit: int,
) -> None:
    """A short page ends a window only if nothing older is left: a service that caps
    ``limit`` below what was asked answers short pages with more behind them, and paging
    would end there, the rest of the window silently lost. One request for what is strictly
    older than the page's oldest reading (within ``from``) must come back empty."""
    if oldest < _FIRST_TO + _ONE_MS:  # nothing older can be asked for
        return
    body = get(and_(query, "to", instant_text(oldest - _ONE_MS)))
    keys: Sequence[RecordKey] = decode(call, READING_KEYS, body)
    older = [t for t in instants_of(call, keys) if t < oldest and (floor is None or t >= floor)]
    if older:
        raise UpstreamBadResponse(
            f"{call.upstream.value} answered {answered} readings of {call.describe()} when "
            f"asked for {limit}, yet holds older ones in the range: it caps limit below what "
            f"was asked, and the export would silently lose readings"
        )


class CursorLoop:
    """Finds a feed that pages in a circle, in memory that does not grow with the export.

    A cursor among the last ``recent`` is caught at once; a longer circle by Brent's cycle
    detection (compare with a mark moved at doubling distances), within about twice its
    length.
    """

    def __init__(self, recent: int = 4096) -> None:
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._limit = recent
        self._mark: str | None = None
        self._steps = 0
        self._power = 1

    def repeats(self, cursor: str) -> bool:
        if cursor in self._recent_set or cursor == self._mark:
            return True
        self._recent.append(cursor)
        self._recent_set.add(cursor)
        if len(self._recent) > self._limit:
            self._recent_set.discard(self._recent.popleft())
        self._steps += 1
        if self._steps == self._power:
            self._mark, self._steps, self._power = cursor, 0, self._power * 2
        return False
