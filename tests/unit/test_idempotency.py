"""Idempotency: the same request again is a replay, any meaningful difference is a conflict."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reportcore.errors import IdempotencyKeyReused
from reportcore.idempotency import check_replay, fingerprint, job_fingerprint
from reportcore.jobs import Job, JobType, ReportFormat, Scope
from reportcore.requests import CreateRequest, ValidCreate, validate_create

IDS = [uuid.UUID(int=1), uuid.UUID(int=2)]
DAYS = [dt.date(2026, 1, d) for d in (1, 2, 3)]
SOURCES = ["MANUAL", "API_IMPORT", "SILO_AUTO"]
DEVICES = ["dev-1", "dev-2", "dev-3"]
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def uuid_spellings(value: uuid.UUID) -> st.SearchStrategy[str]:
    """Ways a client may write the same UUID."""
    return st.sampled_from([str(value), str(value).upper(), value.hex])


@st.composite
def filter_value(draw: st.DrawFn, pool: list[str], many: bool) -> Any:
    """A filter value as a client might send it: a string, or a list in any order with repeats."""
    chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
    if not many or (len(chosen) == 1 and draw(st.booleans())):
        return chosen[0]
    spelled = chosen + draw(st.lists(st.sampled_from(chosen), max_size=2))
    return draw(st.permutations(spelled))


@st.composite
def create_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid create body over a small domain, so that equal and near-equal requests are common."""
    job_type = draw(st.sampled_from(list(JobType)))
    body: dict[str, Any] = {
        "job_type": job_type.value,
        "format": draw(st.sampled_from(["csv", "json"])),
    }
    for name in ("farm_id", "barn_id", "batch_id"):
        needed = name == "barn_id" and job_type is JobType.KPI_FEEDING_EXPORT
        if needed or draw(st.booleans()):
            body[name] = draw(st.sampled_from(IDS).flatmap(uuid_spellings))
    dated = job_type in (JobType.KPI_FEEDING_EXPORT, JobType.WEIGHVISION_EXPORT)
    if dated or draw(st.booleans()):
        start, end = sorted(draw(st.lists(st.sampled_from(DAYS), min_size=2, max_size=2)))
        body["start_date"], body["end_date"] = start.isoformat(), end.isoformat()
    filters: dict[str, Any] = {}
    if job_type is JobType.FEED_INTAKE_EXPORT:
        if draw(st.booleans()):
            filters["source"] = draw(filter_value(SOURCES, many=True))
        if draw(st.booleans()):
            filters["device_id"] = draw(filter_value(DEVICES, many=True))
    elif job_type is JobType.TELEMETRY_EXPORT and draw(st.booleans()):
        filters["device_id"] = draw(filter_value(DEVICES, many=False))
    spelling = draw(st.sampled_from(["absent", "null", "object"]))
    if filters or spelling == "object":
        body["filters"] = filters
    elif spelling == "null":
        body["filters"] = None
    return body


def meaning(body: dict[str, Any]) -> tuple[Any, ...]:
    """What a body asks for, worked out here independently of the code under test."""

    def uid(name: str) -> uuid.UUID | None:
        return uuid.UUID(body[name]) if body.get(name) else None

    filters = body.get("filters") or {}
    return (
        body["job_type"],
        body["format"],
        uid("farm_id"),
        uid("barn_id"),
        uid("batch_id"),
        body.get("start_date"),
        body.get("end_date"),
        frozenset((key, frozenset([v] if isinstance(v, str) else v)) for key, v in filters.items()),
    )


def fp_of(body: dict[str, Any]) -> str:
    valid = validate_create(msgspec.convert(body, CreateRequest))
    return fingerprint(valid.job_type, valid.format, valid.scope)


def reordered(body: dict[str, Any], order: list[int]) -> dict[str, Any]:
    keys = list(body)
    out = {keys[i]: body[keys[i]] for i in order}
    if isinstance(out.get("filters"), dict):
        out["filters"] = dict(reversed(out["filters"].items()))
    return out


@given(body=create_bodies(), data=st.data())
def test_the_fingerprint_ignores_key_order(body: dict[str, Any], data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(body))))
    again = msgspec.json.decode(msgspec.json.encode(reordered(body, order)))
    assert fp_of(again) == fp_of(body)


@given(body=create_bodies(), data=st.data())
def test_the_fingerprint_ignores_how_filter_values_are_spelled(
    body: dict[str, Any], data: st.DataObject
) -> None:
    filters = body.get("filters") or {}
    respelled: dict[str, Any] = {}
    for key, value in filters.items():
        values = [value] if isinstance(value, str) else list(value)
        many = body["job_type"] == "FEED_INTAKE_EXPORT"
        if many:
            extra = data.draw(st.lists(st.sampled_from(values), max_size=2))
            respelled[key] = data.draw(st.permutations(values + extra))
            if len(set(values)) == 1 and data.draw(st.booleans()):
                respelled[key] = values[0]
        else:
            respelled[key] = value
    assert fp_of({**body, "filters": respelled}) == fp_of(body)


@given(a=create_bodies(), b=create_bodies())
def test_the_fingerprint_differs_exactly_when_the_requests_mean_different_things(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    assert (fp_of(a) == fp_of(b)) == (meaning(a) == meaning(b))


@given(body=create_bodies(), tenant=st.sampled_from(["t1", "t2"]), key=st.text(min_size=1))
def test_the_fingerprint_of_the_stored_job_matches_its_request(
    body: dict[str, Any], tenant: str, key: str
) -> None:
    valid = validate_create(msgspec.convert(body, CreateRequest))
    job = make_job(valid, tenant=tenant, key=key)
    assert job_fingerprint(job) == fingerprint(valid.job_type, valid.format, valid.scope)


def make_job(valid: ValidCreate, *, tenant: str = "t1", key: str | None = "k") -> Job:
    return Job(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        requested_by=None,
        job_type=valid.job_type,
        format=valid.format,
        farm_id=valid.scope.farm_id,
        barn_id=valid.scope.barn_id,
        batch_id=valid.scope.batch_id,
        start_date=valid.scope.start_date,
        end_date=valid.scope.end_date,
        filters=dict(valid.scope.filters),
        idempotency_key=key,
        created_at=NOW,
        updated_at=NOW,
    )


def test_absent_null_and_empty_filters_are_the_same_request() -> None:
    base = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}
    assert fp_of(base) == fp_of({**base, "filters": None}) == fp_of({**base, "filters": {}})


