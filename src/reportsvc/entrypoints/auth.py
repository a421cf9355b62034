"""User tokens: ``Authorization: Bearer <JWT>`` into a :class:`reportcore.access.Principal`.

Only HS256 with ``JWT_SECRET`` is accepted (``alg: none`` and every other algorithm are
refused before the signature is looked at); ``exp``, ``iss`` and ``aud`` are required and
verified. Every refusal is :class:`reportcore.errors.Unauthorized` (401). What a principal may
do is decided by :mod:`reportcore.access`, not here.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from reportcore.access import Principal
from reportcore.errors import Unauthorized

from .settings import Settings

ALGORITHMS = ["HS256"]
MAX_TOKEN_LENGTH = 8192
# Tokens come from another FarmIQ service; a few seconds of clock skew between the machines
# must not turn a fresh token into an expired (or not yet valid) one.
LEEWAY_SEC = 30
_MAX_CLAIM_LENGTH = 256
# JWS compact serialization (RFC 7515): three unpadded base64url parts. pyjwt also accepts a
# padded signature, so without this one genuine token would have several spellings.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Tokens verified lately, with their expiry: a client sends one token with every request, and
# verifying it again (HMAC, two base64 and JSON decodes, claim checks) cost ~60 us a request.
_CACHE_SIZE = 1024


class TokenVerifier:
    """Checks user JWTs against one key, issuer and audience."""

    def __init__(self, secret: str, *, issuer: str, audience: str) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        # token -> (principal, exp); only tokens that passed every check, so a hit is the same
        # answer as verifying again (signature, iss and aud depend on the token alone) as long
        # as exp has not passed, which is checked on every hit
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def principal(self, authorization: str | None) -> Principal:
        """The caller of an ``Authorization`` header value, or :class:`Unauthorized`."""
        token = bearer_token(authorization)
        hit = self._verified.get(token)
        if hit is not None and hit[1] > time.time() - LEEWAY_SEC:
            return hit[0]
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SEC,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("bearer token has expired") from None
        except jwt.PyJWTError:
            # one message for every other refusal: which check failed helps only a forger
            raise Unauthorized("bearer token is not valid") from None
        principal = principal_from_claims(claims)
        exp = claims["exp"]  # required above, and a number, or decode had refused the token
        with self._lock:
            if len(self._verified) >= _CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (principal, float(exp))
        return principal


def bearer_token(authorization: str | None) -> str:
    """The token of ``Bearer <token>``, or :class:`Unauthorized`."""
    if not authorization:
        raise Unauthorized("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise Unauthorized("bearer token is not valid")
    return token


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Unauthorized(f"bearer token claim {name} is malformed")
    text = str(value)
    # the subject is stored as requested_by: no control characters (PostgreSQL refuses NUL)
    if not text or len(text) > _MAX_CLAIM_LENGTH or not text.isprintable():
        raise Unauthorized(f"bearer token claim {name} is malformed")
    return text


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """The principal of verified claims: ``sub`` (or ``user_id``), ``roles`` (a list) and/or
    ``role`` (a string), ``tenant_id``. Claims of the wrong type are a 401."""
    subject = _text(claims.get("sub"), "sub")
    if subject is None:
        subject = _text(claims.get("user_id"), "user_id")
    roles: set[str] = set()
    listed = claims.get("roles")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
            raise Unauthorized("bearer token claim roles must be a list of strings")
        roles.update(listed)
    single = claims.get("role")
    if single is not None:
        if not isinstance(single, str):
            raise Unauthorized("bearer token claim role must be a string")
        roles.add(single)
    tenant = claims.get("tenant_id")
    if tenant is not None and not isinstance(tenant, str):
        raise Unauthorized("bearer token claim tenant_id must be a string")
    return Principal(subject=subject, roles=frozenset(roles), tenant_id=tenant or None)


def sign_user_token(
    settings: Settings,
    *,
    tenant: str | None,
    roles: Sequence[str],
    sub: str,
    ttl_sec: int,
    now: dt.datetime | None = None,
) -> str:
    """A user JWT as the API expects it (HS256 with ``JWT_SECRET``, ``iss``, ``aud``)."""
    assert settings.jwt_secret is not None
    issued = int((now or dt.datetime.now(dt.UTC)).timestamp())
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": list(roles),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": issued,
        "exp": issued + ttl_sec,
    }
    if tenant:
        claims["tenant_id"] = tenant
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
