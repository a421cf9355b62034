"""A fast fake feed service for benchmarks: N intake records, one every 7 seconds back from
2026-01-31T23:59:00Z, served like the real feed service.

``GET /api/v1/feed/intake-records`` honours ``start`` and ``end`` (inclusive instants),
``cursor`` and ``limit`` (default 25, capped at 100), answering newest first with
``{"items": [...], "nextCursor": ...}``. It runs as an asyncio protocol that answers with
slices of the records encoded once at start (the exporter, not the fake, is what a benchmark
measures; about 0.5 KB of memory a record), and
answers every connection concurrently: ``--latency-ms`` delays each answer (the time between
a request and its first byte, as a feed across a network), without holding up the others.

``--distribution`` places the records over ``--first``..``--last`` (whole days, UTC) instead
(issue 27's table): ``even`` (evenly spaced), ``newest-1pct`` (all in the newest 1 % of the
range), ``spikes`` (half in the oldest 0.5 %, half in the newest 0.5 %), ``power`` (a power-law
tail: dense near the end, thin back to the start), ``recent`` (the newest 8 %, five records
sharing each instant); seeded, so every run places them alike. ``GET /__requests`` answers how
many feed requests it has answered so far (a bench counts an export's requests with it).
Records carry the ``tenantId`` asked for (``t-bench`` when none is), as the real feed's do: the
service fails an export that is sent another tenant's records.

    python bench/fake_feed.py --records 1000000 --port 0   # prints its base URL
    python bench/fake_feed.py --records 120000 --distribution spikes --first 2021-01-01 \
        --last 2025-02-28 --latency-ms 20
"""

from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import datetime as dt
import math
import random
import sys
from urllib.parse import unquote

import msgspec

DEFAULT_LIMIT, MAX_LIMIT = 25, 100
TENANT = b"t-bench"  # the tenant the records are encoded with
_TENANT_FIELD = b'"tenantId":"' + TENANT + b'"'
STEP_SEC = 7
NEWEST = dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.UTC)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NEWEST_SEC = int((NEWEST - _EPOCH).total_seconds())
VARIANTS = 60  # distinct record templates; record i uses i % VARIANTS


DISTRIBUTIONS = ("even", "newest-1pct", "spikes", "power", "recent")


