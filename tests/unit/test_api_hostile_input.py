"""Issue 13, the HTTP half: each hostile request found by hand answers as a careful API would.

Each test names the finding it pins; all run over the real app and in-memory adapters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from entrypoints.api import create_app
from reportcore.requests import ListQuery

from .api_support import (
    FEED_BODY,
    JOBS,
    TENANT,
    ApiWorld,
    api_world,
    as_role,
    auth,
    mint,
    new_id,
)

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


def assert_envelope(answer: httpx.Response, status: int, code: str = "VALIDATION_ERROR") -> str:
    """The answer is the error envelope with ``status`` and ``code``; its message."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["traceId"] == answer.headers["x-trace-id"]
    message: str = error["message"]
    return message


JSON = {"content-type": "application/json"}


def _post(world: ApiWorld, path: str, content: bytes, **headers: str) -> httpx.Response:
    return world.client.post(path, content=content, headers={**auth(mint()), **JSON, **headers})


# --- finding 2: deep nesting ---


@pytest.mark.parametrize("depth", [40, 1_000, 100_000])
@pytest.mark.parametrize("route", ["create", "cancel"])
def test_a_body_nested_a_thousand_levels_deep_is_400_not_a_recursion_error(
    world: ApiWorld, depth: int, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = JOBS if route == "create" else f"{JOBS}/{new_id()}/cancel"
    deep = b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv","filters":'
    deep += b"[" * depth + b"]" * depth + b"}"
    with caplog.at_level(logging.ERROR):
        message = assert_envelope(_post(world, path, deep), 400)
    assert "nested" in message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- finding 3: invalid UTF-8 ---


def test_invalid_utf8_inside_a_json_string_is_400(world: ApiWorld) -> None:
    message = assert_envelope(_post(world, JOBS, b'{"job_type":"X","zz":"\xc3("}'), 400)
    assert "UTF-8" in message


# --- finding 8: media types and duplicate keys ---


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_json_by_its_content_type_is_415(
    world: ApiWorld, content_type: str
) -> None:
    answer = _post(
        world,
        JOBS,
        b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv"}',
        **{"content-type": content_type},
    )
    assert_envelope(answer, 415)
    assert world.client.get(JOBS, headers=auth(mint())).json()["items"] == []


def test_a_json_body_declared_in_another_charset_is_415(world: ApiWorld) -> None:
    answer = _post(world, JOBS, b"{}", **{"content-type": "application/json; charset=latin-1"})
    assert_envelope(answer, 415)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.farmiq+json", None],
)
def test_json_media_types_and_a_missing_content_type_are_read_as_json(
    world: ApiWorld, content_type: str | None
) -> None:
    headers = auth(mint())
    if content_type is not None:
        headers["content-type"] = content_type
    answer = world.client.post(
        JOBS, content=b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv"}', headers=headers
    )
    assert answer.status_code == 201, answer.text


def test_a_duplicate_json_key_is_400_naming_the_key(world: ApiWorld) -> None:
    body = b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv","format":"json"}'
    message = assert_envelope(_post(world, JOBS, body), 400)
    assert "'format'" in message and "twice" in message
    nested = b'{"job_type":"TELEMETRY_EXPORT","format":"csv","filters":{"metric":"a","metric":"b"}}'
    assert "'metric'" in assert_envelope(_post(world, JOBS, nested), 400)


# --- finding 5: a client that hangs up mid-body ---


def test_a_client_disconnecting_mid_body_is_one_info_line_without_a_traceback(
    world: ApiWorld, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(world.container)
    body = b'{"job_type":"FEED_INTAKE_EXPORT",'
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": body, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": JOBS,
        "raw_path": JOBS.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {mint()}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"200"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 5129),
    }

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    records = [r for r in caplog.records if r.name.startswith("reportsvc")]
    assert len(records) == 1, [r.getMessage() for r in records]
    (line,) = records
    assert line.levelno == logging.INFO and line.getMessage() == "request"
    assert line.__dict__["outcome"] == "client_disconnected"
    assert line.exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert world.client.get(JOBS, headers=auth(mint())).json()["items"] == []


