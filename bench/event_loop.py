"""Issue 27's untried lever, measured: the fetching half of an export by window threads, as the
product does it, against one asyncio event loop.

Method. The fake feed (bench/fake_feed.py, its own process, ``--latency-ms`` a page, records
evenly over 2021-01-01..2025-02-28) is paged through ``--windows`` equal windows of the range,
100 records a page, newest first by cursor, each page's body read whole and its keys decoded
(``wire.FEED_KEYS``, the windows' own decoder); nothing is written. Two ways, in this process,
alternated ``--rounds`` times:

- ``threads``: a thread a window, one ``httpx.Client`` over the product's transport
  (``adapters.upstream.transport.StdlibTransport``, ``http.client`` underneath), bodies streamed
  as the product reads them (``send(..., stream=True)``);
- ``loop``: a task a window on one asyncio loop, one ``httpx.AsyncClient`` over a lean
  transport written here (an ``asyncio.Protocol`` a keep-alive connection, a head parsed by
  hand, ``Content-Length`` bodies only: enough for this feed, not a product transport);
- ``loop-httpcore`` (with ``--httpcore``): the same tasks over httpx's own async transport
  (httpcore, h11, anyio), for reference.

With ``--export``, each page's body also goes, as it comes, to an exporter thread that does
what the product's exporter does with it: the typed decode, the rows, the CSV lines (the
formula guard on, the default), the sha256, the file's write; every record must be written.

Printed per run: records/s, the process's CPU per page (user + system from ``getrusage``, and
the system part apart) and its context switches per page (voluntary + involuntary). This is a
microscope, not the worker: no retries, deadlines, watchdog, host slots, splits, spools,
progress or metrics, so its figures are the least each way costs; docs/performance.md puts them
beside the worker's. ``--windows 1`` gives the sequential rate.

    .venv/bin/python bench/event_loop.py --records 200000 --latency-ms 2 --rounds 3
    .venv/bin/python bench/event_loop.py --records 200000 --latency-ms 0 --httpcore
    .venv/bin/python bench/event_loop.py --records 200000 --latency-ms 2 --export
    .venv/bin/python bench/event_loop.py --smoke     # a second: every mode reads and writes all
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import queue
import resource
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, fake_feed, figure, parser

sys.path.insert(0, str(ROOT / "src"))
from adapters.upstream.transport import StdlibTransport
from adapters.upstream.wire import DECODERS, FEED_KEYS
from reportcore.encoding import csv_lines
from reportcore.jobtypes import JOB_TYPES, JobType

PATH = "/api/v1/feed/intake-records"
FIRST = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)  # the day after the feed's last
Window = tuple[str, str]


def _text(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def windows(count: int) -> list[Window]:
    """``count`` equal windows of the range, newest first: (start, end), both inclusive."""
    span = (END - FIRST) / count
    ms = dt.timedelta(milliseconds=1)
    return [(_text(END - span * (i + 1)), _text(END - span * i - ms)) for i in range(count)]


def target(base: str, window: Window, cursor: str | None) -> str:
    url = f"{base}{PATH}?tenantId=t-bench&limit=100&start={window[0]}&end={window[1]}"
    return url if cursor is None else f"{url}&cursor={cursor}"


Count = tuple[int, int]  # pages, records
Sink = Callable[[bytes], None]  # what a window does with each page's body once decoded


def _drop(body: bytes) -> None:
    """Without ``--export``: the page's body is dropped."""


class Exporter:
    """With ``--export``: a thread that takes the pages as they come and does what the
    product's exporter does with them: the typed decode, the rows, the CSV lines (the formula
    guard on every column, the default), the sha256 and the file's write."""

    def __init__(self, path: Path) -> None:
        self._pages: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._path = path
        self.rows = 0
        self._thread = threading.Thread(target=self._run, name="exporter")
        self._thread.start()

    def put(self, body: bytes) -> None:
        self._pages.put(body)

    def close(self) -> int:
        self._pages.put(None)
        self._thread.join()
        return self.rows

    def _run(self) -> None:
        spec = JOB_TYPES[JobType.FEED_INTAKE_EXPORT]
        typed = DECODERS[JobType.FEED_INTAKE_EXPORT].typed
        row_of = spec.row_getter({})
        guard = frozenset(range(len(spec.columns)))
        digest = hashlib.sha256()
        with self._path.open("wb") as out:
            while (body := self._pages.get()) is not None:
                records = typed.decode(body).items
                if records:
                    lines = csv_lines(list(map(row_of, records)), guard=guard)
                    digest.update(lines)
                    out.write(lines)
                    self.rows += len(records)


