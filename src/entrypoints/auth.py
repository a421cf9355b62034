"""User tokens: ``Authorization: Bearer <JWT>`` into a :class:`reportcore.access.Principal`.

Only HS256 with ``JWT_SECRET`` is accepted (``alg: none`` and every other algorithm are
refused before the signature is looked at); ``exp`` is always required and verified, ``iss``
and ``aud`` too unless ``JWT_ISSUER`` / ``JWT_AUDIENCE`` are set to empty (issuer or audience
``None``): FarmIQ's identity service mints tokens without them on refresh and SSO.
The time claims are checked here against the core's ``Clock`` (so tests pin time),
not by pyjwt, which reads ``exp: "123"`` as a number and takes ``exp: 1e30`` as never.
Every refusal is :class:`reportcore.errors.Unauthorized` (401). What a principal may do is
decided by :mod:`reportcore.access`, not here.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from adapters.clock import SystemClock
from reportcore.access import Principal
from reportcore.errors import Unauthorized, ValidationError
from reportcore.ports import Clock
from reportcore.requests import validate_tenant_id

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
# verifying it again (HMAC, two base64 and JSON decodes, claim checks) is a large share of a
# small request's CPU (docs/performance.md has the figures).
_CACHE_SIZE = 1024
# 9999-12-31T23:59:59Z: the last instant a date can show; a NumericDate beyond it is no date
MAX_NUMERIC_DATE = 253_402_300_799


class BearerRefused(Unauthorized):
    """A 401 of a JWT route, answered with a Bearer challenge (RFC 9110, RFC 6750):
    ``missing`` when no token came, else the token sent was refused."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing

    @property
    def challenge(self) -> str:
        realm = 'Bearer realm="farmiq"'
        return realm if self.missing else f'{realm}, error="invalid_token"'


class TokenVerifier:
    """Checks user JWTs against one key, issuer and audience (``None``: not required)."""

    def __init__(
        self,
        secret: str,
        *,
        issuer: str | None,
        audience: str | None,
        clock: Clock | None = None,
    ) -> None:
        self._secret = secret
        self._clock: Clock = clock or SystemClock()
        self._issuer = issuer
        self._audience = audience
        self._required = ["exp"]
        self._required += [] if issuer is None else ["iss"]
        self._required += [] if audience is None else ["aud"]
        # token -> (principal, exp); only tokens that passed every check, so a hit is the same
        # answer as verifying again (signature, iss and aud depend on the token alone) as long
        # as exp has not passed, which is checked on every hit
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def principal(self, authorization: str | None) -> Principal:
        """The caller of an ``Authorization`` header value, or :class:`Unauthorized`."""
        token = bearer_token(authorization)
        now = self._now()
        hit = self._verified.get(token)
        if hit is not None and hit[1] > now - LEEWAY_SEC:
            return hit[0]
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": self._required,
                    # no audience expected: pyjwt would refuse every token that names one
                    "verify_aud": self._audience is not None,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    # principal_from_claims reads sub (a number too, else user_id); no jti
                    # is used: pyjwt's own checks of both would refuse such tokens first
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.PyJWTError:
            # one message for every other refusal: which check failed helps only a forger
            raise BearerRefused("bearer token is not valid") from None
        exp = check_times(claims, now)
        principal = principal_from_claims(claims)
        with self._lock:
            if len(self._verified) >= _CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (principal, exp)
        return principal

    def _now(self) -> float:
        return self._clock.now().timestamp()


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # RFC 7519 NumericDate: a JSON number (not a string, not a boolean), and a real date
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BearerRefused("bearer token is not valid")
    # the range alone: it refuses NaN and infinity too, and math.isfinite of an int past a
    # float's range raises (a 500)
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise BearerRefused("bearer token is not valid")
    return float(value)


def check_times(claims: Mapping[str, Any], now: float) -> float:
    """``exp`` of verified claims if ``exp``, ``nbf`` and ``iat`` hold at ``now`` (with
    :data:`LEEWAY_SEC`), else :class:`Unauthorized`."""
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise BearerRefused("bearer token is not valid")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp <= now - LEEWAY_SEC:
        raise BearerRefused("bearer token has expired")
    if (nbf is not None and nbf > now + LEEWAY_SEC) or (iat is not None and iat > now + LEEWAY_SEC):
        raise BearerRefused("bearer token is not valid")
    return exp


def bearer_token(authorization: str | None) -> str:
    """The token of ``Bearer <token>``, or :class:`Unauthorized`."""
    if not authorization:
        raise BearerRefused("missing bearer token", missing=True)
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise BearerRefused("Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise BearerRefused("bearer token is not valid")
    return token


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BearerRefused(f"bearer token claim {name} is malformed")
    text = str(value)
    # the subject is stored as requested_by: no control characters (PostgreSQL refuses NUL)
    if not text or len(text) > _MAX_CLAIM_LENGTH or not text.isprintable():
        raise BearerRefused(f"bearer token claim {name} is malformed")
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
            raise BearerRefused("bearer token claim roles must be a list of strings")
        roles.update(listed)
    single = claims.get("role")
    if single is not None:
        if not isinstance(single, str):
            raise BearerRefused("bearer token claim role must be a string")
        roles.add(single)
    tenant = claims.get("tenant_id")
    if tenant is not None and not isinstance(tenant, str):
        raise BearerRefused("bearer token claim tenant_id must be a string")
    if tenant:
        try:
            validate_tenant_id(tenant)
        except ValidationError:
            # the token is at fault, not the request: a 401, as for any other bad claim
            raise BearerRefused("bearer token claim tenant_id is malformed") from None
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
    """A user JWT as the API expects it (HS256 with ``JWT_SECRET``, ``iss`` and ``aud`` unless
    they are not required)."""
    assert settings.jwt_secret is not None
    issued = int((now or dt.datetime.now(dt.UTC)).timestamp())
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": list(roles),
        "iat": issued,
        "exp": issued + ttl_sec,
    }
    if settings.jwt_issuer is not None:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    if tenant:
        claims["tenant_id"] = tenant
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
