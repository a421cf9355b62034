"""The verifier's cache of verified tokens: a hit answers as verifying again would."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from entrypoints import auth
from entrypoints.auth import LEEWAY_SEC, TokenVerifier
from reportcore.errors import Unauthorized
from reportcore.testing import FakeClock
from tests.clock import pinned_now

SECRET = "cache-test-secret-0123456789abcdefgh"

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days


def _token(exp: float, **claims: object) -> str:
    payload = {"sub": "u", "roles": ["viewer"], "tenant_id": "t", "iss": "farmiq"}
    payload |= {"aud": "farmiq-api", "exp": int(exp), **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = auth.jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        calls.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(auth.jwt, "decode", counting)
    return calls


def test_a_verified_token_is_not_verified_again_until_it_expires(decodes: list[str]) -> None:
    clock = FakeClock(dt.datetime(2026, 2, 28, 23, 59, tzinfo=dt.UTC))
    verifier = TokenVerifier(SECRET, issuer="farmiq", audience="farmiq-api", clock=clock)
    exp = clock.now().timestamp() + 60
    token = _token(exp)
    first = verifier.principal(f"Bearer {token}")
    assert verifier.principal(f"Bearer {token}") == first
    assert len(decodes) == 1
    # past exp + leeway by the verifier's clock: the cache no longer answers, and the token
    # is verified again, and refused as expired
    clock.advance(60 + LEEWAY_SEC + 1)
    with pytest.raises(Unauthorized, match="expired"):
        verifier.principal(f"Bearer {token}")
    assert len(decodes) == 2


def test_refused_tokens_are_never_remembered(decodes: list[str]) -> None:
    clock = FakeClock(pinned_now())
    verifier = TokenVerifier(SECRET, issuer="farmiq", audience="farmiq-api", clock=clock)
    now = clock.now().timestamp()
    for token in (_token(now - 3600), _token(now + 60, aud="other")):
        for _ in range(2):
            with pytest.raises(Unauthorized):
                verifier.principal(f"Bearer {token}")
    assert len(decodes) == 4


def test_a_verifier_with_another_key_does_not_share_the_cache() -> None:
    clock = FakeClock(pinned_now())
    token = _token(clock.now().timestamp() + 60)
    mine = TokenVerifier(SECRET, issuer="farmiq", audience="farmiq-api", clock=clock)
    mine.principal(f"Bearer {token}")
    other = TokenVerifier(
        "another-secret-0123456789abcdefgh", issuer="farmiq", audience="farmiq-api", clock=clock
    )
    with pytest.raises(Unauthorized):
        other.principal(f"Bearer {token}")
