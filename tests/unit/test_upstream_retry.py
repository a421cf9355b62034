"""The HTTP record source against upstream behaviours the demo upstream never shows (a cursor
that repeats, a ``to`` that is ignored, unreadable instants), served by
handlers that play the upstream service (tests/unit/upstream_support.py); and the backoff
arithmetic on its own."""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from adapters.upstream import HttpRecordSource, UpstreamConfig, retry_after_seconds
from reportcore.errors import (
    ExportFailure,
    UpstreamBadResponse,
    UpstreamRejected,
    UpstreamUnavailable,
)
from reportcore.jobs import JobType, Scope
from reportcore.ports import SourcePage, SourceRequest

from .upstream_support import Handler, transport

TOKEN = "very-secret-service-token"
URL = "http://upstream.test"


def source_over(
    handler: Handler, sleeps: list[float] | None = None, **config: Any
) -> HttpRecordSource:
    settings: dict[str, Any] = {
        "feed_url": URL,
        "telemetry_url": URL,
        "weighvision_url": URL,
        "token": TOKEN,
    }
    return HttpRecordSource(
        UpstreamConfig(**(settings | config)),
        transport=transport(handler),
        sleep=(sleeps if sleeps is not None else []).append,
        rng=random.Random(7),
    )


def request(job_type: JobType, *, typed: bool = True, raw: bool = False) -> SourceRequest:
    return SourceRequest(
        job_id=str(uuid.uuid4()),
        tenant_id="t1",
        job_type=job_type,
        scope=Scope(barn_id=str(uuid.uuid4()), start_date=dt.date(2026, 1, 1)),
        upstream_filters={},
        typed=typed,
        raw=raw,
    )


def drain(source: HttpRecordSource, req: SourceRequest) -> list[SourcePage]:
    return list(source.pages(req))


def reading(n: int, at: str) -> dict[str, Any]:
    return {"id": f"r{n}", "occurredAt": at, "metric": "t", "value": f"{n}.0"}


# --- feed cursor ---


def test_a_repeated_feed_cursor_is_a_bad_response_not_an_endless_loop() -> None:
    calls: list[httpx.Request] = []

    def upstream(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        cursor = "c2" if req.url.params.get("cursor") == "c1" else "c1"
        item = {
            "id": f"x{len(calls)}",
            "tenantId": "t1",
            "farmId": "f",
            "barnId": "b",
            "source": "MANUAL",
            "quantityKg": "1",
            "occurredAt": "2026-01-01T00:00:00Z",
            "createdAt": "2026-01-01T00:00:00Z",
        }
        return httpx.Response(200, json={"items": [item], "nextCursor": cursor})

    with (
        source_over(upstream) as source,
        pytest.raises(UpstreamBadResponse, match="repeated the cursor 'c1'"),
    ):
        drain(source, request(JobType.FEED_INTAKE_EXPORT))
    assert len(calls) == 3


@pytest.mark.parametrize("length", [8 * 1024 + 1, 70_000])
def test_a_cursor_longer_than_any_url_should_carry_is_a_bad_response(length: int) -> None:
    """70,000 characters made httpx refuse the next URL with InvalidURL, which no handler
    took for the upstream's fault: the export failed 'unexpectedly'."""

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [], "nextCursor": "c" * length})

    with (
        source_over(upstream) as source,
        pytest.raises(UpstreamBadResponse, match=f"sent a cursor of {length} characters"),
    ):
        drain(source, request(JobType.FEED_INTAKE_EXPORT))


@pytest.mark.parametrize(
    ("typed", "raw", "field"),
    [
        (False, True, b"notes"),
        (True, False, b"notes"),
        # an NDJSON export with a stream filter decodes typed records too, and the typed
        # decode skips a field it does not know without looking inside: the raw bytes were
        # written to the file as they came
        (True, True, b"extra"),
    ],
    ids=["ndjson", "csv", "ndjson filtered, unknown field"],
)
def test_a_record_that_is_not_utf8_fails_the_export_as_a_bad_response(
    typed: bool, raw: bool, field: bytes
) -> None:
    """A byte sequence that is not UTF-8 in a field no check reads: an NDJSON export wrote it
    to the file as it came (and its options' reshaping failed 'unexpectedly' on it)."""
    item = (
        b'{"id":"x1","tenantId":"t1","farmId":"f","barnId":"b","source":"MANUAL",'
        b'"quantityKg":"1","occurredAt":"2026-01-01T00:00:00Z",'
        b'"createdAt":"2026-01-01T00:00:00Z","' + field + b'":"caf\xe9"}'
    )

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"items":[' + item + b'],"nextCursor":null}')

    with (
        source_over(upstream) as source,
        pytest.raises(UpstreamBadResponse, match=r"(not UTF-8|unreadable page)"),
    ):
        drain(source, request(JobType.FEED_INTAKE_EXPORT, typed=typed, raw=raw))


