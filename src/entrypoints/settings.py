"""Configuration: read from the environment once, validated into one typed value.

Each setting is declared once, as a field of :class:`Settings`: its type and default, and in
its :class:`~entrypoints.variables.Env` its variable and aliases, its parser and its line of
docs/operations.md's table (tests/unit/test_docs.py derives the table from these).

Required variables that are missing and variables that are malformed stop the process with
one line naming every one of them (:class:`ConfigError`), before anything listens or
consumes: an operator fixes the environment once, not once a problem.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Annotated, TypeVar, get_type_hints

import msgspec

from adapters.upstream.config import BASE_URLS, UpstreamConfig
from reportcore.jobs import JobType
from reportcore.jobtypes import JOB_TYPES, Upstream
from reportcore.policy import Policy
from reportcore.schedules import ScheduleRules
from reportcore.webhooks import AllowedHost, WebhookRules

from .variables import (
    ConfigError,
    Env,
    amqp_url,
    claim,
    flag,
    http_url,
    instant,
    int_between,
    non_negative_int,
    one_of,
    port,
    positive_float,
    positive_int,
    postgres_url,
    proxy_problems,
    range_days,
    s3_prefix,
    secret,
    text,
    webhook_hosts,
    whole_sec,
)

__all__ = ["ConfigError", "Env", "Settings", "load_settings"]

# The core's and the upstream client's knobs keep their defaults where they are declared; a
# setting of one takes its default from there, so each is written once.
_POLICY = Policy()
_LIMITS = _POLICY.limits
_UPSTREAM = UpstreamConfig()
_WEBHOOKS = WebhookRules()
_SCHEDULES = ScheduleRules()


def _range_default() -> str:
    """``TELEMETRY_EXPORT 92 days, the other types 366``: the job types' own maximum ranges."""
    days = {t: spec.max_range_days for t, spec in JOB_TYPES.items()}
    usual = Counter(days.values()).most_common(1)[0][0]
    listed = [f"{t} {n} days" for t, n in days.items() if n != usual]
    return ", ".join([*listed, f"the other types {usual}"])


