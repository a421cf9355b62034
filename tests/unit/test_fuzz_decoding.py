"""Issue 6 item 9: hypothesis fuzzes what decodes untrusted input, below the HTTP layer.

The HTTP tests (``test_api_errors``) already send random bodies, queries and headers and check
for no 500. Here each decoder is held to its own promise, with inputs no HTTP client sends:

- download tokens (``reportcore.tokens.verify``): any string is refused with
  ``InvalidDownloadToken`` and nothing else; any mutation of a genuine token is refused; any
  genuinely signed payload is either exactly a ``DownloadClaims`` or refused as malformed;
- user JWTs (``entrypoints.auth.TokenVerifier``): any ``Authorization`` value and any
  genuinely signed header and claims give a principal or ``Unauthorized``, never another
  exception; a mutated token never verifies;
- create and list requests (``reportcore.requests``): any JSON, any bytes and any Python values
  give a ``ValidCreate`` / ``ListQuery`` that keeps every rule, or the domain's
  ``ValidationError`` (after msgspec's own decode error for what is not JSON of the shape).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import string
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from entrypoints.auth import TokenVerifier
from entrypoints.schemas import CreateRequest as HttpCreateRequest
from reportcore.access import Principal
from reportcore.errors import Unauthorized, ValidationError
from reportcore.jobs import JobType
from reportcore.jobtypes import JOB_TYPES
from reportcore.requests import (
    MAX_IDEMPOTENCY_KEY,
    MAX_PAGE_SIZE,
    CreateRequest,
    ListQuery,
    ValidCreate,
    validate_create,
)
from reportcore.testing import FakeClock
from reportcore.tokens import DownloadClaims, InvalidDownloadToken, sign, verify
from tests.clock import pinned_now
from tests.unit.test_requests import listing

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

B64URL = string.ascii_letters + string.digits + "-_"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
DOWNLOAD_SECRET = b"fuzz-download-secret"
JWT_SECRET = "fuzz-jwt-secret-" + "0123456789abcdef" * 4
ISSUER, AUDIENCE = "farmiq", "farmiq-api"
VERIFIER = TokenVerifier(
    JWT_SECRET, issuer=ISSUER, audience=AUDIENCE, clock=FakeClock(pinned_now())
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
# the strings a token is made of, and strings that almost are
token_like = st.one_of(
    st.text(max_size=120),
    st.from_regex(r"\A[A-Za-z0-9_=.+/-]{0,120}\Z"),
    st.builds(
        lambda a, b: f"{a}.{b}",
        st.text(B64URL, max_size=80),
        st.text(B64URL, max_size=60),
    ),
)


# --- download tokens ---

download_claims = st.builds(
    DownloadClaims,
    tenant_id=st.text(min_size=1, max_size=40),
    job_id=st.uuids().map(str),
    exp=st.integers(min_value=NOW + 1, max_value=NOW + 10**7),
)


@given(token=st.one_of(st.none(), token_like))
def test_any_string_is_refused_as_a_download_token_and_only_so(token: str | None) -> None:
    with pytest.raises(InvalidDownloadToken):
        verify(DOWNLOAD_SECRET, token, now=NOW)


def _signed(payload: bytes) -> str:
    first = b64(payload)
    return f"{first}.{b64(hmac.new(DOWNLOAD_SECRET, first.encode(), hashlib.sha256).digest())}"


@given(
    payload=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"tenant_id": json_values, "job_id": json_values, "exp": json_values}
        ),
        st.fixed_dictionaries(
            {
                "tenant_id": st.text(max_size=10),
                "job_id": st.text(max_size=10),
                "exp": st.integers(min_value=-(2**80), max_value=2**80),
            }
        ),
    )
)
def test_any_genuinely_signed_payload_is_exactly_claims_or_refused(payload: Any) -> None:
    token = _signed(json.dumps(payload).encode())
    try:
        claims = verify(DOWNLOAD_SECRET, token, now=NOW)
    except InvalidDownloadToken:
        return
    assert isinstance(payload, dict)
    exp = payload["exp"]
    seconds = exp // 1000 if exp > 100_000_000_000 else exp  # the old service's milliseconds
    assert claims == DownloadClaims(payload["tenant_id"], payload["job_id"], seconds)
    assert isinstance(claims.exp, int) and not isinstance(claims.exp, bool)


@given(raw=st.binary(max_size=80))
def test_any_genuinely_signed_bytes_never_raise_anything_but_a_refusal(raw: bytes) -> None:
    try:
        claims = verify(DOWNLOAD_SECRET, _signed(raw), now=NOW)
    except InvalidDownloadToken:
        return
    assert isinstance(claims, DownloadClaims)


def _mutations(token: str) -> st.SearchStrategy[str]:
    """Edits an attacker can make: characters replaced, inserted or dropped anywhere (also
    padding, dots and non-ASCII), slices cut out, and parts of the token swapped or doubled."""
    alphabet = st.sampled_from(B64URL + ".=+/ \t\n\x00é")
    n = len(token)
    position = st.integers(min_value=0, max_value=n)
    replace = st.builds(lambda i, c: token[: i % n] + c + token[i % n + 1 :], position, alphabet)
    insert = st.builds(lambda i, c: token[:i] + c + token[i:], position, alphabet)
    cut = st.builds(lambda i, j: token[: min(i, j)] + token[max(i, j) + 1 :], position, position)
    rearranged = st.sampled_from(
        [
            ".".join(reversed(token.split("."))),
            token + "=",
            token + "==",
            token.replace(".", "=."),
            token.replace(".", ".."),
            token + "." + token.split(".")[-1],
            token.upper(),
            token.lower(),
        ]
    )
    return st.one_of(replace, insert, cut, rearranged)


@given(claims=download_claims, data=st.data())
def test_a_mutated_download_token_never_verifies(claims: DownloadClaims, data: Any) -> None:
    token = sign(DOWNLOAD_SECRET, claims)
    mutated = data.draw(_mutations(token).filter(lambda t: t != token), label="mutated")
    with pytest.raises(InvalidDownloadToken):
        verify(DOWNLOAD_SECRET, mutated, now=NOW)


@given(a=download_claims, b=download_claims)
def test_the_payload_of_one_token_with_the_signature_of_another_is_refused(
    a: DownloadClaims, b: DownloadClaims
) -> None:
    assume(a != b)
    payload, _ = sign(DOWNLOAD_SECRET, a).split(".")
    _, signature = sign(DOWNLOAD_SECRET, b).split(".")
    with pytest.raises(InvalidDownloadToken):
        verify(DOWNLOAD_SECRET, f"{payload}.{signature}", now=NOW)


# --- user JWTs ---


def _jwt(header: Any, claims: Any, secret: str = JWT_SECRET) -> str:
    """A JWT with any header and claims, HMAC-signed with ``secret`` whatever the header says:
    what a client holding the key (or a forger without it) could send."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "user-1",
        "roles": ["viewer"],
        "tenant_id": "tenant-a",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(pinned_now().timestamp()) + 600,
    }
    claims.update(changes)
    return claims