# --- finding 4: OPTIONS on the JWT routes ---

# the methods of each path, written out here rather than read from the app
ALLOW = {
    JOBS: "GET, OPTIONS, POST",
    f"{JOBS}/some-id": "GET, OPTIONS",
    f"{JOBS}/some-id/download": "GET, OPTIONS",
    f"{JOBS}/some-id/cancel": "OPTIONS, POST",
    f"{JOBS}/some-id/file": "GET, HEAD, OPTIONS",
    "/api/health": "GET, HEAD, OPTIONS",
}


@pytest.mark.parametrize("path", sorted(ALLOW))
@pytest.mark.parametrize("token", ["valid", "none", "garbage"])
def test_options_on_any_route_answers_204_with_allow_for_any_token_or_none(
    world: ApiWorld, path: str, token: str
) -> None:
    headers = {"valid": auth(mint()), "none": {}, "garbage": {"Authorization": "Bearer x.y.z"}}
    answer = world.client.options(path, headers=headers[token])
    assert answer.status_code == 204, answer.text
    assert answer.headers["allow"] == ALLOW[path]
    assert answer.content == b""


# --- finding 8: HEAD on health, unknown documentation paths ---


def test_head_on_health_is_200_with_the_headers_of_get(world: ApiWorld) -> None:
    answer = world.client.head("/api/health")
    assert answer.status_code == 200
    assert answer.content == b""
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["content-length"] == "2"


@pytest.mark.parametrize("path", ["/api-docs/unknown", "/api-docs/a.json", "/api-docs/x/y"])
def test_an_unknown_api_docs_path_is_404_in_the_envelope_not_html(
    world: ApiWorld, path: str
) -> None:
    assert_envelope(world.client.get(path), 404, "NOT_FOUND")


@pytest.mark.parametrize("path", ["/api-docs", "/api-docs/openapi.json"])
def test_the_api_docs_still_answer(world: ApiWorld, path: str) -> None:
    assert world.client.get(path).status_code == 200


# --- finding 8: file_path ---


@pytest.mark.parametrize("role", ["tenant_admin", "farm_manager", "house_operator", "viewer"])
def test_file_path_in_the_job_json_is_relative_to_the_store_never_a_machine_path(
    world: ApiWorld, role: str
) -> None:
    job = world.succeeded_job(rows=3)
    stored = world.jobs.get(job["id"], TENANT)
    assert stored is not None and stored.file_path  # the store keeps its own full location
    for answer in (
        world.client.get(f"{JOBS}/{job['id']}", headers=as_role(role)).json(),
        world.client.get(JOBS, headers=as_role(role)).json()["items"][0],
    ):
        assert answer["file_path"] == f"{TENANT}/{job['id']}/report.csv"
        assert stored.file_path not in json.dumps(answer)


# --- finding 8: bounded echoes ---

LONG = "x" * 10_000


@pytest.mark.parametrize(
    "body",
    [
        {"job_type": LONG, "format": "csv"},
        {"job_type": "FEED_INTAKE_EXPORT", "format": LONG},
        {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "filters": {LONG: "a"}},
        {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "farm_id": LONG},
        {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "start_date": LONG},
        {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "idempotency_key": LONG},
        {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "tenant_id": LONG},
        {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "filters": [LONG]},
    ],
)
def test_an_error_message_never_echoes_more_than_about_a_hundred_characters_of_input(
    world: ApiWorld, body: dict[str, Any]
) -> None:
    answer = world.client.post(JOBS, json=body, headers=auth(mint()))
    assert answer.status_code in (400, 403), answer.text  # 403: naming another tenant
    message = answer.json()["error"]["message"]
    assert "x" * 121 not in message
    assert len(message) < 1_000


