"""The prefetch thread of the HTTP record source: pages come out in upstream order, an
upstream failure on a page fetched ahead reaches the consumer with its code after the pages
before it, and a consumer that stops early stops the thread (also in the middle of a backoff),
without it fetching more than its bounded lead."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from adapters.upstream import HttpRecordSource, UpstreamConfig
from reportcore.errors import ExportFailure, UpstreamRejected, UpstreamUnavailable
from reportcore.jobs import JobType, Scope
from reportcore.ports import SourceRequest

from .upstream_support import MockHttp

URL = "http://feed.test"
PAGES = 12


def record(n: int) -> dict[str, Any]:
    return {
        "id": f"rec-{n}",
        "tenantId": "t1",
        "farmId": "f",
        "barnId": "b",
        "source": "MANUAL",
        "quantityKg": "1.5",
        "occurredAt": "2026-01-01T00:00:00Z",
        "createdAt": "2026-01-01T00:00:00Z",
    }


class Feed:
    """A feed of ``PAGES`` pages of three records; ``fail`` maps a page to its answer status."""

    def __init__(self, fail: dict[int, int] | None = None, delay: float = 0.0) -> None:
        self.fail = fail or {}
        self.delay = delay
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, req: httpx.Request) -> httpx.Response:
        n = int(req.url.params.get("cursor", "0"))
        with self.lock:
            self.calls.append(n)
        if self.delay:
            time.sleep(self.delay)
        if n in self.fail:
            return httpx.Response(self.fail[n], json={"error": "no"})
        nxt = str(n + 1) if n + 1 < PAGES else None
        return httpx.Response(
            200, json={"items": [record(3 * n + k) for k in range(3)], "nextCursor": nxt}
        )


def source_over(feed: Feed, prefetch: int = 2, **config: Any) -> HttpRecordSource:
    settings = {"feed_url": URL, "token": "tok", "prefetch_pages": prefetch, "retries": 0}
    return HttpRecordSource(UpstreamConfig(**(settings | config)), http=MockHttp(feed))


def request(*, typed: bool = True, raw: bool = False) -> SourceRequest:
    return SourceRequest(
        job_id=str(uuid.uuid4()),
        tenant_id="t1",
        job_type=JobType.FEED_INTAKE_EXPORT,
        scope=Scope(start_date=dt.date(2026, 1, 1)),
        upstream_filters={},
        typed=typed,
        raw=raw,
    )


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "upstream-prefetch" and t.is_alive()]


def test_prefetched_pages_come_in_upstream_order_as_without_prefetch() -> None:
    req = request(typed=True, raw=True)
    got = []
    for depth in (0, 1, 2):
        with source_over(Feed(), prefetch=depth) as source:
            pages = list(source.pages(req))
        got.append(
            (
                [r.id for p in pages for r in p.records or ()],
                [bytes(raw) for p in pages for raw in p.raw or ()],
            )
        )
    assert got[0][0] == [f"rec-{n}" for n in range(3 * PAGES)]
    assert got[1] == got[0] and got[2] == got[0]
    assert prefetch_threads() == []


@pytest.mark.parametrize(("status", "error"), [(400, UpstreamRejected), (503, UpstreamUnavailable)])
def test_a_failure_on_a_prefetched_page_reaches_the_consumer_with_its_code(
    status: int, error: type[ExportFailure]
) -> None:
    feed = Feed(fail={4: status})
    seen: list[str] = []
    with source_over(feed) as source, pytest.raises(error) as caught:
        for page in source.pages(request()):
            seen.extend(r.id for r in page.records or ())
    assert caught.value.code == error.code
    assert f"answered {status}" in str(caught.value)
    assert seen == [f"rec-{n}" for n in range(12)]  # every page before the failed one
    assert prefetch_threads() == []


def test_stopping_early_stops_the_thread_which_fetched_no_more_than_its_lead() -> None:
    feed = Feed()
    with source_over(feed, prefetch=2) as source:
        pages = source.pages(request())
        first = next(pages)
        time.sleep(0.2)  # let the thread run as far ahead as it may
        assert first.records is not None and first.records[0].id == "rec-0"
        pages.close()  # type: ignore[attr-defined]
        assert prefetch_threads() == []
    # page 0 consumed, pages 1 and 2 queued, page 3 fetched and waiting for room: no more
    assert feed.calls == [0, 1, 2, 3]


def test_stopping_during_a_backoff_does_not_wait_for_it() -> None:
    feed = Feed(fail={1: 503})
    with source_over(feed, retries=3, backoff_base_sec=30.0, backoff_max_sec=30.0) as source:
        source._rng.uniform = lambda low, high: high  # type: ignore[method-assign]
        pages = source.pages(request())
        next(pages)
        deadline = time.monotonic() + 5
        while feed.calls.count(1) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        began = time.monotonic()
        pages.close()  # type: ignore[attr-defined]
        assert time.monotonic() - began < 2.0  # not the 30 s backoff
        assert prefetch_threads() == []
    assert feed.calls == [0, 1]


def test_a_consumer_that_fails_mid_export_leaves_no_thread() -> None:
    """What ``run_job`` does on a cancel or a failed write: the exception leaves the loop and
    the generator is closed."""
    with source_over(Feed(delay=0.01)) as source:
        pages = source.pages(request())
        with pytest.raises(RuntimeError, match="disk full"):
            try:
                for _ in pages:
                    raise RuntimeError("disk full")
            finally:
                pages.close()  # type: ignore[attr-defined]
        assert prefetch_threads() == []