@pytest.mark.parametrize(
    ("job_type", "typed", "raw"),
    [
        (JobType.FEED_INTAKE_EXPORT, True, False),
        (JobType.FEED_INTAKE_EXPORT, False, True),
        (JobType.TELEMETRY_EXPORT, True, False),
        (JobType.WEIGHVISION_EXPORT, False, True),
    ],
    ids=["feed csv", "feed ndjson", "telemetry csv", "weighvision ndjson"],
)
def test_a_page_nested_too_deeply_is_a_bad_response(
    job_type: JobType, typed: bool, raw: bool
) -> None:
    """msgspec raises RecursionError on JSON nested ~1,000 deep, even in a field it skips: it
    failed the export as a bug ("failed unexpectedly"), with a traceback in the log."""
    nested = b"[" * 5_000 + b"]" * 5_000
    record = b'{"id":"x1","extra":' + nested + b"}"

    def upstream(req: httpx.Request) -> httpx.Response:
        if job_type is JobType.FEED_INTAKE_EXPORT:
            return httpx.Response(200, content=b'{"items":[' + record + b'],"nextCursor":null}')
        if job_type is JobType.TELEMETRY_EXPORT:
            return httpx.Response(200, content=b"[" + record + b"]")
        return httpx.Response(200, content=b'{"items":[' + record + b"]}")

    with (
        source_over(upstream) as source,
        pytest.raises(UpstreamBadResponse, match="nested too deeply"),
    ):
        drain(source, request(job_type, typed=typed, raw=raw))


@pytest.mark.parametrize("length", [b"\xb2", b"1\xb3", b"12x"], ids=["2", "13", "12x"])
def test_a_content_length_that_is_no_ascii_number_is_not_a_worker_bug(length: bytes) -> None:
    """A header's bytes are read as Latin-1, where ``"\xb2".isdigit()`` (a superscript two)
    is true and ``int()`` of it raises ValueError: the export failed 'unexpectedly'. A length
    that is no number is read as none (the body's bytes are counted against the cap)."""
    body = b'{"items":[],"nextCursor":null}'

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=[(b"content-length", length)], content=body)

    with source_over(upstream) as source:
        assert len(drain(source, request(JobType.FEED_INTAKE_EXPORT))) == 1


def _days_request(job_type: JobType, *, typed: bool, raw: bool) -> SourceRequest:
    return msgspec.structs.replace(
        request(job_type, typed=typed, raw=raw),
        scope=Scope(
            barn_id=str(uuid.uuid4()),
            batch_id=str(uuid.uuid4()),
            start_date=dt.date(2024, 1, 1),
            end_date=dt.date(2024, 1, 2),
        ),
    )


@pytest.mark.parametrize(("typed", "raw"), [(True, False), (False, True)], ids=["csv", "ndjson"])
def test_weighvision_days_outside_the_dates_or_repeated_are_dropped(typed: bool, raw: bool) -> None:
    """The range asked for was never checked on the pages of days: a WeighVision answer for
    2024-01-01..02 with 2023 and 2031 in it, and one aggregate twice, was written whole."""
    items = [
        {"id": "a0", "recordDate": "2023-06-01"},
        {"id": "a1", "recordDate": "2024-01-01"},
        {"id": "a2", "recordDate": "2024-01-02T00:00:00Z"},
        {"id": "a2", "recordDate": "2024-01-02T00:00:00Z"},
        {"id": "a3", "recordDate": "2031-01-01"},
    ]

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": items})

    with source_over(upstream) as source:
        pages = drain(source, _days_request(JobType.WEIGHVISION_EXPORT, typed=typed, raw=raw))
    if typed:
        assert [r.id for p in pages for r in p.records or []] == ["a1", "a2"]
    else:
        ids = [msgspec.json.decode(r)["id"] for p in pages for r in p.raw or []]
        assert ids == ["a1", "a2"]


