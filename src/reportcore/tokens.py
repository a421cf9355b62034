"""Download tokens, in the old service's wire format.

``base64url(json{tenant_id, job_id, exp})`` + ``.`` + ``base64url(HMAC-SHA256(secret, part1))``,
both unpadded. ``exp`` is in seconds since the epoch; tokens from the old service that carry
milliseconds are read as such, and :func:`verify` gives their claims back in seconds. An ``exp``
past the last second the calendar holds (9999-12-31) is no instant: such a token is refused as
malformed, so that every token :func:`verify` accepts names an expiry a ``datetime`` can hold.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

import msgspec

from .errors import ReportError

_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_MS_THRESHOLD = 100_000_000_000  # an exp above this is in milliseconds (year 5138 in seconds)
_PAST_CALENDAR = 253_402_300_800  # 10000-01-01T00:00:00Z: the first second no datetime holds


class DownloadClaims(msgspec.Struct, frozen=True):
    """What a download token grants: one job's file of one tenant, until ``exp``."""

    tenant_id: str
    job_id: str
    exp: int


class InvalidDownloadToken(ReportError):
    """Missing, malformed or forged token (HTTP 401); ``reason`` says which."""

    code = "UNAUTHORIZED"

    def __init__(self, reason: str) -> None:
        super().__init__(f"download token refused: {reason}")
        self.reason = reason


class ExpiredDownloadToken(InvalidDownloadToken):
    """A genuine token past its ``exp`` (HTTP 401 per the contract)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _PART.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()


def sign(secret: bytes, claims: DownloadClaims) -> str:
    """The token for ``claims``."""
    payload = _b64(msgspec.json.encode(claims))
    return f"{payload}.{_b64(_mac(secret, payload))}"


def verify(secret: bytes, token: str | None, *, now: float) -> DownloadClaims:
    """The claims of a genuine, unexpired token; :class:`InvalidDownloadToken` otherwise.

    The MAC is compared in constant time before anything in the payload is trusted.
    """
    if not token:
        raise InvalidDownloadToken("missing")
    if len(token) > 4096 or token.count(".") != 1:
        raise InvalidDownloadToken("malformed")
    payload, signature = token.split(".")
    try:
        given = _unb64(signature)
        raw = _unb64(payload)
    except (ValueError, binascii.Error):
        raise InvalidDownloadToken("malformed") from None
    # Canonical encoding only: a different spelling of the same bytes is a different token.
    if _b64(given) != signature or _b64(raw) != payload:
        raise InvalidDownloadToken("malformed")
    if not hmac.compare_digest(given, _mac(secret, payload)):
        raise InvalidDownloadToken("signature does not match")
    try:
        claims = msgspec.json.decode(raw, type=DownloadClaims)
    except msgspec.DecodeError:
        raise InvalidDownloadToken("malformed claims") from None
    # past the calendar in milliseconds (an exp above _MS_THRESHOLD is read so, one below it
    # is a date in seconds): compared as ints, since a float of a huge one overflows
    if claims.exp >= _PAST_CALENDAR * 1000:
        raise InvalidDownloadToken("malformed claims")
    exp_s = claims.exp / 1000 if claims.exp > _MS_THRESHOLD else claims.exp
    if now >= exp_s:
        raise ExpiredDownloadToken("expired")
    if claims.exp > _MS_THRESHOLD:  # the old service's milliseconds, given back in seconds
        return msgspec.structs.replace(claims, exp=claims.exp // 1000)
    return claims
