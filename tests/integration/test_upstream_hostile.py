"""Issue 26: an upstream that misbehaves the way a service does after a bad deploy, over real
HTTP (the demo upstream's ``body`` fault), and what each ends as. Rows of the issue's table:

- 3, a page of hundreds of megabytes: refused at its ``Content-Length``, or while it arrives
  without one, holding at most ``UPSTREAM_MAX_PAGE_BYTES`` of it;
- 4, a gzip bomb: inflated as a stream and refused at the same cap, never inflated whole;
- 5, a body dripped a byte at a time (each read under the timeout): the page's total
  deadline ends it, and a cancel ends it within seconds, mid-page.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import itertools
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters import metrics
from adapters.clock import SystemClock
from adapters.demo_upstream import DEMO_FARM_ID, DEMO_TENANT, DemoUpstream
from adapters.filesystem import FilesystemStore
from adapters.upstream import HttpRecordSource, UpstreamConfig
from reportcore.jobs import Job, JobStatus, JobType, message_for
from reportcore.policy import ExportLimits, Policy
from reportcore.running import RunOutcome
from reportcore.testing import InMemoryJobRepository
from tests.integration.test_upstream_sources import (
    PATHS,
    Ran,
    config_for,
    demo_scope,
    make_job,
    run,
)
from tests.running import run_message

from .hostile_upstream import hostile_upstream

KPI = PATHS[JobType.KPI_FEEDING_EXPORT]
MIB = 1024 * 1024


@pytest.fixture
def demo() -> Iterator[DemoUpstream]:
    with DemoUpstream(token="internal-service-token-7f1d") as upstream:
        yield upstream


def failed(ran: Ran, code: str) -> str:
    assert ran.job.status is JobStatus.FAILED, ran.job
    assert ran.job.error_code == code, ran.job
    assert not ran.folder().exists() or not any(ran.folder().iterdir()), "a partial file was left"
    assert ran.job.error_message is not None
    return ran.job.error_message


def run_traced(source: HttpRecordSource, root: Path, fmt: str = "csv") -> tuple[Ran, int]:
    """A KPI job run, with the peak of Python's allocations while it ran."""
    tracemalloc.start()
    try:
        ran = run(source, root, JobType.KPI_FEEDING_EXPORT, fmt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ran, peak


def test_a_page_declaring_200_mb_is_refused_at_its_content_length(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    demo.faults.body(b"[" + b" " * (MIB - 1), repeat=200, path=KPI)
    with HttpRecordSource(config_for(demo, max_page_bytes=4 * MIB)) as source:
        ran, peak = run_traced(source, tmp_path)
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert "over 4194304 bytes (UPSTREAM_MAX_PAGE_BYTES)" in message, message
    assert peak < 4 * MIB, peak


def test_a_page_of_200_mb_without_a_length_is_refused_while_it_arrives(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    demo.faults.body(b"[" + b" " * (MIB - 1), repeat=200, length=False, path=KPI)
    began = time.monotonic()
    with HttpRecordSource(config_for(demo, max_page_bytes=4 * MIB)) as source:
        ran, peak = run_traced(source, tmp_path)
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert "over 4194304 bytes (UPSTREAM_MAX_PAGE_BYTES)" in message, message
    # memory held a capped page at most (a bytearray grows by up to ~1/8 over what it holds)
    assert peak < 4 * 4 * MIB, peak
    assert time.monotonic() - began < 30, "the whole body was read"


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """256 MiB of a JSON page's whitespace, gzipped to a fraction of a megabyte."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * MIB
    parts = [packer.compress(b'{"items": [')]
    parts += [packer.compress(block) for _ in range(256)]
    parts.append(packer.compress(b"]}") + packer.flush())
    return b"".join(parts)


def test_a_gzip_bomb_is_inflated_as_a_stream_and_refused_at_the_cap(
    demo: DemoUpstream, tmp_path: Path, gzip_bomb: bytes
) -> None:
    assert len(gzip_bomb) < MIB
    demo.faults.body(gzip_bomb, headers={"Content-Encoding": "gzip"}, path=KPI)
    with HttpRecordSource(config_for(demo, max_page_bytes=8 * MIB)) as source:
        ran, peak = run_traced(source, tmp_path)
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert "bytes once inflated (UPSTREAM_MAX_PAGE_BYTES)" in message, message
    assert peak < 4 * 8 * MIB, peak


def test_a_gzipped_page_under_the_cap_is_inflated_and_exported(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    page = b'{"items": [{"recordDate": "2026-01-05", "fcr": "1.52"}]}'
    demo.faults.body(
        zlib.compress(page, wbits=16 + zlib.MAX_WBITS),
        headers={"Content-Encoding": "gzip"},
        path=KPI,
    )
    with HttpRecordSource(config_for(demo)) as source:
        ran = run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "csv")
    assert ran.job.status is JobStatus.SUCCEEDED, ran.job
    [_, row] = csv.reader(io.StringIO(ran.content().decode("utf-8")))
    assert row[:2] == ["2026-01-05", "1.52"]


def test_a_truncated_gzip_page_is_a_bad_response(demo: DemoUpstream, tmp_path: Path) -> None:
    page = zlib.compress(b'{"items": []}' + b" " * 5000, wbits=16 + zlib.MAX_WBITS)
    demo.faults.body(page[: len(page) // 2], headers={"Content-Encoding": "gzip"}, path=KPI)
    with HttpRecordSource(config_for(demo)) as source:
        ran = run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "csv")
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert "ends early" in message, message


@pytest.mark.parametrize("transport", ["stdlib", "httpx"])
def test_a_body_dripped_under_the_read_timeout_ends_at_the_page_deadline(
    demo: DemoUpstream, tmp_path: Path, transport: str
) -> None:
    # a byte every 0.3 s never trips the 5 s read timeout: only the page's deadline ends it
    demo.faults.body(b'{"items": []}' * 1000, drip_sec=0.3, times=10, path=KPI)
    config = config_for(demo, timeout_sec=5.0, page_deadline_sec=2.0, transport=transport)
    done: list[Ran] = []
    began = time.monotonic()
    with HttpRecordSource(config) as source:
        runner = threading.Thread(
            target=lambda: done.append(run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "csv")),
            daemon=True,
        )
        runner.start()
        runner.join(30)
        took = time.monotonic() - began
        assert done, "the dripped page never ended"
        message = failed(done[0], "UPSTREAM_UNAVAILABLE")
        assert "within 2 s (UPSTREAM_PAGE_DEADLINE_SEC)" in message, message
        assert 2.0 <= took < 10.0, took
        assert source.running_threads() == 0


# --- a cancel and a stop end a page in flight (row 5) ---


class Renewing:
    """The worker's lease keeper in small: renews from a thread every 0.1 s."""

    def __init__(self) -> None:
        self.renewals = 0

    @contextlib.contextmanager
    def __call__(self, renew: Callable[[], bool]) -> Iterator[None]:
        done = threading.Event()

        def loop() -> None:
            while not done.wait(0.1):
                self.renewals += 1
                if not renew():
                    return

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def start_job(
    source: HttpRecordSource, root: Path, stopping: Callable[[], bool] = lambda: False
) -> tuple[InMemoryJobRepository, Job, threading.Thread, list[RunOutcome]]:
    """A KPI job run by ``run_job`` in a thread under a lease keeper."""
    jobs = InMemoryJobRepository()
    job = make_job(JobType.KPI_FEEDING_EXPORT, "csv", demo_scope(JobType.KPI_FEEDING_EXPORT))
    jobs.add(job)
    outcomes: list[RunOutcome] = []

    def go() -> None:
        outcomes.append(
            run_message(
                msgspec.json.encode(message_for(job)),
                owner="worker-1",
                jobs=jobs,
                source=source,
                store=FilesystemStore(root),
                clock=SystemClock(),
                policy=Policy(),
                stopping=stopping,
                keep_lease=Renewing(),
            )
        )

    runner = threading.Thread(target=go, daemon=True)
    runner.start()
    return jobs, job, runner, outcomes


def start_dripped_job(
    demo: DemoUpstream,
    root: Path,
    stopping: Callable[[], bool] = lambda: False,
    transport: str = "stdlib",
    **config: Any,
) -> tuple[InMemoryJobRepository, Job, HttpRecordSource, threading.Thread, list[RunOutcome]]:
    """A KPI job whose page drips a byte a second (forever, for the test's purposes), run by
    ``run_job`` in a thread under a lease keeper; returns once the page is in flight."""
    demo.faults.body(b'{"items": []}' * 1000, drip_sec=1.0, path=KPI)
    source = HttpRecordSource(
        config_for(demo, timeout_sec=30.0, page_deadline_sec=600.0, transport=transport, **config)
    )
    jobs, job, runner, outcomes = start_job(source, root, stopping)
    deadline = time.monotonic() + 10
    while not demo.requests_to(KPI) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the body has begun to drip
    assert runner.is_alive() and source.running_threads() == 1
    return jobs, job, source, runner, outcomes


def test_a_cancel_ends_an_export_waiting_for_a_host_slot_within_seconds(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    # the one slot of the host is held by another export's dripped page (up to its deadline)
    held_jobs, held, source, held_runner, _ = start_dripped_job(
        demo, tmp_path / "a", host_concurrency=1
    )
    with source:
        jobs, job, runner, outcomes = start_job(source, tmp_path / "b")
        time.sleep(1.0)
        assert runner.is_alive() and len(demo.requests_to(KPI)) == 1
        cancelled_at = time.monotonic()
        assert jobs.cancel(job.id, job.tenant_id, dt.datetime.now(dt.UTC)) is not None
        runner.join(10)
        assert outcomes and outcomes[0].status == "cancelled", outcomes
        assert time.monotonic() - cancelled_at < 5.0
        held_jobs.cancel(held.id, held.tenant_id, dt.datetime.now(dt.UTC))
        held_runner.join(10)
        assert source.running_threads() == 0


@pytest.mark.parametrize("transport", ["stdlib", "httpx"])
def test_a_cancel_ends_an_export_mid_page_within_seconds(
    demo: DemoUpstream, tmp_path: Path, transport: str
) -> None:
    # httpx's own transport has no watchdog: there the read ends at the next byte (1 s here)
    jobs, job, source, runner, outcomes = start_dripped_job(demo, tmp_path, transport=transport)
    with source:
        cancelled_at = time.monotonic()
        assert jobs.cancel(job.id, job.tenant_id, dt.datetime.now(dt.UTC)) is not None
        runner.join(10)
        took = time.monotonic() - cancelled_at
        assert outcomes, "the export did not end after the cancel"
        assert outcomes[0].status == "cancelled", outcomes[0]
        assert took < 5.0, took
        assert source.running_threads() == 0, "the request in flight was not abandoned"
        assert not any((tmp_path / job.tenant_id / job.id).glob("*"))


def test_a_stop_ends_an_export_mid_page_and_hands_the_job_back(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    stop = threading.Event()
    jobs, job, source, runner, outcomes = start_dripped_job(demo, tmp_path, stop.is_set)
    with source:
        stop.set()
        stopped_at = time.monotonic()
        runner.join(10)
        assert outcomes and outcomes[0].status == "handed back", outcomes
        assert time.monotonic() - stopped_at < 5.0
        assert source.running_threads() == 0
        latest = jobs.get(job.id)
        assert latest is not None and latest.status is JobStatus.QUEUED


# --- rows 1, 8, 9, 15: pages that never end, another tenant's records, records that are not ---

FEED = PATHS[JobType.FEED_INTAKE_EXPORT]
TELEMETRY = PATHS[JobType.TELEMETRY_EXPORT]


def feed_item(n: int, tenant: str = DEMO_TENANT, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"rec-{n}",
        "tenantId": tenant,
        "farmId": DEMO_FARM_ID,
        "barnId": "b1",
        "source": "MANUAL",
        "quantityKg": "1.5",
        "occurredAt": "2026-01-10T12:00:00Z",
        "createdAt": "2026-01-10T12:00:00Z",
        **extra,
    }


def run_against(
    url: str, root: Path, job_type: JobType, fmt: str, policy: Policy | None = None, **config: Any
) -> Ran:
    """One job with every upstream at ``url``, through ``run_job`` (sequential paging)."""
    overrides = {"feed_url": url, "telemetry_url": url, "weighvision_url": url, "concurrency": 1}
    jobs = InMemoryJobRepository()
    job = make_job(job_type, fmt, demo_scope(job_type))
    jobs.add(job)
    with HttpRecordSource(
        UpstreamConfig(**{"timeout_sec": 5.0, "retries": 0, **overrides, **config})
    ) as source:
        run_message(
            msgspec.json.encode(message_for(job)),
            owner="worker-1",
            jobs=jobs,
            source=source,
            store=FilesystemStore(root),
            clock=SystemClock(),
            policy=policy or Policy(),
        )
        assert source.running_threads() == 0
    done = jobs.get(job.id)
    assert done is not None
    return Ran(job=done, root=root)


def test_a_fresh_next_cursor_on_every_page_ends_at_the_page_limit(tmp_path: Path) -> None:
    pages = itertools.count()

    def answer(path: str, query: dict[str, list[str]]) -> bytes:
        n = next(pages)
        return msgspec.json.encode({"items": [feed_item(n)], "nextCursor": f"fresh-{n}"})

    limits = ExportLimits(max_pages=300)
    with hostile_upstream(answer) as up:
        ran = run_against(
            up.base_url, tmp_path, JobType.FEED_INTAKE_EXPORT, "csv", Policy(limits=limits)
        )
        message = failed(ran, "EXPORT_LIMIT_EXCEEDED")
        assert "300 upstream pages (REPORT_MAX_EXPORT_PAGES)" in message, message
        assert up.requests == 300


def test_a_cursor_cycle_longer_than_the_cursors_kept_is_caught(tmp_path: Path) -> None:
    # 5,000 pages: longer than the 4,096 cursors kept and the ~2,600 of the report
    def answer(path: str, query: dict[str, list[str]]) -> bytes:
        at = int((query.get("cursor") or ["c-0"])[0].removeprefix("c-"))
        return msgspec.json.encode({"items": [], "nextCursor": f"c-{(at + 1) % 5_000}"})

    with hostile_upstream(answer) as up:
        ran = run_against(up.base_url, tmp_path, JobType.FEED_INTAKE_EXPORT, "csv")
        message = failed(ran, "UPSTREAM_BAD_RESPONSE")
        assert "repeated the cursor" in message, message
        assert up.requests <= 3 * 5_000


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_record_of_another_tenant_fails_the_export_and_is_counted(
    tmp_path: Path, fmt: str
) -> None:
    def answer(path: str, query: dict[str, list[str]]) -> bytes:
        items = [feed_item(1), feed_item(2, tenant="another-tenant"), feed_item(3)]
        return msgspec.json.encode({"items": items, "nextCursor": None})

    counter = metrics.UPSTREAM_FOREIGN_RECORDS.labels("feed")
    before = counter._value.get()
    with hostile_upstream(answer) as up:
        ran = run_against(up.base_url, tmp_path, JobType.FEED_INTAKE_EXPORT, fmt)
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert "1 record(s) of another tenant" in message, message
    assert "another-tenant" not in message
    assert counter._value.get() == before + 1


@pytest.mark.parametrize(
    "items",
    [[1, "two", None, [3]], [{"tenantId": DEMO_TENANT}], [{"id": 7}]],
    ids=["not objects", "no id", "id not a string"],
)
def test_ndjson_records_are_checked_as_csv_ones_are(tmp_path: Path, items: list[Any]) -> None:
    def answer(path: str, query: dict[str, list[str]]) -> bytes:
        return msgspec.json.encode(items)

    with hostile_upstream(answer) as up:
        for fmt in ("csv", "json"):
            ran = run_against(up.base_url, tmp_path / fmt, JobType.TELEMETRY_EXPORT, fmt)
            failed(ran, "UPSTREAM_BAD_RESPONSE")


def test_three_million_tiny_items_in_one_page_fail_without_being_held(tmp_path: Path) -> None:
    body = b"[" + b",".join([b"1"] * 3_000_000) + b"]"

    with hostile_upstream(lambda path, query: body) as up:
        tracemalloc.start()
        try:
            ran = run_against(up.base_url, tmp_path, JobType.TELEMETRY_EXPORT, "json")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert peak < 4 * len(body), peak  # the page, not three million values


def test_a_page_of_more_records_than_the_item_cap_fails(tmp_path: Path) -> None:
    reading = {"id": "r", "occurredAt": "2026-01-10T12:00:00Z", "tenantId": DEMO_TENANT}
    body = msgspec.json.encode([{**reading, "id": f"r{n}"} for n in range(50)])
    with hostile_upstream(lambda path, query: body) as up:
        ran = run_against(
            up.base_url, tmp_path, JobType.TELEMETRY_EXPORT, "json", max_page_items=20
        )
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert "50 records in one page" in message and "UPSTREAM_MAX_PAGE_ITEMS" in message


# --- row 2: a telemetry service that ignores ``from`` pages back in time forever ---


def test_telemetry_ignoring_from_stops_at_the_lower_bound_and_writes_nothing_older(
    tmp_path: Path,
) -> None:
    hour = dt.timedelta(hours=1)

    def answer(path: str, query: dict[str, list[str]]) -> bytes:
        # ``limit`` readings an hour apart, ending before ``to``, whatever ``from`` says
        to = dt.datetime.fromisoformat(query["to"][0])
        limit = int(query["limit"][0])
        firsts = [to - hour * (n + 1) for n in range(limit)]
        readings = [
            {
                "id": f"r-{t.isoformat()}",
                "tenantId": DEMO_TENANT,
                "occurredAt": t.isoformat().replace("+00:00", "Z"),
                "value": "1",
            }
            for t in firsts
        ]
        return msgspec.json.encode(readings)

    done: list[Ran] = []
    with hostile_upstream(answer) as up:
        runner = threading.Thread(
            target=lambda: done.append(
                run_against(
                    up.base_url, tmp_path, JobType.TELEMETRY_EXPORT, "csv", telemetry_limit=50
                )
            ),
            daemon=True,
        )
        runner.start()
        runner.join(60)
        assert done, "the export kept paging back in time"
        requests = up.requests
    ran = done[0]
    assert ran.job.status is JobStatus.SUCCEEDED, ran.job
    scope = demo_scope(JobType.TELEMETRY_EXPORT)
    assert scope.start_date is not None and scope.end_date is not None
    first = dt.datetime.combine(scope.start_date, dt.time.min, tzinfo=dt.UTC)
    header, *rows = csv.reader(io.StringIO(ran.content().decode("utf-8")))
    at = header.index("occurred_at")
    instants = [dt.datetime.fromisoformat(row[at]) for row in rows]
    assert instants and min(instants) >= first, min(instants)
    days = (scope.end_date - scope.start_date).days + 1
    assert len(rows) == days * 24
    assert requests <= days * 24 // 50 + 2


def test_a_content_length_of_thousands_of_digits_is_a_bad_response_not_a_crash(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    # int() refuses to read more than 4,300 digits: that ValueError ended the job as a bug
    headers = {"Content-Length": "9" * 5000}
    demo.faults.body(b'{"items": []}', headers=headers, length=False, path=KPI)
    with HttpRecordSource(config_for(demo)) as source:
        ran = run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "csv")
    assert "(UPSTREAM_MAX_PAGE_BYTES)" in failed(ran, "UPSTREAM_BAD_RESPONSE")


def test_pages_fetched_past_the_byte_limit_end_the_export(tmp_path: Path) -> None:
    # a never-ending feed whose windows run ahead of the writer: their spools are bounded
    pages = itertools.count()

    def answer(path: str, query: dict[str, list[str]]) -> bytes:
        n = next(pages)
        items = [feed_item(n * 100 + i) for i in range(100)]
        return msgspec.json.encode({"items": items, "nextCursor": f"fresh-{n}"})

    limits = ExportLimits(max_bytes=2 * MIB)
    with hostile_upstream(answer) as up:
        ran = run_against(
            up.base_url, tmp_path, JobType.FEED_INTAKE_EXPORT, "csv", Policy(limits=limits)
        )
        message = failed(ran, "EXPORT_LIMIT_EXCEEDED")
        assert "bytes fetched upstream (REPORT_MAX_EXPORT_BYTES)" in message, message
        assert up.requests < 2 * MIB // (100 * 200) + 2
