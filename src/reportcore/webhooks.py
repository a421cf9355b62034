"""Webhooks: which URLs a job may notify, what is sent, how it is signed and when it is retried.

A job created with ``notify_url`` gets one delivery when it ends (succeeded, failed or
cancelled). The delivery is written to a durable outbox in the same transaction as the job's
terminal status (see :class:`reportcore.ports.WebhookOutbox`), so a process that dies between
the two loses nothing: a delivery may be sent twice, never not at all. The rules here are pure
values and functions; the outbox, the HTTP client and the loop are adapters and entrypoints.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .errors import ValidationError
from .jobs import Job, JobStatus

SIGNATURE_HEADER = "X-FarmIQ-Signature"
DELIVERY_HEADER = "X-FarmIQ-Delivery"
EVENT_HEADER = "X-FarmIQ-Event"
MAX_URL_LENGTH = 2048
#: the longest wait between two attempts, however many failed
MAX_BACKOFF_SEC = 3600.0
#: how far a receiver should let a signature's ``t`` be from its own clock
DEFAULT_TOLERANCE_SEC = 300
#: the longest ``last_error`` kept (a receiver's error page is not ours to store)
MAX_ERROR_LENGTH = 500


class EventType(enum.StrEnum):
    """The ``type`` of a webhook body: how the job ended."""

    SUCCEEDED = "report_job.succeeded"
    FAILED = "report_job.failed"
    CANCELLED = "report_job.cancelled"


_EVENTS = {
    JobStatus.SUCCEEDED: EventType.SUCCEEDED,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
}


def event_for(job: Job) -> EventType | None:
    """The event a job's delivery announces, or ``None``: it has no ``notify_url`` or has not
    ended."""
    if job.notify_url is None:
        return None
    return _EVENTS.get(job.status)


class DeliveryState(enum.StrEnum):
    """Where a delivery is: waiting for (another) attempt, or done either way."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# --- which URLs are accepted ---


class AllowedHost(msgspec.Struct, frozen=True):
    """One entry of ``REPORT_WEBHOOK_ALLOWED_HOSTS``: a host name or IP literal, lower case;
    ``plain_http`` when listed as ``http://host`` (https is required otherwise); ``port`` when
    listed as ``host:port``, and then a URL of that host must use that port (by default any)."""

    host: str
    plain_http: bool = False
    port: int | None = None


_PORT = re.compile(r"[0-9]{1,5}")


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:8443`` -> ``("host", 8443)``; ``[::1]:8443`` -> ``("::1", 8443)``; a bare IPv6
    literal (colons, no brackets) has no port."""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("is not a host name (host or host:port, no path or user)")
        port_text = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    else:
        host, port_text = entry, None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError("has no port 1..65535 after its colon")
    return host, int(port_text)


def parse_allowed_hosts(text: str) -> tuple[AllowedHost, ...]:
    """``hooks.example.com,http://10.0.0.5:9000`` -> its entries; ``ValueError`` names a bad
    one."""
    hosts: list[AllowedHost] = []
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        plain = entry.startswith("http://")
        try:
            host, port = _split_port(entry.removeprefix("http://").removeprefix("https://"))
        except ValueError as exc:
            raise ValueError(f"{raw.strip()!r} {exc}") from None
        host = host.rstrip(".")
        if not host or (any(c in host for c in "/:@?#[]") and _ip(host) is None):
            raise ValueError(
                f"{raw.strip()!r} is not a host name (host or host:port, no path or user)"
            )
        if any(c.isspace() for c in host):
            raise ValueError(f"{raw.strip()!r} is not a host name")
        hosts.append(AllowedHost(host=host, plain_http=plain, port=port))
    return tuple(hosts)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_multicast
    )


def check_notify_url(url: str, allowed: tuple[AllowedHost, ...]) -> str:
    """The ``notify_url`` of a create, or :class:`ValidationError` naming ``notify_url``.

    Only hosts listed in ``allowed`` are accepted, compared by name (an IP literal by address);
    an empty list means webhooks are off. A private or loopback IP literal is refused unless
    that very address is listed. https is required unless the host is listed as
    ``http://host``. No credentials in the URL, no fragment.
    """

    def refuse(why: str) -> ValidationError:
        return ValidationError(f"notify_url {why}", field="notify_url")

    if not allowed:
        raise refuse("is not accepted: webhooks are off (REPORT_WEBHOOK_ALLOWED_HOSTS is empty)")
    if not url or len(url) > MAX_URL_LENGTH:
        raise refuse(f"must be a URL of 1..{MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise refuse("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        raise refuse("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise refuse("must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry credentials")
    if parts.fragment:
        raise refuse("must not have a #fragment")
    if parts.port == 0:  # read as the scheme's port it would pass that port's entry
        raise refuse("must not name port 0")
    host = host.rstrip(".")
    address = _ip(host)
    port = parts.port or (443 if scheme == "https" else 80)
    listed = [a for a in allowed if _same_host(a.host, host, address)]
    fitting = [a for a in listed if a.port in (None, port)]
    # of the entries for this host, the one that names this port and allows this scheme:
    # the order of REPORT_WEBHOOK_ALLOWED_HOSTS never changes what is accepted
    entry = min(
        fitting, key=lambda a: (scheme == "http" and not a.plain_http, a.port is None), default=None
    )
    if entry is None and listed:
        ports = ", ".join(str(a.port) for a in listed)
        raise refuse(f"must use the port REPORT_WEBHOOK_ALLOWED_HOSTS lists for {host!r} ({ports})")
    if entry is None:
        if address is not None and _internal(address):
            raise refuse(
                "names a private or loopback address that REPORT_WEBHOOK_ALLOWED_HOSTS "
                "does not list"
            )
        raise refuse(f"host {host!r} is not in REPORT_WEBHOOK_ALLOWED_HOSTS")
    if scheme == "http" and not entry.plain_http:
        raise refuse(f"must use https (http only for hosts listed as http://{entry.host})")
    return url


def _same_host(
    listed: str, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
) -> bool:
    if address is None:
        return listed == host
    return _ip(listed) == address


# --- what is sent, and its signature ---


def event_body(event: EventType | str, job_json: Any) -> bytes:
    """The POST body: ``{"type": ..., "job": <the job JSON as the API shows it>}``."""
    return msgspec.json.encode({"type": str(event), "job": job_json})


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes,
    header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_sec: float = DEFAULT_TOLERANCE_SEC,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a ``t`` within ``tolerance_sec`` of
    ``now`` (what a receiver checks; compared in constant time)."""
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    stamps = fields.get("t", [])
    # a forged header must be a False, never an exception in the receiver (a 500): at most
    # 15 digits (int() of 5,000 raises; a float of 400 overflows), v1 as hex (compare_digest
    # raises on non-ASCII text)
    if len(stamps) != 1 or not _DIGITS.fullmatch(stamps[0]):
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance_sec:
        return False
    expected = signature(secret, timestamp, body).rpartition("v1=")[2]
    given = [v for v in fields.get("v1", []) if _HEX.fullmatch(v)]
    return any(hmac.compare_digest(expected, v) for v in given)