@pytest.mark.parametrize(("typed", "raw"), [(True, False), (False, True)], ids=["csv", "ndjson"])
def test_weighvision_aggregates_of_one_date_are_all_kept(typed: bool, raw: bool) -> None:
    """A range without a batch holds one aggregate a batch each date: they are no repeats,
    whether they carry ids (an NDJSON export's check read none, so keyed them by date and
    dropped all but the first) or not."""
    items = [
        {"id": "b1", "recordDate": "2024-01-01"},
        {"id": "b2", "recordDate": "2024-01-01"},
        {"recordDate": "2024-01-02"},
        {"recordDate": "2024-01-02"},
    ]

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": items})

    with source_over(upstream) as source:
        pages = drain(source, _days_request(JobType.WEIGHVISION_EXPORT, typed=typed, raw=raw))
    kept = [r for p in pages for r in (p.records if typed else p.raw) or []]
    assert len(kept) == 4


def test_kpi_days_are_kept_once_each_and_a_date_that_is_no_date_is_a_bad_response() -> None:
    days = [{"recordDate": "2024-01-01", "fcr": "1.1"}, {"recordDate": "2024-01-01", "fcr": "9"}]
    answers = [days, [{"recordDate": "yesterday"}]]

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": answers[0]})

    with source_over(upstream) as source:
        [page] = drain(source, _days_request(JobType.KPI_FEEDING_EXPORT, typed=True, raw=False))
        assert [(r.record_date, str(r.fcr)) for r in page.records or []] == [("2024-01-01", "1.1")]
        answers.pop(0)
        with pytest.raises(UpstreamBadResponse, match="recordDate that is no date"):
            drain(source, _days_request(JobType.KPI_FEEDING_EXPORT, typed=True, raw=False))


def test_an_integer_cursor_is_sent_back_as_given() -> None:
    cursors: list[str | None] = []

    def upstream(req: httpx.Request) -> httpx.Response:
        cursors.append(req.url.params.get("cursor"))
        nxt = 17 if len(cursors) == 1 else None
        return httpx.Response(200, json={"items": [], "nextCursor": nxt})

    with source_over(upstream) as source:
        assert len(drain(source, request(JobType.FEED_INTAKE_EXPORT))) == 2
    assert cursors == [None, "17"]


def test_typed_and_raw_records_of_one_page_are_aligned_and_raw_is_verbatim() -> None:
    body = (
        b'{"items": [{"recordDate": "2026-01-01", "fcr": "1.10", "x": 1},'
        b'{"recordDate":"2026-01-02"}]}'
    )

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with source_over(upstream) as source:
        [page] = drain(source, request(JobType.KPI_FEEDING_EXPORT, raw=True))
    assert page.records is not None and page.raw is not None
    assert [r.record_date for r in page.records] == ["2026-01-01", "2026-01-02"]
    assert [bytes(r) for r in page.raw] == [
        b'{"recordDate": "2026-01-01", "fcr": "1.10", "x": 1}',
        b'{"recordDate":"2026-01-02"}',
    ]


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"items": null}', b'{"items": [{"fcr": "1"}]}', b"<html>oops</html>"],
)
def test_a_2xx_body_that_is_not_the_documented_page_is_a_bad_response(body: bytes) -> None:
    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with source_over(upstream) as source, pytest.raises(UpstreamBadResponse) as failure:
        drain(source, request(JobType.KPI_FEEDING_EXPORT))
    assert failure.value.message.startswith(
        "feed service sent an unreadable page for GET /api/v1/kpi/feeding: "
    )


# --- telemetry paging ---


def test_a_telemetry_service_that_ignores_to_fails_instead_of_looping() -> None:
    page = [reading(1, "2026-01-02T00:00:00Z"), reading(2, "2026-01-01T00:00:00Z")]

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page)

    with (
        source_over(upstream, telemetry_limit=2) as source,
        pytest.raises(UpstreamBadResponse, match="did not page back in time"),
    ):
        drain(source, request(JobType.TELEMETRY_EXPORT))


