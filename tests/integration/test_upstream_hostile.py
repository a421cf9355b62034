"""Issue 26: an upstream that misbehaves the way a service does after a bad deploy, over real
HTTP (the demo upstream's ``body`` fault), and what each ends as. Rows of the issue's table:

- 3, a page of hundreds of megabytes: refused at its ``Content-Length``, or while it arrives
  without one, holding at most ``UPSTREAM_MAX_PAGE_BYTES`` of it;
- 4, a gzip bomb: inflated as a stream and refused at the same cap, never inflated whole;
- 5, a body dripped a byte at a time (each read under the timeout): the page's total
  deadline ends it, and a cancel ends it within seconds, mid-page.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.demo_upstream import DemoUpstream
from adapters.upstream import HttpRecordSource
from reportcore.jobs import JobStatus, JobType
from tests.integration.test_upstream_sources import PATHS, Ran, config_for, run

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
    assert ran.content().splitlines()[1].startswith(b"2026-01-05,1.52")


def test_a_truncated_gzip_page_is_a_bad_response(demo: DemoUpstream, tmp_path: Path) -> None:
    page = zlib.compress(b'{"items": []}' + b" " * 5000, wbits=16 + zlib.MAX_WBITS)
    demo.faults.body(page[: len(page) // 2], headers={"Content-Encoding": "gzip"}, path=KPI)
    with HttpRecordSource(config_for(demo)) as source:
        ran = run(source, tmp_path, JobType.KPI_FEEDING_EXPORT, "csv")
    message = failed(ran, "UPSTREAM_BAD_RESPONSE")
    assert "ends early" in message, message


def test_a_body_dripped_under_the_read_timeout_ends_at_the_page_deadline(
    demo: DemoUpstream, tmp_path: Path
) -> None:
    # a byte every 0.3 s never trips the 5 s read timeout: only the page's deadline ends it
    demo.faults.body(b'{"items": []}' * 1000, drip_sec=0.3, times=10, path=KPI)
    config = config_for(demo, timeout_sec=5.0, page_deadline_sec=2.0)
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