@pytest.mark.parametrize(
    "path", [f"/{LONG}", f"{JOBS}/{LONG}/nothing", f"{JOBS}?status={LONG}", f"{JOBS}?limit={LONG}"]
)
def test_paths_and_queries_of_any_length_are_not_echoed_whole(world: ApiWorld, path: str) -> None:
    answer = world.client.get(path, headers=auth(mint()))
    assert answer.status_code in (400, 404)
    assert "x" * 121 not in answer.json()["error"]["message"]


# --- finding 8: JWT time claims and a malformed tenant claim ---


@pytest.mark.parametrize(
    "exp", ["9999999999", 1e30, float("1e300"), -1, True, [9999999999], {"t": 1}, 253_402_300_800]
)
def test_a_jwt_whose_exp_is_not_a_real_numeric_date_is_401(world: ApiWorld, exp: Any) -> None:
    token = mint({"exp": exp})
    assert_envelope(world.client.get(JOBS, headers=auth(token)), 401, "UNAUTHORIZED")


def test_the_jwt_exp_check_uses_the_clock_port(world: ApiWorld) -> None:
    # a token fresh by the wall clock, at a moment the service's clock is pinned well after
    token = mint(ttl_sec=600)
    assert world.client.get(JOBS, headers=auth(token)).status_code == 200
    world.clock.advance(600 + 60)
    message = assert_envelope(world.client.get(JOBS, headers=auth(token)), 401, "UNAUTHORIZED")
    assert "expired" in message
    # and one not yet valid by the pinned clock
    early = mint({"nbf": world.clock.now().timestamp() + 3600}, now=world.clock.now())
    assert_envelope(world.client.get(JOBS, headers=auth(early)), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("tenant", ["../etc", "a b", "x" * 200, "-starts-with-dash", "t\u00e9"])
def test_a_malformed_tenant_id_claim_is_401_not_400(world: ApiWorld, tenant: str) -> None:
    headers = auth(mint({"tenant_id": tenant}))
    for answer in (
        world.client.get(JOBS, headers=headers),
        world.client.post(JOBS, json={}, headers=headers),
    ):
        assert_envelope(answer, 401, "UNAUTHORIZED")


# --- finding 8: idempotency keys ---


@pytest.mark.parametrize("key", ["a\r\nb", "line\n", "esc\x1b[31m", "tab\there", "del\x7f", "\x85"])
def test_an_idempotency_key_with_control_characters_is_400_and_never_stored(
    world: ApiWorld, key: str
) -> None:
    body = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "idempotency_key": key}
    message = assert_envelope(world.client.post(JOBS, json=body, headers=auth(mint())), 400)
    assert "idempotency_key" in message
    assert world.client.get(JOBS, headers=auth(mint())).json()["items"] == []


def test_a_non_ascii_idempotency_key_header_is_400_not_read_as_latin1(world: ApiWorld) -> None:
    headers = [
        (b"authorization", f"Bearer {mint()}".encode()),
        (b"content-type", b"application/json"),
        (b"idempotency-key", "cl\u00e9-\u2603".encode()),
    ]
    answer = world.client.post(
        JOBS, content=b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv"}', headers=headers
    )
    assert "Idempotency-Key" in assert_envelope(answer, 400)
    assert world.client.get(JOBS, headers=auth(mint())).json()["items"] == []


