"""The verifier's cache of verified tokens: a hit answers as verifying again would."""

from __future__ import annotations

import time

import jwt
import pytest

from reportcore.errors import Unauthorized
from reportsvc.entrypoints import auth
from reportsvc.entrypoints.auth import LEEWAY_SEC, TokenVerifier

SECRET = "cache-test-secret-0123456789abcdefgh"


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


def test_a_verified_token_is_not_verified_again_until_it_expires(
    decodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(SECRET, issuer="farmiq", audience="farmiq-api")
    exp = time.time() + 60
    token = _token(exp)
    first = verifier.principal(f"Bearer {token}")
    assert verifier.principal(f"Bearer {token}") == first
    assert len(decodes) == 1
    # past exp + leeway by the verifier's clock: the cache no longer answers, pyjwt does
    monkeypatch.setattr(auth.time, "time", lambda: exp + LEEWAY_SEC + 1)
    verifier.principal(f"Bearer {token}")
    assert len(decodes) == 2


def test_refused_tokens_are_never_remembered(decodes: list[str]) -> None:
    verifier = TokenVerifier(SECRET, issuer="farmiq", audience="farmiq-api")
    for token in (_token(time.time() - 3600), _token(time.time() + 60, aud="other")):
        for _ in range(2):
            with pytest.raises(Unauthorized):
                verifier.principal(f"Bearer {token}")
    assert len(decodes) == 4


def test_a_verifier_with_another_key_does_not_share_the_cache() -> None:
    token = _token(time.time() + 60)
    TokenVerifier(SECRET, issuer="farmiq", audience="farmiq-api").principal(f"Bearer {token}")
    other = TokenVerifier(
        "another-secret-0123456789abcdefgh", issuer="farmiq", audience="farmiq-api"
    )
    with pytest.raises(Unauthorized):
        other.principal(f"Bearer {token}")
