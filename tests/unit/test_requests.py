"""Request validation: every 400 of a create or a list names the field and says what is wanted."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import string
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrypoints.schemas import decode_cursor, encode_cursor
from reportcore.errors import ValidationError
from reportcore.jobs import JobStatus, JobType, ReportFormat, Scope
from reportcore.jobtypes import JOB_TYPES
from reportcore.requests import (
    CreateRequest,
    Cursor,
    ListQuery,
    ListRequest,
    parse_instant,
    validate_create,
    validate_filters,
    validate_list,
    validate_tenant_id,
)

FARM = "0f8fad5b-d9cb-469f-a165-70867728950e"
BARN = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
FEED_ALLOWED = (
    "allowed: source: string or list of strings (API_IMPORT|MANUAL|SILO_AUTO); "
    "device_id: string or list of strings; feed_formula_id: string or list of strings; "
    "feed_lot_id: string or list of strings"
)
TELEMETRY_ALLOWED = "allowed: metric: string; device_id: string"


def listing(cursor: str | None = None, **values: Any) -> ListQuery:
    """A list query as the API reads one: its opaque cursor decoded at the edge
    (``entrypoints.schemas``), every other value checked by the core."""
    return validate_list(ListRequest(after=decode_cursor(cursor) if cursor else None, **values))


def create(body: dict[str, Any], header_key: str | None = None) -> Any:
    """Decode ``body`` as the API does, then validate it."""
    request = msgspec.json.decode(msgspec.json.encode(body), type=CreateRequest)
    return validate_create(request, header_key=header_key)


def feed(**fields: Any) -> dict[str, Any]:
    return {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", **fields}


def kpi(**fields: Any) -> dict[str, Any]:
    body = {
        "job_type": "KPI_FEEDING_EXPORT",
        "format": "csv",
        "barn_id": BARN,
        "start_date": "2026-01-01",
        "end_date": "2026-01-31",
    }
    return {k: v for k, v in {**body, **fields}.items() if v is not None}


# --- create: what is refused, with which message and field ---

REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    # dates
    (
        "end before start",
        feed(start_date="2026-01-02", end_date="2026-01-01"),
        "end_date",
        "end_date must be on or after start_date",
    ),
    (
        "slashes",
        feed(start_date="2026/01/01"),
        "start_date",
        "start_date must be a date YYYY-MM-DD",
    ),
    ("basic format", feed(end_date="20260101"), "end_date", "end_date must be a date YYYY-MM-DD"),
    (
        "short parts",
        feed(start_date="2026-1-1"),
        "start_date",
        "start_date must be a date YYYY-MM-DD",
    ),
    (
        "instant",
        feed(start_date="2026-01-01T00:00:00Z"),
        "start_date",
        "start_date must be a date YYYY-MM-DD",
    ),
    ("no such day", feed(start_date="2026-02-30"), "start_date", "start_date is not a valid date"),
    ("month 13", feed(end_date="2026-13-01"), "end_date", "end_date is not a valid date"),
    (
        "other digits",
        feed(start_date="\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0661"),
        "start_date",
        "start_date is not a valid date",
    ),
    # ids
    ("farm not a uuid", feed(farm_id="farm-1"), "farm_id", "farm_id must be a UUID"),
    ("barn not a uuid", feed(barn_id=""), "barn_id", "barn_id must be a UUID"),
    ("batch too short", feed(batch_id=FARM[:-1]), "batch_id", "batch_id must be a UUID"),
    # required scope per job type
    (
        "kpi without barn",
        kpi(barn_id=None),
        "barn_id",
        "KPI_FEEDING_EXPORT requires barn_id, start_date, end_date; missing: barn_id",
    ),
    (
        "kpi without dates",
        kpi(start_date=None, end_date=None),
        "start_date",
        "KPI_FEEDING_EXPORT requires barn_id, start_date, end_date; missing: start_date, end_date",
    ),
    (
        "weighvision without end",
        {"job_type": "WEIGHVISION_EXPORT", "format": "json", "start_date": "2026-01-01"},
        "end_date",
        "WEIGHVISION_EXPORT requires start_date, end_date; missing: end_date",
    ),
    # filters
    (
        "unknown feed filter",
        feed(filters={"metric": "temp"}),
        "filters.metric",
        f"unknown filter 'metric' for FEED_INTAKE_EXPORT; {FEED_ALLOWED}",
    ),
    (
        "unknown telemetry filter",
        {"job_type": "TELEMETRY_EXPORT", "format": "csv", "filters": {"source": "MANUAL"}},
        "filters.source",
        f"unknown filter 'source' for TELEMETRY_EXPORT; {TELEMETRY_ALLOWED}",
    ),
    (
        "any kpi filter",
        kpi(filters={"fcr": "1"}),
        "filters.fcr",
        "unknown filter 'fcr' for KPI_FEEDING_EXPORT; allowed: none",
    ),
    (
        "number filter",
        {"job_type": "TELEMETRY_EXPORT", "format": "csv", "filters": {"metric": 5}},
        "filters.metric",
        f"filter 'metric' must be a string; {TELEMETRY_ALLOWED}",
    ),
    (
        "list for a single filter",
        {"job_type": "TELEMETRY_EXPORT", "format": "csv", "filters": {"device_id": ["a", "b"]}},
        "filters.device_id",
        f"filter 'device_id' must be a string; {TELEMETRY_ALLOWED}",
    ),
    (
        "empty list",
        feed(filters={"source": []}),
        "filters.source",
        "filter 'source' must be a string or list of strings (API_IMPORT|MANUAL|SILO_AUTO); "
        + FEED_ALLOWED,
    ),
    (
        "object filter",
        feed(filters={"device_id": {"a": 1}}),
        "filters.device_id",
        f"filter 'device_id' must be a string or list of strings; {FEED_ALLOWED}",
    ),
    (
        "empty value",
        feed(filters={"device_id": ""}),
        "filters.device_id",
        "filter 'device_id' values must be strings of 1..200 characters",
    ),
    (
        "long value",
        feed(filters={"device_id": "d" * 201}),
        "filters.device_id",
        "filter 'device_id' values must be strings of 1..200 characters",
    ),
    (
        "number in a list",
        feed(filters={"device_id": ["d1", 2]}),
        "filters.device_id",
        "filter 'device_id' values must be strings of 1..200 characters",
    ),
    (
        "not a choice",
        feed(filters={"source": ["MANUAL", "manual"]}),
        "filters.source",
        "filter 'source' must be one of API_IMPORT, MANUAL, SILO_AUTO",
    ),
    # idempotency key
    (
        "empty key",
        feed(idempotency_key=""),
        "idempotency_key",
        "idempotency_key must be 1..200 characters",
    ),
    (
        "long key",
        feed(idempotency_key="k" * 201),
        "idempotency_key",
        "idempotency_key must be 1..200 characters",
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_an_invalid_create_is_refused_naming_its_field(
    body: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        create(body)
    assert (raised.value.field, raised.value.message) == (field, message)
    assert raised.value.code == "VALIDATION_ERROR"


ACCEPTED: list[tuple[str, dict[str, Any], Scope]] = [
    ("nothing but type and format", feed(), Scope()),
    (
        "one day",
        feed(start_date="2026-01-01", end_date="2026-01-01"),
        Scope(start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 1)),
    ),
    ("only a start", feed(start_date="2024-02-29"), Scope(start_date=dt.date(2024, 2, 29))),
    (
        "ids in any spelling",
        feed(farm_id=FARM.upper(), barn_id=uuid.UUID(BARN).hex),
        Scope(farm_id=FARM, barn_id=BARN),
    ),
    (
        "kpi with its scope",
        kpi(),
        Scope(barn_id=BARN, start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 31)),
    ),
    (
        "filter lists canonical",
        feed(filters={"source": ["SILO_AUTO", "MANUAL", "SILO_AUTO"], "device_id": "d1"}),
        Scope(filters={"source": ["MANUAL", "SILO_AUTO"], "device_id": "d1"}),
    ),
    ("null filters", feed(filters=None), Scope()),
    (
        "telemetry filters",
        {
            "job_type": "TELEMETRY_EXPORT",
            "format": "json",
            "filters": {"metric": "temperature", "device_id": "d-1"},
        },
        Scope(filters={"metric": "temperature", "device_id": "d-1"}),
    ),
]


@pytest.mark.parametrize(("body", "scope"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_a_valid_create_becomes_its_canonical_scope(body: dict[str, Any], scope: Scope) -> None:
    valid = create(body)
    assert valid.scope == scope
    assert valid.job_type == JobType(body["job_type"])
    assert valid.format is ReportFormat(body["format"])


def test_unknown_top_level_fields_are_ignored() -> None:
    assert create(feed(colour="blue", tenant="x")).scope == Scope()


@pytest.mark.parametrize(
    ("body_key", "header_key", "expected"),
    [
        (None, None, None),
        ("k1", None, "k1"),
        (None, "k1", "k1"),
        ("k1", "k1", "k1"),
        ("k" * 200, None, "k" * 200),
        (None, "é" * 200, "é" * 200),  # characters, not bytes
        ("x", None, "x"),
    ],
)
def test_the_idempotency_key_comes_from_the_body_or_the_header(
    body_key: str | None, header_key: str | None, expected: str | None
) -> None:
    body = feed() if body_key is None else feed(idempotency_key=body_key)
    assert create(body, header_key=header_key).idempotency_key == expected


@pytest.mark.parametrize(
    ("body_key", "header_key", "message"),
    [
        ("k1", "k2", "Idempotency-Key header and idempotency_key differ"),
        (None, "", "idempotency_key must be 1..200 characters"),
        (None, "h" * 201, "idempotency_key must be 1..200 characters"),
        ("k1", "h" * 201, "idempotency_key must be 1..200 characters"),
    ],
)
def test_a_bad_or_disagreeing_header_key_is_refused(
    body_key: str | None, header_key: str, message: str
) -> None:
    body = feed() if body_key is None else feed(idempotency_key=body_key)
    with pytest.raises(ValidationError) as raised:
        create(body, header_key=header_key)
    assert (raised.value.field, raised.value.message) == ("idempotency_key", message)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"job_type": "PIG_EXPORT"},
            "job_type",
            "job_type must be one of FEED_INTAKE_EXPORT, KPI_FEEDING_EXPORT, TELEMETRY_EXPORT, "
            "WEIGHVISION_EXPORT",
        ),
        ({"format": "pdf"}, "format", "format must be csv, json or xlsx"),
    ],
)
def test_a_request_built_in_code_with_unknown_enums_is_refused(
    fields: dict[str, Any], field: str, message: str
) -> None:
    values: dict[str, Any] = {"job_type": JobType.FEED_INTAKE_EXPORT, "format": ReportFormat.CSV}
    request = CreateRequest(**{**values, **fields})  # Structs check only when decoding
    with pytest.raises(ValidationError) as raised:
        validate_create(request)
    assert (raised.value.field, raised.value.message) == (field, message)


def test_filters_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        validate_filters(JOB_TYPES[JobType.FEED_INTAKE_EXPORT], ["source"])  # type: ignore[arg-type]
    assert (raised.value.field, raised.value.message) == ("filters", "filters must be an object")


@given(
    start=st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1)),
    days=st.integers(min_value=-400, max_value=400),
)
def test_end_date_before_start_date_is_refused_and_never_otherwise(
    start: dt.date, days: int
) -> None:
    end = start + dt.timedelta(days=days)
    body = feed(start_date=start.isoformat(), end_date=end.isoformat())
    if days < 0:
        with pytest.raises(ValidationError) as raised:
            create(body)
        assert raised.value.message == "end_date must be on or after start_date"
    else:
        assert create(body).scope.end_date == end


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("t1", True),
        ("tenant.a_b:c-1", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("-lead", False),
        ("a/b", False),
        ("../etc", False),
        ("ünï", False),
        ("a b", False),
    ],
)
def test_a_tenant_id_must_be_safe_as_a_path_segment(value: str, ok: bool) -> None:
    if ok:
        assert validate_tenant_id(value) == value
    else:
        with pytest.raises(ValidationError) as raised:
            validate_tenant_id(value, "tenantId")
        assert raised.value.field == "tenantId"


# --- list query values ---


def test_a_list_query_without_values_is_the_first_page_of_everything() -> None:
    query = listing()
    assert (query.status, query.job_type, query.created_from, query.created_to) == (None,) * 4
    assert (query.after, query.limit) == (None, 25)  # the contract's default page size


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"status": "running"}, {"status": JobStatus.RUNNING}),
        ({"job_type": "TELEMETRY_EXPORT"}, {"job_type": JobType.TELEMETRY_EXPORT}),
        ({"limit": "1"}, {"limit": 1}),
        ({"limit": "100"}, {"limit": 100}),
        ({"limit": 7}, {"limit": 7}),
        ({"limit": "0010"}, {"limit": 10}),
        (
            {"created_from": "2026-01-02", "created_to": "2026-01-02"},
            {
                "created_from": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                "created_to": dt.datetime(2026, 1, 2, 23, 59, 59, 999999, tzinfo=dt.UTC),
            },
        ),
        # a date in ISO's other spellings is a date too: created_to is its end, not its start
        (
            {"created_from": "20260102", "created_to": "20260102"},
            {
                "created_from": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                "created_to": dt.datetime(2026, 1, 2, 23, 59, 59, 999999, tzinfo=dt.UTC),
            },
        ),
        (
            {"created_to": "2026-W01-5"},  # the Friday of 2026's first ISO week
            {"created_to": dt.datetime(2026, 1, 2, 23, 59, 59, 999999, tzinfo=dt.UTC)},
        ),
        (
            {"created_to": "20260102T1000"},
            {"created_to": dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)},
        ),
        (
            {"created_from": "2026-01-02T10:00:00+02:00"},
            {"created_from": dt.datetime(2026, 1, 2, 8, tzinfo=dt.UTC)},
        ),
        (
            {"created_to": "2026-01-02T10:00:00"},  # no offset: UTC
            {"created_to": dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)},
        ),
        (
            {"created_from": "2026-01-02T10:00:00Z", "created_to": "2026-01-02T10:00:00Z"},
            {
                "created_from": dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC),
                "created_to": dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC),
            },
        ),
    ],
)
def test_list_query_values_are_read_into_typed_values(
    values: dict[str, Any], expected: dict[str, Any]
) -> None:
    query = listing(**values)
    assert {name: getattr(query, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        (
            {"status": "done"},
            "status",
            "status must be one of queued, running, succeeded, failed, cancelled",
        ),
        (
            {"status": "QUEUED"},
            "status",
            "status must be one of queued, running, succeeded, failed, cancelled",
        ),
        (
            {"job_type": "feed"},
            "job_type",
            "job_type must be one of FEED_INTAKE_EXPORT, KPI_FEEDING_EXPORT, TELEMETRY_EXPORT, "
            "WEIGHVISION_EXPORT",
        ),
        ({"limit": "0"}, "limit", "limit must be an integer 1..100"),
        ({"limit": "101"}, "limit", "limit must be an integer 1..100"),
        ({"limit": "-1"}, "limit", "limit must be an integer 1..100"),
        ({"limit": "2.5"}, "limit", "limit must be an integer 1..100"),
        ({"limit": "ten"}, "limit", "limit must be an integer 1..100"),
        ({"limit": ""}, "limit", "limit must be an integer 1..100"),
        ({"limit": "99999999999999999999"}, "limit", "limit must be an integer 1..100"),
        (
            {"created_from": "yesterday"},
            "created_from",
            "created_from must be an ISO 8601 date or instant",
        ),
        (
            {"created_to": "2026-02-30"},
            "created_to",
            "created_to must be an ISO 8601 date or instant",
        ),
        (
            {"created_from": "2026-01-03", "created_to": "2026-01-02"},
            "created_to",
            "created_to must be on or after created_from",
        ),
        ({"schedule_id": "not-a-uuid"}, "schedule_id", "schedule_id must be a UUID"),
        ({"cursor": "!!!"}, "cursor", "cursor is not valid"),
        ({"cursor": "a"}, "cursor", "cursor is not valid"),
        ({"cursor": base64.urlsafe_b64encode(b"[1,2]").decode()}, "cursor", "cursor is not valid"),
        (
            {"cursor": base64.urlsafe_b64encode(b'["2026-01-01T00:00:00","x"]').decode()},
            "cursor",
            "cursor is not valid",
        ),
    ],
)
def test_a_bad_list_query_value_is_refused_naming_it(
    values: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        listing(**values)
    assert (raised.value.field, raised.value.message) == (field, message)


def test_parse_instant_passes_absent_values_through() -> None:
    assert parse_instant(None, "created_from") is None


aware_instants = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),
    max_value=dt.datetime(9998, 12, 31),
    timezones=st.sampled_from(
        [
            dt.UTC,
            dt.timezone(dt.timedelta(hours=5, minutes=30)),
            dt.timezone(-dt.timedelta(hours=8)),
        ]
    ),
)


# job ids are UUIDs; a few odd characters too (a cursor is at most 200 characters)
@given(created_at=aware_instants, job_id=st.one_of(st.uuids().map(str), st.text(max_size=8)))
def test_a_list_cursor_round_trips(created_at: dt.datetime, job_id: str) -> None:
    cursor = Cursor(created_at, job_id)
    text = encode_cursor(cursor)
    assert re.fullmatch(f"[{re.escape(string.ascii_letters + string.digits)}_-]*", text)
    back = decode_cursor(text)
    assert back == cursor
    assert back.created_at.utcoffset() is not None
    if "\x00" not in job_id:  # a NUL in the id is refused (a forged cursor can hide one)
        assert listing(cursor=text).after == cursor


# --- dates the upstreams and the exporters can hold, and how wide a range may be ---


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("end_date", "9999-12-31"),  # the instant after it does not exist: the worker crashed
        ("start_date", "0001-01-01"),
        ("start_date", "1969-12-31"),
    ],
)
def test_a_date_outside_what_the_exporters_can_hold_is_a_400_naming_it(
    field: str, value: str
) -> None:
    body = feed(start_date="2026-01-01", end_date="2026-01-02") | {field: value}
    if field == "end_date":
        body["start_date"] = "9999-12-01"
    with pytest.raises(ValidationError) as err:
        create(body)
    assert err.value.field == field
    assert "between 1970-01-01 and 9999-12-30" in err.value.message


def test_the_first_and_last_dates_allowed_are_accepted_and_their_export_bounds_exist() -> None:
    from reportcore.export import ProgressEstimate

    first = create(feed(start_date="1970-01-01", end_date="1970-01-01"))
    last = create(feed(start_date="9999-12-30", end_date="9999-12-30"))
    for valid in (first, last):
        ProgressEstimate(JOB_TYPES[JobType.FEED_INTAKE_EXPORT], valid.scope)  # no OverflowError


TODAY = dt.date(2026, 3, 1)


def _range(job_type: JobType, start: str | None, end: str | None, limits: Any = None) -> None:
    from reportcore.requests import check_range

    scope = Scope(
        start_date=dt.date.fromisoformat(start) if start else None,
        end_date=dt.date.fromisoformat(end) if end else None,
    )
    check_range(job_type, scope, today=TODAY, max_days=limits or {})


def test_a_range_of_exactly_the_types_maximum_is_accepted_and_one_day_more_is_a_400() -> None:
    # telemetry: 92 days by default, both ends counted
    _range(JobType.TELEMETRY_EXPORT, "2026-01-01", "2026-04-02")
    with pytest.raises(ValidationError) as err:
        _range(JobType.TELEMETRY_EXPORT, "2026-01-01", "2026-04-03")
    assert err.value.field == "end_date"
    assert err.value.message == (
        "TELEMETRY_EXPORT may span at most 92 days; start_date..end_date spans 93"
    )
    _range(JobType.FEED_INTAKE_EXPORT, "2025-01-01", "2026-01-01")  # 366 days
    with pytest.raises(ValidationError):
        _range(JobType.FEED_INTAKE_EXPORT, "2025-01-01", "2026-01-02")


def test_the_maximum_range_is_configurable_per_job_type() -> None:
    limits = {JobType.FEED_INTAKE_EXPORT: 7}
    _range(JobType.FEED_INTAKE_EXPORT, "2026-01-01", "2026-01-07", limits)
    with pytest.raises(ValidationError):
        _range(JobType.FEED_INTAKE_EXPORT, "2026-01-01", "2026-01-08", limits)
    _range(JobType.KPI_FEEDING_EXPORT, "2025-03-01", "2026-02-28", limits)  # 365: its default


def test_a_range_open_at_its_end_is_counted_up_to_today() -> None:
    _range(JobType.TELEMETRY_EXPORT, "2025-12-01", None)  # 91 days to 2026-03-01
    with pytest.raises(ValidationError) as err:
        _range(JobType.TELEMETRY_EXPORT, "2025-11-29", None)  # 93
    assert err.value.field == "start_date"
    assert "start_date..today spans 93" in err.value.message
    _range(JobType.TELEMETRY_EXPORT, None, "2026-01-01")  # the upstream's own window
    _range(JobType.TELEMETRY_EXPORT, "2030-01-01", None)  # starts after today: one day


def test_a_hundred_year_range_is_refused_at_create_not_later_upstream() -> None:
    with pytest.raises(ValidationError):
        _range(JobType.WEIGHVISION_EXPORT, "1990-01-01", "2089-12-31")


# --- NUL characters (refused by the core, so a library caller gets the rule too) ---


def test_a_create_holding_a_nul_anywhere_is_refused_naming_the_field() -> None:
    request = CreateRequest(
        job_type=JobType.FEED_INTAKE_EXPORT,
        format=ReportFormat.CSV,
        filters={"source": "MAN\x00UAL"},
    )
    with pytest.raises(ValidationError) as refused:
        validate_create(request)
    assert refused.value.field == "filters.source"
    assert refused.value.message == "filters.source must not contain NUL characters"


@pytest.mark.parametrize(
    "name", ["status", "job_type", "created_from", "created_to", "limit", "schedule_id"]
)
def test_a_list_query_holding_a_nul_is_refused_naming_the_parameter(name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        listing(**{name: "queued\x00"})
    assert refused.value.field == name
    assert refused.value.message == f"{name} must not contain NUL characters"


def test_a_list_query_built_in_code_pages_by_25_too() -> None:
    assert ListQuery().limit == 25


@pytest.mark.parametrize("length", [1, 200])
def test_filter_values_of_1_and_200_characters_are_accepted(length: int) -> None:
    value = "d" * length
    assert create(feed(filters={"device_id": [value]})).scope.filters == {"device_id": [value]}
    assert create(feed(filters={"device_id": value})).scope.filters == {"device_id": value}


@pytest.fixture
def local_time_is_bangkok() -> Iterator[None]:
    """The process's local time is UTC+7, as on a developer's laptop in Bangkok.

    ``make test`` also runs the whole unit suite so; this pins the promise in every run,
    the mutation run included (which runs with whatever TZ the machine has)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Bangkok"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("local_time_is_bangkok")
