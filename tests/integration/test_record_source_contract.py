"""One RecordSource contract over every adapter of the port: the in-memory ``StaticRecordSource``
(what unit tests and library users trust) and the ``HttpRecordSource`` over real HTTP against
the demo upstream, one request after another (``http-sequential``) and in concurrent time
windows (``http-windows``, the default for a bounded range). All are given the same records - the
demo's, fetched by hand as the contract describes - so each promise below is checked against
the same truth on each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from adapters.demo_upstream import DemoUpstream
from adapters.upstream import HttpRecordSource, UpstreamConfig
from reportcore.errors import ExportFailure, UpstreamRejected
from reportcore.jobs import JobType
from reportcore.jobtypes import JOB_TYPES, Applied
from reportcore.ports import RecordSource, SourcePage
from reportcore.testing import StaticRecordSource

from .test_upstream_sources import TOKEN, config_for, demo_scope, request_for, upstream_records


class World(msgspec.Struct, kw_only=True):
    """A source under test, the records it must yield, and a way to make its next read fail."""

    source: RecordSource
    expected: dict[JobType, list[Any]]
    fail_next_rejected: Callable[[], None]


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoUpstream]:
    with DemoUpstream(token=TOKEN) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def truth(demo: DemoUpstream) -> dict[JobType, list[Any]]:
    return {jt: upstream_records(demo, jt, demo_scope(jt)) for jt in JobType}


def contract_config(demo: DemoUpstream, **overrides: Any) -> UpstreamConfig:
    """Small pages (several a job type) and one retry, so paging and failures show quickly."""
    return config_for(demo, feed_page_limit=25, telemetry_limit=500, retries=1, **overrides)


@pytest.fixture(params=["memory", "http-sequential", "http-windows"])
def world(
    request: pytest.FixtureRequest,
    demo: DemoUpstream,
    truth: dict[JobType, list[Any]],
) -> Iterator[World]:
    demo.faults.clear()
    if request.param == "memory":
        static = StaticRecordSource({jt.value: recs for jt, recs in truth.items()}, page_size=25)

        def fail_static() -> None:
            static.fail_with = UpstreamRejected("feed service answered 404")

        yield World(source=static, expected=truth, fail_next_rejected=fail_static)
    else:
        concurrency = 1 if request.param == "http-sequential" else 8
        with HttpRecordSource(contract_config(demo, concurrency=concurrency)) as http:
            yield World(
                source=http, expected=truth, fail_next_rejected=lambda: demo.faults.status(404)
            )
    demo.faults.clear()


def plain(records: Any) -> list[Any]:
    return list(msgspec.to_builtins(list(records)))


def typed_of(job_type: JobType, raw: Any) -> Any:
    return msgspec.json.decode(bytes(raw), type=JOB_TYPES[job_type].record_type)


ALL = pytest.mark.parametrize("job_type", list(JobType), ids=lambda t: t.value)


def test_the_adapters_satisfy_the_port(world: World) -> None:
    assert isinstance(world.source, RecordSource)


@ALL
def test_typed_pages_yield_every_record_in_upstream_order_as_the_job_types_struct(
    world: World, job_type: JobType
) -> None:
    pages = list(world.source.pages(request_for(job_type, demo_scope(job_type))))
    records = [r for p in pages for r in (p.records or ())]
    assert len(records) > 10
    assert all(isinstance(r, JOB_TYPES[job_type].record_type) for r in records)
    expected = [typed_of(job_type, msgspec.json.encode(e)) for e in world.expected[job_type]]
    assert records == expected
    assert all(p.raw is None for p in pages), "raw bytes were not asked for"


@ALL
def test_raw_pages_carry_each_records_json_as_upstream_sent_it(
    world: World, job_type: JobType
) -> None:
    pages = list(world.source.pages(request_for(job_type, demo_scope(job_type), raw=True)))
    raws = [r for p in pages for r in (p.raw or ())]
    assert [msgspec.json.decode(bytes(r)) for r in raws] == world.expected[job_type]
    assert all(p.records is None for p in pages), "typed records were not asked for"


@ALL
def test_typed_and_raw_asked_together_are_aligned_record_by_record(
    world: World, job_type: JobType
) -> None:
    request = msgspec.structs.replace(
        request_for(job_type, demo_scope(job_type), raw=True), typed=True
    )
    spec = JOB_TYPES[job_type]
    needed = {f.record_attr for f in spec.filters.values() if f.applied is Applied.STREAM}
    needed |= {spec.progress_attr, "id", "record_date", "tenant_id"}
    for page in world.source.pages(request):
        assert page.records is not None and page.raw is not None
        assert len(page.records) == len(page.raw) == len(page)
        for raw, record in zip(page.raw, page.records, strict=True):
            # what the filters and the progress read is there, as in the whole record
            whole = typed_of(job_type, raw)
            for name in needed & set(whole.__struct_fields__):
                assert getattr(record, name) == getattr(whole, name), name


def test_a_consumer_may_stop_after_one_page_and_the_source_serves_the_next_request(
    world: World,
) -> None:
    job_type = JobType.FEED_INTAKE_EXPORT
    request = request_for(job_type, demo_scope(job_type))
    pages = world.source.pages(request)
    first: SourcePage = next(iter(pages))
    assert 0 < len(first) < len(world.expected[job_type])
    close = getattr(pages, "close", None)
    if close is not None:
        close()
    again = [r for p in world.source.pages(request) for r in (p.records or ())]
    assert plain(again) == plain(
        typed_of(job_type, msgspec.json.encode(e)) for e in world.expected[job_type]
    )


def test_a_rejected_read_raises_an_export_failure_with_the_contracts_code(world: World) -> None:
    world.fail_next_rejected()
    job_type = JobType.FEED_INTAKE_EXPORT
    with pytest.raises(ExportFailure) as raised:
        list(world.source.pages(request_for(job_type, demo_scope(job_type))))
    assert raised.value.code == "UPSTREAM_REJECTED"
    assert not raised.value.retryable
