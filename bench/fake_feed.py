"""A fast fake feed service for benchmarks: N intake records, one every 7 seconds back from
2026-01-31T23:59:00Z, served like the real feed service.

``GET /api/v1/feed/intake-records`` honours ``start`` and ``end`` (inclusive instants),
``cursor`` and ``limit`` (default 25, capped at 100), answering newest first with
``{"items": [...], "nextCursor": ...}``. It runs as an asyncio protocol that formats records
from pre-encoded templates (the exporter, not the fake, is what a benchmark measures), and
answers every connection concurrently: ``--latency-ms`` delays each answer (the time between
a request and its first byte, as a feed across a network), without holding up the others.

    python bench/fake_feed.py --records 1000000 --port 0   # prints its base URL
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import sys
from urllib.parse import parse_qs

import msgspec

DEFAULT_LIMIT, MAX_LIMIT = 25, 100
STEP_SEC = 7
NEWEST = dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.UTC)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NEWEST_SEC = int((NEWEST - _EPOCH).total_seconds())
VARIANTS = 60  # distinct record templates; record i uses i % VARIANTS


def oldest(total: int) -> dt.datetime:
    """When the oldest of ``total`` records occurred (for a bench's date range)."""
    return NEWEST - dt.timedelta(seconds=STEP_SEC * max(0, total - 1))


def _template(v: int) -> bytes:
    """Record ``v``'s JSON with ``%s`` where the id, the instants and the sequence go."""
    fields = {
        "id": "@ID@",
        "tenantId": "t-bench",
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
    """The records, as index ranges: record ``i`` occurred ``7 * i`` seconds before NEWEST."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.templates = [_template(v) for v in range(VARIANTS)]
        self.days: dict[int, str] = {}

    def record(self, i: int) -> bytes:
        day, sec = divmod(NEWEST_SEC - STEP_SEC * i, 86_400)
        prefix = self.days.get(day)
        if prefix is None:
            prefix = self.days[day] = (_EPOCH + dt.timedelta(days=day)).strftime("%Y-%m-%dT")
        hours, rest = divmod(sec, 3600)
        stamp = b"%s%02d:%02d:%02dZ" % (prefix.encode(), hours, rest // 60, rest % 60)
        h = b"%032x" % (i + 1)  # the UUID of int i + 1, spelled out
        ident = b"%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
        return self.templates[i % VARIANTS] % (ident, stamp, stamp, b"evt-%d" % i, i)

    def page(self, target: bytes) -> bytes:
        _, _, raw_query = target.partition(b"?")
        q = {k: v[-1] for k, v in parse_qs(raw_query.decode()).items()}
        first, last = 0, self.total - 1  # newest first: index ascending
        if "end" in q:
            first = max(first, math.ceil((NEWEST_SEC - _seconds(q["end"])) / STEP_SEC))
        if "start" in q:
            last = min(last, math.floor((NEWEST_SEC - _seconds(q["start"])) / STEP_SEC))
        limit = min(int(q.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        at = max(first, int(q["cursor"])) if "cursor" in q else first
        upto = min(last + 1, at + limit)
        items = b",".join(self.record(i) for i in range(at, upto))
        more = b'"%d"' % upto if upto <= last else b"null"
        return b'{"items":[' + items + b'],"nextCursor":' + more + b"}"


def _seconds(text: str) -> float:
    t = dt.datetime.fromisoformat(text)
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


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
            body = self.feed.page(head.split(b" ", 2)[1])
            answer = (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            if self.latency:
                asyncio.get_running_loop().call_later(self.latency, self._write, answer)
            else:
                self.transport.write(answer)

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def main_async(total: int, host: str, port: int, latency: float = 0.0) -> None:
    feed = Feed(total)
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
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args.records, args.host, args.port, args.latency_ms / 1000))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
