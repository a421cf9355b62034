"""A demo upstream: the four FarmIQ upstream APIs of the contract, served over real HTTP with
generated sample data. ``reportsvc dev`` and ``reportsvc export --demo`` read from it, and the
integration and fault tests drive it.

The data is a pure function of the seed and the query parameters: any tenant, farm, barn or
batch asked for has records, and asking again (whole, or page by page, or through narrower
windows) gives the same records. Paging follows the contract: feed intake newest first by
cursor (``limit`` at most 100), telemetry newest first in ``from``/``to`` windows (``limit`` at
most 10000, several readings per timestamp), WeighVision oldest first, KPIs one item a day.
Without dates the last 7 days are served.

Record ids are UUIDs whose last field holds the record's day and index, so that a feed cursor
(the last record's id) is a position: any page can be served without state.

Tests inject faults through :attr:`DemoUpstream.faults` and read what the server saw in
:attr:`DemoUpstream.requests`. Run on its own: ``python -m adapters.demo_upstream --port 8081``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import http.server
import math
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from reportcore.ports import Clock

from .clock import SystemClock

DEMO_TENANT = "farmiq-demo"
DEMO_FARM_ID = "5b0f8a3e-4c1d-4e59-9a6b-2f1c7d3e9a01"
DEMO_BARN_ID = "8d2e6f14-93a7-4b0c-8e5d-6a4f2b1c7e02"
DEMO_BATCH_ID = "c3a9e7d2-1f64-4b8e-9d0a-5e2b8c6f4a03"
DEMO_START = "2026-01-05"
DEMO_END = "2026-01-18"
"""A scope of the demo data for examples: the demo tenant's farm, barn and batch, two weeks."""

FEED_PAGE_MAX = 100
TELEMETRY_LIMIT_MAX = 10_000
DEFAULT_DAYS = 7
MAX_RANGE_DAYS = 3_660  # ten years: beyond that a request is refused, not walked

_DAY_MS = 86_400_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_ONE_US = dt.timedelta(microseconds=1)

_SOURCES = ("MANUAL", "API_IMPORT", "SILO_AUTO")
_NOTES = (
    "Evening feed, silo 2",
    'Topped up after "B" line blockage',
    "Spilled about 2 kg\nrecounted by hand",
    "Ration changed per vet advice; check FCR",
    "Température élevée — ration réduite",
    "ให้อาหารเสริม",
)
_Metric = tuple[str, str, float, float, int]  # name, unit, base value, spread, decimals
_METRICS: tuple[_Metric, ...] = (
    ("temperature", "C", 24.0, 6.0, 2),
    ("humidity", "%", 62.0, 18.0, 1),
    ("ammonia", "ppm", 8.0, 10.0, 1),
    ("co2", "ppm", 1400.0, 900.0, 0),
)
_KINDS = {"feed": 1, "telemetry": 2, "weighvision": 3, "kpi": 4}


class BadRequest(Exception):
    """A request the real service would answer with 400."""


# --- deterministic draws and ids ---


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()


def _scope_hash(*parts: object) -> int:
    return int.from_bytes(_digest(*parts)[:8], "big")


def _uuid(*parts: object) -> str:
    """A stable v4-shaped UUID of ``parts``."""
    b = bytearray(_digest("uuid", *parts))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _position_id(scope: int, kind: str, day: int, index: int) -> str:
    """A v4-shaped UUID: 64 bits of the scope's hash and kind, then the day and the index."""
    node = (day << 28) | index
    head = f"{scope:016x}"
    variant = 0x80 | _KINDS[kind]
    return f"{head[:8]}-{head[8:12]}-4{head[12:15]}-{variant:02x}{head[14:16]}-{node:012x}"


def _parse_position(text: str, scope: int, kind: str) -> tuple[int, int] | None:
    """The (day, index) of an id made by :func:`_position_id` for this scope, else ``None``."""
    try:
        node = int(text[-12:], 16)
    except ValueError:
        return None
    day, index = node >> 28, node & ((1 << 28) - 1)
    if len(text) != 36 or _position_id(scope, kind, day, index) != text.lower():
        return None
    return day, index


def _fraction(draw: bytes, at: int) -> float:
    """A number in [0, 1) from two bytes of ``draw``."""
    return int.from_bytes(draw[at : at + 2], "big") / 65536.0


def _iso(ms: int) -> str:
    t = _EPOCH + dt.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _day_ms(day: int) -> int:
    return (day - _EPOCH_ORDINAL) * _DAY_MS


