"""The worker's HTTP port: /metrics with the gauges read at scrape time, /healthz from the
consume loop's heartbeat, /readyz from the database and broker pings."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from entrypoints.runtime.probes import (
    EXPORT_GRACE_SEC,
    BacklogCollector,
    Heartbeat,
    ProbeServer,
    check_ready,
    probes_served,
)
from entrypoints.settings import Settings
from reportcore.errors import ServiceUnavailable
from reportcore.jobs import Job, JobType, ReportFormat
from reportcore.policy import Policy
from reportcore.testing import FakeClock, InMemoryJobRepository
from tests.clock import pinned_now
from tests.containers import in_memory_container

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(now: dt.datetime) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        tenant_id=f"tenant-{uuid.uuid4().hex[:6]}",
        requested_by=None,
        job_type=JobType.FEED_INTAKE_EXPORT,
        format=ReportFormat.CSV,
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
def served() -> Iterator[tuple[ProbeServer, Ticks, dict[str, str]]]:
    ticks = Ticks()
    failing: dict[str, str] = {}

    def ping(name: str) -> None:
        if name in failing:
            raise ServiceUnavailable(failing[name])

    server = ProbeServer(
        "127.0.0.1",
        0,
        heartbeat=Heartbeat(ticks),
        pings={"database": lambda: ping("database"), "queue": lambda: ping("queue")},
        stuck_after_sec=60,
    ).start()
    try:
        yield server, ticks, failing
    finally:
        server.close()


def test_healthz_is_200_while_the_loop_beats_and_503_once_it_is_stuck(
    served: tuple[ProbeServer, Ticks, dict[str, str]],
) -> None:
    server, ticks, _ = served
    ticks.now += 59
    assert httpx.get(server.url + "/healthz").status_code == 200
    ticks.now += 2
    stuck = httpx.get(server.url + "/healthz")
    assert stuck.status_code == 503
    assert stuck.json() == {"status": "stuck", "loop_age_sec": 61.0, "export_stalled_sec": 0.0}
    server.heartbeat.beat()
    assert httpx.get(server.url + "/healthz").json()["status"] == "alive"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_head_answers_what_get_does_without_the_body(
    served: tuple[ProbeServer, Ticks, dict[str, str]], path: str
) -> None:
    """`wget --spider` (FarmIQ's compose health check, and operators' own) sends HEAD:
    it was answered 501, so a worker container probed that way was never healthy."""
    server, _, _ = served
    got, head = httpx.get(server.url + path), httpx.head(server.url + path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    if path != "/metrics":  # the metrics move between two scrapes
        assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]


def test_healthz_fails_once_a_running_export_writes_no_page_past_the_page_deadline() -> None:
    # issue 26, item 2: an export stuck mid-page (whatever should have ended the page did not)
    # is a worker to restart, even while its consume loop turns
    ticks = Ticks()
    heartbeat = Heartbeat(ticks)
    server = ProbeServer(
        "127.0.0.1", 0, heartbeat=heartbeat, pings={}, stuck_after_sec=60, stalled_after_sec=180
    ).start()
    try:
        with heartbeat.export() as progressed, heartbeat.export():
            ticks.now += 100
            progressed()  # one export writes pages, the other is stuck
            ticks.now += 79
            heartbeat.beat()
            assert httpx.get(server.url + "/healthz").status_code == 200
            ticks.now += 2
            heartbeat.beat()
            stuck = httpx.get(server.url + "/healthz")
            assert stuck.status_code == 503
            assert stuck.json() == {
                "status": "stuck",
                "loop_age_sec": 0.0,
                "export_stalled_sec": 181.0,
            }
        assert httpx.get(server.url + "/healthz").status_code == 200  # both ended
    finally:
        server.close()


def test_a_page_told_after_its_export_ended_brings_back_no_stalled_export() -> None:
    """A window thread may tell of a page as its export ends: the export's entry came back,
    never to be removed, and the probe called the worker stuck 180 s later."""
    ticks = Ticks()
    heartbeat = Heartbeat(ticks)
    with heartbeat.export() as progressed:
        pass
    progressed()
    ticks.now += 500
    assert heartbeat.stalled() == 0.0


@pytest.mark.parametrize("host", ["::1", "::"])
def test_the_worker_probes_serve_on_an_ipv6_host(host: str) -> None:
    """The stdlib's server is IPv4 only: WORKER_HTTP_HOST=:: logged 'worker http not
    started' and the worker ran with no /healthz, so an orchestrator restarted it in a loop."""
    with served_on_a_free_port(
        lambda port: Settings(worker_http_host=host, worker_http_port=port), probe_host="::1"
    ) as (server, settings):
        assert server.url == f"http://[::1]:{settings.worker_http_port}"
        assert httpx.get(server.url + "/healthz").status_code == 200


def test_the_worker_probe_waits_the_page_deadline_and_a_grace_for_an_export() -> None:
    with served_on_a_free_port(
        lambda port: Settings(
            worker_http_host="127.0.0.1", worker_http_port=port, upstream_page_deadline_sec=30
        )
    ) as (server, _):
        assert server.stalled_after_sec == 30 + EXPORT_GRACE_SEC


