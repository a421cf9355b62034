"""Logging of the processes: one line per record, secrets never written.

``text`` records read ``ts=... level=INFO logger=... msg="..." key=value ...``; ``json`` records
are one JSON object each. Structured fields are passed as ``extra={...}``. Every record goes
through :class:`RedactingFilter` on the handler, so that also the records of libraries (uvicorn's
access log carries download tokens in query strings) are redacted.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from collections.abc import Iterable
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import msgspec

from ..settings import Settings

REDACTED = "[REDACTED]"

# what a secret looks like wherever it appears, whether or not it is one we configured
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a JWT: three base64url parts, the first two of them JSON objects ("eyJ" = '{"'); the
    # third may be missing where a long value was cut short before redaction
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"), REDACTED),
    # token=..., access_token=..., secret=..., password=... in query strings and key=value text
    (
        re.compile(r"(?i)\b((?:[a-z_]*token|secret|password|passwd)=)[^&\s\"',;]+"),
        rf"\1{REDACTED}",
    ),
    # Authorization: Bearer ... / Basic ...
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    # the password of a URL: scheme://user:password@host. The scheme starts where no scheme
    # character stands before it: without that, every position inside a long run of letters
    # (a cursor) scanned the rest of the run for "://", quadratic in the run's length
    (
        re.compile(r"(?<![a-zA-Z0-9+.-])([a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)[^@/?#\s]+@"),
        rf"\1{REDACTED}@",
    ),
)

# Text none of the patterns above can match lacks all of these: one search of it (most log
# fields are ids, paths, numbers) saves running every pattern. Keep it a superset of them.
_MAY_HOLD_SECRET = re.compile(r"(?i)eyJ|token|secret|passw|bearer|basic|://")

# attributes every LogRecord has; anything else on a record came in through ``extra``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured duplicate of msg
    "taskName",
}


# A message or field longer than this is cut (after the configured secrets are replaced, before
# the patterns run): an upstream URL with a 60 KB cursor is never written whole, and no line
# costs more than this much redaction
MAX_LOGGED_CHARS = 4096


def cut(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters cut]"


def redact(text: str, secrets: Iterable[str] = (), *, limit: int | None = None) -> str:
    """``text`` with the configured ``secrets`` and anything that looks like one replaced; with
    ``limit``, cut to that many characters first (:func:`cut`)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    if limit is not None:
        text = cut(text, limit)
    if _MAY_HOLD_SECRET.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message, exception text and extra fields without secrets."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # longest first, so that a secret containing another is replaced whole
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self._secrets, limit=MAX_LOGGED_CHARS)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value, self._secrets, limit=MAX_LOGGED_CHARS))
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    if record.exc_info or record.exc_text:
        out["exc"] = record.exc_text or logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    return out


_BARE = re.compile(r"[^\s\"=\\]+")  # a value written without quotes


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(v, str | int) for v in value
    ):
        text = ",".join(map(str, value))  # lists of ids read best bare
    elif isinstance(value, str):
        text = value
    else:
        text = msgspec.json.encode(value, enc_hook=str).decode()
    if text and text.isprintable() and _BARE.fullmatch(text):
        return text
    # quoted as JSON: newlines in a traceback stay escaped, so a record stays one line, and
    # control characters a client put in a path (NUL, ESC) never reach the log raw
    return msgspec.json.encode(text).decode()


class TextFormatter(logging.Formatter):
    """``key=value`` pairs, values quoted when they hold spaces, quotes or newlines."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_text_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        return msgspec.json.encode(_fields(record), enc_hook=str).decode()


# filters every handler set up from now on runs after the redaction (tracing's span ids)
_RECORD_FILTERS: list[logging.Filter] = []


def add_record_filter(record_filter: logging.Filter) -> None:
    """Run ``record_filter`` on every record from now on, also once logging is set up again
    (the API sets it up a second time after Litestar replaced the handlers)."""
    _RECORD_FILTERS.append(record_filter)
    for handler in logging.getLogger().handlers:
        handler.addFilter(record_filter)


def setup_logging(
    settings: Settings, *, extra_secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Route every logger to one handler on ``stream`` (stderr) at ``LOG_LEVEL``.

    The configured secrets (JWT and download keys, upstream token, passwords of the database
    and broker URLs) are redacted besides anything shaped like a secret.
    """
    secrets = [
        settings.jwt_secret,
        settings.download_secret,
        settings.internal_service_token,
        *(_url_password(u) for u in (settings.database_url, settings.rabbitmq_url)),
        *extra_secrets,
    ]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter(s for s in secrets if s))
    for record_filter in _RECORD_FILTERS:
        handler.addFilter(record_filter)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # libraries log through the root handler (and so through the redaction)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    # pika logs every connection step at INFO and each failed attempt at ERROR with a traceback;
    # our adapter logs one warning per attempt naming the broker and the retry delay, so pika
    # speaks at DEBUG only
    logging.getLogger("pika").setLevel(
        root.level if root.level <= logging.DEBUG else logging.CRITICAL
    )
    # httpx logs every request it sends at INFO ("HTTP Request: GET ... 200 OK"), and httpcore
    # its connection steps: a line per upstream page, which broke `reportsvc export`'s progress
    # bar and filled `reportsvc dev`'s log. What an operator needs of upstream requests (a retry,
    # a failure, a slow page) our adapter logs itself (reportsvc.upstream); with LOG_LEVEL=DEBUG
    # the libraries speak again
    quiet = root.level if root.level <= logging.DEBUG else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
    # a library's warnings (PyJWT's on an HMAC key under 32 bytes, at the first token) are log
    # records too: printed raw on stderr they broke LOG_FORMAT=json's one object a line
    logging.captureWarnings(True)
    return handler


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    password = urlsplit(url).password
    # a common default like "guest" is no secret worth blanking in every line it appears in
    return unquote(password) if password and len(password) >= 8 else None
