"""The demo's deterministic draws: ids, positions and values as pure functions of the seed and
the query, and the query parameters as the real services read them."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping

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

DAY_MS = 86_400_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EPOCH_ORDINAL = _EPOCH.date().toordinal()
_ONE_US = dt.timedelta(microseconds=1)

SOURCES = ("MANUAL", "API_IMPORT", "SILO_AUTO")
NOTES = (
    "Evening feed, silo 2",
    'Topped up after "B" line blockage',
    "Spilled about 2 kg\nrecounted by hand",
    "Ration changed per vet advice; check FCR",
    "Température élevée — ration réduite",
    "ให้อาหารเสริม",
)
Metric = tuple[str, str, float, float, int]  # name, unit, base value, spread, decimals
METRICS: tuple[Metric, ...] = (
    ("temperature", "C", 24.0, 6.0, 2),
    ("humidity", "%", 62.0, 18.0, 1),
    ("ammonia", "ppm", 8.0, 10.0, 1),
    ("co2", "ppm", 1400.0, 900.0, 0),
)
_KINDS = {"feed": 1, "telemetry": 2, "weighvision": 3, "kpi": 4}


class BadRequest(Exception):
    """A request the real service would answer with 400."""


def digest(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()


def scope_hash(*parts: object) -> int:
    return int.from_bytes(digest(*parts)[:8], "big")


def record_uuid(*parts: object) -> str:
    """A stable v4-shaped UUID of ``parts``."""
    b = bytearray(digest("uuid", *parts))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def position_id(scope: int, kind: str, day: int, index: int) -> str:
    """A v4-shaped UUID: 64 bits of the scope's hash and kind, then the day and the index."""
    node = (day << 28) | index
    head = f"{scope:016x}"
    variant = 0x80 | _KINDS[kind]
    return f"{head[:8]}-{head[8:12]}-4{head[12:15]}-{variant:02x}{head[14:16]}-{node:012x}"


def parse_position(text: str, scope: int, kind: str) -> tuple[int, int] | None:
    """The (day, index) of an id made by :func:`position_id` for this scope, else ``None``."""
    try:
        node = int(text[-12:], 16)
    except ValueError:
        return None
    day, index = node >> 28, node & ((1 << 28) - 1)
    if len(text) != 36 or position_id(scope, kind, day, index) != text.lower():
        return None
    return day, index


def fraction(draw: bytes, at: int) -> float:
    """A number in [0, 1) from two bytes of ``draw``."""
    return int.from_bytes(draw[at : at + 2], "big") / 65536.0


def iso(ms: int) -> str:
    t = _EPOCH + dt.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def day_ms(day: int) -> int:
    return (day - EPOCH_ORDINAL) * DAY_MS


def micros(t: dt.datetime) -> int:
    return (t - _EPOCH) // _ONE_US


# --- query parameters ---


class Query:
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


def window(
    start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The asked window; the last 7 days (up to ``now``) for what is not given."""
    hi = end or now
    lo = start or hi - dt.timedelta(days=DEFAULT_DAYS)
    if (hi - lo).days > MAX_RANGE_DAYS:
        raise BadRequest(f"the time range must not exceed {MAX_RANGE_DAYS} days")
    return lo, hi


def date_range(q: Query, start: str, end: str) -> list[dt.date]:
    first, last = q.date(start), q.date(end)
    if (last - first).days > MAX_RANGE_DAYS:
        raise BadRequest(f"the date range must not exceed {MAX_RANGE_DAYS} days")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


# --- the farm a scope describes ---


class Farm:
    """The tenant's farm, barns and batches a query is about (given ids, or derived ones)."""

    def __init__(self, seed: int, q: Query) -> None:
        self.seed = seed
        self.tenant = q.required("tenantId")
        self.farm_id = q.uuid("farmId")
        self.barn_id = q.uuid("barnId")
        self.batch_id = q.uuid("batchId")
        self.farm = self.farm_id or (
            DEMO_FARM_ID if self.tenant == DEMO_TENANT else record_uuid(seed, self.tenant, "farm")
        )
        if self.barn_id is not None:
            self.barns: tuple[str, ...] = (self.barn_id,)
        elif self.farm == DEMO_FARM_ID:
            self.barns = (DEMO_BARN_ID, record_uuid(seed, self.farm, "barn", 2))
        else:
            self.barns = (
                record_uuid(seed, self.farm, "barn", 1),
                record_uuid(seed, self.farm, "barn", 2),
            )

    def batch_of(self, barn: str) -> str:
        if self.batch_id is not None:
            return self.batch_id
        return DEMO_BATCH_ID if barn == DEMO_BARN_ID else record_uuid(self.seed, barn, "batch")

    def key(self, kind: str) -> int:
        """The hash of everything that decides this query's records (ids are made from it)."""
        return scope_hash(self.seed, kind, self.tenant, self.farm_id, self.barn_id, self.batch_id)


def walk_desc(
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
        day = hi_ms // DAY_MS + EPOCH_ORDINAL
        index = min(per_day - 1, first_index(hi_ms - day_ms(day)))
    while day_ms(day + 1) * 1000 > lo_us:
        base = day_ms(day)
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
