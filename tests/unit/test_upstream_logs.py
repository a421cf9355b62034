"""What a reportsvc process logs of its upstream requests: not httpx's line per request (it
broke ``reportsvc export``'s progress bar and made ``reportsvc dev`` log a line per page), but
our own lines of a retry, a failure and a slow page, through the service's handler."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from entrypoints.runtime.logs import setup_logging
from entrypoints.settings import Settings
from reportcore.errors import UpstreamRejected, UpstreamUnavailable
from reportcore.jobs import JobType

from .test_upstream_retry import drain, request, source_over


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What the service's logging setup (LOG_LEVEL=INFO, the default) writes, restoring the
    loggers it touches afterwards."""
    root = logging.getLogger()
    libraries = [logging.getLogger(n) for n in ("httpx", "httpcore", "pika")]
    saved = (list(root.handlers), root.level, [lib.level for lib in libraries])
    stream = io.StringIO()
    setup_logging(Settings(), stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for lib, level in zip(libraries, saved[2], strict=True):
            lib.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()  # log records: one a line (logs.py)


def test_httpx_logs_no_line_per_request_at_the_default_level(logged: io.StringIO) -> None:
    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": []})

    with source_over(upstream) as source:
        drain(source, request(JobType.KPI_FEEDING_EXPORT))
    assert [line for line in _lines(logged) if "HTTP Request" in line or "httpx" in line] == []


def test_a_retry_is_logged_by_our_logger(logged: io.StringIO) -> None:
    answers = [httpx.Response(503), httpx.Response(200, json={"items": []})]

    with source_over(lambda req: answers.pop(0)) as source:
        drain(source, request(JobType.KPI_FEEDING_EXPORT))
    [line] = _lines(logged)
    assert 'logger=reportsvc.upstream msg="upstream retry"' in line
    assert "host=upstream.test path=/api/v1/kpi/feeding attempt=1" in line


def test_a_failure_after_the_last_try_is_logged_once_naming_the_problem(
    logged: io.StringIO,
) -> None:
    with (
        source_over(lambda req: httpx.Response(502), retries=1) as source,
        pytest.raises(UpstreamUnavailable),
    ):
        drain(source, request(JobType.KPI_FEEDING_EXPORT))
    failed = [line for line in _lines(logged) if "upstream request failed" in line]
    assert len(failed) == 1
    assert "level=WARNING logger=reportsvc.upstream" in failed[0]
    assert "answered 502 for GET /api/v1/kpi/feeding (gave up after 2 tries)" in failed[0]


def test_a_rejected_request_is_logged(logged: io.StringIO) -> None:
    with (
        source_over(lambda req: httpx.Response(403)) as source,
        pytest.raises(UpstreamRejected),
    ):
        drain(source, request(JobType.WEIGHVISION_EXPORT))
    [line] = _lines(logged)
    assert "level=WARNING logger=reportsvc.upstream" in line
    assert "answered 403 for GET /api/v1/weighvision/weight-aggregates" in line


def test_a_page_slower_than_the_threshold_is_logged_and_a_quick_one_is_not(
    logged: io.StringIO,
) -> None:
    def slow(req: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        return httpx.Response(200, json={"items": []})

    with source_over(slow, slow_page_sec=1.0) as source:
        drain(source, request(JobType.KPI_FEEDING_EXPORT))
    assert _lines(logged) == []
    with source_over(slow, slow_page_sec=0.01) as source:
        drain(source, request(JobType.KPI_FEEDING_EXPORT))
    [line] = _lines(logged)
    assert 'level=WARNING logger=reportsvc.upstream msg="upstream slow page"' in line
    assert "path=/api/v1/kpi/feeding" in line and "tries=1" in line


def test_with_log_level_debug_httpx_speaks_again(logged: io.StringIO) -> None:
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpcore").isEnabledFor(logging.INFO)
    setup_logging(Settings(log_level="DEBUG"), stream=logged)
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