def test_readyz_names_the_dependency_that_does_not_answer(
    served: tuple[ProbeServer, Ticks, dict[str, str]],
) -> None:
    server, _, failing = served
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}
    failing["queue"] = "RabbitMQ does not answer"
    down = httpx.get(server.url + "/readyz")
    assert down.status_code == 503
    assert down.json() == {
        "status": "not ready",
        "checks": {"database": "ok", "queue": "RabbitMQ does not answer"},
    }


def test_metrics_are_served_in_the_text_format_and_other_paths_are_404(
    served: tuple[ProbeServer, Ticks, dict[str, str]],
) -> None:
    server, _, _ = served
    answer = httpx.get(server.url + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {f.name for f in text_string_to_metric_families(answer.text)}
    assert {"reportsvc_jobs_finished", "reportsvc_jobs_running"} <= names
    assert httpx.get(server.url + "/other").status_code == 404


def test_a_ping_that_hangs_is_reported_as_no_answer_in_time() -> None:
    release = threading.Event()
    # a bound of seconds: the healthy ping's thread must get its turn on a loaded machine
    results = check_ready(
        {"database": lambda: None, "queue": lambda: bool(release.wait(10))}, timeout_sec=2
    )
    release.set()
    assert results == {"database": "ok", "queue": "no answer within 2s"}


def test_the_heartbeat_beats_only_from_the_consume_loops_thread() -> None:
    ticks = Ticks()
    heartbeat = Heartbeat(ticks)
    asked = heartbeat.watching(lambda: False)
    ticks.now += 30
    other = threading.Thread(target=asked)
    other.start()
    other.join()
    assert heartbeat.age() == 30, "a handler thread asking stop() is not the loop turning"
    assert asked() is False
    assert heartbeat.age() == 0


def test_backlog_and_lease_overrun_gauges_are_read_from_the_job_store_when_scraped() -> None:
    clock = FakeClock(pinned_now())
    now = clock.now()
    jobs = InMemoryJobRepository()
    for _ in range(3):
        jobs.add(job(now))  # stored, never published
    running = job(now)
    jobs.add(running)
    jobs.mark_enqueued(running.id, now)
    jobs.claim(running.id, "w", now, now + dt.timedelta(seconds=30))
    depths = {"report.jobs": 4, "report.jobs.dlq": 2}
    collector = BacklogCollector(lambda: jobs, clock, Policy(), lambda: depths, cache_sec=0)
    registry = CollectorRegistry()
    registry.register(collector)
    clock.advance(1)
    assert registry.get_sample_value("reportsvc_publish_backlog_jobs") == 3
    assert registry.get_sample_value("reportsvc_jobs_lease_expired") == 0
    clock.advance(30)
    assert registry.get_sample_value("reportsvc_jobs_lease_expired") == 1
    assert registry.get_sample_value("reportsvc_queue_messages", {"queue": "report.jobs.dlq"}) == 2


def test_a_reading_that_fails_is_left_out_and_the_rest_is_served() -> None:
    def broken() -> InMemoryJobRepository:
        raise ServiceUnavailable("database down")

    def no_broker() -> dict[str, int]:
        raise OSError("connection refused")

    registry = CollectorRegistry()
    registry.register(BacklogCollector(broken, FakeClock(pinned_now()), Policy(), no_broker))
    assert registry.get_sample_value("reportsvc_publish_backlog_jobs") is None
    assert registry.get_sample_value("reportsvc_queue_messages", {"queue": "report.jobs"}) is None


def test_readings_are_cached_between_close_scrapes() -> None:
    reads: list[int] = []

    def depths() -> dict[str, int]:
        reads.append(1)
        return {"report.jobs": len(reads)}

    jobs = InMemoryJobRepository()
    collector = BacklogCollector(lambda: jobs, FakeClock(pinned_now()), Policy(), depths)
    registry = CollectorRegistry()
    registry.register(collector)
    for _ in range(3):
        assert registry.get_sample_value("reportsvc_queue_messages", {"queue": "report.jobs"}) == 1
    assert len(reads) == 1


PROBE_START_ATTEMPTS = 5


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def served_on_a_free_port(
    settings_for: Callable[[int], Settings], probe_host: str = "127.0.0.1"
) -> Iterator[tuple[ProbeServer, Settings]]:
    """:func:`probes_served` on a port picked by binding port 0 and letting go (the probes
    cannot bind port 0 themselves: it turns them off). Another process may take the port
    before the probes bind it; that lost race is retried on another port, a few times."""
    for _ in range(PROBE_START_ATTEMPTS):
        settings = settings_for(free_port(probe_host))
        reports = in_memory_container(settings).reports()
        with probes_served(reports, settings, Heartbeat()) as server:
            if server is not None:
                yield server, settings
                return
    pytest.fail(f"the probes did not start on a free port in {PROBE_START_ATTEMPTS} tries")


def test_the_worker_port_serves_while_the_block_runs_and_is_off_at_0(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(worker_http_port=0)
    off = in_memory_container(settings)
    with probes_served(off.reports(), settings, Heartbeat()) as server:
        assert server is None
    with served_on_a_free_port(
        lambda port: Settings(worker_http_host="127.0.0.1", worker_http_port=port)
    ) as (_, settings):
        port = settings.worker_http_port
        reports = in_memory_container(settings).reports()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "reportsvc_publish_backlog_jobs 0.0" in scraped
        # a second worker on the same port runs without one, and says so
        with probes_served(reports, settings, Heartbeat()) as second:
            assert second is None
        assert f"worker http not started on 127.0.0.1:{port}" in caplog.text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