def test_readings_at_the_last_instant_there_is_are_a_bad_response_not_a_worker_bug() -> None:
    """A full page whose oldest reading is within a millisecond of the end of year 9999: the
    next ``to`` (one millisecond newer) overflowed datetime, and the export failed
    'unexpectedly'."""
    page = [reading(1, "9999-12-31T23:59:59.9999Z"), reading(2, "9999-12-31T23:59:59.9995Z")]

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page)

    with (
        source_over(upstream, telemetry_limit=2) as source,
        pytest.raises(UpstreamBadResponse, match=r"at 9999-12-31T23:59:59\.9995Z, past any range"),
    ):
        drain(source, request(JobType.TELEMETRY_EXPORT))


def telemetry_service(readings: list[dict[str, Any]], asked: list[str | None]) -> Handler:
    """A telemetry service over ``readings`` (newest first): ``to`` inclusive, ``limit``."""

    def upstream(req: httpx.Request) -> httpx.Response:
        to = req.url.params.get("to")
        asked.append(to)
        cut = dt.datetime.fromisoformat(to) if to else None
        hits = [
            r for r in readings if cut is None or dt.datetime.fromisoformat(r["occurredAt"]) <= cut
        ]
        return httpx.Response(200, json=hits[: int(req.url.params["limit"])])

    return upstream


def test_telemetry_pages_end_just_after_the_oldest_instant_and_skip_what_was_emitted() -> None:
    readings = [
        reading(1, "2026-01-03T00:00:00.000Z"),
        reading(2, "2026-01-02T00:00:00.000Z"),
        reading(3, "2026-01-02T00:00:00.000Z"),
        reading(4, "2026-01-02T00:00:00.000Z"),
        reading(5, "2026-01-01T12:00:00.500Z"),
    ]
    asked: list[str | None] = []
    with source_over(telemetry_service(readings, asked), telemetry_limit=4) as source:
        pages = drain(source, request(JobType.TELEMETRY_EXPORT))
    ids = [r.id for p in pages for r in p.records or ()]
    assert ids == ["r1", "r2", "r3", "r4", "r5"]
    # the last page was short: one request for what is older must come back empty
    assert asked == [
        None,
        "2026-01-02T00:00:00.001Z",
        "2026-01-01T12:00:00.501Z",
        "2026-01-01T12:00:00.499Z",
    ]


def test_a_telemetry_service_that_caps_limit_below_what_was_asked_fails_rather_than_truncates() -> (
    None
):
    """A short page was taken for the window's end: a service answering 3 readings when
    asked for 10 ended the export after its first page, the rest silently left out."""
    readings = [reading(n, f"2026-01-0{9 - n}T00:00:00Z") for n in range(1, 8)]
    service = telemetry_service(readings, [])

    def capped(req: httpx.Request) -> httpx.Response:
        answer = service(req)
        return httpx.Response(200, json=answer.json()[:3])

    with (
        source_over(capped, telemetry_limit=10) as source,
        pytest.raises(UpstreamBadResponse, match="caps limit below what was asked"),
    ):
        drain(source, request(JobType.TELEMETRY_EXPORT))


def test_as_many_readings_at_one_instant_as_a_page_holds_fail_rather_than_truncate() -> None:
    readings = [reading(n, "2026-01-02T00:00:00Z") for n in range(4)]
    readings.append(reading(9, "2026-01-01T00:00:00Z"))
    with (
        source_over(telemetry_service(readings, []), telemetry_limit=3) as source,
        pytest.raises(UpstreamBadResponse, match="readings at one instant"),
    ):
        drain(source, request(JobType.TELEMETRY_EXPORT))


def test_an_unreadable_reading_instant_is_a_bad_response() -> None:
    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[reading(1, "yesterday")])

    with (
        source_over(upstream) as source,
        pytest.raises(UpstreamBadResponse, match="unreadable occurredAt"),
    ):
        drain(source, request(JobType.TELEMETRY_EXPORT, typed=False, raw=True))