def test_a_printable_idempotency_key_is_still_taken_from_body_and_header(world: ApiWorld) -> None:
    job = world.create(
        {**{"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}, "idempotency_key": "k 1/é"}
    )
    assert job["idempotency_key"] == "k 1/é"
    again = world.create(headers={**auth(mint()), "Idempotency-Key": "feed-2026-w2"})
    assert again["idempotency_key"] == "feed-2026-w2"


# --- finding 8: non-ASCII digits in the query string ---


@pytest.mark.parametrize("limit", ["\u0665", "\u0661\u0660", "\uff15", "\u00b2", "5\u0665"])
def test_a_limit_in_non_ascii_digits_is_400(world: ApiWorld, limit: str) -> None:
    answer = world.client.get(JOBS, params={"limit": limit}, headers=auth(mint()))
    assert "limit" in assert_envelope(answer, 400)


def test_a_range_in_non_ascii_digits_is_ignored_not_read_as_numbers(world: ApiWorld) -> None:
    job = world.succeeded_job(rows=5)
    url = world.download_url(job["id"])
    answer = world.client.get(url, headers={"Range": "bytes=\u0660-\u0665".encode()})  # type: ignore[dict-item]
    assert answer.status_code == 200  # the whole file, as for any malformed Range


# --- finding 8: NUL messages name the field the client sent ---


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"job_type": "TELEMETRY_EXPORT", "format": "csv", "filters": {"metric": "a\x00"}},
            "filters.metric",
        ),
        (
            {
                "job_type": "FEED_INTAKE_EXPORT",
                "format": "csv",
                "filters": {"device_id": ["x", "\x00"]},
            },
            "filters.device_id",
        ),
    ],
)
def test_a_nul_in_a_body_field_is_400_naming_that_field(
    world: ApiWorld, body: dict[str, Any], field: str
) -> None:
    message = assert_envelope(world.client.post(JOBS, json=body, headers=auth(mint())), 400)
    assert message.startswith(f"{field} ") and "scope" not in message


def test_a_nul_hidden_in_a_cursor_is_400_naming_the_cursor(world: ApiWorld) -> None:
    import base64

    raw = json.dumps(["2026-01-01T00:00:00Z", "id\x00"]).encode()
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    answer = world.client.get(JOBS, params={"cursor": cursor}, headers=auth(mint()))
    message = assert_envelope(answer, 400)
    assert message.startswith("cursor ") and "after" not in message


