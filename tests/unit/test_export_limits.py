"""Issue 26, item 1 (every export bounded) and item 2 (an export ends mid-page), in the core:
past its pages, rows, bytes or wall time a job fails ``EXPORT_LIMIT_EXCEEDED`` naming the limit
and its variable, leaving no file; the checkpoint a source is handed ends the export while the
source waits, with the job handed back (a stop), left cancelled (a cancel) or failed (its time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reportcore.deps import Deps
from reportcore.encoding import CORE_ROW_FORMATS
from reportcore.fairness import TenantSlots
from reportcore.jobs import JobStatus
from reportcore.jobtypes import JOB_TYPES
from reportcore.policy import LIMIT_VARIABLES, ExportLimits, Policy, limit_exceeded
from reportcore.ports import SourcePage, SourceRequest
from reportcore.running import RunContext, run_job
from reportcore.testing import RecordingWebhookSender, StaticRecordSource
from tests.running import run_message
from tests.unit.test_usecases import TENANT, World, feed_record

MANY = {"FEED_INTAKE_EXPORT": [feed_record(i % 9) for i in range(40)]}


def world_deps(world: World) -> Deps:
    return Deps(
        jobs=world.jobs,
        queue=world.queue,
        store=world.store,
        clock=world.clock,
        source=world.source,
        outbox=world.jobs.outbox,
        sender=RecordingWebhookSender(),
        policy=world.policy,
        formats=CORE_ROW_FORMATS,
        job_types=JOB_TYPES,
    )


def world_with(limits: ExportLimits, source: Any = None) -> World:
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3, limits=limits))
    world.source = source or StaticRecordSource(MANY, page_size=4)  # 10 pages of 4 rows
    return world


def failed_on(world: World, variable: str) -> str:
    job = world.create().job
    outcome = world.run()
    done = world.get(job.id)
    assert outcome.status == "failed", outcome
    assert done.status is JobStatus.FAILED and done.error_code == "EXPORT_LIMIT_EXCEEDED", done
    assert done.error_message is not None and f"({variable})" in done.error_message
    world.assert_no_file(done)
    return done.error_message


def test_the_defaults_bound_every_export_far_beyond_a_real_one() -> None:
    limits = Policy().limits
    assert limits.max_rows >= 10_000_000 and limits.max_pages >= limits.max_rows // 100
    assert limits.max_bytes >= 8 * 1024**3 and limits.max_sec >= 3600
    assert set(LIMIT_VARIABLES) == set(ExportLimits.__struct_fields__)


def test_an_export_past_its_rows_fails_naming_the_limit_and_its_variable() -> None:
    message = failed_on(world_with(ExportLimits(max_rows=30)), "REPORT_MAX_EXPORT_ROWS")
    assert "limit of 30 rows" in message, message


def test_an_export_past_its_pages_fails() -> None:
    message = failed_on(world_with(ExportLimits(max_pages=7)), "REPORT_MAX_EXPORT_PAGES")
    assert "limit of 7 upstream pages" in message, message


def test_an_export_past_its_bytes_fails_before_the_file_is_kept() -> None:
    failed_on(world_with(ExportLimits(max_bytes=1000)), "REPORT_MAX_EXPORT_BYTES")


def test_an_export_within_every_limit_succeeds_with_all_its_rows() -> None:
    world = world_with(ExportLimits(max_rows=40, max_pages=10, max_bytes=100_000, max_sec=60))
    world.create()
    outcome = world.run()
    assert outcome.status == "succeeded" and outcome.rows == 40


class WaitingSource:
    """One page, then a wait for the upstream that never answers: the checkpoint the source
    is handed is asked every few milliseconds, as the HTTP source's watchdog does; ``step``
    runs on each wait (advancing a clock, cancelling the job)."""

    def __init__(self, step: Callable[[], None] = lambda: None) -> None:
        self.step = step
        self.waits = 0

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        yield from StaticRecordSource(MANY, page_size=4).pages(request)
        assert request.checkpoint is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.waits += 1
            self.step()
            request.checkpoint()
            time.sleep(0.005)
        raise AssertionError("the checkpoint never ended the export")


def test_an_export_past_its_wall_time_fails_also_while_its_upstream_hangs() -> None:
    world = world_with(ExportLimits(max_sec=120))
    source = WaitingSource(step=lambda: world.clock.advance(10))
    world.source = source
    message = failed_on(world, "REPORT_MAX_EXPORT_SEC")
    assert "limit of 120 seconds" in message
    assert source.waits == 13  # 130 s is past 120; 120 s is not


def test_a_stop_ends_an_export_while_its_upstream_hangs_and_hands_the_job_back() -> None:
    stop = threading.Event()
    world = world_with(ExportLimits())
    world.source = WaitingSource(step=stop.set)
    job = world.create().job
    outcome = world.run(stopping=stop.is_set)
    assert outcome.status == "handed back"
    assert world.get(job.id).status is JobStatus.QUEUED
    world.assert_no_file(world.get(job.id))


def test_a_cancel_ends_an_export_while_its_upstream_hangs() -> None:
    world = world_with(ExportLimits())
    job = world.create().job

    def cancel() -> None:
        world.jobs.cancel(job.id, TENANT, world.clock.now())

    def keeper(renew: Callable[[], bool]) -> Any:
        # the worker's lease keeper renews from a thread; once here, on every wait
        class Keeping:
            def __enter__(self) -> None:
                world.source.step = lambda: (cancel(), renew())

            def __exit__(self, *exc: object) -> None:
                return None

        return Keeping()

    world.source = WaitingSource()
    shares = TenantSlots(1)
    outcome = run_message(
        world.queue.take() or b"",
        owner="w1",
        jobs=world.jobs,
        source=world.source,
        store=world.store,
        clock=world.clock,
        policy=world.policy,
        keep_lease=keeper,
        shares=shares,
    )
    assert outcome.status == "cancelled", outcome
    assert world.source.waits == 1
    world.assert_no_file(world.get(job.id))
    assert shares.take(TENANT), "the tenant's slot was not given back"


@pytest.mark.parametrize("name", sorted(LIMIT_VARIABLES))
def test_each_limit_names_its_variable(name: str) -> None:
    failure = limit_exceeded(ExportLimits(), name)
    assert failure.code == "EXPORT_LIMIT_EXCEEDED"
    assert LIMIT_VARIABLES[name] in failure.message


def test_the_run_reports_each_page_written_for_the_liveness_probe() -> None:
    world = world_with(ExportLimits())
    world.create()
    message = world.queue.take()
    assert message is not None
    pages: list[int] = []
    run_job(
        message,
        world_deps(world),
        RunContext(owner="w1", progressed=lambda: pages.append(len(pages))),
    )
    assert len(pages) == 10  # 40 records, 4 a page


def test_an_export_of_exactly_its_byte_limit_is_kept_and_one_byte_less_fails() -> None:
    # over 1 MiB: the file is written in several chunks, and every one of them counts
    big = StaticRecordSource(
        {"FEED_INTAKE_EXPORT": [feed_record(i % 9) for i in range(20_000)]}, page_size=100
    )
    unlimited = world_with(ExportLimits(), big)
    job = unlimited.create().job
    unlimited.run()
    size = unlimited.get(job.id).size_bytes
    assert size is not None and size > 1024 * 1024
    exact = world_with(ExportLimits(max_bytes=size), big)
    exact.create()
    assert exact.run().status == "succeeded"
    failed_on(world_with(ExportLimits(max_bytes=size - 1), big), "REPORT_MAX_EXPORT_BYTES")


def test_a_limit_names_what_was_counted_when_it_is_not_its_own() -> None:
    failure = limit_exceeded(ExportLimits(max_bytes=5), "max_bytes", "bytes fetched upstream")
    assert failure.message.startswith(
        "the export went past its limit of 5 bytes fetched upstream (REPORT_MAX_EXPORT_BYTES)"
    )
    own = limit_exceeded(ExportLimits(max_bytes=5), "max_bytes")
    assert "limit of 5 bytes written (REPORT_MAX_EXPORT_BYTES)" in own.message
    assert (
        "limit of 21600 seconds (REPORT_MAX_EXPORT_SEC)"
        in limit_exceeded(ExportLimits(), "max_sec").message
    )
    assert (
        "limit of 1,000,000 upstream pages" in limit_exceeded(ExportLimits(), "max_pages").message
    )
