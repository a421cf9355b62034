"""Download tokens: the old service's wire format, and nothing but a genuine token opens a file."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from reportcore.errors import Forbidden
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    StaticRecordSource,
)
from reportcore.tokens import (
    DownloadClaims,
    ExpiredDownloadToken,
    InvalidDownloadToken,
    sign,
    verify,
)
from reportcore.usecases import Policy, issue_download, open_file
from tests.running import run_message

SECRET = b"download-secret"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
B64URL = string.ascii_letters + string.digits + "-_"

secrets = st.binary(min_size=1, max_size=64)
texts = st.text(min_size=1, max_size=40)
claims_st = st.builds(
    DownloadClaims,
    tenant_id=texts,
    job_id=st.uuids().map(str),
    exp=st.integers(min_value=NOW + 1, max_value=NOW + 10**7),
)


def old_service_token(secret: bytes, payload: dict[str, object]) -> str:
    """A token as the Node.js service built it, written out from the contract's recipe."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    first = b64(json.dumps(payload).encode())
    mac = hmac.new(secret, first.encode(), hashlib.sha256).digest()
    return f"{first}.{b64(mac)}"


@given(secret=secrets, claims=claims_st)
def test_a_signed_token_verifies_to_its_claims(secret: bytes, claims: DownloadClaims) -> None:
    assert verify(secret, sign(secret, claims), now=NOW) == claims


@given(claims=claims_st)
def test_a_token_is_two_unpadded_base64url_parts(claims: DownloadClaims) -> None:
    payload, _, signature = sign(SECRET, claims).partition(".")
    assert set(payload) <= set(B64URL) and set(signature) <= set(B64URL)
    assert len(signature) == 43  # 32 bytes of HMAC-SHA256, unpadded
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded == {"tenant_id": claims.tenant_id, "job_id": claims.job_id, "exp": claims.exp}


def test_a_token_of_the_old_service_is_accepted() -> None:
    token = old_service_token(SECRET, {"tenant_id": "t1", "job_id": "j1", "exp": NOW + 60})
    assert verify(SECRET, token, now=NOW) == DownloadClaims("t1", "j1", NOW + 60)


def test_a_millisecond_exp_of_the_old_service_is_read_as_milliseconds() -> None:
    valid = old_service_token(SECRET, {"tenant_id": "t", "job_id": "j", "exp": (NOW + 60) * 1000})
    assert verify(SECRET, valid, now=NOW).exp == NOW + 60  # given back in seconds
    # as seconds this exp would lie thousands of years ahead; read as ms it is already over
    stale = old_service_token(SECRET, {"tenant_id": "t", "job_id": "j", "exp": (NOW - 1) * 1000})
    with pytest.raises(ExpiredDownloadToken):
        verify(SECRET, stale, now=NOW)


@given(claims=claims_st, late=st.integers(min_value=0, max_value=10**6))
def test_a_token_is_refused_from_its_exp_on(claims: DownloadClaims, late: int) -> None:
    token = sign(SECRET, claims)
    assert verify(SECRET, token, now=claims.exp - 0.001) == claims
    with pytest.raises(ExpiredDownloadToken) as raised:
        verify(SECRET, token, now=claims.exp + late)
    assert raised.value.code == "UNAUTHORIZED"


def _tampered(token: str) -> list[str]:
    """Every token one character away: each character replaced, dropped, or one inserted."""
    out: list[str] = []
    alphabet = B64URL + ".=+/ \n\x00é"
    for i, original in enumerate(token):
        out += [token[:i] + c + token[i + 1 :] for c in alphabet if c != original]
        out.append(token[:i] + token[i + 1 :])
    for i in range(len(token) + 1):
        out += [token[:i] + c + token[i:] for c in alphabet]
    return out


def test_every_single_character_tamper_of_a_token_is_refused() -> None:
    token = sign(
        SECRET, DownloadClaims("tenant-1", "0f8fad5b-d9cb-469f-a165-70867728950e", NOW + 60)
    )
    candidates = _tampered(token)
    assert len(candidates) > 10_000
    accepted = []
    for candidate in candidates:
        try:
            verify(SECRET, candidate, now=NOW)
        except InvalidDownloadToken:
            continue
        accepted.append(candidate)
    assert accepted == []


