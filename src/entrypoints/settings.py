"""Configuration: read from the environment once, validated into one typed value.

Required variables that are missing and variables that are malformed stop the process with
one line naming every one of them (:class:`ConfigError`), before anything listens or
consumes: an operator fixes the environment once, not once a problem.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import msgspec

from adapters.upstream.config import UpstreamConfig
from reportcore.jobs import JobType
from reportcore.policy import Policy
from reportcore.webhooks import AllowedHost, WebhookRules, parse_allowed_hosts


class ConfigError(Exception):
    """Configuration problems, worded for an operator: each names its variable. ``problems``
    lists them; the message is all of them, one after another on one line."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# The core's lifecycle knobs and the upstream client's knobs keep their defaults where they are
# declared; a setting of one of them takes its default from there, so each is written once.
_POLICY = Policy()
_UPSTREAM = UpstreamConfig()
_WEBHOOKS = WebhookRules()


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the processes are configured with (see the contract's Configuration)."""

    database_url: str | None = None
    rabbitmq_url: str | None = None
    download_secret: str | None = None
    download_ttl_sec: int = _POLICY.download_ttl_sec
    export_root: str = "/data/exports"
    worker_concurrency: int = 1
    jwt_secret: str | None = None
    # None: the claim is not required (the variable set to empty); see _CLAIM below
    jwt_issuer: str | None = "farmiq"
    jwt_audience: str | None = "farmiq-api"
    feed_service_url: str | None = None
    telemetry_service_url: str | None = None
    weighvision_url: str | None = None
    internal_service_token: str | None = None
    retention_sec: int = _POLICY.retention_sec
    host: str = "0.0.0.0"
    port: int = 5129
    # operational knobs beyond the contract (documented in docs/operations.md)
    lease_sec: float = _POLICY.lease_sec
    max_attempts: int = _POLICY.max_attempts
    recovery_interval_sec: float = 5.0
    upstream_timeout_sec: float = _UPSTREAM.timeout_sec
    upstream_retries: int = _UPSTREAM.retries
    upstream_concurrency: int = _UPSTREAM.concurrency
    upstream_host_concurrency: int = _UPSTREAM.host_concurrency
    upstream_ca_bundle: str | None = None
    upstream_client_cert: str | None = None
    upstream_client_key: str | None = None
    upstream_transport: str = _UPSTREAM.transport
    log_level: str = "INFO"
    log_format: str = "text"  # text (key=value) or json, one record a line
    # per job type, the widest date range a job may name (unlisted types keep their default)
    max_range_days: dict[JobType, int] | None = None
    # the instant the demo upstream takes as now (dev and export --demo): the same data any day
    demo_now: dt.datetime | None = None
    # how many jobs of one tenant one worker process runs at once (None: all slots but one)
    worker_tenant_concurrency: int | None = None
    # the worker's /metrics, /healthz and /readyz (docs/operations.md); port 0 turns it off
    worker_http_host: str = "0.0.0.0"
    worker_http_port: int = 9129
    http_header_timeout_sec: float = 10.0
    http_body_timeout_sec: float = 30.0
    http_max_connections: int = 1000
    # where export files live: filesystem (under export_root) or s3 (docs/operations.md)
    file_store: str = "filesystem"
    s3_bucket: str | None = None
    s3_prefix: str = "reports/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    download_redirect: bool = False
    # webhooks (docs/operations.md): no allowed host turns them off
    webhook_allowed_hosts: tuple[AllowedHost, ...] | None = None
    webhook_secret: str | None = None
    webhook_max_attempts: int = _WEBHOOKS.max_attempts
    webhook_retry_base_sec: float = _WEBHOOKS.retry_base_sec


# variable -> (setting, kind); aliases listed after the main name, first one set wins
_VARIABLES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("DATABASE_URL",), "database_url", "postgres_url"),
    (("RABBITMQ_URL",), "rabbitmq_url", "amqp_url"),
    (("REPORT_DOWNLOAD_SECRET",), "download_secret", "secret"),
    (("REPORT_DOWNLOAD_TTL_SEC",), "download_ttl_sec", "positive_int"),
    (("EXPORT_ROOT",), "export_root", "str"),
    (("WORKER_CONCURRENCY",), "worker_concurrency", "positive_int"),
    (("JWT_SECRET",), "jwt_secret", "secret"),
    (("JWT_ISSUER",), "jwt_issuer", "claim"),
    (("JWT_AUDIENCE",), "jwt_audience", "claim"),
    (
        ("CLOUD_FEED_SERVICE_URL", "FEED_SERVICE_URL", "FEED_BASE_URL"),
        "feed_service_url",
        "http_url",
    ),
    (
        ("CLOUD_TELEMETRY_SERVICE_URL", "TELEMETRY_SERVICE_URL"),
        "telemetry_service_url",
        "http_url",
    ),
    (
        ("CLOUD_WEIGHVISION_READMODEL_URL", "WEIGHVISION_SERVICE_URL"),
        "weighvision_url",
        "http_url",
    ),
    (("INTERNAL_SERVICE_TOKEN",), "internal_service_token", "str"),
    (("REPORT_RETENTION_SEC",), "retention_sec", "non_negative_int"),
    (("HOST",), "host", "str"),
    (("APP_PORT", "PORT"), "port", "port"),
    (("REPORT_LEASE_SEC",), "lease_sec", "positive_float"),
    (("REPORT_MAX_ATTEMPTS",), "max_attempts", "positive_int"),
    (("REPORT_RECOVERY_INTERVAL_SEC",), "recovery_interval_sec", "positive_float"),
    (("UPSTREAM_TIMEOUT_SEC",), "upstream_timeout_sec", "positive_float"),
    (("UPSTREAM_RETRIES",), "upstream_retries", "non_negative_int"),
    (("UPSTREAM_CONCURRENCY",), "upstream_concurrency", "positive_int"),
    (("UPSTREAM_HOST_CONCURRENCY",), "upstream_host_concurrency", "positive_int"),
    (("UPSTREAM_CA_BUNDLE",), "upstream_ca_bundle", "str"),
    (("UPSTREAM_CLIENT_CERT",), "upstream_client_cert", "str"),
    (("UPSTREAM_CLIENT_KEY",), "upstream_client_key", "str"),
    (("UPSTREAM_TRANSPORT",), "upstream_transport", "upstream_transport"),
    (("LOG_LEVEL",), "log_level", "log_level"),
    (("LOG_FORMAT",), "log_format", "log_format"),
    (("REPORT_MAX_RANGE_DAYS",), "max_range_days", "range_days"),
    (("DEMO_NOW",), "demo_now", "instant"),
    (("WORKER_TENANT_CONCURRENCY",), "worker_tenant_concurrency", "positive_int"),
    (("WORKER_HTTP_HOST",), "worker_http_host", "str"),
    (("WORKER_HTTP_PORT",), "worker_http_port", "port"),
    (("HTTP_HEADER_TIMEOUT_SEC",), "http_header_timeout_sec", "positive_float"),
    (("HTTP_BODY_TIMEOUT_SEC",), "http_body_timeout_sec", "positive_float"),
    (("HTTP_MAX_CONNECTIONS",), "http_max_connections", "positive_int"),
    (("FILE_STORE",), "file_store", "file_store"),
    (("S3_BUCKET",), "s3_bucket", "str"),
    (("S3_PREFIX",), "s3_prefix", "s3_prefix"),
    (("S3_ENDPOINT_URL",), "s3_endpoint_url", "http_url"),
    (("S3_REGION",), "s3_region", "str"),
    (("REPORT_DOWNLOAD_REDIRECT",), "download_redirect", "flag"),
    (("REPORT_WEBHOOK_ALLOWED_HOSTS",), "webhook_allowed_hosts", "webhook_hosts"),
    (("REPORT_WEBHOOK_SECRET",), "webhook_secret", "secret"),
    (("REPORT_WEBHOOK_MAX_ATTEMPTS",), "webhook_max_attempts", "positive_int"),
    (("REPORT_WEBHOOK_RETRY_BASE_SEC",), "webhook_retry_base_sec", "positive_float"),
)

