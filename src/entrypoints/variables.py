"""How an environment variable becomes a setting: :class:`Env`, the declaration a field of
:class:`entrypoints.settings.Settings` carries, and one parser per kind of value.

A parser takes the variable's name (for its message) and its text, and returns the value or
raises :class:`ConfigError` naming the variable. The text is trimmed before it is read; a
message shows it as it was set (a secret's never).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from reportcore.jobs import JobType
from reportcore.webhooks import AllowedHost, parse_allowed_hosts


class ConfigError(Exception):
    """Configuration problems, worded for an operator: each names its variable. ``problems``
    lists them; the message is all of them, one after another on one line."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


Parser = Callable[[str, str], object]


class Env:
    """A setting's declaration, carried by its field of ``Settings``: its variable (then its
    aliases, the old Node service's names: the first one set wins), its parser and its line
    in docs/operations.md's table (``doc``; ``default_doc`` says what an unset variable means
    beyond the default value). ``hint``: what an operator must add when the variable is
    missing or malformed. ``empty_is_a_value``: set to empty (or blanks), the variable is
    read like any value instead of counting as unset."""

    __slots__ = ("default_doc", "doc", "empty_is_a_value", "hint", "names", "parse")

    def __init__(
        self,
        *names: str,
        parse: Parser,
        doc: str,
        default_doc: str = "",
        hint: str = "",
        empty_is_a_value: bool = False,
    ) -> None:
        assert names, "a setting is read from at least one variable"
        self.names = names
        self.parse = parse
        self.doc = doc
        self.default_doc = default_doc
        self.hint = hint
        self.empty_is_a_value = empty_is_a_value


# --- text ---


def text(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name} is set but empty")
    return value


def secret(name: str, raw: str) -> str:
    """At least 16 characters; a message never shows it."""
    value = text(name, raw)
    if len(value) < 16:
        raise ConfigError(f"{name} must be at least 16 characters")
    return value


def claim(name: str, raw: str) -> str | None:
    """An expected token claim; empty (or blanks): ``None``, do not require or check it."""
    return raw.strip() or None


# the password of a URL's user: what an error message shows of a URL never includes it
_PASSWORD = re.compile(r"(//[^/?#@:]*:)[^/?#]*@")


def redacted(url: str) -> str:
    """``url`` with its password (``user:password@``) written ``***``."""
    return _PASSWORD.sub(r"\1***@", url)


def _url(*schemes: str, host_query: bool = False) -> Callable[[str, str], str]:
    """A URL of one of ``schemes`` naming a host; with ``host_query``, the host may be given
    as ``?host=`` instead (libpq's way to a Unix socket: ``postgresql://u@/db?host=/run/pg``)."""

    def parse(name: str, raw: str) -> str:
        value = text(name, raw)
        shown = redacted(raw)
        try:
            parts = urlsplit(value)
        except ValueError:  # an unclosed "[" of an IPv6 host
            raise ConfigError(f"{name} is no URL, got {shown!r}") from None
        queried = host_query and any(parse_qs(parts.query).get("host", []))
        if parts.scheme not in schemes or not (parts.hostname or queried):
            raise ConfigError(f"{name} must be a {schemes[0]}:// URL with a host, got {shown!r}")
        try:
            _ = parts.port  # a port that is no number, or past 65535, raises here
        except ValueError:
            raise ConfigError(f"{name} has no valid port (0..65535), got {shown!r}") from None
        return value

    return parse


postgres_url = _url("postgresql", "postgres", host_query=True)
http_url = _url("http", "https")
_amqp = _url("amqp", "amqps")


def amqp_url(name: str, raw: str) -> str:
    """An AMQP URL whose query pika reads too (``?heartbeat=abc`` failed each connection)."""
    value = _amqp(name, raw)
    import pika  # a worker's and an api's dependency either way

    try:
        pika.URLParameters(value)
    except ValueError as exc:
        raise ConfigError(f"{name} is not a URL the broker client takes: {exc}") from None
    return value


def one_of(*choices: str, upper: bool = False) -> Callable[[str, str], str]:
    """One of ``choices``, in any case (stored upper or lower case, as the choices are)."""
    listed = " or ".join(choices) if len(choices) < 3 else ", ".join(choices[:-1])
    listed += "" if len(choices) < 3 else f" or {choices[-1]}"

    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be {listed}, got {raw!r}")
        return value

    return parse


def s3_prefix(name: str, raw: str) -> str:
    """The keys are ``<prefix><tenant>/<job>/report.<ext>``: a prefix is a folder or nothing."""
    value = raw.strip()
    if value and (not value.endswith("/") or value.startswith("/") or "//" in value):
        raise ConfigError(f"{name} must end with / and not start with one, got {raw!r}")
    return value


# --- numbers ---

_WHOLE = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes other scripts' digits


def non_negative_int(name: str, raw: str) -> int:
    if not _WHOLE.fullmatch(raw.strip()):
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    return int(raw.strip())


def positive_int(name: str, raw: str) -> int:
    n = non_negative_int(name, raw)
    if n < 1:
        raise ConfigError(f"{name} must be at least 1, got {raw!r}")
    return n