@given(
    claims=claims_st,
    position=st.integers(min_value=0),
    replacement=st.characters(codec="utf-8"),
)
def test_a_tampered_character_anywhere_in_any_token_is_refused(
    claims: DownloadClaims, position: int, replacement: str
) -> None:
    token = sign(SECRET, claims)
    i = position % len(token)
    assume(token[i] != replacement)
    with pytest.raises(InvalidDownloadToken):
        verify(SECRET, token[:i] + replacement + token[i + 1 :], now=NOW)


@given(claims=claims_st, other=secrets)
def test_a_token_signed_with_another_secret_is_refused(
    claims: DownloadClaims, other: bytes
) -> None:
    assume(other != SECRET)
    with pytest.raises(InvalidDownloadToken) as raised:
        verify(SECRET, sign(other, claims), now=NOW)
    assert raised.value.reason == "signature does not match"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("abc", "malformed"),
        ("a.b.c", "malformed"),
        ("." * 1, "malformed"),
        ("a" * 5000 + ".b", "malformed"),
        ("abcde.abcd", "malformed"),  # a base64 part of length 1 mod 4 is impossible
        ("YWJj.YWJj=", "malformed"),  # padding is not part of the format
    ],
)
def test_a_missing_or_malformed_token_is_refused_with_its_reason(
    token: str | None, reason: str
) -> None:
    with pytest.raises(InvalidDownloadToken) as raised:
        verify(SECRET, token, now=NOW)
    assert raised.value.reason == reason
    assert raised.value.code == "UNAUTHORIZED"
    assert not isinstance(raised.value, ExpiredDownloadToken)


def test_a_non_canonical_spelling_of_a_genuine_token_is_refused() -> None:
    token = sign(SECRET, DownloadClaims("t", "j", NOW + 60))
    payload, signature = token.split(".")
    # the last character of 32 bytes in base64 carries 2 unused bits; setting them keeps the
    # decoded bytes the same but makes a different token
    last = B64URL.index(signature[-1])
    respelled = signature[:-1] + B64URL[last ^ 1]
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(signature + "=")
    with pytest.raises(InvalidDownloadToken) as raised:
        verify(SECRET, f"{payload}.{respelled}", now=NOW)
    assert raised.value.reason == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        {"tenant_id": "t", "job_id": "j"},
        {"tenant_id": "t", "job_id": "j", "exp": "soon"},
        {"tenant_id": 1, "job_id": "j", "exp": NOW + 60},
        ["t", "j", NOW + 60],
    ],
    ids=["no exp", "text exp", "number tenant", "not an object"],
)
def test_genuinely_signed_claims_of_the_wrong_shape_are_refused(payload: object) -> None:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    first = b64(json.dumps(payload).encode())
    token = f"{first}.{b64(hmac.new(SECRET, first.encode(), hashlib.sha256).digest())}"
    with pytest.raises(InvalidDownloadToken) as raised:
        verify(SECRET, token, now=NOW)
    assert raised.value.reason == "malformed claims"


# --- through the use cases: a token opens one job's file and no other ---

FEED = [
    {
        "id": f"r{i}",
        "tenantId": "t1",
        "farmId": "f",
        "barnId": "b",
        "source": "MANUAL",
        "quantityKg": "1.5",
        "occurredAt": "2026-01-01T00:00:00Z",
        "createdAt": "2026-01-01T00:00:00Z",
    }
    for i in range(3)
]


def _succeeded_jobs(
    n: int,
) -> tuple[InMemoryJobRepository, InMemoryFileStore, FakeClock, list[str]]:
    jobs, store, clock = InMemoryJobRepository(), InMemoryFileStore(), FakeClock()
    ids = []
    for i in range(n):
        now = clock.now()
        job = Job(
            id=f"00000000-0000-4000-8000-{i:012d}",
            tenant_id="t1",
            requested_by="u",
            job_type=JobType.FEED_INTAKE_EXPORT,
            format=ReportFormat.CSV,
            created_at=now,
            updated_at=now,
        )
        jobs.add(job)
        outcome = run_message(
            f'{{"job_id": "{job.id}"}}'.encode(),
            owner="w",
            jobs=jobs,
            source=StaticRecordSource({"FEED_INTAKE_EXPORT": FEED}),
            store=store,
            clock=clock,
            policy=Policy(),
        )
        assert outcome.status == JobStatus.SUCCEEDED.value
        ids.append(job.id)
    return jobs, store, clock, ids