def placed(total: int, kind: str, first: dt.date, last: dt.date, seed: int = 27) -> list[int]:
    """Epoch seconds of ``total`` records placed as ``kind`` over ``first``..``last`` (whole
    days), newest first."""
    start = int((dt.datetime.combine(first, dt.time.min, tzinfo=dt.UTC) - _EPOCH).total_seconds())
    span = (last - first).days * 86_400 + 86_400
    rng = random.Random(seed)
    if kind == "even":
        fractions = [(i + 0.5) / total for i in range(total)]
    elif kind == "newest-1pct":
        fractions = [0.99 + 0.01 * rng.random() for _ in range(total)]
    elif kind == "spikes":
        fractions = [0.005 * rng.random() + 0.995 * (i % 2) for i in range(total)]
    elif kind == "power":
        fractions = [1 - rng.random() ** 4 for _ in range(total)]
    elif kind == "recent":
        fractions = [f for _ in range(total // 5 + 1) for f in [0.92 + 0.08 * rng.random()] * 5]
        fractions = fractions[:total]
    else:
        raise ValueError(f"no distribution {kind!r}; one of {', '.join(DISTRIBUTIONS)}")
    return sorted((start + min(span - 1, int(f * span)) for f in fractions), reverse=True)


def oldest(total: int) -> dt.datetime:
    """When the oldest of ``total`` records occurred (for a bench's date range)."""
    return NEWEST - dt.timedelta(seconds=STEP_SEC * max(0, total - 1))


def _template(v: int) -> bytes:
    """Record ``v``'s JSON with ``%s`` where the id, the instants and the sequence go."""
    fields = {
        "id": "@ID@",
        "tenantId": TENANT.decode(),
        "farmId": "9b2f3c4d-0000-4000-8000-000000000001",
        "barnId": "9b2f3c4d-0000-4000-8000-000000000002",
        "batchId": "9b2f3c4d-0000-4000-8000-000000000003",
        "deviceId": f"silo-{v % 17}",
        "source": ("MANUAL", "API_IMPORT", "SILO_AUTO")[v % 3],
        "feedFormulaId": "formula-a",
        "feedLotId": None,
        "quantityKg": f"{(v % 997) / 10:.1f}",
        "occurredAt": "@AT@",
        "createdAt": "@AT@",
        "ingestedAt": None,
        "eventId": "@EVT@",
        "externalRef": None,
        "idempotencyKey": None,
        "sequence": 0,
        "notes": 'morning round, "silo 3"' if v % 10 == 0 else None,
        "createdByUserId": "user-1",
    }
    raw = msgspec.json.encode(fields).replace(b"%", b"%%")
    for marker in (b'"@ID@"', b'"@AT@"', b'"@EVT@"'):
        raw = raw.replace(marker, b'"%s"')
    return raw.replace(b'"sequence":0', b'"sequence":%d')


class Feed:
    """The records, as index ranges: record ``i`` occurred ``7 * i`` seconds before NEWEST,
    or at ``seconds[i]`` (epoch seconds, newest first) when given.

    Every record is encoded once, at start, into one buffer (each followed by a comma), so a
    page is a slice of it: answering costs the fake a few microseconds whatever the window,
    and a benchmark's CPU figures are the exporter's, not the fake's.
    """

    def __init__(self, total: int, seconds: list[int] | None = None) -> None:
        self.total = total
        if seconds is None:
            seconds = [NEWEST_SEC - STEP_SEC * i for i in range(total)]
        self.seconds = seconds
        self.negated = array.array("q", (-t for t in seconds))  # ascending, for bisection
        self.requests = 0
        self.templates = [_template(v) for v in range(VARIANTS)]
        self.days: dict[int, str] = {}
        chunks: list[bytes] = []
        offsets = array.array("q", [0])
        at = 0
        for i in range(total):
            chunk = self.record(i) + b","
            chunks.append(chunk)
            at += len(chunk)
            offsets.append(at)
        self.records = memoryview(b"".join(chunks))
        self.offsets = offsets
        self.instants: dict[bytes, float] = {}  # a query's start/end, read once each

    def record(self, i: int) -> bytes:
        day, sec = divmod(self.seconds[i], 86_400)
        prefix = self.days.get(day)
        if prefix is None:
            prefix = self.days[day] = (_EPOCH + dt.timedelta(days=day)).strftime("%Y-%m-%dT")
        hours, rest = divmod(sec, 3600)
        stamp = b"%s%02d:%02d:%02dZ" % (prefix.encode(), hours, rest // 60, rest % 60)
        h = b"%032x" % (i + 1)  # the UUID of int i + 1, spelled out
        ident = b"%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
        return self.templates[i % VARIANTS] % (ident, stamp, stamp, b"evt-%d" % i, i)

    def page(self, target: bytes) -> list[bytes | memoryview]:
        """The answer body to a request target, in parts (written without joining them)."""
        _, _, raw_query = target.partition(b"?")
        q: dict[bytes, bytes] = {}
        for pair in raw_query.split(b"&"):
            key, _, value = pair.partition(b"=")
            q[key] = value  # the last of a repeated parameter, as parse_qs would keep
        self.requests += 1
        first, last = 0, self.total - 1  # newest first: index ascending
        if b"end" in q:  # the first record at or before end
            first = bisect.bisect_left(self.negated, -math.floor(self._seconds(q[b"end"])))
        if b"start" in q:  # the last record at or after start
            last = bisect.bisect_right(self.negated, -math.ceil(self._seconds(q[b"start"]))) - 1
        limit = min(int(q.get(b"limit", DEFAULT_LIMIT)), MAX_LIMIT)
        at = max(first, int(q[b"cursor"])) if b"cursor" in q else first
        upto = min(last + 1, at + limit)
        more = b'"%d"' % upto if upto <= last else b"null"
        tail = b'],"nextCursor":' + more + b"}"
        if upto <= at:
            return [b'{"items":[' + tail]
        # the page less its last comma
        items: bytes | memoryview = self.records[self.offsets[at] : self.offsets[upto] - 1]
        tenant = q.get(b"tenantId", TENANT)  # the records of the tenant asked for
        if tenant != TENANT:
            field = b'"tenantId":' + msgspec.json.encode(unquote(tenant.decode()))
            items = bytes(items).replace(_TENANT_FIELD, field)
        return [b'{"items":[', items, tail]

    def _seconds(self, raw: bytes) -> float:
        seconds = self.instants.get(raw)
        if seconds is None:
            t = dt.datetime.fromisoformat(unquote(raw.decode()))
            seconds = (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
            self.instants[raw] = seconds
        return seconds


class _FeedProtocol(asyncio.Protocol):
    """One keep-alive connection: each request head read gets its page, after the latency."""

    def __init__(self, feed: Feed, latency: float) -> None:
        self.feed = feed
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1]
            if target == b"/__requests":
                body: list[bytes | memoryview] = [b"%d" % self.feed.requests]
            else:
                body = self.feed.page(target)
            size = sum(len(part) for part in body)
            answer = [
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % size,
                *body,
            ]
            if self.latency:
                asyncio.get_running_loop().call_later(self.latency, self._write, answer)
            else:
                self.transport.writelines(answer)

    def _write(self, answer: list[bytes | memoryview]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(answer)


async def main_async(
    total: int, host: str, port: int, latency: float = 0.0, seconds: list[int] | None = None
) -> None:
    feed = Feed(total, seconds)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FeedProtocol(feed, latency), host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument("--distribution", choices=DISTRIBUTIONS, help="where the records lie")
    parser.add_argument("--first", type=dt.date.fromisoformat, default=dt.date(2021, 1, 1))
    parser.add_argument("--last", type=dt.date.fromisoformat, default=dt.date(2025, 2, 28))
    args = parser.parse_args()
    seconds = None
    if args.distribution:
        seconds = placed(args.records, args.distribution, args.first, args.last)
    try:
        latency = args.latency_ms / 1000
        asyncio.run(main_async(args.records, args.host, args.port, latency, seconds))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
