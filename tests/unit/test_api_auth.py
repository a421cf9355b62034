"""Who may call what: the token checks, the role table and the tenant rules of the contract."""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from reportcore import tokens
from tests.clock import pinned_now

from .api_support import (
    DOWNLOAD_SECRET,
    FEED_BODY,
    JOBS,
    OTHER_TENANT,
    TENANT,
    ApiWorld,
    api_world,
    as_role,
    auth,
    feed_record,
    mint,
    new_id,
    unsigned,
    valid_claims,
)

ROLES = ["platform_admin", "tenant_admin", "farm_manager", "house_operator", "viewer"]
READERS = {"platform_admin", "tenant_admin", "farm_manager", "house_operator", "viewer"}
WRITERS = {"platform_admin", "tenant_admin", "farm_manager"}
# route -> roles allowed, as the contract's table says (kept apart from reportcore.access)
ROLE_TABLE: dict[str, set[str]] = {
    "create": WRITERS,
    "list": READERS,
    "get": READERS,
    "download": READERS,
    "cancel": WRITERS,
}


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


def call(world: ApiWorld, route: str, headers: dict[str, str], job_id: str) -> httpx.Response:
    """One request to a JWT route; ``job_id`` is used by the routes of one job."""
    client = world.client
    if route == "create":
        return client.post(JOBS, json=FEED_BODY, headers=headers)
    if route == "list":
        return client.get(JOBS, headers=headers)
    if route == "get":
        return client.get(f"{JOBS}/{job_id}", headers=headers)
    if route == "download":
        return client.get(f"{JOBS}/{job_id}/download", headers=headers)
    if route == "cancel":
        return client.post(f"{JOBS}/{job_id}/cancel", headers=headers)
    raise AssertionError(route)


def _rs256_token() -> str:
    # what an RS256 token looks like: a 2048-bit signature (no RSA library needed to refuse it)
    head, body, _ = unsigned(valid_claims(), {"alg": "RS256", "typ": "JWT"}).split(".")
    signature = base64.urlsafe_b64encode(os.urandom(256)).rstrip(b"=").decode()
    return f"{head}.{body}.{signature}"


def _expired() -> str:
    return mint({"exp": int(pinned_now().timestamp()) - 3600})


BAD_CREDENTIALS: dict[str, Callable[[], dict[str, str]]] = {
    "no header": lambda: {},
    "empty bearer": lambda: {"Authorization": "Bearer "},
    "basic scheme": lambda: {"Authorization": "Basic dXNlcjpwYXNz"},
    "token without scheme": lambda: {"Authorization": mint()},
    "malformed token": lambda: auth("not.a.jwt"),
    "garbage": lambda: auth("%%%%"),
    "forged signature": lambda: auth(mint(secret="another-secret-" + "f" * 64)),
    "alg none": lambda: auth(unsigned(valid_claims(), {"alg": "none", "typ": "JWT"})),
    "HS512": lambda: auth(mint(algorithm="HS512")),
    "HS256 mac under an RS256 header": lambda: auth(
        unsigned(valid_claims(), {"alg": "RS256", "typ": "JWT"})
    ),
    "RS256 shaped": lambda: auth(_rs256_token()),
    "expired": lambda: auth(_expired()),
    "wrong audience": lambda: auth(mint({"aud": "another-api"})),
    "wrong issuer": lambda: auth(mint({"iss": "someone-else"})),
    "missing exp": lambda: auth(mint(omit=["exp"])),
    "missing iss": lambda: auth(mint(omit=["iss"])),
    "missing aud": lambda: auth(mint(omit=["aud"])),
    "roles not a list": lambda: auth(mint({"roles": "tenant_admin"})),
    "tenant_id not a string": lambda: auth(mint({"tenant_id": 7})),
    "sub not a string": lambda: auth(mint({"sub": {"id": 1}})),
    # past a float's range: math.isfinite raised OverflowError (a 500)
    "exp of 400 digits": lambda: auth(mint({"exp": 10**400})),
    # JSON as Python reads it takes NaN and Infinity: no date either
    "exp NaN": lambda: auth(mint({"exp": float("nan")})),
    "exp Infinity": lambda: auth(mint({"exp": float("inf")})),
    "huge token": lambda: auth("a" * 9000),
}


