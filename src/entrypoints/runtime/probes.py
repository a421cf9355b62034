"""The worker's own HTTP port (``WORKER_HTTP_PORT``, default 9129): ``/metrics``, ``/healthz``
and ``/readyz``, served by a stdlib HTTP server in a thread of the worker process.

- ``GET /metrics``: the Prometheus text exposition of :data:`adapters.metrics.REGISTRY`, plus
  the gauges read at scrape time (:class:`BacklogCollector`): the publish backlog, running jobs
  past their lease, and the depth of ``report.jobs`` and its dead-letter queue.
- ``GET /healthz``: liveness. 200 while the consume loop turns (it beats :class:`Heartbeat`
  every tick, about once a second, also while it waits to reconnect to a broker that is down)
  and every running export writes pages; 503 once the last beat is older than the threshold
  (the loop is stuck) or an export has written no page for longer than the page deadline
  (``UPSTREAM_PAGE_DEADLINE_SEC``) plus :data:`EXPORT_GRACE_SEC` (what ends a page failed to):
  restart the process.
- ``GET /readyz``: readiness. 200 when PostgreSQL and RabbitMQ answer, else 503; the JSON body
  says which: ``{"status": "ready", "checks": {"database": "ok", "queue": "ok"}}``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from adapters import metrics
from reportcore.errors import ReportError
from reportcore.policy import Policy
from reportcore.ports import Clock, JobRepository
from reportcore.service import ReportService

from ..settings import Settings

log = logging.getLogger("reportsvc.worker")

STUCK_AFTER_SEC = 60.0
# an export writes its next page within the page deadline (the source fails it otherwise);
# this much more covers writing the page and the store's own timeouts
EXPORT_GRACE_SEC = 60.0
READY_TIMEOUT_SEC = 3.0
# the most jobs one gauge counts: the query reads rows, so a huge backlog reads as this many
SCRAPE_LIMIT = 1000
# several scrapers (two Prometheus replicas) share one reading of the database and broker
SCRAPE_CACHE_SEC = 5.0


class _ThreadingHTTPServer6(ThreadingHTTPServer):
    """The probe server on an IPv6 address (``WORKER_HTTP_HOST=::``): the stdlib's serves
    IPv4 only, and the probes were silently off."""

    address_family = socket.AF_INET6


class Heartbeat:
    """When the consume loop last turned, on the monotonic clock."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._last = now()
        self._exports: dict[int, float] = {}  # running export -> when it last wrote a page
        self._export_ids = itertools.count()
        self._lock = threading.Lock()

    def beat(self) -> None:
        self._last = self._now()

    def age(self) -> float:
        """Seconds since the last beat."""
        return self._now() - self._last

    @contextlib.contextmanager
    def export(self) -> Iterator[Callable[[], None]]:
        """One export running for the block: call what it yields each time it writes a page
        or a page arrives (from any thread; a call after the block ends changes nothing)."""
        key = next(self._export_ids)
        exports, now, lock = self._exports, self._now, self._lock
        with lock:
            exports[key] = now()

        def progressed() -> None:
            with lock:
                if key in exports:  # a window thread's late page must not bring it back
                    exports[key] = now()

        try:
            yield progressed
        finally:
            with self._lock:
                del exports[key]

    def stalled(self) -> float:
        """Seconds since the export that has waited longest for a page last wrote one (0:
        none running)."""
        with self._lock:
            oldest = min(self._exports.values(), default=None)
        return 0.0 if oldest is None else self._now() - oldest

    def watching(self, stop: Callable[[], bool]) -> Callable[[], bool]:
        """``stop``, beating each time the thread that called this asks it: the consumer asks
        its stop callable every tick of its loop (its handler threads ask it too, but a loop
        that is stuck while jobs still start is not alive)."""
        loop = threading.get_ident()

        def asked() -> bool:
            if threading.get_ident() == loop:
                self.beat()
            return stop()

        return asked


class BacklogCollector(Collector):
    """Gauges read when scraped, from the job store and the broker; a reading that fails is
    left out (and logged), never failing the whole scrape."""

    def __init__(
        self,
        jobs: Callable[[], JobRepository],
        clock: Clock,
        policy: Policy,
        queue_depths: Callable[[], dict[str, int]] | None = None,
        *,
        cache_sec: float = SCRAPE_CACHE_SEC,
    ) -> None:
        self._jobs = jobs
        self._clock = clock
        self._policy = policy
        self._depths = queue_depths
        self._cache_sec = cache_sec
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # read at scrape time only: registering must not query anything

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._cache_sec:
                self._cached = (now, self._read())
            families = self._cached[1]
        yield from families

    def _read(self) -> list[GaugeMetricFamily]:
        found: list[GaugeMetricFamily] = []
        now = self._clock.now()
        try:
            jobs = self._jobs()
            backlog = len(jobs.unpublished(now, SCRAPE_LIMIT))
            legacy = now - dt.timedelta(seconds=self._policy.legacy_lease_sec)
            overrun = len(jobs.stale(now, legacy, SCRAPE_LIMIT))
        except Exception as exc:
            log.warning("metrics: job store not read: %s: %s", type(exc).__name__, exc)
        else:
            found.append(
                GaugeMetricFamily(
                    "reportsvc_publish_backlog_jobs",
                    "Queued jobs whose message the broker has not confirmed yet (recovery "
                    f"publishes them); counts at most {SCRAPE_LIMIT}.",
                    value=backlog,
                )
            )
            found.append(
                GaugeMetricFamily(
                    "reportsvc_jobs_lease_expired",
                    "Running jobs whose lease has run out (their worker died or hangs; "
                    f"recovery takes them back); counts at most {SCRAPE_LIMIT}.",
                    value=overrun,
                )
            )
        if self._depths is not None:
            try:
                depths = self._depths()
            except Exception as exc:
                log.warning("metrics: queue depths not read: %s: %s", type(exc).__name__, exc)
            else:
                family = GaugeMetricFamily(
                    "reportsvc_queue_messages",
                    "Messages ready in a queue of the service (report.jobs, report.jobs.dlq).",
                    labels=["queue"],
                )
                for name, depth in sorted(depths.items()):
                    family.add_metric([name], depth)
                found.append(family)
        return found