_DIGITS = re.compile(r"[0-9]{1,15}")
_HEX = re.compile(r"[0-9a-f]{64}")


def delivery_headers(
    secret: bytes, delivery_id: str, event: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one attempt: the signature is new each time, the delivery id is not."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
        "Idempotency-Key": delivery_id,
        EVENT_HEADER: event,
    }


# --- retries ---


class WebhookRules(msgspec.Struct, frozen=True, kw_only=True):
    """The knobs of delivery (``REPORT_WEBHOOK_*``)."""

    secret: bytes = b""
    #: checked again before each attempt: a host taken off the list is sent nothing more
    allowed_hosts: tuple[AllowedHost, ...] = ()
    max_attempts: int = 8
    retry_base_sec: float = 10.0
    max_backoff_sec: float = MAX_BACKOFF_SEC
    #: how long a claimed delivery is held before another process may try it (a crash); more
    #: than an attempt's deadline, since a sender claims only what it attempts at once
    lease_sec: float = 60.0
    batch: int = 20
    #: the total deadline of one attempt (the sender enforces it)
    timeout_sec: float = 10.0
    #: attempts one sender has in flight at once
    concurrency: int = 8


def backoff(attempt: int, rules: WebhookRules) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): the base, doubling, capped."""
    try:
        wait = math.ldexp(rules.retry_base_sec, max(attempt, 1) - 1)  # base * 2**(attempt-1)
    except OverflowError:  # past the largest float, so past any cap
        return rules.max_backoff_sec
    return min(wait, rules.max_backoff_sec)


def schedule(rules: WebhookRules) -> list[float]:
    """Every wait between attempts, in order (one fewer than ``max_attempts``)."""
    return [backoff(n, rules) for n in range(1, rules.max_attempts)]


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one POST got: the status, or why there was none (timeout, refused)."""

    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer; anything else (3xx too: redirects are not followed) is a failure."""
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        """A short ``last_error``."""
        text = self.error or f"HTTP {self.status}"
        return text[:MAX_ERROR_LENGTH]


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the outbox: a job's webhook, and how its attempts went."""

    id: str
    job_id: str
    event: str
    url: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    last_error: str | None = None
    #: set at the first attempt, so that retries send the same bytes
    body: bytes | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt leaves behind in the outbox."""

    state: DeliveryState
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    body: bytes
    at: dt.datetime


def after_attempt(
    delivery: Delivery, result: SendResult, body: bytes, now: dt.datetime, rules: WebhookRules
) -> AttemptOutcome:
    """Delivered on a 2xx; else pending again after :func:`backoff`, or failed once
    ``rules.max_attempts`` attempts were made."""
    attempts = delivery.attempts + 1
    if result.ok:
        return AttemptOutcome(
            state=DeliveryState.DELIVERED,
            attempts=attempts,
            next_attempt_at=None,
            last_error=None,
            body=body,
            at=now,
        )
    if attempts >= rules.max_attempts:
        return AttemptOutcome(
            state=DeliveryState.FAILED,
            attempts=attempts,
            next_attempt_at=None,
            last_error=result.describe(),
            body=body,
            at=now,
        )
    return AttemptOutcome(
        state=DeliveryState.PENDING,
        attempts=attempts,
        next_attempt_at=now + dt.timedelta(seconds=backoff(attempts, rules)),
        last_error=result.describe(),
        body=body,
        at=now,
    )


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """A job's webhook as its job JSON shows it (``notification``)."""

    state: DeliveryState
    attempts: int
    last_error: str | None = None


def notification_of(delivery: Delivery) -> Notification:
    """The part of a delivery a client sees."""
    return Notification(
        state=delivery.state, attempts=delivery.attempts, last_error=delivery.last_error
    )


# the job JSON of a job, as the API shows it (the entrypoints own that shape)
RenderJob = Callable[[Job], Any]