def by_threads(base: str, plan: Sequence[Window], sink: Sink) -> Count:
    transport = StdlibTransport(timeout=30.0, ssl_context=ssl.create_default_context())
    counts: list[Count] = []
    lock = threading.Lock()

    def window(w: Window) -> None:
        pages = records = 0
        cursor: str | None = None
        while True:
            answer = client.send(httpx.Request("GET", target(base, w, cursor)), stream=True)
            try:
                body = b"".join(answer.iter_raw())
            finally:
                answer.close()
            page = FEED_KEYS.decode(body)
            sink(body)
            pages, records = pages + 1, records + len(page.items)
            cursor = page.nextCursor
            if cursor is None:
                break
        with lock:
            counts.append((pages, records))

    with httpx.Client(transport=transport) as client:
        threads = [threading.Thread(target=window, args=(w,)) for w in plan]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: an answer's head and ``Content-Length`` body, then the next."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self.head: tuple[int, list[tuple[bytes, bytes]], int, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed by the peer"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line, *lines = bytes(self.buffer[:end]).split(b"\r\n")
            headers = [(k.strip(), v.strip()) for k, _, v in (x.partition(b":") for x in lines)]
            size = next((int(v) for k, v in headers if k.lower() == b"content-length"), 0)
            self.head = (int(status_line.split(b" ", 2)[1]), headers, end + 4, end + 4 + size)
        status, headers, start, stop = self.head
        if len(self.buffer) >= stop:
            body = bytes(self.buffer[start:stop])
            del self.buffer[:stop]
            waiter, self.waiter, self.head = self.waiter, None, None
            waiter.set_result((status, headers, body))


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.host, url.port or 80)
        idle = self._idle.setdefault(origin, [])
        loop = asyncio.get_running_loop()
        if idle:
            connection = idle.pop()
        else:
            _, connection = await loop.create_connection(_Connection, *origin)
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        head += [b"%s: %s\r\n" % pair for pair in request.headers.raw]
        head.append(b"\r\n")
        connection.waiter = loop.create_future()
        assert connection.transport is not None
        connection.transport.write(b"".join(head))
        status, headers, body = await connection.waiter
        idle.append(connection)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.close()


def by_loop(base: str, plan: Sequence[Window], sink: Sink, lean: bool = True) -> Count:
    async def run() -> Count:
        transport = LeanTransport() if lean else httpx.AsyncHTTPTransport()
        async with httpx.AsyncClient(transport=transport) as client:

            async def window(w: Window) -> Count:
                pages = records = 0
                cursor: str | None = None
                while True:
                    request = httpx.Request("GET", target(base, w, cursor))
                    answer = await client.send(request, stream=True)
                    try:
                        body = b"".join([chunk async for chunk in answer.aiter_raw()])
                    finally:
                        await answer.aclose()
                    page = FEED_KEYS.decode(body)
                    sink(body)
                    pages, records = pages + 1, records + len(page.items)
                    cursor = page.nextCursor
                    if cursor is None:
                        return pages, records

            counts = await asyncio.gather(*(window(w) for w in plan))
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    return asyncio.run(run())


MODES: dict[str, Callable[[str, Sequence[Window], Sink], Count]] = {
    "threads": by_threads,
    "loop": by_loop,
    "loop-httpcore": lambda base, plan, sink: by_loop(base, plan, sink, lean=False),
}


def measure(mode: str, base: str, plan: Sequence[Window], records: int, export: bool) -> None:
    before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        exporter = Exporter(Path(folder) / "export.csv") if export else None
        pages, got = MODES[mode](base, plan, _drop if exporter is None else exporter.put)
        written = got if exporter is None else exporter.close()
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    if got != records or written != records:
        raise SystemExit(f"{mode}: read {got} records of {records}, wrote {written}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    switches = (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw)
    figure(f"{mode}_records_s", got / wall, "records/s")
    figure(f"{mode}_cpu_per_page", 1e6 * (user + system) / pages, "us")
    figure(f"{mode}_cpu_per_page_system", 1e6 * system / pages, "us")
    figure(f"{mode}_switches_per_page", switches / pages)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--records", type=int, default=200_000, help="records in the feed")
    p.add_argument("--latency-ms", type=float, default=2.0, help="the fake feed's answer delay")
    p.add_argument("--windows", type=int, default=8, help="windows fetched at once")
    p.add_argument("--rounds", type=int, default=3, help="runs of each mode, alternated")
    p.add_argument("--httpcore", action="store_true", help="also httpx's own async transport")
    p.add_argument("--export", action="store_true", help="and the exporter's work on each page")
    args = p.parse_args()
    if args.smoke:
        args.records, args.rounds, args.httpcore, args.export = 3_000, 1, True, True
    modes = ["threads", "loop"] + (["loop-httpcore"] if args.httpcore else [])
    with fake_feed(args.records, args.latency_ms, "even") as feed:
        figure("records", args.records)
        figure("latency_ms", args.latency_ms, "ms")
        figure("windows", args.windows)
        figure("export", int(args.export))
        plan = windows(args.windows)
        for _ in range(args.rounds):
            for mode in modes:
                measure(mode, feed.url, plan, args.records, args.export)
        figure("load_average_1min", os.getloadavg()[0])


if __name__ == "__main__":
    main()
