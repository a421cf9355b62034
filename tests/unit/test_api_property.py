"""Issue 13 deliverable 3: whatever a client sends, the API answers as the contract promises.

Hypothesis generates hostile requests (methods, paths, query strings, headers, tokens and
bodies) against the real app over in-memory adapters, and every answer must be: never a 5xx,
every error in the envelope with the request's trace id, and never a stack trace, a source
file or a storage location in the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .api_support import (
    FEED_BODY,
    JOBS,
    ApiWorld,
    api_world,
    feed_record,
    mint,
    new_id,
    unsigned,
    valid_claims,
)

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

CODES = {
    "VALIDATION_ERROR",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "REPORT_NOT_READY",
    "IDEMPOTENCY_KEY_REUSED",
    "JOB_NOT_CANCELLABLE",
    "REPORT_EXPIRED",
    "SERVICE_UNAVAILABLE",
}
# what must never reach a client: a traceback, source files, storage locations, SQL
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|/work/|/tmp/|/data/exports|mem://|SELECT |INSERT "
)


class Fixed:
    """The world of every example: one finished job, its file URL, a queued job."""

    world: ApiWorld
    done_id: str
    queued_id: str
    file_url: str


@pytest.fixture(scope="module")
def fixed() -> Iterator[Fixed]:
    with api_world() as world:
        f = Fixed()
        f.world = world
        f.done_id = world.create()["id"]
        world.run_queued([feed_record(i) for i in range(9)])
        f.queued_id = world.create()["id"]
        f.file_url = world.download_url(f.done_id)
        yield f


# --- what a hostile client sends ---

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "\x00",
            "\u0665",
            "\uff15",
            "-1",
            "0",
            "101",
            "1e3",
            "9" * 30,
            "../../etc/passwd",
            "%00",
            "a\r\nb",
            "\x1b[31m",
            "x" * 5000,
            "9999-12-31",
            "0001-01-01T00:00:00+01:00",
            "\ud7ff",
        ]
    ),
)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | HOSTILE_TEXT
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=10,
)
FIELDS = ["job_type", "format", "farm_id", "barn_id", "batch_id", "start_date", "end_date",
          "filters", "idempotency_key", "tenant_id", "tenantId"]  # fmt: skip
CREATE_BODIES = st.fixed_dictionaries(
    {},
    optional={
        name: JSON_VALUES | st.sampled_from([FEED_BODY[k] for k in FEED_BODY]) for name in FIELDS
    },
).map(lambda extra: {**FEED_BODY, **extra})


def _deep(depth: int) -> bytes:
    return (
        b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv","filters":'
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


BODIES = st.one_of(
    st.none(),
    st.binary(max_size=200),
    CREATE_BODIES.map(lambda b: json.dumps(b).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=3000).map(_deep),
    st.sampled_from(
        [
            b'{"job_type":"X","zz":"\xc3("}',
            b'{"format":"csv","format":"json","job_type":"FEED_INTAKE_EXPORT"}',
            b'{"job_type":"FEED_INTAKE_EXPORT","format":"csv","n":NaN}',
            b'{"a":"\\ud800"}',
            b"\xef\xbb\xbf{}",
        ]
    ),
)


def _header_safe(value: bytes) -> bytes:
    # a header cannot hold these at all: the client library refuses them before sending
    return value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")


HEADER_BYTES = st.binary(max_size=60).map(_header_safe)


def _tokens(fixed_now: float | None = None) -> st.SearchStrategy[str | None]:
    claims = st.fixed_dictionaries(
        {},
        optional={
            "exp": JSON_VALUES,
            "nbf": JSON_VALUES,
            "iat": JSON_VALUES,
            "tenant_id": JSON_VALUES,
            "roles": JSON_VALUES | st.just(["platform_admin"]),
            "role": JSON_VALUES,
            "sub": JSON_VALUES,
            "aud": JSON_VALUES,
        },
    )
    return st.one_of(
        st.none(),
        st.just(mint()),
        st.just(mint({"roles": ["platform_admin"]}, omit=["tenant_id"])),
        st.just(mint({"roles": ["viewer"]})),
        claims.map(lambda c: unsigned(valid_claims(**c), {"alg": "HS256", "typ": "JWT"})),
        st.sampled_from(["none", "HS512", "RS256"]).map(
            lambda alg: unsigned(valid_claims(), {"alg": alg, "typ": "JWT"})
        ),
        HOSTILE_TEXT,
    )


GENUINE = st.sampled_from(
    [
        mint(ttl_sec=3600),
        mint({"roles": ["farm_manager"]}, ttl_sec=3600),
        mint({"roles": ["platform_admin"]}, omit=["tenant_id"], ttl_sec=3600),
    ]
)


@st.composite
def requests(draw: st.DrawFn, fixed: Fixed) -> dict[str, Any]:
    job_id = draw(st.sampled_from([fixed.done_id, fixed.queued_id, new_id()]) | HOSTILE_TEXT)
    # a path segment as a client library sends it: percent-encoded
    job_id = quote(job_id.encode("utf-8", "surrogatepass"), safe="") or "x"
    routes = [
        ("POST", JOBS),
        ("GET", JOBS),
        ("GET", f"{JOBS}/{job_id}"),
        ("GET", f"{JOBS}/{job_id}/download"),
        ("POST", f"{JOBS}/{job_id}/cancel"),
        ("GET", f"{JOBS}/{job_id}/file"),
        ("HEAD", f"{JOBS}/{job_id}/file"),
        ("GET", "/api/health"),
        ("GET", "/api-docs/" + job_id),
        ("GET", "/" + job_id),
    ]
    method, path = draw(st.sampled_from(routes))
    if draw(st.integers(0, 4)) == 0:  # now and then a method the route does not take
        method = draw(st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE"]))
    names = ["status", "job_type", "created_from", "created_to", "cursor", "limit", "token",
             "tenant_id", "tenantId", "x"]  # fmt: skip
    params = draw(st.dictionaries(st.sampled_from(names), HOSTILE_TEXT, max_size=4))
    if path.endswith("/file") and draw(st.booleans()):
        params["token"] = fixed.file_url.split("token=", 1)[1]
    headers: dict[str, Any] = {}
    if draw(st.booleans()):  # half the time a genuine caller, so that bodies and queries count
        headers["authorization"] = f"Bearer {draw(GENUINE)}"
    else:
        token = draw(_tokens())
        if token is not None:
            scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", ""]))
            raw = (scheme + token).encode("utf-8", "surrogatepass")
            headers["authorization"] = _header_safe(raw)
    for name in ["content-type", "idempotency-key", "range", "if-range", "if-match",
                 "if-none-match", "x-request-id", "x-trace-id", "content-encoding"]:  # fmt: skip
        if draw(st.integers(0, 3)) == 0:
            headers[name] = draw(
                HEADER_BYTES
                | st.sampled_from(
                    [
                        b"application/json",
                        b"text/plain",
                        b"application/x+json",
                        b"*",
                        b"bytes=0-3",
                        b"bytes=\xd9\xa5-",
                        b"\xc3\xa9",
                        b'W/"x"',
                        b"gzip",
                    ]
                )
            )
    body = draw(BODIES) if method in ("POST", "PUT") else None
    return {"method": method, "url": path, "params": params, "headers": headers, "content": body}


def _check(answer: httpx.Response, method: str) -> None:
    assert answer.status_code < 500, answer.text
    text = answer.content.decode("utf-8", "replace")
    assert not LEAKS.search(text), text[:500]
    if answer.status_code >= 400 and method != "HEAD":
        assert answer.headers["content-type"].startswith("application/json"), answer.headers
        envelope = answer.json()
        assert set(envelope) == {"error"}
        assert envelope["error"]["code"] in CODES
        assert isinstance(envelope["error"]["message"], str) and envelope["error"]["message"]
        assert envelope["error"]["traceId"] == answer.headers["x-trace-id"]
        assert len(envelope["error"]["message"]) <= 1000


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_hostile_request_gets_a_5xx_a_bare_error_or_a_leak(
    fixed: Fixed, data: st.DataObject
) -> None:
    request = data.draw(requests(fixed))
    answer = fixed.world.client.request(**request)
    _check(answer, request["method"])


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=BODIES.filter(lambda b: b is not None),
    route=st.sampled_from(["create", "cancel"]),
    content_type=st.none() | st.sampled_from([b"application/json", b"text/plain"]) | HEADER_BYTES,
    token=GENUINE,
)
def test_no_hostile_body_on_create_or_cancel_gets_a_5xx_a_bare_error_or_a_leak(
    fixed: Fixed, body: bytes, route: str, content_type: bytes | None, token: str
) -> None:
    # the body is what the generic test above reaches least often: here every example has one
    path = JOBS if route == "create" else f"{JOBS}/{fixed.queued_id}/cancel"
    headers: dict[str, Any] = {"authorization": f"Bearer {token}"}
    if content_type is not None:
        headers["content-type"] = content_type
    _check(fixed.world.client.post(path, content=body, headers=headers), "POST")