def test_an_instant_without_an_offset_is_utc_whatever_the_local_time_zone() -> None:
    assert time.localtime(0).tm_hour == 7, "the fixture did not move local time"
    query = listing(created_from="2026-01-02T10:00:00", created_to="2026-01-02T23:30:00")
    assert query.created_from == dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)
    assert query.created_to == dt.datetime(2026, 1, 2, 23, 30, tzinfo=dt.UTC)


@pytest.mark.usefixtures("local_time_is_bangkok")
def test_an_instant_with_an_offset_is_given_back_in_utc_not_in_local_time() -> None:
    query = listing(created_from="2026-01-02T10:00:00+02:00")
    assert query.created_from is not None
    assert query.created_from.isoformat() == "2026-01-02T08:00:00+00:00"


def test_an_instant_before_year_1_in_utc_is_a_400_naming_its_field() -> None:
    with pytest.raises(ValidationError) as raised:
        listing(created_to="0001-01-01T00:00:00+01:00")
    assert (raised.value.field, raised.value.message) == (
        "created_to",
        "created_to is out of range",
    )


@pytest.mark.parametrize(
    "created_at",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00"],
)
def test_a_forged_cursor_out_of_range_or_without_offset_is_a_400_naming_the_cursor(
    created_at: str,
) -> None:
    text = base64.urlsafe_b64encode(f'["{created_at}","x"]'.encode()).decode().rstrip("=")
    with pytest.raises(ValidationError) as raised:
        listing(cursor=text)
    assert (raised.value.field, raised.value.message) == ("cursor", "cursor is not valid")


@pytest.mark.parametrize(
    ("key", "echoed"),
    [("k" * 100, "k" * 100), ("k" * 101, "k" * 99 + "\u2026"), ("k" * 5000, "k" * 99 + "\u2026")],
)
def test_an_unknown_filter_key_is_echoed_up_to_100_characters(key: str, echoed: str) -> None:
    with pytest.raises(ValidationError) as raised:
        create(feed(filters={key: "x"}))
    assert raised.value.field == f"filters.{echoed}"
    assert raised.value.message.startswith(f"unknown filter {echoed!r} for FEED_INTAKE_EXPORT")
