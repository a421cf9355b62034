"""A fast fake feed service for benchmarks: N intake records, one every 7 seconds back from
2026-01-31T23:59:00Z, served like the real feed service.

``GET /api/v1/feed/intake-records`` honours ``start`` and ``end`` (inclusive instants),
``cursor`` and ``limit`` (default 25, capped at 100), answering newest first with
``{"items": [...], "nextCursor": ...}``. It runs as an asyncio protocol that answers with
slices of the records encoded once at start (the exporter, not the fake, is what a benchmark
measures; about 0.5 KB of memory a record), and
answers every connection concurrently: ``--latency-ms`` delays each answer (the time between
a request and its first byte, as a feed across a network), without holding up the others.

    python bench/fake_feed.py --records 1000000 --port 0   # prints its base URL
"""

from __future__ import annotations

import argparse
import array
import asyncio
import datetime as dt
import math
import sys
from urllib.parse import unquote

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
    """The records, as index ranges: record ``i`` occurred ``7 * i`` seconds before NEWEST.

    Every record is encoded once, at start, into one buffer (each followed by a comma), so a
    page is a slice of it: answering costs the fake a few microseconds whatever the window,
    and a benchmark's CPU figures are the exporter's, not the fake's.
    """

    def __init__(self, total: int) -> None:
        self.total = total
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
        day, sec = divmod(NEWEST_SEC - STEP_SEC * i, 86_400)
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
        first, last = 0, self.total - 1  # newest first: index ascending
        if b"end" in q:
            first = max(first, math.ceil((NEWEST_SEC - self._seconds(q[b"end"])) / STEP_SEC))
        if b"start" in q:
            last = min(last, math.floor((NEWEST_SEC - self._seconds(q[b"start"])) / STEP_SEC))
        limit = min(int(q.get(b"limit", DEFAULT_LIMIT)), MAX_LIMIT)
        at = max(first, int(q[b"cursor"])) if b"cursor" in q else first
        upto = min(last + 1, at + limit)
        more = b'"%d"' % upto if upto <= last else b"null"
        tail = b'],"nextCursor":' + more + b"}"
        if upto <= at:
            return [b'{"items":[' + tail]
        items = self.records[self.offsets[at] : self.offsets[upto] - 1]  # less the last comma
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
            body = self.feed.page(head.split(b" ", 2)[1])
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