def test_a_list_filter_in_any_order_is_the_same_request() -> None:
    base = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}
    assert fp_of({**base, "filters": {"source": ["SILO_AUTO", "MANUAL"]}}) == fp_of(
        {**base, "filters": {"source": ["MANUAL", "SILO_AUTO", "MANUAL"]}}
    )


def test_one_value_as_a_string_or_as_a_list_is_the_same_request() -> None:
    base = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}
    assert fp_of({**base, "filters": {"source": "MANUAL"}}) == fp_of(
        {**base, "filters": {"source": ["MANUAL"]}}
    )


def test_a_row_of_the_old_service_with_unsorted_filters_replays_the_same_request() -> None:
    # the old service stored the filters object as the client sent it
    valid = validate_create(
        CreateRequest(
            job_type=JobType.FEED_INTAKE_EXPORT,
            format=ReportFormat.CSV,
            filters={"source": ["SILO_AUTO", "MANUAL"]},
        )
    )
    old_row = msgspec.structs.replace(make_job(valid), filters={"source": ["SILO_AUTO", "MANUAL"]})
    wanted = fingerprint(valid.job_type, valid.format, valid.scope)
    assert check_replay(old_row, wanted) is old_row


def test_a_row_of_the_old_service_with_upper_case_scope_ids_replays_the_same_request() -> None:
    # the old service stored the UUIDs as the client sent them; ours are read lower-case
    farm, barn = "5B0F8A3E-0C1D-4E2F-8A9B-ABCDEF012345", "{B0F8A3E5-0C1D-4E2F-8A9B-ABCDEF012345}"
    valid = validate_create(
        CreateRequest(
            job_type=JobType.FEED_INTAKE_EXPORT, format=ReportFormat.CSV, farm_id=farm, barn_id=barn
        )
    )
    assert valid.scope.farm_id == farm.lower() and valid.scope.barn_id == barn[1:-1].lower()
    old_row = msgspec.structs.replace(make_job(valid), farm_id=farm, barn_id=barn)
    wanted = fingerprint(valid.job_type, valid.format, valid.scope)
    assert check_replay(old_row, wanted) is old_row


@pytest.mark.parametrize(
    "change",
    [
        {"format": "json"},
        {"job_type": "TELEMETRY_EXPORT", "filters": {}},
        {"farm_id": str(IDS[1])},
        {"start_date": "2026-01-02"},
        {"end_date": "2026-01-04"},
        {"barn_id": str(IDS[1])},
        {"batch_id": str(IDS[1])},
        {"filters": {"source": "API_IMPORT"}},
        {"filters": {"source": ["MANUAL", "API_IMPORT"]}},
    ],
    ids=lambda c: ",".join(c),
)
def test_a_used_key_with_a_different_request_is_refused(change: dict[str, Any]) -> None:
    body = {
        "job_type": "FEED_INTAKE_EXPORT",
        "format": "csv",
        "farm_id": str(IDS[0]),
        "start_date": "2026-01-01",
        "end_date": "2026-01-03",
        "filters": {"source": "MANUAL"},
    }
    existing = make_job(validate_create(msgspec.convert(body, CreateRequest)))
    assert check_replay(existing, fp_of(body)) is existing
    with pytest.raises(IdempotencyKeyReused) as raised:
        check_replay(existing, fp_of({**body, **change}))
    assert raised.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert "different request" in raised.value.message


def test_the_fingerprint_is_a_sha256_hex_digest() -> None:
    digest = fingerprint(JobType.FEED_INTAKE_EXPORT, ReportFormat.CSV, Scope())
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_object_values_in_an_old_rows_filters_compare_whatever_their_key_order() -> None:
    scope = Scope(filters={"device_id": [{"b": 1, "a": 2}]})
    same = Scope(filters={"device_id": [{"a": 2, "b": 1}]})
    fmt, job_type = ReportFormat.CSV, JobType.FEED_INTAKE_EXPORT
    assert fingerprint(job_type, fmt, scope) == fingerprint(job_type, fmt, same)


def test_filters_named_in_another_key_order_are_the_same_request() -> None:
    # a stored job's filters come back in the store's key order (jsonb orders an object's keys
    # its own way; the old service kept the client's), not in the order of the replayed request
    asked = Scope(filters={"source": ["MANUAL"], "device_id": ["dev-1"]})
    stored = Scope(filters={"device_id": ["dev-1"], "source": ["MANUAL"]})
    fmt, job_type = ReportFormat.CSV, JobType.FEED_INTAKE_EXPORT
    assert fingerprint(job_type, fmt, asked) == fingerprint(job_type, fmt, stored)


def test_a_reused_key_is_refused_saying_to_use_a_new_one() -> None:
    valid = validate_create(
        CreateRequest(job_type=JobType.FEED_INTAKE_EXPORT, format=ReportFormat.CSV)
    )
    with pytest.raises(IdempotencyKeyReused) as raised:
        check_replay(make_job(valid), "another request's fingerprint")
    assert raised.value.message == (
        "idempotency_key was already used for a different request; use a new key"
    )
