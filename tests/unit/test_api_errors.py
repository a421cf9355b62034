"""Errors, ids and logs: every failure answers in the envelope, none leaks internals, no input
gets a 500, every response carries its ids, and tokens never reach a log."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reportcore.testing import InMemoryJobRepository
from tests.containers import replace

from .api_support import (
    FEED_BODY,
    JOBS,
    ApiWorld,
    api_world,
    auth,
    mint,
    new_id,
)

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# the contract's codes and statuses, written out here rather than taken from the code
CONTRACT_STATUS = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "REPORT_NOT_READY": 409,
    "IDEMPOTENCY_KEY_REUSED": 409,
    "JOB_NOT_CANCELLABLE": 409,
    "REPORT_EXPIRED": 410,
    "SERVICE_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}
LEAKED_SQL = "SELECT secret_column FROM report_jobs"


class ExplodingRepository(InMemoryJobRepository):
    """Reads fail the way a driver bug would: an unexpected error with SQL in its message."""

    def get(self, job_id: str, tenant_id: str | None = None) -> Any:
        raise RuntimeError(f"syntax error at {LEAKED_SQL} WHERE id = '{job_id}'")

    def find(self, tenant_id: str, query: Any) -> Any:
        raise RuntimeError(f"syntax error at {LEAKED_SQL}")


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


def assert_envelope(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is the contract's error envelope with ``code``, traced by its header."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "traceId"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["traceId"] == answer.headers["x-trace-id"]
    error: dict[str, Any] = body["error"]
    return error


# --- each contract code, through the API ---


def test_every_contract_error_code_answers_with_its_status_in_the_envelope(
    world: ApiWorld,
) -> None:
    headers = auth(mint())
    client = world.client
    seen: set[str] = set()

    def check(answer: httpx.Response, code: str) -> None:
        assert_envelope(answer, CONTRACT_STATUS[code], code)
        seen.add(code)

    check(
        client.post(JOBS, json={"job_type": "FEED_INTAKE_EXPORT"}, headers=headers),
        "VALIDATION_ERROR",
    )
    check(client.get(JOBS), "UNAUTHORIZED")
    check(
        client.get(JOBS, headers=auth(mint({"roles": ["viewer"]}, omit=["tenant_id"]))), "FORBIDDEN"
    )
    check(client.get(f"{JOBS}/{new_id()}", headers=headers), "NOT_FOUND")
    queued = world.create()
    check(client.get(f"{JOBS}/{queued['id']}/download", headers=headers), "REPORT_NOT_READY")
    world.create({**FEED_BODY, "idempotency_key": "k"})
    reused = {**FEED_BODY, "format": "json", "idempotency_key": "k"}
    check(client.post(JOBS, json=reused, headers=headers), "IDEMPOTENCY_KEY_REUSED")
    done = world.succeeded_job()
    check(client.post(f"{JOBS}/{done['id']}/cancel", headers=headers), "JOB_NOT_CANCELLABLE")
    world.clock.advance(world.policy.retention_sec + 1)
    headers = world.headers()  # fresh by the moved clock
    check(client.get(f"{JOBS}/{done['id']}/download", headers=headers), "REPORT_EXPIRED")
    world.jobs.available = False
    check(client.get(JOBS, headers=headers), "SERVICE_UNAVAILABLE")
    replace(world.container, "jobs", ExplodingRepository())
    check(client.get(JOBS, headers=headers), "INTERNAL_ERROR")
    assert seen == set(CONTRACT_STATUS)


# --- the repository down: 503 on every route that needs it ---


def _every_jwt_route(world: ApiWorld, job_id: str) -> list[httpx.Response]:
    headers = auth(mint())
    client = world.client
    return [
        client.post(JOBS, json=FEED_BODY, headers=headers),
        client.get(JOBS, headers=headers),
        client.get(f"{JOBS}/{job_id}", headers=headers),
        client.get(f"{JOBS}/{job_id}/download", headers=headers),
        client.post(f"{JOBS}/{job_id}/cancel", headers=headers),
    ]


def test_an_unavailable_repository_is_503_on_every_jwt_route_and_on_ready(
    world: ApiWorld,
) -> None:
    job = world.succeeded_job()
    url = world.download_url(job["id"])
    world.jobs.available = False
    for answer in _every_jwt_route(world, job["id"]):
        assert_envelope(answer, 503, "SERVICE_UNAVAILABLE")
    assert_envelope(world.client.get(url), 503, "SERVICE_UNAVAILABLE")
    assert world.client.get("/api/ready").status_code == 503


# --- nothing unexpected leaks ---


def test_an_unexpected_error_is_500_without_internals_and_logged_with_its_trace_id(
    world: ApiWorld, caplog: pytest.LogCaptureFixture
) -> None:
    replace(world.container, "jobs", ExplodingRepository())
    with caplog.at_level(logging.INFO):
        answer = world.client.get(
            f"{JOBS}/{new_id()}", headers={**auth(mint()), "x-trace-id": "t-500"}
        )
    error = assert_envelope(answer, 500, "INTERNAL_ERROR")
    assert error["traceId"] == "t-500"
    assert LEAKED_SQL not in answer.text
    assert "Traceback" not in answer.text and "RuntimeError" not in answer.text
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert len(logged) == 1
    assert logged[0].__dict__["trace_id"] == "t-500"
    assert logged[0].exc_info is not None  # the stack stays server-side


# --- Litestar's own errors in the envelope ---


def test_an_unknown_route_is_404_in_the_envelope(world: ApiWorld) -> None:
    for path in ("/nope", "/api/v1/reports", "/api/v1/reports/jobs/a/b/c"):
        assert_envelope(world.client.get(path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/health"),
        ("DELETE", JOBS),
        ("PUT", f"{JOBS}/{{id}}"),
        ("GET", f"{JOBS}/{{id}}/cancel"),
        ("POST", f"{JOBS}/{{id}}/download"),
    ],
)
def test_a_wrong_method_is_405_in_the_envelope(world: ApiWorld, method: str, path: str) -> None:
    answer = world.client.request(method, path.format(id=new_id()), headers=auth(mint()))
    error = assert_envelope(answer, 405, "VALIDATION_ERROR")
    assert method in error["message"]
    allowed = {m.strip() for m in answer.headers["allow"].split(",")}
    assert allowed and method not in allowed


def test_a_body_too_large_is_413_in_the_envelope(world: ApiWorld) -> None:
    body = {**FEED_BODY, "notes": "x" * 2_000_000}
    answer = world.client.post(JOBS, json=body, headers=auth(mint()))
    assert_envelope(answer, 413, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{", "not valid JSON"),
        (b'{"job_type": "FEED_INTAKE_EXPORT", "format": "csv",}', "not valid JSON"),
        (b"", "body is required"),
        (b"[]", "body"),
        (b"null", "body"),
        (b'"FEED_INTAKE_EXPORT"', "body"),
        (b'{"job_type": 5, "format": "csv"}', "job_type"),
        (
            b'{"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "filters": {"source": 1e999}}',
            "JSON",
        ),
        (b'{"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "filters": 12}', "filters"),
        (b'{"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "barn_id": ["x"]}', "barn_id"),
        (
            b'{"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "filters": {"source": '
            + b"9" * 400
            + b"}}",
            "source",
        ),
        (b"\xff\xfe{", "JSON"),
    ],
)
def test_a_malformed_body_is_400_naming_what_is_wrong(
    world: ApiWorld, content: bytes, words: str
) -> None:
    answer = world.client.post(
        JOBS, content=content, headers={**auth(mint()), "content-type": "application/json"}
    )
    error = assert_envelope(answer, 400, "VALIDATION_ERROR")
    assert words in error["message"]


@pytest.mark.parametrize(
    ("body", "roles"),
    [
        ({**FEED_BODY, "idempotency_key": "key\x00"}, ["tenant_admin"]),
        ({**FEED_BODY, "filters": {"device_id": "dev\x00ice"}}, ["tenant_admin"]),
        ({**FEED_BODY, "tenant_id": "tenant-a\x00"}, ["platform_admin"]),
    ],
)
def test_text_with_nul_characters_is_400_not_a_database_error(
    world: ApiWorld, body: dict[str, Any], roles: list[str]
) -> None:
    answer = world.client.post(JOBS, json=body, headers=auth(mint({"roles": roles})))
    assert_envelope(answer, 400, "VALIDATION_ERROR")


def test_a_cursor_hiding_a_nul_is_400(world: ApiWorld) -> None:
    raw = json.dumps(["2026-01-01T00:00:00Z", "id\x00"]).encode()
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    answer = world.client.get(JOBS, params={"cursor": cursor}, headers=auth(mint()))
    assert_envelope(answer, 400, "VALIDATION_ERROR")


# --- ids on every response ---


def _every_kind_of_response(world: ApiWorld, headers: dict[str, str]) -> list[httpx.Response]:
    job = world.succeeded_job()
    url = world.download_url(job["id"])
    jwt_headers = {**auth(mint()), **headers}
    return [
        world.client.get("/api/health", headers=headers),
        world.client.get("/api/ready", headers=headers),
        world.client.get("/api-docs", headers=headers),
        world.client.get("/api-docs/openapi.json", headers=headers),
        world.client.post(JOBS, json=FEED_BODY, headers=jwt_headers),
        world.client.get(JOBS, headers=jwt_headers),
        world.client.get(JOBS, headers=headers),  # 401
        world.client.get("/no/such/route", headers=headers),  # 404 of the router
        world.client.delete(JOBS, headers=headers),  # 405
        world.client.get(url, headers=headers),  # the file
        world.client.get(url, headers={**headers, "Range": "bytes=99999999-"}),  # 416
        world.client.head(url, headers=headers),
    ]


def test_given_request_and_trace_ids_are_echoed_on_every_kind_of_response(
    world: ApiWorld,
) -> None:
    headers = {"x-request-id": "req-42", "x-trace-id": "trace-42"}
    for answer in _every_kind_of_response(world, headers):
        assert answer.headers["x-request-id"] == "req-42", answer.url
        assert answer.headers["x-trace-id"] == "trace-42", answer.url
        if answer.status_code >= 400 and answer.request.method != "HEAD":
            assert answer.json()["error"]["traceId"] == "trace-42"


def test_missing_ids_are_generated_on_every_kind_of_response(world: ApiWorld) -> None:
    seen = set()
    for answer in _every_kind_of_response(world, {}):
        request_id = answer.headers["x-request-id"]
        trace_id = answer.headers["x-trace-id"]
        assert UUID4.fullmatch(request_id) and UUID4.fullmatch(trace_id), answer.url
        seen.add(request_id)
    assert len(seen) == 12  # one per request


@pytest.mark.parametrize("given_id", ["x" * 129, "has space", "tab\there", "ünïcode", ""])
def test_unfit_given_ids_are_replaced_by_generated_ones(world: ApiWorld, given_id: str) -> None:
    headers = {"x-request-id": given_id, "x-trace-id": given_id}
    answer = world.client.get(
        "/api/health", headers={k: v.encode("utf-8") for k, v in headers.items()}
    )
    assert UUID4.fullmatch(answer.headers["x-request-id"])
    assert UUID4.fullmatch(answer.headers["x-trace-id"])


def test_an_id_of_128_printable_characters_is_kept(world: ApiWorld) -> None:
    given = "a-Z_0.9:~" * 14 + "ab"
    assert len(given) == 128
    answer = world.client.get("/api/health", headers={"x-request-id": given})
    assert answer.headers["x-request-id"] == given


# --- the access log ---


def test_each_request_is_logged_once_without_query_string_or_credentials(
    world: ApiWorld, caplog: pytest.LogCaptureFixture
) -> None:
    job = world.succeeded_job()
    user_token = mint()
    url = world.download_url(job["id"])
    file_token = url.split("token=", 1)[1]
    with caplog.at_level(logging.INFO, logger="reportsvc.api"):
        world.client.get(url, headers={"x-request-id": "dl-1"})
        world.client.get(JOBS, headers={**auth(user_token), "x-request-id": "ls-1"})
        world.client.get("/nowhere", headers={"x-request-id": "nf-1"})
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    by_id = {r.__dict__["request_id"]: r.__dict__ for r in lines}
    assert sorted(by_id) == ["dl-1", "ls-1", "nf-1"] and len(lines) == 3
    assert by_id["dl-1"]["path"] == f"{JOBS}/{job['id']}/file"
    assert by_id["dl-1"]["status"] == 200
    assert by_id["dl-1"]["method"] == "GET"
    assert by_id["nf-1"]["status"] == 404
    assert by_id["ls-1"]["duration_ms"] >= 0
    everything = "\n".join(
        f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in caplog.records
    )
    assert file_token not in everything
    assert user_token not in everything
    assert "Bearer" not in everything


# --- no input gets a 500 ---

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        [
            "FEED_INTAKE_EXPORT",
            "KPI_FEEDING_EXPORT",
            "TELEMETRY_EXPORT",
            "WEIGHVISION_EXPORT",
            "csv",
            "json",
            "2026-01-01",
            "2026-02-30",
            "0001-01-01",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "tenant-a",
            "tenant-b",
            "\x00",
        ]
    ),
)
CREATE_FIELDS = [
    "job_type",
    "format",
    "farm_id",
    "barn_id",
    "batch_id",
    "start_date",
    "end_date",
    "filters",
    "idempotency_key",
    "tenant_id",
    "tenantId",
    "other",
]
CREATE_BODIES = st.one_of(
    JSON_VALUES,
    st.dictionaries(st.sampled_from(CREATE_FIELDS), FIELD_VALUES, max_size=8),
    st.fixed_dictionaries(
        {"job_type": st.sampled_from(["FEED_INTAKE_EXPORT", "TELEMETRY_EXPORT"])},
        optional={
            "format": st.sampled_from(["csv", "json", "xml"]),
            "filters": st.dictionaries(
                st.sampled_from(["source", "device_id", "metric", "x"]), FIELD_VALUES, max_size=3
            ),
            "idempotency_key": st.text(max_size=210),
        },
    ),
)
LIST_PARAMS = st.dictionaries(
    st.sampled_from(
        ["status", "job_type", "created_from", "created_to", "cursor", "limit", "tenant_id", "x"]
    ),
    st.one_of(
        st.text(max_size=40),
        st.integers().map(str),
        st.sampled_from(["queued", "2026-01-01", "2026-01-01T00:00:00+14:00", "eyJ9", "100"]),
    ),
    max_size=6,
)


def _no_500(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert_envelope(answer, answer.status_code, answer.json()["error"]["code"])


def test_random_create_bodies_never_get_a_500_and_errors_are_enveloped() -> None:
    with api_world() as world:
        headers = {**auth(mint()), "content-type": "application/json"}

        @settings(max_examples=150)
        @given(body=CREATE_BODIES, raw=st.booleans(), junk=st.binary(max_size=40))
        def check(body: Any, raw: bool, junk: bytes) -> None:
            content = junk if raw else json.dumps(body).encode()
            _no_500(world.client.post(JOBS, content=content, headers=headers))

        check()


def test_random_list_queries_never_get_a_500_and_errors_are_enveloped() -> None:
    with api_world() as world:
        world.create()
        headers = auth(mint())

        @settings(max_examples=150)
        @given(params=LIST_PARAMS)
        def check(params: dict[str, str]) -> None:
            _no_500(world.client.get(JOBS, params=params, headers=headers))

        check()


def test_random_authorization_headers_and_job_ids_never_get_a_500() -> None:
    with api_world() as world:

        @settings(max_examples=100)
        @given(
            authorization=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
            job_id=st.text(
                st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60
            ),
        )
        def check(authorization: str, job_id: str) -> None:
            path = f"{JOBS}/{quote(job_id, safe='')}"
            _no_500(world.client.get(path, headers={"Authorization": authorization}))
            _no_500(world.client.get(path, headers={"Authorization": f"Bearer {authorization}"}))

        check()