_JWT_HINT = (
    "add JWT_SECRET to the service's environment: the HS256 key FarmIQ's identity service "
    "(cloud-identity-access) signs user tokens with, the same value as its JWT_SECRET, at "
    "least 16 characters"
)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the processes are configured with (see the contract's Configuration)."""

    # one field a setting, laid out as a table (ruff would spread each over ten lines)
    # fmt: off
    database_url: Annotated[str | None, Env(
        "DATABASE_URL", parse=postgres_url,
        doc="PostgreSQL URL, `postgresql://user:password@host:5432/db` (or `postgres://`; a "
        "Unix socket: `postgresql://user@/db?host=/run/postgresql`)",
    )] = None
    rabbitmq_url: Annotated[str | None, Env(
        "RABBITMQ_URL", parse=amqp_url,
        doc="AMQP URL with the vhost, `amqp://guest:guest@127.0.0.1:5672/%2F` (or `amqps://`)",
    )] = None
    download_secret: Annotated[str | None, Env(
        "REPORT_DOWNLOAD_SECRET", parse=secret,
        doc="HMAC key of download tokens, at least 16 characters; the same in every api (and as "
        "the old service's, so its URLs keep working)",
    )] = None
    download_ttl_sec: Annotated[int, Env(
        "REPORT_DOWNLOAD_TTL_SEC", parse=whole_sec(1),
        doc="lifetime of an issued download URL, seconds (at least 1)",
    )] = _POLICY.download_ttl_sec
    export_root: Annotated[str, Env(
        "EXPORT_ROOT", parse=text,
        doc="export files' folder, `<root>/<tenant>/<job>/report.<csv|json|xlsx|csv.gz|ndjson.gz>`;"
        " the same path on every api and worker machine (see below); not read when `FILE_STORE=s3`",
    )] = "/data/exports"
    worker_concurrency: Annotated[int, Env(
        "WORKER_CONCURRENCY", parse=int_between(1, 65535, "AMQP's largest prefetch"),
        doc="exports one worker process runs at once (its RabbitMQ prefetch)",
    )] = 1
    jwt_secret: Annotated[str | None, Env(
        "JWT_SECRET", parse=secret, hint=_JWT_HINT,
        doc="HS256 key of user tokens, at least 16 characters",
    )] = None
    # None: the claim is not required (the variable set empty): FarmIQ's identity service signs
    # tokens without iss and aud on refresh and SSO; a deployment taking them turns checks off
    jwt_issuer: Annotated[str | None, Env(
        "JWT_ISSUER", parse=claim, empty_is_a_value=True,
        doc="the `iss` a user token must carry; set to empty (`JWT_ISSUER=`) to not require or "
        "check `iss` (FarmIQ's identity service signs refreshed and SSO tokens without it); "
        "signature and `exp` are always checked",
    )] = "farmiq"
    jwt_audience: Annotated[str | None, Env(
        "JWT_AUDIENCE", parse=claim, empty_is_a_value=True,
        doc="the `aud` a user token must carry; set to empty (`JWT_AUDIENCE=`) to not require or "
        "check `aud` (as for `JWT_ISSUER`)",
    )] = "farmiq-api"
    feed_service_url: Annotated[str | None, Env(
        *BASE_URLS[Upstream.FEED].variables, parse=http_url,
        doc="feed service base URL (`http://` or `https://`): feed intake and KPI exports",
    )] = None
    telemetry_service_url: Annotated[str | None, Env(
        *BASE_URLS[Upstream.TELEMETRY].variables, parse=http_url,
        doc="telemetry service base URL",
    )] = None
    weighvision_url: Annotated[str | None, Env(
        *BASE_URLS[Upstream.WEIGHVISION].variables, parse=http_url,
        doc="WeighVision read model base URL",
    )] = None
    internal_service_token: Annotated[str | None, Env(
        "INTERNAL_SERVICE_TOKEN", parse=text,
        doc="sent as `Authorization: Bearer ...` to the upstream services when set",
    )] = None
    retention_sec: Annotated[int, Env(
        "REPORT_RETENTION_SEC", parse=whole_sec(0), default_doc="7 days",
        doc="how long a finished file is kept (`expires_at` = finished + this); `0`: forever",
    )] = _POLICY.retention_sec
    host: Annotated[str, Env(
        "HOST", parse=text,
        doc="address the API listens on",
    )] = "0.0.0.0"
    port: Annotated[int, Env(
        "APP_PORT", "PORT", parse=port,
        doc="port the API listens on; `0` picks a free one (logged)",
    )] = 5129
    # operational knobs beyond the contract
    lease_sec: Annotated[float, Env(
        "REPORT_LEASE_SEC", parse=positive_float,
        doc="how long a claimed job stays a worker's without a heartbeat; the heartbeat runs "
        "every min(1 s, lease / 3)",
    )] = _POLICY.lease_sec
    max_attempts: Annotated[int, Env(
        "REPORT_MAX_ATTEMPTS", parse=positive_int,
        doc="claims of one job before a lost worker fails it `WORKER_LOST` instead of retrying",
    )] = _POLICY.max_attempts
    recovery_interval_sec: Annotated[float, Env(
        "REPORT_RECOVERY_INTERVAL_SEC", parse=positive_float,
        doc="how often each worker runs the recovery pass, seconds",
    )] = 5.0
    upstream_timeout_sec: Annotated[float, Env(
        "UPSTREAM_TIMEOUT_SEC", parse=positive_float,
        doc="timeout of one upstream request (connect, read), seconds",
    )] = _UPSTREAM.timeout_sec
    upstream_retries: Annotated[int, Env(
        "UPSTREAM_RETRIES", parse=non_negative_int,
        doc="retries of one upstream page after a connect error, timeout, 429 or 5xx (0 = none)",
    )] = _UPSTREAM.retries
    upstream_concurrency: Annotated[int, Env(
        "UPSTREAM_CONCURRENCY", parse=positive_int,
        doc="time windows of one bounded feed intake or telemetry export fetched at once; `1` "
        "fetches one page after another (an export without both dates is always sequential)",
    )] = _UPSTREAM.concurrency
    upstream_host_concurrency: Annotated[int, Env(
        "UPSTREAM_HOST_CONCURRENCY", parse=positive_int,
        doc="requests in flight to one upstream host (scheme, host, port), all of a process's "
        "exports together; a freed slot to the export holding fewest, then the longest waiter",
    )] = _UPSTREAM.host_concurrency
    upstream_ca_bundle: Annotated[str | None, Env(
        "UPSTREAM_CA_BUNDLE", parse=text,
        doc="PEM file of the CAs trusted for `https://` upstreams (default: `SSL_CERT_FILE` / "
        "`SSL_CERT_DIR` when set, else certifi's); `worker`, `all` and `export` load it as they "
        "start, and stop (exit 2) if it cannot be, as for the client certificate and key",
    )] = None
    upstream_client_cert: Annotated[str | None, Env(
        "UPSTREAM_CLIENT_CERT", parse=text,
        doc="PEM client certificate presented to `https://` upstreams (mTLS); the key too, "
        "unless `UPSTREAM_CLIENT_KEY` is set",
    )] = None
    upstream_client_key: Annotated[str | None, Env(
        "UPSTREAM_CLIENT_KEY", parse=text,
        doc="PEM private key of `UPSTREAM_CLIENT_CERT`",
    )] = None
    upstream_transport: Annotated[str, Env(
        "UPSTREAM_TRANSPORT", parse=one_of("stdlib", "httpx"),
        doc="`stdlib`: httpx over our transport on `http.client` (about half the CPU a page); "
        "`httpx`: httpx's own transport (docs/performance.md)",
    )] = _UPSTREAM.transport
    upstream_page_deadline_sec: Annotated[float, Env(
        "UPSTREAM_PAGE_DEADLINE_SEC", parse=positive_float,
        doc="the most one upstream page may take, seconds, every try, backoff and wait for a "
        "host slot included (a body dripped a byte at a time, each read under "
        "`UPSTREAM_TIMEOUT_SEC`, ends here); past it the job fails `UPSTREAM_UNAVAILABLE`. Keep "
        "it above the retries' own bound (57.5 s with the defaults, see Faults); the worker's "
        "`/healthz` fails when an export gets and writes no page for this plus 60 s",
    )] = _UPSTREAM.page_deadline_sec
    upstream_max_page_bytes: Annotated[int, Env(
        "UPSTREAM_MAX_PAGE_BYTES", parse=int_between(1, 2**32, "4 GiB"), default_doc="16 MiB",
        doc="the most one upstream page may be, on the wire and once inflated (gzip is inflated "
        "as it arrives), checked against `Content-Length` and while reading; a bigger page "
        "fails the job `UPSTREAM_BAD_RESPONSE`. A worker holds at most `UPSTREAM_CONCURRENCY` "
        "such pages at once per export",
    )] = _UPSTREAM.max_page_bytes
    upstream_max_page_items: Annotated[int, Env(
        "UPSTREAM_MAX_PAGE_ITEMS", parse=positive_int,
        doc="the most records one upstream page may hold (the services send at most 10,000); "
        "more fails the job `UPSTREAM_BAD_RESPONSE`",
    )] = _UPSTREAM.max_page_items
    export_max_pages: Annotated[int, Env(
        "REPORT_MAX_EXPORT_PAGES", parse=positive_int,
        doc="the most upstream pages one export fetches (every time window together); past it "
        "the job fails `EXPORT_LIMIT_EXCEEDED` (a feed whose `nextCursor` never ends meets it)",
    )] = _LIMITS.max_pages
    export_max_rows: Annotated[int, Env(
        "REPORT_MAX_EXPORT_ROWS", parse=positive_int,
        doc="the most rows one export writes; past it the job fails `EXPORT_LIMIT_EXCEEDED`",
    )] = _LIMITS.max_rows
    export_max_bytes: Annotated[int, Env(
        "REPORT_MAX_EXPORT_BYTES", parse=positive_int, default_doc="16 GiB",
        doc="the most bytes one export file may hold (as stored, after gzip), and the most its "
        "upstream pages may add up to (time windows fetched ahead of the writer hold theirs in "
        "temporary files meanwhile); past either the job fails `EXPORT_LIMIT_EXCEEDED` and its "
        "temporary files are removed",
    )] = _LIMITS.max_bytes
    export_max_sec: Annotated[float, Env(
        "REPORT_MAX_EXPORT_SEC", parse=positive_float, default_doc="6 hours",
        doc="the most seconds one export may run from its claim, checked also while a page is "
        "awaited; past it the job fails `EXPORT_LIMIT_EXCEEDED`",
    )] = _LIMITS.max_sec
    log_level: Annotated[str, Env(
        "LOG_LEVEL", parse=one_of("DEBUG", "INFO", "WARNING", "ERROR", upper=True),
        doc="`DEBUG`, `INFO`, `WARNING` or `ERROR`",
    )] = "INFO"
    log_format: Annotated[str, Env(
        "LOG_FORMAT", parse=one_of("text", "json"),
        doc="`text` (`key=value`) or `json`, one record a line",
    )] = "text"
    # per job type, the widest date range a job may name (unlisted types keep their default)
    max_range_days: Annotated[dict[JobType, int] | None, Env(
        "REPORT_MAX_RANGE_DAYS", parse=range_days, default_doc=_range_default(),
        doc="the widest `start_date`..`end_date` a job may name, both days counted: a number for "
        "every job type, or `TYPE=DAYS` pairs separated by commas "
        "(`TELEMETRY_EXPORT=31,FEED_INTAKE_EXPORT=730`); a wider create is a 400. Without "
        "`end_date` the range runs to today; without `start_date` the upstream's own window "
        "applies",
    )] = None
    demo_now: Annotated[dt.datetime | None, Env(
        "DEMO_NOW", parse=instant, default_doc="the real time",
        doc="the instant the demo upstream takes as now (ISO 8601 with its offset, "
        '`2026-01-18T12:00:00Z`): the demo serves the same "last 7 days" any day',
    )] = None
    worker_tenant_concurrency: Annotated[int | None, Env(
        "WORKER_TENANT_CONCURRENCY", parse=positive_int,
        default_doc="one fewer than WORKER_CONCURRENCY, at least 1",
        doc="exports of one tenant one worker process runs at once; a job of a tenant at its "
        "share goes to the back of the queue unclaimed (no attempt counted), so a tenant with a "
        "backlog never holds every slot",
    )] = None
    max_unfinished_jobs: Annotated[int, Env(
        "REPORT_MAX_UNFINISHED_JOBS", parse=non_negative_int,
        doc="queued + running jobs one tenant may have; a create beyond is a 429 "
        "`TOO_MANY_JOBS` with `Retry-After` (a replay of an earlier create still answers 200); "
        "`0`: no cap (see \"Fairness between tenants\")",
    )] = _POLICY.max_unfinished_jobs
    worker_http_host: Annotated[str, Env(
        "WORKER_HTTP_HOST", parse=text,
        doc="address of the worker's own HTTP port (`/metrics`, `/healthz`, `/readyz`; "
        "[Metrics](#metrics))",
    )] = "0.0.0.0"
    worker_http_port: Annotated[int, Env(
        "WORKER_HTTP_PORT", parse=port,
        doc="port of the worker's `/metrics`, `/healthz` and `/readyz`; `0` turns that server "
        "off. A port that cannot be bound at start stops the worker (exit 1, one line naming "
        "it; under `all`, the same as APP_PORT: exit 2, naming both); one taken between that "
        "check and the listen is logged as an error and the worker runs without it",
    )] = 9129
    http_header_timeout_sec: Annotated[float, Env(
        "HTTP_HEADER_TIMEOUT_SEC", parse=positive_float,
        doc="a client must send a request's head (method, path, headers) within this many "
        "seconds of connecting, or of the first byte of its next request on a kept-alive "
        "connection; else the connection is closed",
    )] = 10.0
    http_body_timeout_sec: Annotated[float, Env(
        "HTTP_BODY_TIMEOUT_SEC", parse=positive_float,
        doc="a client must send a request's whole body within this many seconds of its head; "
        "else the connection is closed",
    )] = 30.0
    http_max_connections: Annotated[int, Env(
        "HTTP_MAX_CONNECTIONS", parse=positive_int,
        doc="open client connections one api process holds; a new one beyond it closes the "
        'oldest connection still waiting for a request (see "Slow clients"); keep it below the '
        "process's file-descriptor limit (`ulimit -n`)",
    )] = 1000
    file_store: Annotated[str, Env(
        "FILE_STORE", parse=one_of("filesystem", "s3"),
        doc="where export files live: `filesystem` (under `EXPORT_ROOT`) or `s3` (an "
        'S3-compatible bucket, see "Export files in an object store"); `reportsvc dev` always '
        "uses its data folder",
    )] = "filesystem"
    s3_bucket: Annotated[str | None, Env(
        "S3_BUCKET", parse=text,
        doc="the bucket of the export files; required when `FILE_STORE=s3`",
    )] = None
    s3_prefix: Annotated[str, Env(
        "S3_PREFIX", parse=s3_prefix, empty_is_a_value=True,
        doc="key prefix of the files, `<prefix><tenant_id>/<job_id>/report.<ext>`; ending with "
        "`/`, or set to empty (`S3_PREFIX=`) for keys at the bucket's root",
    )] = "reports/"
    s3_endpoint_url: Annotated[str | None, Env(
        "S3_ENDPOINT_URL", parse=http_url, default_doc="AWS S3",
        doc="the store's URL for MinIO, GCS (`https://storage.googleapis.com`) or another "
        "S3-compatible server; path-style addressing is used when set",
    )] = None
    s3_region: Annotated[str | None, Env(
        "S3_REGION", parse=text,
        default_doc="the AWS chain's: AWS_REGION, AWS_DEFAULT_REGION or the profile",
        doc="the bucket's region",
    )] = None
    download_redirect: Annotated[bool, Env(
        "REPORT_DOWNLOAD_REDIRECT", parse=flag,
        doc="`1`: once the download token is verified, `/file` answers 302 to a presigned GET of "
        "the object, valid while both token and file are, with the same "
        "`Content-Disposition`, so the bytes do not cross the api; needs `FILE_STORE=s3`",
    )] = False
    # webhooks (docs/operations.md): no allowed host turns them off
    webhook_allowed_hosts: Annotated[tuple[AllowedHost, ...] | None, Env(
        "REPORT_WEBHOOK_ALLOWED_HOSTS", parse=webhook_hosts, default_doc="webhooks off",
        doc="comma list of the hosts a job's `notify_url` may name "
        "(`hooks.example.com,http://10.0.0.7:9000`); an entry written `http://host` also allows "
        "plain http to it, else https is required; an entry written `host:port` allows that port "
        "alone (else any); a private or loopback IP literal is accepted only when listed as that "
        'literal (see "Webhooks")',
    )] = None
    webhook_secret: Annotated[str | None, Env(
        "REPORT_WEBHOOK_SECRET", parse=secret,
        doc="HMAC-SHA256 key of `X-FarmIQ-Signature`, at least 16 characters; required when "
        "`REPORT_WEBHOOK_ALLOWED_HOSTS` is set",
    )] = None
    webhook_max_attempts: Annotated[int, Env(
        "REPORT_WEBHOOK_MAX_ATTEMPTS", parse=positive_int,
        doc="POSTs of one delivery before it is `failed`",
    )] = _WEBHOOKS.max_attempts
    webhook_retry_base_sec: Annotated[float, Env(
        "REPORT_WEBHOOK_RETRY_BASE_SEC", parse=positive_float,
        doc="wait after the first failed attempt; doubles after each next one, capped at 3600 s",
    )] = _WEBHOOKS.retry_base_sec
    # schedules (docs/api.md, "Schedules"; docs/operations.md, "Schedules")
    max_schedules: Annotated[int, Env(
        "REPORT_MAX_SCHEDULES", parse=positive_int,
        doc="schedules one tenant may have; a create beyond is a 429 `TOO_MANY_SCHEDULES`",
    )] = _SCHEDULES.max_per_tenant
    scheduler_interval_sec: Annotated[float, Env(
        "REPORT_SCHEDULER_INTERVAL_SEC", parse=positive_float,
        doc="how often each worker's scheduler looks for due occurrences (50 a pass, passes back "
        "to back while more are due): a job is created about this long after its minute",
    )] = 5.0
    test_clock_anchor: Annotated[dt.datetime | None, Env(
        "REPORT_TEST_CLOCK_ANCHOR", parse=instant, default_doc="the real time",
        doc="**test only**: with `REPORT_TEST_CLOCK_SPEED`, the processes' clock runs that many "
        "times as fast as the real one from this instant on (ISO 8601 with its offset); "
        "processes given the same two values agree on the time. Never set it in production: "
        "leases, tokens, retention and schedules all read this clock",
    )] = None
    test_clock_speed: Annotated[float, Env(
        "REPORT_TEST_CLOCK_SPEED", parse=positive_float,
        doc="**test only**: how many times as fast as the real clock the processes' clock runs "
        "from `REPORT_TEST_CLOCK_ANCHOR` on (ignored without it)",
    )] = 1.0
    webhook_timeout_sec: Annotated[float, Env(
        "REPORT_WEBHOOK_TIMEOUT_SEC", parse=positive_float,
        doc="total deadline of one POST (connect, send, the answer's status line and headers): "
        "a receiver that has not answered by then is cut off and the attempt counts as failed; "
        "a claimed delivery's lease is at least three times this",
    )] = _WEBHOOKS.timeout_sec
    webhook_concurrency: Annotated[int, Env(
        "REPORT_WEBHOOK_CONCURRENCY", parse=positive_int,
        doc="webhook POSTs one worker process has in flight at once, each on a thread of its "
        "own, so one slow receiver delays no other",
    )] = _WEBHOOKS.concurrency
    # fmt: on


def _declarations() -> dict[str, Env]:
    hints = get_type_hints(Settings, include_extras=True)
    return {
        setting: next(m for m in hints[setting].__metadata__ if isinstance(m, Env))
        for setting in Settings.__struct_fields__
    }


# setting -> its declaration, in the order of the fields (the order problems are reported in)
DECLARED: Mapping[str, Env] = _declarations()
SETTING_TO_VARIABLE = {setting: env.names[0] for setting, env in DECLARED.items()}
_DEFAULTS = Settings()

# upstream -> the setting of its base URL: the one whose variables adapters.upstream.config's
# BASE_URLS names (the map of upstream, UpstreamConfig attribute and variables)
UPSTREAM_URLS: Mapping[Upstream, str] = {
    upstream: setting
    for upstream, where in BASE_URLS.items()
    for setting, declared in DECLARED.items()
    if declared.names == where.variables
}


def variable_of(setting: str, env: Mapping[str, str]) -> str:
    """The variable ``setting`` was read from in ``env`` (the alias set, ``PORT`` for the port
    when only it is), else its main name: what a message about its value should name."""
    names = DECLARED[setting].names
    return next((name for name in names if env.get(name)), names[0])


def shown_default(setting: str) -> str:
    """The default as an operator would set it (``0``/``1`` for a flag), or ``-`` for none."""
    value = getattr(_DEFAULTS, setting)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def fallbacks(setting: str) -> str:
    """``APP_PORT (else PORT, else 5129)``: where a setting comes from, for a --help text."""
    main, *aliases = DECLARED[setting].names
    default = shown_default(setting)
    rest = [*aliases, *([] if default == "-" else [default])]
    return main + (f" (else {', else '.join(rest)})" if rest else "")


def _missing(setting: str) -> str:
    hint = DECLARED[setting].hint
    return f"{SETTING_TO_VARIABLE[setting]} is required but not set" + (f": {hint}" if hint else "")


T = TypeVar("T")


def required_value(value: T | None, setting: str) -> T:
    """``value``, refused as :func:`load_settings` refuses a missing required setting."""
    if value is None or value == "":
        raise ConfigError(_missing(setting))
    return value


def load_settings(env: Mapping[str, str], *, required: Iterable[str] = ()) -> Settings:
    """Settings from ``env``; ``required`` names settings this process cannot run without.

    Every problem is found before one is reported: the malformed variables first, then the
    required ones missing, then the settings that contradict each other."""
    values: dict[str, object] = {}
    problems: list[str] = []
    malformed: set[str] = set()
    for setting, declared in DECLARED.items():
        for name in declared.names:
            raw = env.get(name)
            # empty counts as unset, except where it is a value (a claim not required, no S3 prefix)
            if raw is not None and (raw != "" or declared.empty_is_a_value):
                try:
                    values[setting] = declared.parse(name, raw)
                except ConfigError as exc:
                    hint = f": {declared.hint}" if declared.hint else ""
                    problems.extend(problem + hint for problem in exc.problems)
                    malformed.add(setting)
                break
    for setting in required:
        if values.get(setting) is None and setting not in malformed:
            problems.append(_missing(setting))
    if values.get("file_store") == "s3" and not values.get("s3_bucket"):
        problems.append("S3_BUCKET is required when FILE_STORE=s3")
    if values.get("webhook_allowed_hosts") and not values.get("webhook_secret"):
        problems.append(
            "REPORT_WEBHOOK_SECRET is required when REPORT_WEBHOOK_ALLOWED_HOSTS is set: "
            "the key webhooks are signed with, at least 16 characters"
        )
    if values.get("download_redirect") and values.get("file_store") != "s3":
        problems.append("REPORT_DOWNLOAD_REDIRECT=1 needs FILE_STORE=s3")
    problems.extend(proxy_problems(env))
    if problems:
        raise ConfigError(*problems)
    return Settings(**values)  # type: ignore[arg-type]