def int_between(low: int, high: int, why: str) -> Callable[[str, str], int]:
    """A whole number ``low`` .. ``high``; ``why`` says where the top comes from."""

    def parse(name: str, raw: str) -> int:
        n = non_negative_int(name, raw)
        if not low <= n <= high:
            raise ConfigError(f"{name} must be {low}..{high} ({why}), got {raw!r}")
        return n

    return parse


def port(name: str, raw: str) -> int:
    """0..65535; 0 asks the kernel for a free port (tests, several local instances), the bound
    port is logged once listening."""
    n = non_negative_int(name, raw)
    if not 0 <= n <= 65535:
        raise ConfigError(f"{name} must be a port number 0..65535, got {raw!r}")
    return n


# The longest duration a setting may name: ten years. Past it an instant worked out from now
# leaves datetime's range (a 500 on every download for REPORT_DOWNLOAD_TTL_SEC=10^12), or a
# download token's exp grows past 10^11 and reads as the old service's milliseconds.
MAX_SEC = 10 * 365 * 86_400


def _at_most_max_sec(name: str, raw: str, value: float) -> None:
    if value > MAX_SEC:
        raise ConfigError(f"{name} must be at most {MAX_SEC} (ten years), got {raw!r}")


def whole_sec(minimum: int) -> Callable[[str, str], int]:
    """Whole seconds, ``minimum`` (0 or 1) .. ten years."""

    def parse(name: str, raw: str) -> int:
        n = non_negative_int(name, raw) if minimum == 0 else positive_int(name, raw)
        _at_most_max_sec(name, raw, n)
        return n

    return parse


# ASCII digits only, as for whole numbers: float() also reads Arabic-Indic digits and "1_0"
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MIN_SEC = 0.001  # below a millisecond no lease, timeout or interval of ours can be kept


def positive_float(name: str, raw: str) -> float:
    """Seconds, 1 ms .. ten years (every setting it reads is a duration)."""
    if not _DECIMAL.fullmatch(raw.strip()):
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}")
    f = float(raw.strip())
    if not f >= MIN_SEC:
        raise ConfigError(f"{name} must be at least {MIN_SEC} (a millisecond), got {raw!r}")
    if not math.isfinite(f):  # 1e999: a lease or a deadline never reached, an overflow later
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    _at_most_max_sec(name, raw, f)
    return f


def flag(name: str, raw: str) -> bool:
    value = raw.strip()
    if value not in ("0", "1"):
        raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
    return value == "1"


# --- the rest ---


def range_days(name: str, raw: str) -> dict[JobType, int]:
    """``N`` (every job type) or ``TYPE=N,TYPE=N``."""
    value = raw.strip()
    if _WHOLE.fullmatch(value) and int(value) >= 1:
        return {t: int(value) for t in JobType}
    out: dict[JobType, int] = {}
    for part in value.split(","):
        key, _, days = part.strip().partition("=")
        try:
            job_type = JobType(key.strip())
        except ValueError:
            job_type = None
        if job_type is None or not _WHOLE.fullmatch(days.strip()) or int(days) < 1:
            types = ", ".join(t.value for t in JobType)
            raise ConfigError(
                f"{name} must be a number of days, or TYPE=DAYS pairs separated by commas "
                f"(types: {types}), got {raw[:200]!r}"
            )
        if job_type in out:  # the last one silently winning hid the first from its writer
            raise ConfigError(f"{name} names {job_type.value} twice, got {raw[:200]!r}")
        out[job_type] = int(days)
    return out


def instant(name: str, raw: str) -> dt.datetime:
    """An ISO 8601 instant with its offset, in UTC."""
    try:
        parsed = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{name} must be an ISO 8601 instant with its offset, got {raw[:200]!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ConfigError(f"{name} must name its UTC offset (Z or +hh:mm), got {raw!r}")
    return parsed.astimezone(dt.UTC)


def webhook_hosts(name: str, raw: str) -> tuple[AllowedHost, ...] | None:
    """Host names separated by commas; none (empty): ``None`` (webhooks off). Commas with no
    host between them name none: refused, rather than read as "off" in silence."""
    if raw.strip() and not raw.replace(",", "").strip():
        raise ConfigError(f"{name} names no host, got {raw[:200]!r}; leave it empty for none")
    try:
        return parse_allowed_hosts(raw.strip()) or None
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}; give host names separated by commas") from None


# --- the environment's own ---

_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def proxy_problems(env: Mapping[str, str]) -> list[str]:
    """The environment's proxies (read by httpx for the upstreams and the webhooks, the
    lower-case name first, as urllib reads them) are ones httpx can use: http:// or https://.
    A socks5:// one would need the socksio package, which the service does not bring, and
    every process would stop at its first client with an ImportError. The value is never
    shown: a proxy's address may carry its password."""
    problems = []
    for name in _PROXIES:
        for spelled in (name.lower(), name):
            value = env.get(spelled, "").strip()
            if value:
                scheme = urlsplit(value).scheme.lower() if "://" in value else "http"
                if scheme not in ("http", "https"):
                    problems.append(
                        f"{spelled} names a {scheme}:// proxy: only http:// and https:// "
                        "proxies are supported (SOCKS would need the socksio package)"
                    )
                break
    return problems