def _principal_or_refusal(authorization: str | None) -> Principal | None:
    try:
        return VERIFIER.principal(authorization)
    except Unauthorized:
        return None


@given(
    authorization=st.one_of(
        st.none(),
        st.text(max_size=200),
        token_like.map(lambda t: f"Bearer {t}"),
        st.builds(
            lambda s, t: f"{s} {t}", st.sampled_from(["bearer", "BEARER", "Basic"]), token_like
        ),
    )
)
def test_any_authorization_header_is_a_principal_or_a_401_and_nothing_else(
    authorization: str | None,
) -> None:
    assert _principal_or_refusal(authorization) is None  # none of these is a genuine token


_ALGS = st.sampled_from(["HS256", "none", "None", "HS384", "HS512", "RS256", "ES256", "", "hs256"])


@given(
    header=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"alg": st.one_of(_ALGS, json_values)}, optional={"typ": json_values}
        ),
        st.fixed_dictionaries(
            {"alg": st.just("HS256")},
            optional={
                "crit": json_values,
                "b64": json_values,
                "kid": json_values,
                "jku": json_values,
            },
        ),
    ),
    claims=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(
                ["sub", "user_id", "roles", "role", "tenant_id", "iss", "aud", "exp", "nbf", "iat"]
            ),
            json_values,
        ),
        st.builds(
            _good_claims,
            **{
                name: json_values
                for name in ("sub", "roles", "tenant_id", "iss", "aud", "exp", "nbf")
            },
        ),
    ),
)
@example(header={"alg": "HS256", "typ": "JWT"}, claims=_good_claims())  # the one that is valid
def test_any_genuinely_signed_header_and_claims_give_a_principal_or_a_401(
    header: Any, claims: Any
) -> None:
    principal = _principal_or_refusal(f"Bearer {_jwt(header, claims)}")
    if principal is None:
        return
    # accepted: then it was HS256 with the expected issuer and audience, and the claims are sane
    assert header.get("alg") == "HS256"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE or AUDIENCE in claims["aud"]
    assert all(isinstance(r, str) for r in principal.roles)
    assert principal.tenant_id is None or isinstance(principal.tenant_id, str)
    assert principal.subject is None or principal.subject.isprintable()


def test_the_genuine_token_of_these_tests_is_accepted() -> None:
    # the fuzz above and below would pass vacuously if even a genuine token were refused
    principal = VERIFIER.principal(f"Bearer {_jwt({'alg': 'HS256', 'typ': 'JWT'}, _good_claims())}")
    assert principal == Principal(
        subject="user-1", roles=frozenset({"viewer"}), tenant_id="tenant-a"
    )