def test_raw_only_telemetry_still_pages_by_the_readings_ids_and_instants() -> None:
    readings = [
        reading(1, "2026-01-03T00:00:00Z"),
        reading(2, "2026-01-02T00:00:00Z"),
        reading(3, "2026-01-01T00:00:00Z"),
    ]
    asked: list[str | None] = []
    with source_over(telemetry_service(readings, asked), telemetry_limit=2) as source:
        pages = drain(source, request(JobType.TELEMETRY_EXPORT, typed=False, raw=True))
    lines = [msgspec.json.decode(r)["id"] for p in pages for r in p.raw or ()]
    assert lines == ["r1", "r2", "r3"]
    assert all(p.records is None for p in pages)
    assert len(asked) == 4  # three pages, and one asking for anything older: nothing


# --- statuses and retries ---


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 409, 422])
def test_a_non_retryable_status_is_rejected_at_once(status: int) -> None:
    sleeps: list[float] = []

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": TOKEN})

    with source_over(upstream, sleeps) as source, pytest.raises(UpstreamRejected) as failure:
        drain(source, request(JobType.WEIGHVISION_EXPORT))
    assert failure.value.message == (
        f"weighvision read model answered {status} for GET /api/v1/weighvision/weight-aggregates"
    )
    assert sleeps == []


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_transient_status_is_retried_then_unavailable(status: int) -> None:
    sleeps: list[float] = []
    calls: list[httpx.Request] = []

    def upstream(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(status)

    with (
        source_over(upstream, sleeps, retries=4) as source,
        pytest.raises(UpstreamUnavailable) as e,
    ):
        drain(source, request(JobType.TELEMETRY_EXPORT))
    assert len(calls) == 5 and len(sleeps) == 4
    assert e.value.message == (
        f"telemetry service answered {status} for GET /api/v1/telemetry/readings "
        "(gave up after 5 tries)"
    )
    # every try is a new request id of the same trace
    assert len({c.headers["x-request-id"] for c in calls}) == 5
    assert len({c.headers["x-trace-id"] for c in calls}) == 1


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    sleeps: list[float] = []

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    config = {"retries": 8, "backoff_base_sec": 0.5, "backoff_max_sec": 8.0}
    with source_over(upstream, sleeps, **config) as source, pytest.raises(UpstreamUnavailable):
        drain(source, request(JobType.KPI_FEEDING_EXPORT))
    caps = [min(8.0, 0.5 * 2**n) for n in range(8)]
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))
    assert len(set(sleeps)) == len(sleeps), "no jitter"


def test_connect_errors_and_timeouts_are_retried() -> None:
    sleeps: list[float] = []
    failures = [
        httpx.ConnectError("connect failed: ConnectionRefusedError"),
        httpx.ReadTimeout("read timed out"),
    ]

    def upstream(req: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json={"items": []})

    with source_over(upstream, sleeps) as source:
        assert drain(source, request(JobType.KPI_FEEDING_EXPORT))[0].records == []
    assert len(sleeps) == 2


def test_a_timeout_on_every_try_says_the_service_did_not_answer_in_time() -> None:
    def upstream(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out")

    with source_over(upstream, retries=1) as source, pytest.raises(UpstreamUnavailable) as e:
        drain(source, request(JobType.FEED_INTAKE_EXPORT))
    assert e.value.message == (
        "feed service did not answer GET /api/v1/feed/intake-records in time "
        "(gave up after 2 tries)"
    )


def test_the_token_never_appears_in_any_failure_message() -> None:
    answers: list[Handler] = [
        lambda req: httpx.Response(404, text=TOKEN),
        lambda req: httpx.Response(503, text=TOKEN),
        lambda req: httpx.Response(200, text=TOKEN),
    ]
    for answer in answers:
        with source_over(answer, retries=0) as source, pytest.raises(ExportFailure) as e:
            drain(source, request(JobType.FEED_INTAKE_EXPORT))
        assert TOKEN not in str(e.value)


def test_the_token_is_sent_as_a_bearer_and_the_job_id_as_trace_id() -> None:
    seen: list[httpx.Request] = []

    def upstream(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"items": []})

    req = request(JobType.WEIGHVISION_EXPORT)
    with source_over(upstream) as source:
        drain(source, req)
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert seen[0].headers["x-trace-id"] == req.job_id


