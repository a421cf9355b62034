"""The demo's sample data: the four upstream APIs' answers, generated from the query."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from reportcore.ports import Clock

from ..clock import SystemClock
from .draws import (
    DAY_MS,
    EPOCH_ORDINAL,
    FEED_PAGE_MAX,
    METRICS,
    NOTES,
    SOURCES,
    TELEMETRY_LIMIT_MAX,
    BadRequest,
    Farm,
    Metric,
    Query,
    date_range,
    day_ms,
    digest,
    fraction,
    iso,
    micros,
    parse_position,
    position_id,
    record_uuid,
    walk_desc,
    window,
)


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
        return max(1, DAY_MS // self.per_day)

    def _feed_offset(self, key: int, day: int, index: int) -> int:
        spacing = self._feed_spacing()
        draw = digest(key, "at", day, index)
        jitter = int(fraction(draw, 0) * spacing)
        if spacing >= 1000:
            jitter -= jitter % 1000  # whole seconds, as people and silos record them
        return index * spacing + jitter

    def feed_intake(self, q: Query) -> dict[str, Any]:
        """``GET /api/v1/feed/intake-records``: newest first, by cursor."""
        farm = Farm(self.seed, q)
        lo, hi = window(q.instant("start"), q.instant("end"), self.clock.now())
        limit = q.limit(50, FEED_PAGE_MAX)
        key = farm.key("feed")
        cursor = q.get("cursor")
        start = None
        if cursor:
            start = parse_position(cursor, key, "feed")
            if start is None:
                raise BadRequest("cursor is not valid for this query")
        spacing = self._feed_spacing()
        walk = walk_desc(
            micros(lo),
            micros(hi),
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

    def _feed_record(self, farm: Farm, key: int, day: int, index: int, ms: int) -> dict[str, Any]:
        d = digest(key, "feed", day, index)
        source = SOURCES[d[0] % 3]
        barn = farm.barns[d[1] % len(farm.barns)]
        rec: dict[str, Any] = {
            "id": position_id(key, "feed", day, index),
            "tenantId": farm.tenant,
            "farmId": farm.farm,
            "barnId": barn,
            "batchId": farm.batch_of(barn),
        }
        if source == "SILO_AUTO":
            rec["deviceId"] = record_uuid(self.seed, barn, "silo", d[2] % 2)
        rec["source"] = source
        rec["feedFormulaId"] = record_uuid(self.seed, farm.tenant, "formula", d[3] % 3)
        if source != "MANUAL":
            rec["feedLotId"] = record_uuid(self.seed, farm.tenant, "lot", day // 7, d[4] % 2)
        amount = 5 + 195 * fraction(d, 5)
        rec["quantityKg"] = f"{amount:.3f}" if source == "SILO_AUTO" else f"{amount:.1f}"
        rec["occurredAt"] = iso(ms)
        rec["createdAt"] = iso(ms + 1000 * (1 + d[7] % 240))
        if source != "MANUAL":
            rec["ingestedAt"] = iso(ms + 1000 * (1 + d[7] % 240) + 150 + d[8])
            rec["eventId"] = record_uuid(key, "event", day, index)
        if source == "API_IMPORT":
            rec["externalRef"] = f"ERP-{day % 100_000:05d}-{index:04d}"
            rec["idempotencyKey"] = f"import-{day}-{index}"
        if source == "SILO_AUTO":
            rec["sequence"] = (day - EPOCH_ORDINAL) * self.per_day + index
        if source == "MANUAL":
            if d[9] % 3 == 0:
                rec["notes"] = NOTES[d[10] % len(NOTES)]
            rec["createdByUserId"] = record_uuid(self.seed, farm.tenant, "user", d[11] % 4)
        return rec

    # telemetry

    def _timestamps(self) -> tuple[int, int]:
        """(timestamps a day, spacing in ms): readings come ``per_timestamp`` at a time."""
        count = math.ceil(self.readings_per_day / self.per_timestamp)
        spacing = max(1, DAY_MS // count)
        if spacing >= 1000:
            spacing -= spacing % 1000
        return count, spacing

    def _sensor(self, farm: Farm, slot: int) -> tuple[str, str, Metric]:
        """(barn, device, metric) of the ``slot``-th reading of a timestamp."""
        barn = farm.barns[slot % len(farm.barns)]
        metric = METRICS[(slot // len(farm.barns)) % len(METRICS)]
        unit_no = slot // (len(farm.barns) * len(METRICS))
        return barn, record_uuid(self.seed, barn, "sensor", unit_no), metric

    def telemetry(self, q: Query) -> list[dict[str, Any]]:
        """``GET /api/v1/telemetry/readings``: newest first in the window, no cursor."""
        farm = Farm(self.seed, q)
        frm, to = q.instant("from"), q.instant("to")
        lo, hi = window(frm, to, self.clock.now())
        limit = q.limit(1000, TELEMETRY_LIMIT_MAX)
        metric, device = q.get("metric"), q.get("deviceId")
        hi_us = micros(hi) if self.inclusive_to or to is None else micros(hi) - 1
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
        walk = walk_desc(
            micros(lo),
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
        farm: Farm,
        key: int,
        sensor: tuple[str, str, Metric],
        day: int,
        r: int,
        ms: int,
    ) -> dict[str, Any]:
        barn, device, (metric, unit, base, spread, decimals) = sensor
        d = digest(key, "reading", day, r)
        # a daily cycle plus noise, so that a chart of the export looks like a barn
        phase = math.sin(2 * math.pi * ((ms % DAY_MS) / DAY_MS - 0.25))
        value = base + spread * (0.35 * phase + 0.3 * (fraction(d, 0) - 0.5))
        return {
            "id": position_id(key, "telemetry", day, r),
            "tenantId": farm.tenant,
            "farmId": farm.farm,
            "barnId": barn,
            "deviceId": device,
            "batchId": farm.batch_of(barn),
            "metric": metric,
            "value": f"{value:.{decimals}f}",
            "unit": unit,
            "occurredAt": iso(ms),
            "traceId": d[2:10].hex(),
            "eventId": record_uuid(key, "reading-event", day, r),
            "createdAt": iso(ms + 200 + d[10] * 4),
        }

    # daily series

    def kpi_feeding(self, q: Query) -> dict[str, Any]:
        """``GET /api/v1/kpi/feeding``: one item a day, oldest first (barnId and dates needed)."""
        q.required("barnId")
        farm = Farm(self.seed, q)
        days = date_range(q, "startDate", "endDate")
        key = farm.key("kpi")
        placed = self._placed(farm.batch_of(farm.barns[0]))
        items = []
        for day in days:
            d = digest(key, "kpi", day.toordinal())
            age = (day - placed).days % 49
            fcr = 1.05 + 0.018 * age + 0.08 * (fraction(d, 0) - 0.5)
            adg = 20 + 2.1 * age + 6 * (fraction(d, 2) - 0.5)
            sgr = max(0.5, 18 - 0.33 * age + (fraction(d, 4) - 0.5))
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
        return dt.date(2025, 1, 1) + dt.timedelta(days=digest(batch, "placed")[0] % 49)

    def weighvision(self, q: Query) -> dict[str, Any]:
        """``GET /api/v1/weighvision/weight-aggregates``: a day per item, oldest first."""
        farm = Farm(self.seed, q)
        days = date_range(q, "start", "end")
        key = farm.key("weighvision")
        barn = farm.barns[0]
        batch = farm.batch_of(barn)
        placed = self._placed(batch)
        items = []
        for day in days:
            ordinal = day.toordinal()
            d = digest(key, "weight", ordinal)
            age = (day - placed).days % 49
            avg = 0.045 + 0.0009 * age**2 + 0.045 * age + 0.05 * (fraction(d, 0) - 0.5)
            spread = 0.12 + 0.004 * age
            created = day_ms(ordinal + 1) + 3_600_000 + d[2] * 1000
            items.append(
                {
                    "id": position_id(key, "weighvision", ordinal, 0),
                    "tenantId": farm.tenant,
                    "farmId": farm.farm,
                    "barnId": barn,
                    "batchId": batch,
                    "recordDate": day.isoformat(),
                    "avgWeightKg": f"{avg:.3f}",
                    "p10WeightKg": f"{max(0.03, avg * (1 - spread)):.3f}",
                    "p50WeightKg": f"{avg * (1 + 0.01 * (fraction(d, 3) - 0.5)):.3f}",
                    "p90WeightKg": f"{avg * (1 + spread):.3f}",
                    "sampleCount": 200 + d[5] * 7,
                    "qualityPassRate": round(0.9 + 0.09 * fraction(d, 6), 3),
                    "createdAt": iso(created),
                    "updatedAt": iso(created + (d[8] % 3) * 1_800_000),
                }
            )
        return {"items": items}
