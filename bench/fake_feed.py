"""A fast fake feed service for benchmarks: pre-encoded pages of 100 intake records.

Serves ``GET /api/v1/feed/intake-records?cursor=N`` (HTTP/1.1 keep-alive) from an asyncio
server that does nothing per request but look up bytes, so that the exporter, not the fake,
is what a benchmark measures. Run it in its own process:

    python bench/fake_feed.py --records 1000000 --port 0   # prints its base URL

``--latency-ms`` delays each answer, as a feed service across a network would (the time
between the request and the first byte), to show what overlapping fetch and write is for.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import uuid
from urllib.parse import parse_qs, urlsplit

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


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pages: Pages, latency: float
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            query = parse_qs(urlsplit(target).query)
            n = int(query.get("cursor", ["0"])[0])
            if latency:
                await asyncio.sleep(latency)
            writer.write(pages.response(n))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main_async(total: int, host: str, port: int, latency: float = 0.0) -> None:
    pages = Pages(total)
    server = await asyncio.start_server(lambda r, w: _serve(r, w, pages, latency), host, port)
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