def test_close_closes_the_clients_the_source_made() -> None:
    source = source_over(lambda r: httpx.Response(200, json={"items": []}))
    drain(source, request(JobType.KPI_FEEDING_EXPORT))
    client = source.clients.client(URL)
    source.close()
    assert client.is_closed


# --- Retry-After ---

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        (email.utils.format_datetime(NOW + dt.timedelta(seconds=30), usegmt=True), 30.0),
        (email.utils.format_datetime(NOW - dt.timedelta(seconds=30), usegmt=True), 0.0),
        ("Sun, 01 Mar 2026 12:00:10 GMT", 10.0),
        ("soon", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_a_short_page_at_the_first_instant_there_is_ends_the_window() -> None:
    """Nothing older than year 1 can be asked for: the check for a capped limit asks
    nothing then (computing its `to` overflowed)."""
    readings = [reading(1, "0001-01-01T00:00:00.000Z")]
    asked: list[str | None] = []
    undated = msgspec.structs.replace(
        request(JobType.TELEMETRY_EXPORT, typed=False, raw=True),
        scope=Scope(barn_id=str(uuid.uuid4())),
    )
    with source_over(telemetry_service(readings, asked), telemetry_limit=4) as source:
        [page] = drain(source, undated)
    assert page.raw is not None and len(page.raw) == 1
    assert asked == [None]


@pytest.mark.parametrize(("typed", "raw"), [(True, False), (False, True), (True, True)])
def test_half_a_surrogate_pair_is_read_as_the_replacement_character(typed: bool, raw: bool) -> None:
    """A JavaScript service cutting a note mid-emoji ("Feed ok 😀".slice(0, 9)) writes
    "\\ud83d" with JSON.stringify; msgspec refuses it, and one such note failed the whole
    export UPSTREAM_BAD_RESPONSE in every format."""
    body = (
        b'[{"id":"r1","occurredAt":"2026-01-01T00:00:00Z","metric":"t","value":"1.0",'
        b'"deviceId":"Feed ok \\ud83d"},{"id":"r2","occurredAt":"2026-01-01T00:00:00Z",'
        b'"metric":"t","value":"2.0","deviceId":"\\ud83d\\ude00 \\ude00 \\\\ud83d"}]'
    )

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    with source_over(upstream) as source:
        (page,) = drain(source, request(JobType.TELEMETRY_EXPORT, typed=typed, raw=raw))
    if typed and not raw:  # with raw, the typed records hold only what filters need
        assert [r.device_id for r in page.records] == [
            "Feed ok \ufffd",
            "\U0001f600 \ufffd \\ud83d",  # a pair, a lone low half, an escaped backslash
        ]
    if raw:
        lines = [msgspec.json.decode(bytes(r)) for r in page.raw]
        assert [line["deviceId"] for line in lines] == [
            "Feed ok \ufffd",
            "\U0001f600 \ufffd \\ud83d",
        ]


def test_a_filtered_ndjson_export_reads_no_field_its_filters_do_not_need() -> None:
    """docs/api.md: an NDJSON export checks each record's id and tenant; with a filter applied
    while streaming (source=MANUAL) it decoded every field typed, so a note sent as a number,
    or a quantity a float cannot hold, failed it, though the line goes out as sent."""
    record = (
        b'{"id":"f1","tenantId":"t1","farmId":"f","barnId":"b","source":"MANUAL",'
        b'"quantityKg":1e400,"occurredAt":"2026-01-01T00:00:00Z",'
        b'"createdAt":"2026-01-01T00:00:00Z","notes":5}'
    )
    body = b'{"items":[' + record + b'],"nextCursor":null}'

    def upstream(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    with source_over(upstream) as source:
        (page,) = drain(source, request(JobType.FEED_INTAKE_EXPORT, typed=True, raw=True))
    assert [bytes(r) for r in page.raw] == [record]
    (typed,) = page.records
    assert (typed.source, typed.occurred_at) == ("MANUAL", "2026-01-01T00:00:00Z")
    with source_over(upstream) as source, pytest.raises(UpstreamBadResponse, match="unreadable"):
        drain(source, request(JobType.FEED_INTAKE_EXPORT, typed=True))  # a CSV reads it all