@pytest.mark.parametrize("route", list(ROLE_TABLE))
@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS))
def test_a_missing_or_invalid_token_is_401_on_every_jwt_route(
    world: ApiWorld, route: str, credentials: str
) -> None:
    job = world.create()
    answer = call(world, route, BAD_CREDENTIALS[credentials](), job["id"])
    assert answer.status_code == 401, answer.text
    error = answer.json()["error"]
    assert error["code"] == "UNAUTHORIZED"
    assert error["traceId"] == answer.headers["x-trace-id"]
    stored = world.jobs.get(job["id"])
    assert stored is not None and stored.status.value == "queued"  # nothing was done


@pytest.mark.clock
def test_an_expired_token_says_so(world: ApiWorld) -> None:
    answer = world.client.get(JOBS, headers=auth(_expired()))
    assert "expired" in answer.json()["error"]["message"]


@pytest.mark.clock
def test_a_token_slightly_ahead_of_our_clock_is_accepted(world: ApiWorld) -> None:
    now = int(world.clock.now().timestamp())
    answer = world.client.get(JOBS, headers=auth(mint({"iat": now + 5, "nbf": now + 5})))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("route", list(ROLE_TABLE))
@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_call_exactly_the_routes_of_the_contract(
    world: ApiWorld, route: str, role: str
) -> None:
    job = world.create()
    headers = as_role(role)
    if role == "platform_admin":  # acts for the tenant it names
        headers = auth(mint({"roles": [role]}, omit=["tenant_id"]))
        answer = _call_naming(world, route, headers, job["id"], TENANT)
    else:
        answer = call(world, route, headers, job["id"])
    if role in ROLE_TABLE[route]:
        expected = {"create": 201, "list": 200, "get": 200, "download": 409, "cancel": 200}
        assert answer.status_code == expected[route], answer.text
    else:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "FORBIDDEN"


def _call_naming(
    world: ApiWorld, route: str, headers: dict[str, str], job_id: str, tenant: str
) -> httpx.Response:
    """A request naming ``tenant`` where the contract says: body for POST, query for GET."""
    client = world.client
    if route == "create":
        return client.post(JOBS, json={**FEED_BODY, "tenant_id": tenant}, headers=headers)
    if route == "cancel":
        return client.post(f"{JOBS}/{job_id}/cancel", json={"tenantId": tenant}, headers=headers)
    path = {"list": JOBS, "get": f"{JOBS}/{job_id}", "download": f"{JOBS}/{job_id}/download"}
    return client.get(path[route], params={"tenant_id": tenant}, headers=headers)


def test_a_token_with_an_unknown_role_or_none_is_403(world: ApiWorld) -> None:
    for claims in ({"roles": ["pig_whisperer"]}, {"roles": []}):
        answer = world.client.get(JOBS, headers=auth(mint(claims)))
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "FORBIDDEN"


def test_a_single_role_claim_and_a_user_id_claim_are_understood(world: ApiWorld) -> None:
    token = mint({"role": "farm_manager", "user_id": "u-77"}, omit=["roles", "sub"])
    answer = world.client.post(JOBS, json=FEED_BODY, headers=auth(token))
    assert answer.status_code == 201, answer.text
    assert answer.json()["requested_by"] == "u-77"


@pytest.mark.parametrize(
    ("claims", "requested_by"),
    [({"sub": 42}, "42"), ({"sub": None, "user_id": "u-77"}, "u-77"), ({"jti": 7}, "user-1")],
)
def test_a_numeric_subject_or_a_null_one_beside_user_id_is_understood(
    world: ApiWorld, claims: dict[str, Any], requested_by: str
) -> None:
    """principal_from_claims takes a number for the subject and falls back to user_id, but
    pyjwt refused such tokens (401) before it: its own sub and jti checks want strings."""
    answer = world.client.post(JOBS, json=FEED_BODY, headers=auth(mint(claims)))
    assert answer.status_code == 201, answer.text
    assert answer.json()["requested_by"] == requested_by