def send_lines(
    world: ApiWorld, method: str, url: str, lines: list[tuple[str, str]], body: bytes = b""
) -> httpx.Response:
    """``lines`` sent to the app as they are, one header line each: the test client joins
    lines of one name into one ("a, b") before the app sees them, as no server does."""
    path, _, query = url.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-length", str(len(body)).encode())]
        + [(k.lower().encode(), v.encode()) for k, v in lines],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 5129),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(create_app(world.container), scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return httpx.Response(start["status"], headers=start["headers"], content=content)


# --- finding 8: conditional requests on the file (RFC 9110) ---


@pytest.fixture
def file_url(world: ApiWorld) -> tuple[str, str]:
    """The download URL of a finished job's file and its current ETag."""
    url = world.download_url(world.succeeded_job(rows=5)["id"])
    etag = world.client.get(url).headers["etag"]
    return url, etag


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("form", ["same", "weak", "in_a_list", "star"])
def test_if_none_match_with_the_current_etag_is_304_without_a_body(
    world: ApiWorld, file_url: tuple[str, str], method: str, form: str
) -> None:
    url, etag = file_url
    given = {"same": etag, "weak": f"W/{etag}", "in_a_list": f'"old", {etag}', "star": "*"}[form]
    answer = world.client.request(method, url, headers={"If-None-Match": given})
    assert answer.status_code == 304
    assert answer.content == b""
    assert answer.headers["etag"] == etag


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(("header", "status"), [("If-None-Match", 304), ("If-Match", 200)])
def test_a_list_header_on_two_lines_counts_every_line(
    world: ApiWorld, file_url: tuple[str, str], method: str, header: str, status: int
) -> None:
    """RFC 9110 5.3: lines of one list field are read as one, joined by commas; only the
    first line counted (a 200 with the whole file for the client's current copy, a 412)."""
    url, etag = file_url
    lines = [(header, '"an-older-version"'), (header, etag)]
    answer = send_lines(world, method, url, lines)
    assert answer.status_code == status, answer.text
    assert answer.headers["etag"] == etag


def test_if_none_match_with_another_etag_answers_the_file(
    world: ApiWorld, file_url: tuple[str, str]
) -> None:
    url, _ = file_url
    answer = world.client.get(url, headers={"If-None-Match": '"an-older-version"'})
    assert answer.status_code == 200 and answer.content


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("given", ['"another"', "W/{etag}", "garbage", ""])
def test_a_failing_if_match_is_412_in_the_envelope(
    world: ApiWorld, file_url: tuple[str, str], method: str, given: str
) -> None:
    url, etag = file_url
    answer = world.client.request(method, url, headers={"If-Match": given.format(etag=etag)})
    assert answer.status_code == 412
    if method == "GET":
        assert_envelope(answer, 412)


@pytest.mark.parametrize("given", ["{etag}", '"x", {etag}', "*"])
def test_a_matching_if_match_answers_the_file(
    world: ApiWorld, file_url: tuple[str, str], given: str
) -> None:
    url, etag = file_url
    answer = world.client.get(url, headers={"If-Match": given.format(etag=etag)})
    assert answer.status_code == 200 and answer.content


@pytest.mark.parametrize(
    ("if_range", "status"),
    [("{etag}", 206), ("W/{etag}", 200), ('"other"', 200), ("Tue, 01 Dec 2026 00:00:00 GMT", 200)],
)
def test_if_range_honours_the_range_only_on_a_strong_etag_match(
    world: ApiWorld, file_url: tuple[str, str], if_range: str, status: int
) -> None:
    url, etag = file_url
    headers = {"Range": "bytes=0-3", "If-Range": if_range.format(etag=etag)}
    answer = world.client.get(url, headers=headers)
    assert answer.status_code == status
    assert len(answer.content) == (4 if status == 206 else int(answer.headers["content-length"]))


# --- a query parameter given twice (a proxy reading the first would disagree with us) ---


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("status=bogus&status=queued", "status"),
        ("status=queued&status=queued", "status"),
        ("tenantId=tenant-b&tenantId=" + TENANT, "tenantId"),
        ("limit=5&cursor=&limit=7", "limit"),
    ],
)
def test_a_list_query_parameter_given_twice_is_400_naming_it(
    world: ApiWorld, query: str, name: str
) -> None:
    message = assert_envelope(world.client.get(f"{JOBS}?{query}", headers=world.headers()), 400)
    assert message == f"{name}: is given more than once; give it once"
    assert world.client.get(f"{JOBS}?{query.partition('&')[2]}", headers=world.headers()).is_success


@pytest.mark.parametrize("name", ["Idempotency-Key", "Authorization"])
def test_a_single_valued_header_on_two_lines_is_400_naming_it(world: ApiWorld, name: str) -> None:
    """Two Idempotency-Key lines: the first was used silently, and a proxy keeping the last
    would disagree with us about the job's key (a retry with it made a second job)."""
    headers = {**world.headers(), "Idempotency-Key": "key-a"}
    second = "key-b" if name == "Idempotency-Key" else headers["Authorization"]
    lines = [*headers.items(), (name, second)]
    lines.append(("Content-Type", "application/json"))
    body = json.dumps(FEED_BODY).encode()
    message = assert_envelope(send_lines(world, "POST", JOBS, lines, body), 400)
    assert message == f"{name.lower()}: header is given more than once; give it once"
    assert world.jobs.find(TENANT, ListQuery()) == []


def test_a_download_token_given_twice_is_400_and_no_file(world: ApiWorld) -> None:
    job = world.succeeded_job(rows=3)
    url = world.download_url(job["id"])
    assert world.client.get(url).status_code == 200
    answer = world.client.get(url.replace("token=", "token=forged&token=", 1))
    assert "token" in assert_envelope(answer, 400)
    answer = world.client.get(url + "&token=forged")
    assert "token" in assert_envelope(answer, 400)
