"""The HTTP record source's fetch process (``UpstreamConfig.fetch_process``), through a real
process and real HTTP against the demo upstream: what it adds to the record source contract
(which ``test_record_source_contract`` runs on it) - an exporter that stops early leaves the
process ready for the next export, a stop interrupts a backoff, a failure keeps its code and
message, a process that dies fails only its export, and ``close`` ends every process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator

import msgspec
import pytest

from adapters.demo_upstream import DemoUpstream
from adapters.upstream import FEED_INTAKE_PATH, HttpRecordSource
from reportcore.errors import UpstreamRejected, UpstreamUnavailable
from reportcore.jobs import JobType

from .test_upstream_sources import TOKEN, config_for, demo_scope, request_for, upstream_records

FEED = JobType.FEED_INTAKE_EXPORT


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoUpstream]:
    with DemoUpstream(token=TOKEN) as upstream:  # answers 401 unless the process sends it
        yield upstream


@pytest.fixture
def source(demo: DemoUpstream) -> Iterator[HttpRecordSource]:
    demo.faults.clear()
    config = config_for(demo, feed_page_limit=10, retries=2, backoff_base_sec=0.01)
    with HttpRecordSource(msgspec.structs.replace(config, fetch_process=True)) as http:
        yield http
    demo.faults.clear()


def fetchers() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.name == "upstream-fetch"}


def ids(source: HttpRecordSource) -> list[str]:
    request = request_for(FEED, demo_scope(FEED))
    return [r.id for page in source.pages(request) for r in page.records or ()]


def test_it_fetches_in_another_process_and_keeps_it_for_the_next_export(
    source: HttpRecordSource, demo: DemoUpstream
) -> None:
    expected = [r["id"] for r in upstream_records(demo, FEED, demo_scope(FEED))]
    assert len(expected) > 30  # several pages of 10
    before = fetchers()
    assert ids(source) == expected
    started = fetchers() - before
    assert len(started) == 1 and os.getpid() not in started
    assert ids(source) == expected
    assert fetchers() - before == started  # the same process served both


def test_an_exporter_that_stops_early_leaves_the_process_ready(
    source: HttpRecordSource, demo: DemoUpstream
) -> None:
    expected = [r["id"] for r in upstream_records(demo, FEED, demo_scope(FEED))]
    pages = source.pages(request_for(FEED, demo_scope(FEED)))
    first = next(pages)
    assert [r.id for r in first.records or ()] == expected[:10]
    before = fetchers()
    pages.close()  # type: ignore[attr-defined]
    assert ids(source) == expected  # no page of the stopped export leaks into this one
    assert fetchers() == before


def test_a_stop_interrupts_a_backoff(demo: DemoUpstream) -> None:
    config = config_for(demo, feed_page_limit=10, retries=3, backoff_base_sec=30.0)
    config = msgspec.structs.replace(config, backoff_max_sec=30.0, fetch_process=True)
    with HttpRecordSource(config) as source:
        assert ids(source)  # the process is up
        demo.faults.status(503, times=10, after=1)  # the second page fails, then backs off
        pages = source.pages(request_for(FEED, demo_scope(FEED)))
        next(pages)
        time.sleep(0.3)  # the process is in its backoff by now, all but surely
        started = time.monotonic()
        pages.close()  # type: ignore[attr-defined]
        assert time.monotonic() - started < 5.0
        demo.faults.clear()
        assert ids(source)  # and it serves the next export


def test_a_failure_keeps_its_code_and_message(source: HttpRecordSource, demo: DemoUpstream) -> None:
    demo.faults.status(404, after=2, path=FEED_INTAKE_PATH)
    with pytest.raises(
        UpstreamRejected, match=f"feed service answered 404 for GET {FEED_INTAKE_PATH}"
    ):
        ids(source)
    assert ids(source)  # the process serves the next export


def test_a_process_that_dies_fails_its_export_only(
    source: HttpRecordSource, demo: DemoUpstream
) -> None:
    before = fetchers()
    assert ids(source)
    (pid,) = fetchers() - before
    demo.faults.hang(2.0, after=1)  # the second page is slow to come: kill the process meanwhile
    pages = source.pages(request_for(FEED, demo_scope(FEED)))
    next(pages)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(UpstreamUnavailable, match="fetch process ended"):
        list(pages)
    demo.faults.clear()
    assert ids(source)  # a new process serves the next export
    assert pid not in fetchers()


def test_close_ends_every_process(demo: DemoUpstream) -> None:
    before = fetchers()
    config = msgspec.structs.replace(config_for(demo, feed_page_limit=10), fetch_process=True)
    source = HttpRecordSource(config)
    assert ids(source)
    assert fetchers() - before
    source.close()
    assert fetchers() - before == set()
    with pytest.raises(RuntimeError, match="closed"):
        ids(source)