class Checks(msgspec.Struct, frozen=True):
    database: str
    queue: str


class Readiness(msgspec.Struct, frozen=True):
    status: str
    checks: Checks


def check_ready(
    pings: dict[str, Callable[[], None]], timeout_sec: float = READY_TIMEOUT_SEC
) -> dict[str, str]:
    """Each ping run in a thread of its own: ``ok``, the error's message, or no answer."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(pings))
    try:
        futures = {name: pool.submit(ping) for name, ping in pings.items()}
        deadline = time.monotonic() + timeout_sec
        results: dict[str, str] = {}
        for name, future in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
                results[name] = "ok"
            except concurrent.futures.TimeoutError:
                results[name] = f"no answer within {timeout_sec:g}s"
            except ReportError as exc:
                results[name] = exc.message
            except Exception as exc:
                results[name] = f"error: {type(exc).__name__}"
        return results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class ProbeServer:
    """The HTTP server of ``/metrics``, ``/healthz`` and ``/readyz`` in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        heartbeat: Heartbeat,
        pings: dict[str, Callable[[], None]],
        registry: CollectorRegistry = metrics.REGISTRY,
        stuck_after_sec: float = STUCK_AFTER_SEC,
        stalled_after_sec: float = STUCK_AFTER_SEC,
    ) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(with_body=True)

            def do_HEAD(self) -> None:
                # what `wget --spider` (the documented container health check) sends: it
                # was a 501, so a probed worker was unhealthy for good
                self._answer(with_body=False)

            def _answer(self, *, with_body: bool) -> None:
                status, content_type, body = owner.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes and probes every few seconds: not a log line each

        self.heartbeat = heartbeat
        self.pings = pings
        self.registry = registry
        self.stuck_after_sec = stuck_after_sec
        self.stalled_after_sec = stalled_after_sec
        self.collector: Collector | None = None  # unregistered on close
        server = _ThreadingHTTPServer6 if ":" in host else ThreadingHTTPServer  # as check_ports
        self._server = server((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        # a str for an AF_INET(6) server (typeshed's type admits bytes for the other families)
        name = host if isinstance(host, str) else bytes(host).decode()
        if name in ("0.0.0.0", "", "::"):  # every address: this machine's loopback
            name = "::1" if name == "::" else "127.0.0.1"
        return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"

    def answer(self, target: str) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, metrics.CONTENT_TYPE, metrics.exposition(self.registry)
        if path == "/healthz":
            age = self.heartbeat.age()
            stalled = self.heartbeat.stalled()
            alive = age < self.stuck_after_sec and stalled < self.stalled_after_sec
            body = msgspec.json.encode(
                {
                    "status": "alive" if alive else "stuck",
                    "loop_age_sec": round(age, 1),
                    "export_stalled_sec": round(stalled, 1),
                }
            )
            return (200 if alive else 503), "application/json", body
        if path == "/readyz":
            results = check_ready(self.pings)
            ready = all(v == "ok" for v in results.values())
            body = msgspec.json.encode(
                Readiness(
                    status="ready" if ready else "not ready",
                    checks=Checks(database=results["database"], queue=results["queue"]),
                )
            )
            return (200 if ready else 503), "application/json", body
        return 404, "application/json", b'{"error":"not found"}'

    def start(self) -> ProbeServer:
        self._thread.start()
        log.info("worker http listening", extra={"url": self.url})
        return self

    def close(self) -> None:
        if self.collector is not None:
            self.registry.unregister(self.collector)
            self.collector = None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_probes(
    reports: ReportService, settings: Settings, heartbeat: Heartbeat
) -> ProbeServer | None:
    """The worker's HTTP server on ``WORKER_HTTP_HOST:WORKER_HTTP_PORT`` with the scrape-time
    gauges registered, or ``None`` when the port is 0 (off) or cannot be bound: the worker
    then runs without it (logged as an error: its liveness probe will fail and say so)."""
    if settings.worker_http_port == 0:
        return None
    depths: Callable[[], dict[str, int]] | None = None
    if settings.rabbitmq_url:
        from adapters.rabbitmq.depth import queue_depths

        url: str = settings.rabbitmq_url
        depths = lambda: queue_depths(url)  # noqa: E731
    deps = reports.deps
    collector = BacklogCollector(lambda: deps.jobs, deps.clock, deps.policy, depths)
    try:
        server = ProbeServer(
            settings.worker_http_host,
            settings.worker_http_port,
            heartbeat=heartbeat,
            pings={
                "database": deps.jobs.ping,
                "queue": deps.queue.ping,
            },
            stalled_after_sec=settings.upstream_page_deadline_sec + EXPORT_GRACE_SEC,
        )
    except OSError as exc:
        log.error(
            "worker http not started on %s:%s: %s",
            settings.worker_http_host,
            settings.worker_http_port,
            exc,
        )
        return None
    metrics.REGISTRY.register(collector)
    server.collector = collector
    return server.start()


@contextlib.contextmanager
def probes_served(
    reports: ReportService, settings: Settings, heartbeat: Heartbeat
) -> Iterator[ProbeServer | None]:
    """:func:`start_probes` for the duration of the block, closed after it."""
    server = start_probes(reports, settings, heartbeat)
    try:
        yield server
    finally:
        if server is not None:
            server.close()