SETTING_TO_VARIABLE = {setting: names[0] for names, setting, _ in _VARIABLES}
_VARIABLE_TO_SETTING = {name: setting for names, setting, _ in _VARIABLES for name in names}


def variable_of(setting: str, env: Mapping[str, str]) -> str:
    """The variable ``setting`` was read from in ``env`` (the alias set, ``PORT`` for the port
    when only it is), else its main name: what a message about its value should name."""
    for names, name_of, _ in _VARIABLES:
        if name_of == setting:
            return next((name for name in names if env.get(name)), names[0])
    raise KeyError(setting)


# An expected token claim: unset keeps the default, set to empty (or blanks) means "do not
# require or check it". FarmIQ's identity service signs access tokens without iss and aud on
# refresh and SSO, so a deployment that takes those tokens turns the checks off explicitly.
_CLAIM = "claim"

# What an operator must add when a required variable is missing, beyond its name.
_REQUIRED_HINTS = {
    "jwt_secret": "add JWT_SECRET to the service's environment: the HS256 key FarmIQ's "
    "identity service (cloud-identity-access) signs user tokens with, the same value as its "
    "JWT_SECRET, at least 16 characters",
}


_WHOLE = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes other scripts' digits


def _range_days(name: str, raw: str) -> dict[JobType, int]:
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
        out[job_type] = int(days)
    return out