@given(data=st.data())
def test_a_mutated_jwt_never_verifies(data: Any) -> None:
    token = _jwt({"alg": "HS256", "typ": "JWT"}, _good_claims())
    mutated = data.draw(_mutations(token).filter(lambda t: t != token), label="mutated")
    # surrounding whitespace is the header's, not the token's: the token itself must differ
    assume(mutated.strip() != token)
    assert _principal_or_refusal(f"Bearer {mutated}") is None


@given(secret=st.text(min_size=1, max_size=80), claims=st.builds(_good_claims))
def test_a_jwt_signed_with_another_key_never_verifies(secret: str, claims: dict[str, Any]) -> None:
    assume(secret != JWT_SECRET)
    assert _principal_or_refusal(f"Bearer {_jwt({'alg': 'HS256'}, claims, secret)}") is None


# --- create requests ---

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
]
field_values = st.one_of(
    json_values,
    st.sampled_from([t.value for t in JobType] + ["csv", "json", "xml"]),
    st.uuids().map(str),
    st.dates().map(str),
    st.dictionaries(
        st.sampled_from(["source", "device_id", "metric", "x"]),
        st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=3), json_values),
        max_size=3,
    ),
)
create_bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(CREATE_FIELDS), field_values, max_size=9),
    st.fixed_dictionaries(
        {
            "job_type": st.sampled_from([t.value for t in JobType]),
            "format": st.sampled_from(["csv", "json"]),
        },
        optional={name: field_values for name in CREATE_FIELDS[2:]},
    ),
)


def _check_valid(valid: ValidCreate, header_key: str | None) -> None:
    """Every rule a ValidCreate promises, checked independently of how it was made."""
    spec = JOB_TYPES[valid.job_type]
    scope = valid.scope
    for name in ("farm_id", "barn_id", "batch_id"):
        value = getattr(scope, name)
        assert value is None or value == str(uuid.UUID(value))
    if scope.start_date is not None and scope.end_date is not None:
        assert scope.start_date <= scope.end_date
    assert all(getattr(scope, name) is not None for name in spec.required_scope)
    assert set(scope.filters) <= set(spec.filters)
    key = valid.idempotency_key
    assert key is None or 1 <= len(key) <= MAX_IDEMPOTENCY_KEY
    assert header_key is None or key == header_key


def _decode_and_validate(raw: bytes, header_key: str | None) -> None:
    try:
        body = msgspec.json.decode(raw, type=HttpCreateRequest)
    except msgspec.DecodeError:  # not JSON, or not of the shape: Litestar's 400
        return
    try:
        valid = validate_create(body.to_core(), header_key=header_key)
    except ValidationError as refused:
        assert refused.code == "VALIDATION_ERROR" and refused.message
        return
    _check_valid(valid, header_key)


@given(body=create_bodies, header_key=st.one_of(st.none(), st.text(max_size=210)))
def test_any_json_body_is_a_valid_create_or_a_validation_error(
    body: Any, header_key: str | None
) -> None:
    _decode_and_validate(json.dumps(body).encode(), header_key)


@given(raw=st.binary(max_size=200))
def test_any_bytes_are_a_decode_error_a_valid_create_or_a_validation_error(raw: bytes) -> None:
    _decode_and_validate(raw, None)


python_values = st.one_of(
    json_values,
    st.builds(object),
    st.sets(st.integers(), max_size=3),
    st.binary(max_size=5),
    st.dates(),
    st.uuids(),
    st.sampled_from(list(JobType)),
)


@given(
    fields=st.fixed_dictionaries(
        {
            "job_type": st.one_of(st.sampled_from(list(JobType)), python_values),
            "format": python_values,
        },
        # the core's request names its tenant once (tenantId is the HTTP body's alias)
        optional={name: python_values for name in CREATE_FIELDS[2:] if name != "tenantId"},
    ),
    header_key=st.one_of(st.none(), python_values),
)
def test_a_create_request_built_in_code_from_any_values_is_valid_or_refused(
    fields: dict[str, Any], header_key: Any
) -> None:
    # msgspec Structs do not validate on construction: a library caller can hand validate_create
    # anything, and it must still answer only with the domain's error
    request = CreateRequest(**fields)
    try:
        valid = validate_create(request, header_key=header_key)
    except ValidationError:
        return
    _check_valid(valid, header_key)


# --- list queries ---

list_values = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
    st.dates().map(str),
    json_values.map(lambda v: b64(json.dumps(v).encode())),  # cursor-shaped
)


@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            name: list_values
            for name in ("status", "job_type", "created_from", "created_to", "cursor", "limit")
        },
    )
)
def test_any_list_query_is_a_list_query_or_a_validation_error(params: dict[str, Any]) -> None:
    try:
        query = listing(**params)
    except ValidationError:
        return
    assert isinstance(query, ListQuery)
    assert 1 <= query.limit <= MAX_PAGE_SIZE
    for instant in (query.created_from, query.created_to):
        assert instant is None or instant.utcoffset() == dt.timedelta(0)
    if query.created_from is not None and query.created_to is not None:
        assert query.created_from <= query.created_to
    if query.after is not None:
        assert query.after.created_at.tzinfo is not None