@given(pair=st.permutations(range(3)))
def test_the_token_of_job_a_is_refused_for_job_b(pair: list[int]) -> None:
    jobs, store, clock, ids = _succeeded_jobs(3)
    a, b = ids[pair[0]], ids[pair[1]]
    link = issue_download(
        a, tenant_id="t1", jobs=jobs, store=store, clock=clock, secret=SECRET, policy=Policy()
    )
    token = link.token
    served = open_file(a, token, jobs=jobs, store=store, clock=clock, secret=SECRET)
    assert served.size_bytes == len(store.files[served.location])
    with pytest.raises(Forbidden):
        open_file(b, token, jobs=jobs, store=store, clock=clock, secret=SECRET)


def test_a_download_url_expires_after_its_ttl() -> None:
    jobs, store, clock, ids = _succeeded_jobs(1)
    policy = Policy(download_ttl_sec=900)
    link = issue_download(
        ids[0], tenant_id="t1", jobs=jobs, store=store, clock=clock, secret=SECRET, policy=policy
    )
    assert link.expires_at == clock.now() + dt.timedelta(seconds=900)
    token = link.token
    clock.advance(899)
    open_file(ids[0], token, jobs=jobs, store=store, clock=clock, secret=SECRET)
    clock.advance(1)
    with pytest.raises(ExpiredDownloadToken):
        open_file(ids[0], token, jobs=jobs, store=store, clock=clock, secret=SECRET)


def test_well_formed_parts_of_four_characters_are_judged_by_their_mac() -> None:
    with pytest.raises(InvalidDownloadToken) as raised:
        verify(SECRET, "YWJj.YWJj", now=NOW)  # "abc" signed "abc": well formed, not genuine
    assert raised.value.reason == "signature does not match"


def test_a_genuine_token_of_exactly_4096_characters_is_accepted() -> None:
    token = next(
        t
        for n in range(2900, 3100)
        if len(t := sign(SECRET, DownloadClaims("t" * n, "j", NOW + 60))) == 4096
    )
    assert verify(SECRET, token, now=NOW).tenant_id.startswith("ttt")


def test_a_signature_part_ending_in_x_is_judged_by_its_mac_not_refused_as_malformed() -> None:
    with pytest.raises(InvalidDownloadToken) as raised:
        verify(SECRET, "YWJj.AAAX", now=NOW)
    assert raised.value.reason == "signature does not match"


def test_a_token_over_4096_characters_is_malformed_before_its_mac_is_checked() -> None:
    genuine = next(
        t
        for n in range(2900, 3100)
        if len(t := sign(SECRET, DownloadClaims("t" * n, "j", NOW + 60))) == 4096
    )
    payload = genuine.split(".")[0]
    with pytest.raises(InvalidDownloadToken) as raised:
        verify(SECRET, f"{payload}.{'A' * 44}", now=NOW)  # 4,097 characters
    assert raised.value.reason == "malformed"


def test_an_exp_of_exactly_100_billion_is_read_as_seconds() -> None:
    claims = DownloadClaims("t", "j", 100_000_000_000)  # the year 5138, not 1973
    assert verify(SECRET, sign(SECRET, claims), now=NOW) == claims
    assert verify(SECRET, sign(SECRET, claims), now=99_999_999_999) == claims


def test_an_expired_token_says_expired() -> None:
    token = sign(SECRET, DownloadClaims("t", "j", NOW))
    with pytest.raises(ExpiredDownloadToken) as raised:
        verify(SECRET, token, now=NOW)
    assert raised.value.reason == "expired"
    assert raised.value.message == "download token refused: expired"


# an exp above 10^11 is the old service's milliseconds: 10000-01-01 is 253,402,300,800,000 ms
@pytest.mark.parametrize("exp", [2**63 - 1, 2**53, 253_402_300_800_000, 10**400])
def test_a_genuine_token_whose_exp_no_calendar_holds_is_refused_as_malformed(exp: int) -> None:
    token = old_service_token(SECRET, {"tenant_id": "t", "job_id": "j", "exp": exp})
    with pytest.raises(InvalidDownloadToken) as refused:
        verify(SECRET, token, now=NOW)
    assert refused.value.reason == "malformed claims"
    assert not isinstance(refused.value, ExpiredDownloadToken)


def test_the_last_second_of_the_calendar_is_an_exp_a_token_may_carry() -> None:
    for exp in (253_402_300_799_000, 253_402_300_799_999):
        token = old_service_token(SECRET, {"tenant_id": "t", "job_id": "j", "exp": exp})
        assert verify(SECRET, token, now=NOW).exp == 253_402_300_799
