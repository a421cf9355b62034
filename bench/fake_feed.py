"""A fast fake feed service for benchmarks: pre-encoded pages of 100 intake records.

Serves ``GET /api/v1/feed/intake-records?cursor=N`` (HTTP/1.1 keep-alive) from an asyncio
protocol that does nothing per request but find the cursor and look up bytes, so that the
exporter, not the fake, is what a benchmark measures. Run it in its own process:

    python bench/fake_feed.py --records 1000000 --port 0   # prints its base URL

``--latency-ms`` delays each answer, as a feed service across a network would (the time
between the request and the first byte), to show what overlapping fetch and write is for.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
import uuid

import msgspec

PAGE = 100
TEMPLATES = 64  # distinct pages of records; page n uses template n % TEMPLATES


def _record(i: int) -> dict[str, object]:
    at = dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.UTC) - dt.timedelta(seconds=7 * i)
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "tenantId": "t-bench",
        "farmId": "9b2f3c4d-0000-4000-8000-000000000001",
        "barnId": "9b2f3c4d-0000-4000-8000-000000000002",
        "batchId": "9b2f3c4d-0000-4000-8000-000000000003",
        "deviceId": f"silo-{i % 17}",
        "source": ("MANUAL", "API_IMPORT", "SILO_AUTO")[i % 3],
        "feedFormulaId": "formula-a",
        "feedLotId": None,
        "quantityKg": f"{(i % 997) / 10:.1f}",
        "occurredAt": at.isoformat().replace("+00:00", "Z"),
        "createdAt": at.isoformat().replace("+00:00", "Z"),
        "ingestedAt": None,
        "eventId": f"evt-{i}",
        "externalRef": None,
        "idempotencyKey": None,
        "sequence": i,
        "notes": 'morning round, "silo 3"' if i % 10 == 0 else None,
        "createdByUserId": "user-1",
    }


class Pages:
    """Pre-encoded response bodies; only the cursor differs between pages of one template."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pages = (total + PAGE - 1) // PAGE
        self.heads: list[bytes] = []
        for t in range(TEMPLATES):
            items = msgspec.json.encode([_record(t * PAGE + k) for k in range(PAGE)])
            self.heads.append(b'{"items":' + items + b',"nextCursor":')
        last_n = total - (self.pages - 1) * PAGE if total else 0
        self.last = (
            b'{"items":'
            + msgspec.json.encode([_record(k) for k in range(last_n)])
            + b',"nextCursor":null}'
        )

    def body(self, n: int) -> bytes:
        if n >= self.pages - 1:
            return self.last
        return self.heads[n % TEMPLATES] + b'"' + str(n + 1).encode() + b'"}'

    def response(self, n: int) -> bytes:
        body = self.body(n)
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )


_CURSOR = re.compile(rb"[?&]cursor=(\d+)")


class _FeedProtocol(asyncio.Protocol):
    """One keep-alive connection: each request head read gets its page, in order.

    A protocol rather than streams: ~25 us of CPU a page instead of ~75, which matters here
    because a paging client waits for every answer (the fake's time is on its clock too)."""

    def __init__(self, pages: Pages, latency: float) -> None:
        self.pages = pages
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
            found = _CURSOR.search(target)
            answer = self.pages.response(int(found[1]) if found else 0)
            if self.latency:
                asyncio.get_running_loop().call_later(self.latency, self._write, answer)
            else:
                self.transport.write(answer)

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def main_async(total: int, host: str, port: int, latency: float = 0.0) -> None:
    pages = Pages(total)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FeedProtocol(pages, latency), host, port)
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