@pytest.mark.clock
def test_a_401_says_how_to_authenticate(world: ApiWorld) -> None:
    """RFC 9110: a 401 carries WWW-Authenticate; a bearer client reads it to know it must
    (re)authenticate, and with error="invalid_token" that its token was refused (RFC 6750)."""
    missing = world.client.get(JOBS)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="farmiq"'
    refused = world.client.get(JOBS, headers=auth(_expired()))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == ('Bearer realm="farmiq", error="invalid_token"')
    assert "www-authenticate" not in world.client.get(JOBS, headers=auth(mint({}))).headers


def test_platform_admin_without_a_tenant_is_400(world: ApiWorld) -> None:
    headers = auth(mint({"roles": ["platform_admin"]}, omit=["tenant_id"]))
    for answer in (
        world.client.get(JOBS, headers=headers),
        world.client.post(JOBS, json=FEED_BODY, headers=headers),
    ):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
        assert "tenant_id" in answer.json()["error"]["message"]


def test_platform_admin_acts_for_the_tenant_it_names(world: ApiWorld) -> None:
    mine = world.create()
    headers = auth(mint({"roles": ["platform_admin"]}, omit=["tenant_id"]))
    created = world.client.post(JOBS, json={**FEED_BODY, "tenantId": OTHER_TENANT}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["tenant_id"] == OTHER_TENANT
    listed = world.client.get(JOBS, params={"tenantId": OTHER_TENANT}, headers=headers)
    assert [j["id"] for j in listed.json()["items"]] == [created.json()["id"]]
    theirs = world.client.get(f"{JOBS}/{mine['id']}", params={"tenant_id": TENANT}, headers=headers)
    assert theirs.status_code == 200


def test_platform_admin_with_a_tenant_claim_still_names_the_tenant(world: ApiWorld) -> None:
    headers = auth(mint({"roles": ["platform_admin"], "tenant_id": TENANT}))
    answer = world.client.get(JOBS, headers=headers)
    assert answer.status_code == 400
    answer = world.client.get(JOBS, params={"tenant_id": OTHER_TENANT}, headers=headers)
    assert answer.status_code == 200


def test_a_token_without_a_tenant_is_403(world: ApiWorld) -> None:
    headers = as_role("tenant_admin", tenant=None)
    assert world.client.get(JOBS, headers=headers).status_code == 403
    answer = world.client.post(JOBS, json={**FEED_BODY, "tenant_id": TENANT}, headers=headers)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize("route", list(ROLE_TABLE))
def test_naming_another_tenant_is_403_and_naming_ones_own_is_fine(
    world: ApiWorld, route: str
) -> None:
    job = world.create()
    other = _call_naming(world, route, auth(mint()), job["id"], OTHER_TENANT)
    assert other.status_code == 403, other.text
    assert other.json()["error"]["code"] == "FORBIDDEN"
    own = _call_naming(world, route, auth(mint()), job["id"], TENANT)
    assert own.status_code in (200, 201, 409), own.text


def test_tenant_id_and_tenantId_naming_different_tenants_is_400(world: ApiWorld) -> None:
    answer = world.client.get(
        JOBS, params={"tenant_id": TENANT, "tenantId": OTHER_TENANT}, headers=auth(mint())
    )
    assert answer.status_code == 400
    body = {**FEED_BODY, "tenant_id": TENANT, "tenantId": OTHER_TENANT}
    assert world.client.post(JOBS, json=body, headers=auth(mint())).status_code == 400


@pytest.mark.parametrize("route", ["get", "download", "cancel"])
def test_another_tenants_job_is_404_like_a_missing_one(world: ApiWorld, route: str) -> None:
    theirs = world.create(headers=auth(mint({"tenant_id": OTHER_TENANT})))
    answer = call(world, route, auth(mint()), theirs["id"])
    missing = call(world, route, auth(mint()), new_id())
    assert answer.status_code == missing.status_code == 404
    assert answer.json()["error"]["message"] == missing.json()["error"]["message"]
    stored = world.jobs.get(theirs["id"])
    assert stored is not None and stored.status.value == "queued"


def test_another_tenants_job_is_not_listed(world: ApiWorld) -> None:
    world.create(headers=auth(mint({"tenant_id": OTHER_TENANT})))
    mine = world.create()
    listed = world.client.get(JOBS, headers=auth(mint())).json()["items"]
    assert [j["id"] for j in listed] == [mine["id"]]


def test_another_tenants_file_is_404_even_with_a_genuine_token_for_it(world: ApiWorld) -> None:
    theirs = world.create(headers=auth(mint({"tenant_id": OTHER_TENANT})))
    world.run_queued([feed_record(i, OTHER_TENANT) for i in range(3)])
    exp = int(world.clock.now().timestamp()) + 600
    token = tokens.sign(
        DOWNLOAD_SECRET.encode(),
        tokens.DownloadClaims(tenant_id=TENANT, job_id=theirs["id"], exp=exp),
    )
    answer = world.client.get(f"{JOBS}/{theirs['id']}/file", params={"token": token})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"


def test_the_file_route_needs_no_user_token_but_ignores_one(world: ApiWorld) -> None:
    job = world.succeeded_job()
    url = world.download_url(job["id"])
    assert world.client.get(url).status_code == 200
    assert world.client.get(url, headers={"Authorization": "Bearer junk"}).status_code == 200


# --- FarmIQ identity tokens: JWT_ISSUER / JWT_AUDIENCE set to empty ---

# What FarmIQ's identity service signs on refresh and SSO: no iss, no aud (on login it adds
# iss "farmiq" and aud "farmiq-api").
REFRESHED_WITHOUT = ("iss", "aud")


def test_by_default_a_token_without_iss_or_aud_is_refused(world: ApiWorld) -> None:
    for omit in (["iss"], ["aud"], ["iss", "aud"]):
        assert world.client.get(JOBS, headers=auth(mint(omit=omit))).status_code == 401


@pytest.mark.parametrize("not_required", ["jwt_issuer", "jwt_audience"])
def test_a_claim_not_required_may_be_absent_or_anything_and_the_other_is_still_checked(
    not_required: str,
) -> None:
    claim, other = ("iss", "aud") if not_required == "jwt_issuer" else ("aud", "iss")
    with api_world(**{not_required: None}) as world:
        for token in (mint(omit=[claim]), mint({claim: "anything"}), mint()):
            assert world.client.get(JOBS, headers=auth(token)).status_code == 200
        assert world.client.get(JOBS, headers=auth(mint(omit=[other]))).status_code == 401
        assert world.client.get(JOBS, headers=auth(mint({other: "wrong"}))).status_code == 401


@pytest.mark.clock
def test_with_neither_required_farmiqs_refreshed_and_login_tokens_both_work() -> None:
    with api_world(jwt_issuer=None, jwt_audience=None) as world:
        refreshed = mint(omit=REFRESHED_WITHOUT)
        assert world.client.get(JOBS, headers=auth(refreshed)).status_code == 200
        assert world.client.get(JOBS, headers=auth(mint())).status_code == 200


@pytest.mark.clock
def test_with_neither_required_signature_and_exp_are_still_checked() -> None:
    with api_world(jwt_issuer=None, jwt_audience=None) as world:
        forged = mint(omit=["iss", "aud"], secret="another-secret-" + "x" * 32)
        no_exp = mint(omit=["iss", "aud", "exp"])
        expired = mint(omit=["iss", "aud"], now=pinned_now() - dt.timedelta(hours=2))
        for token in (forged, no_exp, expired):
            answer = world.client.get(JOBS, headers=auth(token))
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "UNAUTHORIZED"
