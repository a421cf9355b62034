"""Concurrent time windows write byte for byte what one sequential export writes.

A fake feed service and a fake telemetry service (handlers behind ``httpx.MockTransport``)
answer like the real ones: feed ``start``/``end`` inclusive, ``cursor``, ``limit`` (default
25, capped at 100), newest first; telemetry ``from``/``to`` inclusive and ``limit``, no
cursor. Records sit on window bounds, at one instant, in a few windows only, at every
timestamp precision; the same export is run sequentially (``concurrency=1``) and in windows
and the files compared.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import threading
import time
import uuid
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.upstream import HttpRecordSource, UpstreamConfig
from adapters.upstream.source import WINDOWS_PER_THREAD
from adapters.upstream.windows import Range, SplitPolicy, plan
from reportcore.errors import ExportFailure
from reportcore.export import scope_values, write_export
from reportcore.jobs import JobType, ReportFormat, Scope
from reportcore.jobtypes import JOB_TYPES
from reportcore.ports import SourceRequest

URL = "http://upstream.test"
FIRST_DAY, LAST_DAY = dt.date(2026, 1, 1), dt.date(2026, 1, 3)
FIRST = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 1, 4, tzinfo=dt.UTC)  # exclusive
SCOPE = Scope(barn_id="b1", start_date=FIRST_DAY, end_date=LAST_DAY)
CONCURRENCY = 4
WEIGHVISION = SourceRequest(
    job_id="j",
    tenant_id="t1",
    job_type=JobType.WEIGHVISION_EXPORT,
    scope=SCOPE,
    upstream_filters={},
)


def bounds_of_plan() -> list[dt.datetime]:
    whole = Range(first=FIRST, end=END, lower="", upper="")
    # the bounds between windows (the newest window's is the range's own end)
    return [b.below for b in plan(whole, CONCURRENCY * WINDOWS_PER_THREAD)[1:] if b.below]


def stamp(t: dt.datetime, style: int) -> str:
    """An instant in one of the spellings upstreams use, down to its precision."""
    if style == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t.microsecond == 0 else stamp(t, 2)
    if style == 1 and t.microsecond % 1000 == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if style == 3:
        return t.isoformat()  # +00:00
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(n: int, at: str) -> dict[str, Any]:
    return {
        "id": f"rec-{n:05d}",
        "tenantId": "t1",
        "farmId": "f1",
        "barnId": "b1",
        "source": "MANUAL",
        "quantityKg": f"{n}.5",
        "occurredAt": at,
        "createdAt": at,
        "notes": "line one\nline two" if n % 7 == 0 else None,
        # telemetry's fields, ignored by the feed's record type and the other way round
        "metric": "temperature",
        "value": f"{n}.25",
        "unit": "C",
        "deviceId": "d1",
    }


def parsed(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class Upstream:
    """The fake services over ``records`` (any order; answered newest first), counting calls."""

    def __init__(self, records: list[dict[str, Any]], *, fail_when: Any = None) -> None:
        self.records = sorted(records, key=lambda r: (parsed(r["occurredAt"]), r["id"]))[::-1]
        self.fail_when = fail_when
        self.calls = 0
        self.lock = threading.Lock()
        self.delay = 0.0

    def __call__(self, req: httpx.Request) -> httpx.Response:
        with self.lock:
            self.calls += 1
        if self.delay:  # a slow upstream (latency it simulates), not synchronisation
            time.sleep(self.delay)
        if self.fail_when is not None and self.fail_when(req):
            return httpx.Response(404)
        p = req.url.params
        if req.url.path.endswith("/intake-records"):
            lo, hi = p.get("start"), p.get("end")
            limit = min(int(p.get("limit", "25")), 100)
            hits = self.within(lo, hi)
            at = int(p.get("cursor", "0"))
            page = hits[at : at + limit]
            more = at + limit < len(hits)
            return httpx.Response(
                200, json={"items": page, "nextCursor": str(at + limit) if more else None}
            )
        hits = self.within(p.get("from"), p.get("to"))
        return httpx.Response(200, json=hits[: int(p["limit"])])

    def within(self, lo: str | None, hi: str | None) -> list[dict[str, Any]]:
        low = parsed(lo) if lo else None
        high = parsed(hi) if hi else None
        return [
            r
            for r in self.records
            if (low is None or parsed(r["occurredAt"]) >= low)
            and (high is None or parsed(r["occurredAt"]) <= high)
        ]


def export(
    upstream: Upstream,
    job_type: JobType,
    fmt: ReportFormat,
    concurrency: int,
    *,
    split: SplitPolicy | None = None,
    page: int = 7,
    fetched: Any = None,
    **config: Any,
) -> bytes:
    """The file an export of ``upstream`` (a handler of requests) writes, in memory: through
    the real record source with ``concurrency`` windows, ``page`` records a page, ``split``
    (the test's own policy, else the source's) and any other ``UpstreamConfig`` field."""
    out = bytearray()

    class Collect:
        def write(self, data: bytes | bytearray | memoryview) -> None:
            out.extend(data)

        def commit(self) -> str:
            return "memory"

        def abort(self) -> None:
            out.clear()

    request = SourceRequest(
        job_id=str(uuid.uuid4()),
        tenant_id="t1",
        job_type=job_type,
        scope=SCOPE,
        upstream_filters={},
        typed=fmt is ReportFormat.CSV,
        raw=fmt is ReportFormat.JSON,
        fetched=fetched,
    )
    settings_: dict[str, Any] = {
        "feed_url": URL,
        "telemetry_url": URL,
        "concurrency": concurrency,
        "feed_page_limit": page,
        "telemetry_limit": max(page, 50),
    }
    config_ = UpstreamConfig(**(settings_ | config))
    with HttpRecordSource(config_, transport=httpx.MockTransport(upstream), split=split) as source:
        write_export(
            JOB_TYPES[job_type],
            fmt,
            source.pages(request),
            Collect(),
            scope_values=scope_values("t1", SCOPE),
        )
        assert source.running_threads() == 0
    return bytes(out)


def same_both_ways(records: list[dict[str, Any]], job_type: JobType) -> bytes:
    """The CSV and NDJSON files of a sequential and of a windowed export must agree; the CSV."""
    files = {}
    for fmt in (ReportFormat.JSON, ReportFormat.CSV):
        sequential = export(Upstream(records), job_type, fmt, 1)
        windowed = export(Upstream(records), job_type, fmt, CONCURRENCY)
        assert windowed == sequential, fmt
        files[fmt] = sequential
    return files[ReportFormat.CSV]


def ids_in(csv_file: bytes) -> list[str]:
    return [row[0] for row in csv.reader(io.StringIO(csv_file.decode(), newline=""))][1:]


FEED_AND_TELEMETRY = pytest.mark.parametrize(
    "job_type", [JobType.FEED_INTAKE_EXPORT, JobType.TELEMETRY_EXPORT], ids=lambda t: t.value
)


def test_the_plan_cuts_the_range_into_whole_millisecond_windows_newest_first() -> None:
    whole = Range(first=FIRST, end=END, lower="L", upper="U")
    windows = plan(whole, 16)
    assert len(windows) == 16
    assert windows[0].upper == "U" and windows[0].below == END
    assert windows[-1].lower == "L"
    for newer, older in itertools.pairwise(windows):
        assert older.upper == newer.lower  # a shared bound, owned by the newer window
        assert older.below is not None and older.below.microsecond % 1000 == 0


@FEED_AND_TELEMETRY
def test_records_on_every_window_bound_are_written_once_by_the_newer_window(
    job_type: JobType,
) -> None:
    records: list[dict[str, Any]] = []
    offsets = [dt.timedelta(0), dt.timedelta(microseconds=1), -dt.timedelta(microseconds=1)]
    offsets += [dt.timedelta(milliseconds=1), -dt.timedelta(milliseconds=1)]
    for b in bounds_of_plan():
        for i, off in enumerate(offsets):
            records.append(record(len(records), stamp(b + off, i % 4)))
    records.append(record(len(records), stamp(FIRST, 0)))  # the range's own ends
    records.append(record(len(records), "2026-01-03T23:59:59Z"))
    records.append(record(len(records), "2026-01-03T23:59:59.500Z"))  # past the feed's end=
    csv_file = same_both_ways(records, job_type)
    ids = ids_in(csv_file)
    assert len(ids) == len(set(ids)) == len(records) - (job_type is JobType.FEED_INTAKE_EXPORT)


class SecondsUpstream(Upstream):
    """A feed service that reads ``end`` to the second: ``end=...T23:59:59Z`` answers the
    records of the whole last second."""

    def within(self, lo: str | None, hi: str | None) -> list[dict[str, Any]]:
        if hi is not None and hi.endswith(":59Z"):
            hi = hi[:-1] + ".999999Z"
        return super().within(lo, hi)


@pytest.mark.parametrize("concurrency", [1, CONCURRENCY])
def test_the_feeds_records_of_the_end_dates_last_second_are_kept(concurrency: int) -> None:
    """The feed is asked end=<end_date>T23:59:59Z (the contract's); a service that answers
    the whole last second sent records at 23:59:59.5, within the end date, and they were
    dropped as out of range: a record of the day lost."""
    last_second = ["2026-01-03T23:59:59Z", "2026-01-03T23:59:59.500Z", "2026-01-03T23:59:59.999Z"]
    records = [record(n, at) for n, at in enumerate([*last_second, "2026-01-03T12:00:00Z"])]
    records.append(record(len(records), "2026-01-04T00:00:00Z"))  # the day after: out
    upstream = SecondsUpstream(records)
    ids = ids_in(export(upstream, JobType.FEED_INTAKE_EXPORT, ReportFormat.CSV, concurrency))
    assert sorted(ids) == sorted(r["id"] for r in records[:-1])


def test_thousands_of_feed_records_at_one_instant_page_through_by_cursor() -> None:
    b = bounds_of_plan()[1]
    records = [record(n, stamp(b, n % 4)) for n in range(700)]
    ids = ids_in(same_both_ways(records, JobType.FEED_INTAKE_EXPORT))
    assert len(set(ids)) == 700


def test_telemetry_readings_at_one_instant_under_a_page_are_exported_once() -> None:
    records = [record(n, "2026-01-02T06:00:00Z") for n in range(45)]  # limit 50
    ids = ids_in(same_both_ways(records, JobType.TELEMETRY_EXPORT))
    assert len(set(ids)) == 45


@FEED_AND_TELEMETRY
def test_empty_windows_and_an_empty_range_export_like_the_sequential_run(
    job_type: JobType,
) -> None:
    assert ids_in(same_both_ways([], job_type)) == []
    two_spots = [record(n, f"2026-01-0{1 + 2 * (n % 2)}T0{n % 10}:00:00Z") for n in range(60)]
    assert len(ids_in(same_both_ways(two_spots, job_type))) == 60


@pytest.mark.parametrize("fmt", [ReportFormat.CSV, ReportFormat.JSON])
@FEED_AND_TELEMETRY
def test_each_page_of_a_windowed_export_is_parsed_twice(
    job_type: JobType, fmt: ReportFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once for its window (ids, instants, tenant: read by the pager or the window, not both)
    and once for the file (typed records for CSV, raw ones for NDJSON), never to check again
    what the window checked."""
    from adapters.upstream import pagers, source, wire

    decoders = wire.DECODERS[job_type]
    keys = wire.FEED_KEYS if job_type is JobType.FEED_INTAKE_EXPORT else wire.READING_KEYS
    parses = {"keys": 0, "check": 0, "file": 0}

    def counting(call: wire.Call, decoder: Any, body: bytes) -> Any:
        if decoder is keys:
            parses["keys"] += 1
        elif decoder is decoders.check:
            parses["check"] += 1
        elif decoder in (decoders.typed, decoders.raw):
            parses["file"] += 1
        return wire.decode(call, decoder, body)

    monkeypatch.setattr(source, "decode", counting)
    monkeypatch.setattr(pagers, "decode", counting)
    b = bounds_of_plan()
    # records on every window bound (the pagers read those pages' keys) and between them
    records = [record(n, stamp(b[n % len(b)] - dt.timedelta(minutes=n % 3), 1)) for n in range(90)]
    upstream = Upstream(records)
    assert len(ids_in(export(upstream, job_type, ReportFormat.CSV, CONCURRENCY))) == 90
    parses.update(keys=0, check=0, file=0)
    upstream.calls = 0
    export(upstream, job_type, fmt, CONCURRENCY)
    assert upstream.calls >= CONCURRENCY
    assert parses["keys"] == upstream.calls
    assert parses["check"] == 0
    assert 0 < parses["file"] <= upstream.calls  # a page the window keeps nothing of: none


instants = st.one_of(
    st.sampled_from(bounds_of_plan()),
    st.datetimes(
        min_value=dt.datetime(2025, 12, 31, 23, 0),
        max_value=dt.datetime(2026, 1, 4, 1, 0),
        timezones=st.just(dt.UTC),
    ),
).flatmap(
    lambda t: st.sampled_from(
        [t, t + dt.timedelta(microseconds=1), t - dt.timedelta(microseconds=1)]
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.lists(st.tuples(instants, st.integers(1, 4), st.integers(0, 3)), max_size=30),
    job_type=st.sampled_from([JobType.FEED_INTAKE_EXPORT, JobType.TELEMETRY_EXPORT]),
)
def test_sequential_and_windowed_exports_are_byte_for_byte_equal(
    layout: list[tuple[dt.datetime, int, int]], job_type: JobType
) -> None:
    records = []
    for at, count, style in layout:
        for _ in range(count):  # several records at one instant
            records.append(record(len(records), stamp(at.replace(tzinfo=dt.UTC), style)))
    same_both_ways(records, job_type)


@FEED_AND_TELEMETRY
def test_a_failing_window_fails_the_export_with_its_code_and_stops_the_others(
    job_type: JobType,
) -> None:
    b = bounds_of_plan()
    records = [
        record(n, stamp(b[n % len(b)] - dt.timedelta(hours=1, seconds=n), 0)) for n in range(200)
    ]
    bad = b[2]
    name = "start" if job_type is JobType.FEED_INTAKE_EXPORT else "from"

    def fails(req: httpx.Request) -> bool:
        lower = req.url.params.get(name)
        return lower is not None and parsed(lower) == bad

    upstream = Upstream(records, fail_when=fails)
    with pytest.raises(ExportFailure) as failure:
        export(upstream, job_type, ReportFormat.CSV, CONCURRENCY)
    assert failure.value.code == "UPSTREAM_REJECTED"


@pytest.mark.parametrize("fmt", [ReportFormat.CSV, ReportFormat.JSON])
@pytest.mark.parametrize(
    ("job_type", "change", "says"),
    [
        (JobType.FEED_INTAKE_EXPORT, {"tenantId": "t2"}, "1 record(s) of another tenant"),
        (JobType.TELEMETRY_EXPORT, {"tenantId": "t2"}, "1 record(s) of another tenant"),
        (JobType.FEED_INTAKE_EXPORT, {"tenantId": None}, "Expected `str`, got `null`"),
        (JobType.FEED_INTAKE_EXPORT, {"id": 7}, "Expected `str`, got `int`"),
        (JobType.TELEMETRY_EXPORT, {"id": None}, "Expected `str`, got `null`"),
    ],
)
def test_the_windows_check_what_a_page_holds_for_every_format(
    job_type: JobType, change: dict[str, Any], says: str, fmt: ReportFormat
) -> None:
    """A record of another tenant, or one a CSV export could not identify, fails a windowed
    export of either format: the windows' parse of a page is its check (the file's parse of
    an NDJSON page no longer checks it again)."""
    b = bounds_of_plan()
    records = [record(n, stamp(b[n % len(b)] - dt.timedelta(minutes=n), 1)) for n in range(40)]
    records[17] |= change
    with pytest.raises(ExportFailure) as failure:
        export(Upstream(records), job_type, fmt, CONCURRENCY)
    assert failure.value.code == "UPSTREAM_BAD_RESPONSE"
    assert says in str(failure.value), str(failure.value)


def test_closing_the_pages_mid_export_stops_every_window_within_a_second() -> None:
    records = [record(n, stamp(FIRST + dt.timedelta(seconds=13 * n), 1)) for n in range(3000)]
    upstream = Upstream(records)
    upstream.delay = 0.02
    request = SourceRequest(
        job_id="j",
        tenant_id="t1",
        job_type=JobType.FEED_INTAKE_EXPORT,
        scope=SCOPE,
        upstream_filters={},
    )
    config = UpstreamConfig(feed_url=URL, concurrency=CONCURRENCY, feed_page_limit=5)
    with HttpRecordSource(config, transport=httpx.MockTransport(upstream)) as source:
        pages = source.pages(request)
        for _ in range(3):
            next(pages)
        assert source.running_threads() == CONCURRENCY
        started = time.monotonic()
        pages.close()
        stopped = time.monotonic() - started
        # no window thread is alive, so none can fetch again: the count is final
        assert source.running_threads() == 0
        calls = upstream.calls
    assert stopped < 1.0
    assert calls < 600 // 5


def test_a_window_spools_to_disk_beyond_its_memory_budget_and_reads_back_in_order() -> None:
    from adapters.upstream.spools import End, Spool
    from adapters.upstream.wire import Fetched

    spool = Spool(budget=10)
    items = [Fetched(bytes([n]) * 7, None if n % 2 else (True, False)) for n in range(6)]
    for item in items[:4]:
        spool.put(item)
    got = [spool.take(0.01), spool.take(0.01)]
    for item in items[4:]:
        spool.put(item)
    spool.finish()
    while (item := spool.take(0.01)) is not End.DONE:
        got.append(item)
    assert got == items
    spool.close()


@pytest.mark.parametrize("failing", ["pwritev", "pread"])
def test_a_spool_whose_temporary_space_is_full_fails_storage_failed_saying_so(
    failing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "export file could not be written", which sends an operator to the export store
    when it is the worker's TMPDIR that is full."""
    import os

    from adapters.upstream.spools import Spool
    from adapters.upstream.wire import Fetched
    from reportcore.errors import StorageFailure

    def full(*args: Any) -> Any:
        raise OSError(28, "No space left on device")

    spool = Spool(budget=1)  # every page to the file
    try:
        if failing == "pread":
            spool.put(Fetched(b"page"))
        monkeypatch.setattr(os, failing, full)
        with pytest.raises(StorageFailure) as failed:
            spool.put(Fetched(b"page")) if failing == "pwritev" else spool.take(0.01)
        assert failed.value.message == (
            "the worker's temporary files (TMPDIR) could not be written: No space left on device"
        )
        assert failed.value.code == "STORAGE_FAILED"
    finally:
        spool.close()


def test_the_requests_carry_user_agent_gzip_and_count_retries_in_the_hook() -> None:
    seen: list[httpx.Request] = []
    answers = iter([503, 503, 200])

    def upstream(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        status = next(answers)
        return httpx.Response(status, json={"items": []} if status == 200 else None)

    config = UpstreamConfig(weighvision_url=URL, backoff_base_sec=0.001, backoff_max_sec=0.002)
    with HttpRecordSource(config, transport=httpx.MockTransport(upstream)) as source:
        assert [len(p) for p in source.pages(WEIGHVISION)] == [0]
        assert source.clients.retries() == {"upstream.test": 2}
    assert seen[0].headers["user-agent"].startswith("farmiq-reportsvc/")
    assert seen[0].headers["accept-encoding"] == "gzip"
    assert msgspec.json.decode(b"[]") == []


def test_a_cookie_one_upstream_answer_sets_is_never_sent_on_a_later_request() -> None:
    """One client serves every tenant's exports: a Set-Cookie must not cross between them."""
    seen: list[httpx.Request] = []

    def upstream(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(
            200, json={"items": []}, headers={"set-cookie": "session=tenant-a; Path=/"}
        )

    config = UpstreamConfig(weighvision_url=URL)
    with HttpRecordSource(config, transport=httpx.MockTransport(upstream)) as source:
        for _ in range(2):
            assert [len(p) for p in source.pages(WEIGHVISION)] == [0]
        client = source.clients.client(URL)
        assert not client.cookies
        with pytest.raises(TypeError):
            client.cookies = {"session": "x"}
    assert len(seen) == 2
    assert "cookie" not in seen[1].headers


def test_a_windows_key_holds_the_tenant_as_its_record_type_does() -> None:
    from adapters.upstream.wire import FEED_KEYS, READING_KEYS, keyed
    from reportcore.records import FeedingKpiRecord

    items = b'[{"id": "a", "occurredAt": "2026-01-01T00:00:00Z", "other": 1}]'
    with pytest.raises(msgspec.ValidationError, match="tenantId"):
        FEED_KEYS.decode(b'{"items": ' + items + b"}")  # the feed's records carry it
    (key,) = READING_KEYS.decode(items)  # a reading may not
    assert msgspec.structs.asdict(key) == {
        "id": "a",
        "occurred_at": "2026-01-01T00:00:00Z",
        "tenant_id": None,
    }
    with pytest.raises(TypeError, match=r"FeedingKpiRecord\.id"):
        keyed(FeedingKpiRecord)  # paged by day, not by instant: no windows

    class Untenanted(msgspec.Struct, rename="camel", kw_only=True):
        id: str
        occurred_at: str

    with pytest.raises(TypeError, match="Untenanted has no tenant_id"):
        keyed(Untenanted)