def _parse(name: str, kind: str, raw: str) -> object:
    value = raw.strip()
    if kind == _CLAIM:
        return value or None
    if kind == "range_days":
        return _range_days(name, raw)
    if kind == "instant":
        try:
            instant = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                f"{name} must be an ISO 8601 instant with its offset, got {raw[:200]!r}"
            ) from None
        if instant.tzinfo is None:
            raise ConfigError(f"{name} must name its UTC offset (Z or +hh:mm), got {raw!r}")
        return instant.astimezone(dt.UTC)
    if kind in ("positive_int", "non_negative_int", "port"):
        if not _WHOLE.fullmatch(value):
            raise ConfigError(f"{name} must be a whole number, got {raw!r}")
        n = int(value)
        if kind == "positive_int" and n < 1:
            raise ConfigError(f"{name} must be at least 1, got {raw!r}")
        # 0 asks the kernel for a free port (tests, several local instances); the bound
        # port is logged once listening
        if kind == "port" and not 0 <= n <= 65535:
            raise ConfigError(f"{name} must be a port number 0..65535, got {raw!r}")
        return n
    if kind == "positive_float":
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not f > 0:
            raise ConfigError(f"{name} must be greater than 0, got {raw!r}")
        return f
    if kind == "log_level":
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"{name} must be DEBUG, INFO, WARNING or ERROR, got {raw!r}")
        return level
    if kind == "upstream_transport":
        transport = value.lower()
        if transport not in ("stdlib", "httpx"):
            raise ConfigError(f"{name} must be stdlib or httpx, got {raw!r}")
        return transport
    if kind == "file_store":
        store = value.lower()
        if store not in ("filesystem", "s3"):
            raise ConfigError(f"{name} must be filesystem or s3, got {raw!r}")
        return store
    if kind == "flag":
        if value not in ("0", "1"):
            raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
        return value == "1"
    if kind == "s3_prefix":
        # the keys are <prefix><tenant>/<job>/report.<ext>: a prefix is a folder or nothing
        if value and (not value.endswith("/") or value.startswith("/") or "//" in value):
            raise ConfigError(f"{name} must end with / and not start with one, got {raw!r}")
        return value
    if kind == "webhook_hosts":
        try:
            return parse_allowed_hosts(value) or None
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}; give host names separated by commas") from None
    if kind == "log_format":
        fmt = value.lower()
        if fmt not in ("text", "json"):
            raise ConfigError(f"{name} must be text or json, got {raw!r}")
        return fmt
    if not value:
        raise ConfigError(f"{name} is set but empty")
    if kind == "secret" and len(value) < 16:
        hint = _REQUIRED_HINTS.get(_VARIABLE_TO_SETTING.get(name, ""), "")
        raise ConfigError(f"{name} must be at least 16 characters" + (f": {hint}" if hint else ""))
    schemes = {
        "postgres_url": ("postgresql", "postgres"),
        "amqp_url": ("amqp", "amqps"),
        "http_url": ("http", "https"),
    }.get(kind)
    if schemes is not None:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{name} must be a {schemes[0]}:// URL with a host, got {raw!r}")
    return value


def load_settings(env: Mapping[str, str], *, required: Iterable[str] = ()) -> Settings:
    """Settings from ``env``; ``required`` names settings this process cannot run without.

    Every problem is found before one is reported: the malformed variables first, then the
    required ones missing, then the settings that contradict each other."""
    values: dict[str, object] = {}
    problems: list[str] = []
    malformed: set[str] = set()
    for names, setting, kind in _VARIABLES:
        for name in names:
            raw = env.get(name)
            # empty counts as unset, except for a claim, where it says "not required"
            if raw is not None and (raw != "" or kind == _CLAIM):
                try:
                    values[setting] = _parse(name, kind, raw)
                except ConfigError as exc:
                    problems.append(str(exc))
                    malformed.add(setting)
                break
    for setting in required:
        if values.get(setting) is None and setting not in malformed:
            hint = _REQUIRED_HINTS.get(setting)
            problems.append(
                f"{SETTING_TO_VARIABLE[setting]} is required but not set"
                + (f": {hint}" if hint else "")
            )
    if values.get("file_store") == "s3" and not values.get("s3_bucket"):
        problems.append("S3_BUCKET is required when FILE_STORE=s3")
    if values.get("webhook_allowed_hosts") and not values.get("webhook_secret"):
        problems.append(
            "REPORT_WEBHOOK_SECRET is required when REPORT_WEBHOOK_ALLOWED_HOSTS is set: "
            "the key webhooks are signed with, at least 16 characters"
        )
    if values.get("download_redirect") and values.get("file_store") != "s3":
        problems.append("REPORT_DOWNLOAD_REDIRECT=1 needs FILE_STORE=s3")
    if problems:
        raise ConfigError(*problems)
    return Settings(**values)  # type: ignore[arg-type]