def _us(t: dt.datetime) -> int:
    return (t - _EPOCH) // _ONE_US


# --- query parameters ---


class _Query:
    """Query parameters with the real services' checks (a failed check is a 400)."""

    def __init__(self, raw: Mapping[str, list[str]]) -> None:
        self._raw = raw

    def get(self, name: str) -> str | None:
        values = self._raw.get(name)
        return values[-1] if values else None

    def required(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise BadRequest(f"{name} is required")
        return value

    def uuid(self, name: str) -> str | None:
        value = self.get(name)
        if value is None or value == "":
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise BadRequest(f"{name} must be a UUID") from None

    def instant(self, name: str) -> dt.datetime | None:
        value = self.get(name)
        if not value:
            return None
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"{name} must be an ISO 8601 instant") from None
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)

    def date(self, name: str) -> dt.date:
        value = self.required(name)
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            raise BadRequest(f"{name} must be a date YYYY-MM-DD") from None

    def limit(self, default: int, cap: int) -> int:
        value = self.get("limit")
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            raise BadRequest("limit must be a positive integer")
        return min(int(value), cap)


def _window(
    start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The asked window; the last 7 days (up to ``now``) for what is not given."""
    hi = end or now
    lo = start or hi - dt.timedelta(days=DEFAULT_DAYS)
    if (hi - lo).days > MAX_RANGE_DAYS:
        raise BadRequest(f"the time range must not exceed {MAX_RANGE_DAYS} days")
    return lo, hi


def _date_range(q: _Query, start: str, end: str) -> list[dt.date]:
    first, last = q.date(start), q.date(end)
    if (last - first).days > MAX_RANGE_DAYS:
        raise BadRequest(f"the date range must not exceed {MAX_RANGE_DAYS} days")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


# --- the farm a scope describes ---


class _Farm:
    """The tenant's farm, barns and batches a query is about (given ids, or derived ones)."""

    def __init__(self, seed: int, q: _Query) -> None:
        self.seed = seed
        self.tenant = q.required("tenantId")
        self.farm_id = q.uuid("farmId")
        self.barn_id = q.uuid("barnId")
        self.batch_id = q.uuid("batchId")
        self.farm = self.farm_id or (
            DEMO_FARM_ID if self.tenant == DEMO_TENANT else _uuid(seed, self.tenant, "farm")
        )
        if self.barn_id is not None:
            self.barns: tuple[str, ...] = (self.barn_id,)
        elif self.farm == DEMO_FARM_ID:
            self.barns = (DEMO_BARN_ID, _uuid(seed, self.farm, "barn", 2))
        else:
            self.barns = (_uuid(seed, self.farm, "barn", 1), _uuid(seed, self.farm, "barn", 2))

    def batch_of(self, barn: str) -> str:
        if self.batch_id is not None:
            return self.batch_id
        return DEMO_BATCH_ID if barn == DEMO_BARN_ID else _uuid(self.seed, barn, "batch")

    def key(self, kind: str) -> int:
        """The hash of everything that decides this query's records (ids are made from it)."""
        return _scope_hash(self.seed, kind, self.tenant, self.farm_id, self.barn_id, self.batch_id)


def _walk_desc(
    lo_us: int,
    hi_us: int,
    per_day: int,
    offset_ms: Callable[[int, int], int],
    first_index: Callable[[int], int],
    start: tuple[int, int] | None = None,
) -> Iterator[tuple[int, int, int]]:
    """(day, index, epoch ms) of the records in [lo_us, hi_us], newest first.

    ``offset_ms(day, index)`` places a record in its day (non-decreasing in the index);
    ``first_index(ms_in_day)`` is an index at or after the last record at that time of day.
    ``start`` resumes just before a position.
    """
    hi_ms = hi_us // 1000
    if start is not None:
        day, index = start
        index -= 1
    else:
        day = hi_ms // _DAY_MS + _EPOCH_ORDINAL
        index = min(per_day - 1, first_index(hi_ms - _day_ms(day)))
    while _day_ms(day + 1) * 1000 > lo_us:
        base = _day_ms(day)
        while index >= 0:
            ms = base + offset_ms(day, index)
            if ms * 1000 > hi_us:
                index -= 1
                continue
            if ms * 1000 < lo_us:
                return
            yield day, index, ms
            index -= 1
        day -= 1
        index = per_day - 1


# --- faults ---


class _Fault(msgspec.Struct, kw_only=True):
    kind: str  # status | hang | malformed | drop
    remaining: int
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    path: str | None = None
    after: int = 0  # matching requests to let through first


class Faults:
    """Faults for the next requests, taken in the order they were added.

    Each applies to ``times`` requests (of ``path`` only, when given) once ``after`` matching
    requests went through unharmed; a request meets at most one fault, the first added that
    matches it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Fault] = []

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._queue.append(fault)

    def status(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: float | str | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer ``status`` (with ``Retry-After`` when given: seconds or an HTTP date)."""
        header = None if retry_after is None else str(retry_after)
        self._add(
            _Fault(
                kind="status",
                remaining=times,
                status=status,
                retry_after=header,
                path=path,
                after=after,
            )
        )

    def hang(
        self, seconds: float, times: int = 1, *, path: str | None = None, after: int = 0
    ) -> None:
        """Wait ``seconds`` before answering (a client with a shorter timeout gives up)."""
        self._add(_Fault(kind="hang", remaining=times, seconds=seconds, path=path, after=after))

    def malformed(self, times: int = 1, *, path: str | None = None, after: int = 0) -> None:
        """Answer 200 with a body that is not JSON."""
        self._add(_Fault(kind="malformed", remaining=times, path=path, after=after))

    def drop(self, times: int = 1, *, path: str | None = None, after: int = 0) -> None:
        """Close the connection without answering."""
        self._add(_Fault(kind="drop", remaining=times, path=path, after=after))

    def clear(self) -> None:
        """Forget every fault not yet taken."""
        with self._lock:
            self._queue.clear()

    @property
    def pending(self) -> int:
        """How many faulty answers are still to come."""
        with self._lock:
            return sum(f.remaining for f in self._queue)

    def take(self, path: str) -> _Fault | None:
        """The fault this request gets, if any."""
        with self._lock:
            for fault in self._queue:
                if fault.remaining > 0 and (fault.path is None or fault.path == path):
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._queue.remove(fault)
                    return fault
        return None


class SeenRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request as the demo upstream received it."""

    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case

    def param(self, name: str) -> str | None:
        """The (last) value of a query parameter."""
        values = self.params.get(name)
        return values[-1] if values else None


# --- the data ---


class DemoData:
    """The generated records; every method answers one endpoint's query."""

    def __init__(
        self,
        *,
        seed: int = 0,
        per_day: int = 24,
        readings_per_day: int = 288,
        per_timestamp: int = 3,
        inclusive_to: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if per_day < 1 or readings_per_day < 1 or per_timestamp < 1:
            raise ValueError("per_day, readings_per_day and per_timestamp must be at least 1")
        self.seed = seed
        self.per_day = per_day
        self.readings_per_day = readings_per_day
        self.per_timestamp = per_timestamp
        self.inclusive_to = inclusive_to
        self.clock: Clock = clock or SystemClock()  # "now" of a request that names no dates

    # feed intake

    def _feed_spacing(self) -> int:
        return max(1, _DAY_MS // self.per_day)

    def _feed_offset(self, key: int, day: int, index: int) -> int:
        spacing = self._feed_spacing()
        draw = _digest(key, "at", day, index)
        jitter = int(_fraction(draw, 0) * spacing)
        if spacing >= 1000:
            jitter -= jitter % 1000  # whole seconds, as people and silos record them
        return index * spacing + jitter

    def feed_intake(self, q: _Query) -> dict[str, Any]:
        """``GET /api/v1/feed/intake-records``: newest first, by cursor."""
        farm = _Farm(self.seed, q)
        lo, hi = _window(q.instant("start"), q.instant("end"), self.clock.now())
        limit = q.limit(50, FEED_PAGE_MAX)
        key = farm.key("feed")
        cursor = q.get("cursor")
        start = None
        if cursor:
            start = _parse_position(cursor, key, "feed")
            if start is None:
                raise BadRequest("cursor is not valid for this query")
        spacing = self._feed_spacing()
        walk = _walk_desc(
            _us(lo),
            _us(hi),
            self.per_day,
            lambda day, i: self._feed_offset(key, day, i),
            lambda ms: ms // spacing,
            start,
        )
        items = []
        for day, index, ms in walk:
            items.append(self._feed_record(farm, key, day, index, ms))
            if len(items) == limit + 1:
                break
        more = len(items) > limit
        items = items[:limit]
        return {"items": items, "nextCursor": items[-1]["id"] if more else None}

    def _feed_record(self, farm: _Farm, key: int, day: int, index: int, ms: int) -> dict[str, Any]:
        d = _digest(key, "feed", day, index)
        source = _SOURCES[d[0] % 3]
        barn = farm.barns[d[1] % len(farm.barns)]
        rec: dict[str, Any] = {
            "id": _position_id(key, "feed", day, index),
            "tenantId": farm.tenant,
            "farmId": farm.farm,
            "barnId": barn,
            "batchId": farm.batch_of(barn),
        }
        if source == "SILO_AUTO":
            rec["deviceId"] = _uuid(self.seed, barn, "silo", d[2] % 2)
        rec["source"] = source
        rec["feedFormulaId"] = _uuid(self.seed, farm.tenant, "formula", d[3] % 3)
        if source != "MANUAL":
            rec["feedLotId"] = _uuid(self.seed, farm.tenant, "lot", day // 7, d[4] % 2)
        amount = 5 + 195 * _fraction(d, 5)
        rec["quantityKg"] = f"{amount:.3f}" if source == "SILO_AUTO" else f"{amount:.1f}"
        rec["occurredAt"] = _iso(ms)
        rec["createdAt"] = _iso(ms + 1000 * (1 + d[7] % 240))
        if source != "MANUAL":
            rec["ingestedAt"] = _iso(ms + 1000 * (1 + d[7] % 240) + 150 + d[8])
            rec["eventId"] = _uuid(key, "event", day, index)
        if source == "API_IMPORT":
            rec["externalRef"] = f"ERP-{day % 100_000:05d}-{index:04d}"
            rec["idempotencyKey"] = f"import-{day}-{index}"
        if source == "SILO_AUTO":
            rec["sequence"] = (day - _EPOCH_ORDINAL) * self.per_day + index
        if source == "MANUAL":
            if d[9] % 3 == 0:
                rec["notes"] = _NOTES[d[10] % len(_NOTES)]
            rec["createdByUserId"] = _uuid(self.seed, farm.tenant, "user", d[11] % 4)
        return rec

    # telemetry

    def _timestamps(self) -> tuple[int, int]:
        """(timestamps a day, spacing in ms): readings come ``per_timestamp`` at a time."""
        count = math.ceil(self.readings_per_day / self.per_timestamp)
        spacing = max(1, _DAY_MS // count)
        if spacing >= 1000:
            spacing -= spacing % 1000
        return count, spacing

    def _sensor(self, farm: _Farm, slot: int) -> tuple[str, str, _Metric]:
        """(barn, device, metric) of the ``slot``-th reading of a timestamp."""
        barn = farm.barns[slot % len(farm.barns)]
        metric = _METRICS[(slot // len(farm.barns)) % len(_METRICS)]
        unit_no = slot // (len(farm.barns) * len(_METRICS))
        return barn, _uuid(self.seed, barn, "sensor", unit_no), metric

    def telemetry(self, q: _Query) -> list[dict[str, Any]]:
        """``GET /api/v1/telemetry/readings``: newest first in the window, no cursor."""
        farm = _Farm(self.seed, q)
        frm, to = q.instant("from"), q.instant("to")
        lo, hi = _window(frm, to, self.clock.now())
        limit = q.limit(1000, TELEMETRY_LIMIT_MAX)
        metric, device = q.get("metric"), q.get("deviceId")
        hi_us = _us(hi) if self.inclusive_to or to is None else _us(hi) - 1
        key = farm.key("telemetry")
        k = self.per_timestamp
        sensors = [self._sensor(farm, slot) for slot in range(k)]
        wanted = [
            (metric is None or m[0] == metric) and (device is None or dev == device)
            for _, dev, m in sensors
        ]
        if not any(wanted):
            return []
        _, spacing = self._timestamps()
        walk = _walk_desc(
            _us(lo),
            hi_us,
            self.readings_per_day,
            lambda day, r: (r // k) * spacing,
            lambda ms: (ms // spacing) * k + k - 1,
        )
        items: list[dict[str, Any]] = []
        for day, r, ms in walk:
            if wanted[r % k]:
                items.append(self._reading(farm, key, sensors[r % k], day, r, ms))
                if len(items) == limit:
                    break
        return items

    def _reading(
        self,
        farm: _Farm,
        key: int,
        sensor: tuple[str, str, _Metric],
        day: int,
        r: int,
        ms: int,
    ) -> dict[str, Any]:
        barn, device, (metric, unit, base, spread, decimals) = sensor
        d = _digest(key, "reading", day, r)
        # a daily cycle plus noise, so that a chart of the export looks like a barn
        phase = math.sin(2 * math.pi * ((ms % _DAY_MS) / _DAY_MS - 0.25))
        value = base + spread * (0.35 * phase + 0.3 * (_fraction(d, 0) - 0.5))
        return {
            "id": _position_id(key, "telemetry", day, r),
            "tenantId": farm.tenant,
            "farmId": farm.farm,
            "barnId": barn,
            "deviceId": device,
            "batchId": farm.batch_of(barn),
            "metric": metric,
            "value": f"{value:.{decimals}f}",
            "unit": unit,
            "occurredAt": _iso(ms),
            "traceId": d[2:10].hex(),
            "eventId": _uuid(key, "reading-event", day, r),
            "createdAt": _iso(ms + 200 + d[10] * 4),
        }

    # daily series

    def kpi_feeding(self, q: _Query) -> dict[str, Any]:
        """``GET /api/v1/kpi/feeding``: one item a day, oldest first (barnId and dates needed)."""
        q.required("barnId")
        farm = _Farm(self.seed, q)
        days = _date_range(q, "startDate", "endDate")
        key = farm.key("kpi")
        placed = self._placed(farm.batch_of(farm.barns[0]))
        items = []
        for day in days:
            d = _digest(key, "kpi", day.toordinal())
            age = (day - placed).days % 49
            fcr = 1.05 + 0.018 * age + 0.08 * (_fraction(d, 0) - 0.5)
            adg = 20 + 2.1 * age + 6 * (_fraction(d, 2) - 0.5)
            sgr = max(0.5, 18 - 0.33 * age + (_fraction(d, 4) - 0.5))
            items.append(
                {
                    "recordDate": day.isoformat(),
                    "fcr": round(fcr, 3),
                    "adgG": round(adg, 1),
                    # a day the scales were down: upstream sends null
                    "sgrPct": None if d[6] % 23 == 0 else round(sgr, 2),
                }
            )
        return {"items": items}

    def _placed(self, batch: str) -> dt.date:
        """The day a batch was placed (ages cycle every 7 weeks)."""
        return dt.date(2025, 1, 1) + dt.timedelta(days=_digest(batch, "placed")[0] % 49)

    def weighvision(self, q: _Query) -> dict[str, Any]:
        """``GET /api/v1/weighvision/weight-aggregates``: a day per item, oldest first."""
        farm = _Farm(self.seed, q)
        days = _date_range(q, "start", "end")
        key = farm.key("weighvision")
        barn = farm.barns[0]
        batch = farm.batch_of(barn)
        placed = self._placed(batch)
        items = []
        for day in days:
            ordinal = day.toordinal()
            d = _digest(key, "weight", ordinal)
            age = (day - placed).days % 49
            avg = 0.045 + 0.0009 * age**2 + 0.045 * age + 0.05 * (_fraction(d, 0) - 0.5)
            spread = 0.12 + 0.004 * age
            created = _day_ms(ordinal + 1) + 3_600_000 + d[2] * 1000
            items.append(
                {
                    "id": _position_id(key, "weighvision", ordinal, 0),
                    "tenantId": farm.tenant,
                    "farmId": farm.farm,
                    "barnId": barn,
                    "batchId": batch,
                    "recordDate": day.isoformat(),
                    "avgWeightKg": f"{avg:.3f}",
                    "p10WeightKg": f"{max(0.03, avg * (1 - spread)):.3f}",
                    "p50WeightKg": f"{avg * (1 + 0.01 * (_fraction(d, 3) - 0.5)):.3f}",
                    "p90WeightKg": f"{avg * (1 + spread):.3f}",
                    "sampleCount": 200 + d[5] * 7,
                    "qualityPassRate": round(0.9 + 0.09 * _fraction(d, 6), 3),
                    "createdAt": _iso(created),
                    "updatedAt": _iso(created + (d[8] % 3) * 1_800_000),
                }
            )
        return {"items": items}


# --- HTTP ---

_ROUTES: Mapping[str, Callable[[DemoData, _Query], Any]] = {
    "/api/v1/feed/intake-records": DemoData.feed_intake,
    "/api/v1/kpi/feeding": DemoData.kpi_feeding,
    "/api/v1/telemetry/readings": DemoData.telemetry,
    "/api/v1/weighvision/weight-aggregates": DemoData.weighvision,
}
MALFORMED_BODY = b'{"items": [{"id": "7f3c'


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], demo: DemoUpstream) -> None:
        self.demo = demo
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out and left is the point of a hang fault, not an error
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Wake handler threads idling on kept-alive connections, so they end."""
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            # OSError: the client closed it meanwhile, and the thread is ending anyway
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the exporters reuse connections
    # headers and body leave in one segment, without waiting on Nagle and delayed ACKs
    # (40 ms a request otherwise, on a kept-alive connection)
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read :attr:`DemoUpstream.requests` instead."""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = msgspec.json.encode({"error": {"code": code, "message": message}})
        self._send(status, body)

    def do_GET(self) -> None:
        demo = self.server.demo
        url = urlsplit(self.path)
        seen = SeenRequest(
            method="GET",
            path=url.path,
            params=parse_qs(url.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        demo.record(seen)
        if url.path == "/api/health":
            self._send(200, b'"OK"')
            return
        fault = demo.faults.take(url.path)
        if fault is not None and fault.kind == "hang":
            demo.stopping.wait(fault.seconds)
        elif fault is not None and fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        elif fault is not None and fault.kind == "malformed":
            self._send(200, MALFORMED_BODY)
            return
        elif fault is not None:
            after = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            body = msgspec.json.encode(
                {"error": {"code": "INJECTED", "message": f"injected {fault.status}"}}
            )
            self._send(fault.status, body, after)
            return
        if demo.token is not None and seen.headers.get("authorization") != f"Bearer {demo.token}":
            self._error(401, "UNAUTHORIZED", "missing or invalid service token")
            return
        route = _ROUTES.get(url.path)
        if route is None:
            self._error(404, "NOT_FOUND", f"no route GET {url.path}")
            return
        try:
            answer = route(demo.data, _Query(seen.params))
        except BadRequest as exc:
            self._error(400, "VALIDATION_ERROR", str(exc))
            return
        self._send(200, msgspec.json.encode(answer))


class DemoUpstream:
    """The demo upstream: a real HTTP server on a background thread.

    ``per_day`` feed intake records and ``readings_per_day`` telemetry readings a day (size
    knobs for big exports), ``per_timestamp`` readings share each timestamp; ``token`` makes
    every request need ``Authorization: Bearer <token>``; ``inclusive_to`` says whether a
    reading at exactly ``to`` is included (real services differ; the exporter copes with both).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        per_day: int = 24,
        readings_per_day: int = 288,
        per_timestamp: int = 3,
        token: str | None = None,
        inclusive_to: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.data = DemoData(
            seed=seed,
            per_day=per_day,
            readings_per_day=readings_per_day,
            per_timestamp=per_timestamp,
            inclusive_to=inclusive_to,
            clock=clock,
        )
        self.token = token
        self.faults = Faults()
        self.stopping = threading.Event()
        self._requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    def record(self, seen: SeenRequest) -> None:
        """Keep a request for :attr:`requests`."""
        with self._lock:
            self._requests.append(seen)

    @property
    def requests(self) -> list[SeenRequest]:
        """Every request received so far (health checks included), oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[SeenRequest]:
        """The requests received for ``path``."""
        return [r for r in self.requests if r.path == path]

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen (port 0: any free one) and serve on a thread; returns the base URL."""
        if self._server is not None:
            raise RuntimeError("the demo upstream is already running")
        self.stopping.clear()
        self._server = _Server((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
        if ":" in shown:
            shown = f"[{shown}]"
        self.base_url = f"http://{shown}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="demo-upstream",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; hanging answers are cut short and open connections closed."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> DemoUpstream:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- as a process ---


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adapters.demo_upstream``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m adapters.demo_upstream",
        description="Serve the FarmIQ upstream APIs (feed intake, feeding KPIs, telemetry, "
        "WeighVision) with generated sample data.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-day", type=int, default=24, help="feed intake records a day")
    parser.add_argument("--readings-per-day", type=int, default=288)
    parser.add_argument("--per-timestamp", type=int, default=3)
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args(argv)
    try:
        demo = DemoUpstream(
            seed=args.seed,
            per_day=args.per_day,
            readings_per_day=args.readings_per_day,
            per_timestamp=args.per_timestamp,
            token=args.token,
        )
    except ValueError as exc:
        parser.error(str(exc))
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = demo.start(args.host, args.port)
    print(f"demo upstream listening on {url} (tenant {DEMO_TENANT})", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
