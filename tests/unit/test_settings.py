"""Settings from the environment: every variable, its aliases, defaults, and clear errors."""

from __future__ import annotations

import pytest

from entrypoints.settings import ConfigError, Settings, load_settings

SECRET = "0123456789abcdef-secret"


def test_unconfigured_knobs_are_the_defaults_of_the_core_and_the_adapters_they_configure() -> None:
    from adapters.upstream.config import UpstreamConfig
    from entrypoints.containers import policy_from, upstream_config
    from entrypoints.runtime.connections import ConnectionLimits
    from entrypoints.runtime.serving import connection_limits
    from reportcore.policy import Policy

    settings = load_settings({})
    assert policy_from(settings) == Policy()
    assert upstream_config(settings) == UpstreamConfig()
    assert connection_limits(settings) == ConnectionLimits()


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.download_ttl_sec == 900
    assert settings.export_root == "/data/exports"
    assert settings.worker_concurrency == 1
    assert settings.jwt_issuer == "farmiq"
    assert settings.jwt_audience == "farmiq-api"
    assert settings.retention_sec == 604_800
    assert settings.host == "0.0.0.0"
    assert settings.port == 5129
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    for unset in (
        "database_url",
        "rabbitmq_url",
        "download_secret",
        "jwt_secret",
        "feed_service_url",
        "telemetry_service_url",
        "weighvision_url",
        "internal_service_token",
    ):
        assert getattr(settings, unset) is None, unset


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("DATABASE_URL", "postgresql://u:p@db:5432/reports", "database_url", None),
        ("DATABASE_URL", "postgres://db/reports", "database_url", None),
        ("RABBITMQ_URL", "amqp://guest:guest@mq:5672/%2F", "rabbitmq_url", None),
        ("RABBITMQ_URL", "amqps://mq/vh", "rabbitmq_url", None),
        ("REPORT_DOWNLOAD_SECRET", SECRET, "download_secret", None),
        ("REPORT_DOWNLOAD_TTL_SEC", "60", "download_ttl_sec", 60),
        ("EXPORT_ROOT", "/srv/exports", "export_root", None),
        ("WORKER_CONCURRENCY", "8", "worker_concurrency", 8),
        ("JWT_SECRET", SECRET, "jwt_secret", None),
        ("JWT_ISSUER", "issuer-x", "jwt_issuer", None),
        ("JWT_AUDIENCE", "aud-x", "jwt_audience", None),
        ("CLOUD_FEED_SERVICE_URL", "http://feed:3000", "feed_service_url", None),
        ("CLOUD_TELEMETRY_SERVICE_URL", "http://tel:3000", "telemetry_service_url", None),
        ("CLOUD_WEIGHVISION_READMODEL_URL", "https://wv:3000", "weighvision_url", None),
        ("INTERNAL_SERVICE_TOKEN", "svc-token", "internal_service_token", None),
        ("REPORT_RETENTION_SEC", "3600", "retention_sec", 3600),
        ("REPORT_RETENTION_SEC", "0", "retention_sec", 0),
        ("HOST", "127.0.0.1", "host", None),
        ("APP_PORT", "8080", "port", 8080),
        ("APP_PORT", "0", "port", 0),
        ("REPORT_LEASE_SEC", "12.5", "lease_sec", 12.5),
        ("REPORT_MAX_ATTEMPTS", "5", "max_attempts", 5),
        ("REPORT_RECOVERY_INTERVAL_SEC", "0.5", "recovery_interval_sec", 0.5),
        ("UPSTREAM_TIMEOUT_SEC", "3", "upstream_timeout_sec", 3.0),
        ("UPSTREAM_RETRIES", "0", "upstream_retries", 0),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("LOG_FORMAT", "JSON", "log_format", "json"),
    ],
)
def test_every_variable_sets_its_setting(
    variable: str, value: str, setting: str, expected: object
) -> None:
    settings = load_settings({variable: value})
    assert getattr(settings, setting) == (value if expected is None else expected)


@pytest.mark.parametrize(
    ("alias", "setting"),
    [
        ("FEED_SERVICE_URL", "feed_service_url"),
        ("FEED_BASE_URL", "feed_service_url"),
        ("TELEMETRY_SERVICE_URL", "telemetry_service_url"),
        ("WEIGHVISION_SERVICE_URL", "weighvision_url"),
        ("PORT", "port"),
    ],
)
def test_an_alias_sets_the_same_setting(alias: str, setting: str) -> None:
    value = "7000" if setting == "port" else "http://svc:1234"
    expected: object = 7000 if setting == "port" else value
    assert getattr(load_settings({alias: value}), setting) == expected


@pytest.mark.parametrize(
    ("names", "setting"),
    [
        (("CLOUD_FEED_SERVICE_URL", "FEED_SERVICE_URL", "FEED_BASE_URL"), "feed_service_url"),
        (("CLOUD_TELEMETRY_SERVICE_URL", "TELEMETRY_SERVICE_URL"), "telemetry_service_url"),
        (("CLOUD_WEIGHVISION_READMODEL_URL", "WEIGHVISION_SERVICE_URL"), "weighvision_url"),
    ],
)
def test_the_main_name_wins_over_its_aliases_and_earlier_aliases_over_later(
    names: tuple[str, ...], setting: str
) -> None:
    env = {name: f"http://{name.lower()}:1" for name in names}
    assert getattr(load_settings(env), setting) == f"http://{names[0].lower()}:1"
    env.pop(names[0])
    assert getattr(load_settings(env), setting) == f"http://{names[1].lower()}:1"


def test_app_port_wins_over_port() -> None:
    assert load_settings({"APP_PORT": "6001", "PORT": "6002"}).port == 6001


def test_an_empty_variable_counts_as_unset() -> None:
    assert load_settings({"APP_PORT": "", "PORT": "6002"}).port == 6002
    with pytest.raises(ConfigError, match=r"^JWT_SECRET is required but not set: "):
        load_settings({"JWT_SECRET": ""}, required=["jwt_secret"])


def test_the_expected_issuer_and_audience_default_to_farmiqs_when_unset() -> None:
    settings = load_settings({})
    assert (settings.jwt_issuer, settings.jwt_audience) == ("farmiq", "farmiq-api")
    settings = load_settings({"JWT_ISSUER": " idp ", "JWT_AUDIENCE": "reports"})
    assert (settings.jwt_issuer, settings.jwt_audience) == ("idp", "reports")


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_issuer_or_audience_set_to_empty_means_the_claim_is_not_required(empty: str) -> None:
    # unlike every other variable, where empty counts as unset and the default applies
    assert load_settings({"JWT_ISSUER": empty}).jwt_issuer is None
    assert load_settings({"JWT_ISSUER": empty}).jwt_audience == "farmiq-api"
    assert load_settings({"JWT_AUDIENCE": empty}).jwt_audience is None
    assert load_settings({"JWT_AUDIENCE": empty}).jwt_issuer == "farmiq"


def test_a_missing_jwt_secret_says_what_to_add() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({}, required=["jwt_secret"])
    message = str(raised.value)
    assert message.startswith("JWT_SECRET is required but not set: add JWT_SECRET")
    assert "HS256 key" in message
    assert "identity service (cloud-identity-access)" in message
    assert "at least 16 characters" in message


def test_a_short_jwt_secret_says_what_it_must_be() -> None:
    with pytest.raises(ConfigError, match=r"^JWT_SECRET must be at least 16 characters: .*HS256"):
        load_settings({"JWT_SECRET": "short"}, required=["jwt_secret"])


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://db/reports"),
        ("DATABASE_URL", "postgresql:///no-host"),
        ("RABBITMQ_URL", "http://mq:5672"),
        # a port or a query the clients cannot take: a traceback at the first connection
        ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:56x72/%2F"),
        ("RABBITMQ_URL", "amqp://guest:guest@mq/%2F?heartbeat=abc"),
        ("RABBITMQ_URL", "amqp://guest:guest@mq/%2F?no_such_parameter=1"),
        ("DATABASE_URL", "postgresql://db:99999/reports"),
        ("CLOUD_FEED_SERVICE_URL", "http://127.0.0.1:99999"),
        ("CLOUD_FEED_SERVICE_URL", "http://feed:80x/"),
        ("REPORT_DOWNLOAD_SECRET", "short"),
        ("JWT_SECRET", "too-short"),
        ("REPORT_DOWNLOAD_TTL_SEC", "ten"),
        ("REPORT_DOWNLOAD_TTL_SEC", "0"),
        ("REPORT_DOWNLOAD_TTL_SEC", "-5"),
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_CONCURRENCY", "2.5"),
        # past AMQP's largest prefetch: the consumer failed every 2 s while probes said ready
        ("WORKER_CONCURRENCY", "70000"),
        # past a C ssize_t: every gzip page crashed the export (OverflowError)
        ("UPSTREAM_MAX_PAGE_BYTES", "9223372036854775807"),
        # float() reads other scripts' digits and underscores; a lease of 1 ms is none
        ("REPORT_LEASE_SEC", "\u0661\u0660"),
        ("REPORT_LEASE_SEC", "1_0"),
        ("REPORT_LEASE_SEC", "5e-324"),
        ("REPORT_LEASE_SEC", "0.0005"),
        # a type named twice: the last won in silence
        ("REPORT_MAX_RANGE_DAYS", "TELEMETRY_EXPORT=31,TELEMETRY_EXPORT=92"),
        # commas naming no host read as "webhooks off" in silence
        ("REPORT_WEBHOOK_ALLOWED_HOSTS", " , "),
        ("CLOUD_FEED_SERVICE_URL", "feed:3000"),
        ("FEED_BASE_URL", "ftp://feed"),
        ("CLOUD_TELEMETRY_SERVICE_URL", "telemetry"),
        ("WEIGHVISION_SERVICE_URL", "http://"),
        ("REPORT_RETENTION_SEC", "forever"),
        ("APP_PORT", "65536"),
        ("PORT", "http"),
        ("REPORT_LEASE_SEC", "0"),
        ("REPORT_LEASE_SEC", "soon"),
        ("REPORT_MAX_ATTEMPTS", "0"),
        ("REPORT_RECOVERY_INTERVAL_SEC", "-1"),
        ("UPSTREAM_TIMEOUT_SEC", "nan-ish"),
        ("UPSTREAM_RETRIES", "-1"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("EXPORT_ROOT", "   "),
    ],
)
def test_a_malformed_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert message.startswith(variable + " "), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://root@/reports?host=/var/run/postgresql",
        "postgresql:///reports?host=/cloudsql/project:region:instance&user=app",
    ],
)
def test_a_database_on_a_unix_socket_is_taken(url: str) -> None:
    """libpq's socket URLs (a Cloud SQL proxy's) name the host as ?host=: they were refused as
    'must be a postgresql:// URL with a host' though psycopg connects with them."""
    assert load_settings({"DATABASE_URL": url}).database_url == url


def test_a_malformed_secret_is_not_echoed_back() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"JWT_SECRET": "pw-123456"})
    assert "pw-123456" not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "variable"),
    [
        ("database_url", "DATABASE_URL"),
        ("rabbitmq_url", "RABBITMQ_URL"),
        ("download_secret", "REPORT_DOWNLOAD_SECRET"),
        ("jwt_secret", "JWT_SECRET"),
        ("feed_service_url", "CLOUD_FEED_SERVICE_URL"),
        ("telemetry_service_url", "CLOUD_TELEMETRY_SERVICE_URL"),
        ("weighvision_url", "CLOUD_WEIGHVISION_READMODEL_URL"),
    ],
)
def test_a_missing_required_variable_is_named(setting: str, variable: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable} is required but not set($|: )"):
        load_settings({}, required=[setting])


def test_required_variables_that_are_set_pass() -> None:
    settings = load_settings(
        {"DATABASE_URL": "postgresql://db/x", "JWT_SECRET": SECRET},
        required=["database_url", "jwt_secret"],
    )
    assert settings.database_url == "postgresql://db/x"
    assert settings.jwt_secret == SECRET


def test_values_are_trimmed() -> None:
    settings = load_settings({"WORKER_CONCURRENCY": " 4 ", "JWT_ISSUER": " farmiq-x "})
    assert settings.worker_concurrency == 4
    assert settings.jwt_issuer == "farmiq-x"


def test_the_maximum_range_is_read_per_job_type_or_for_all() -> None:
    from reportcore.jobs import JobType

    one = load_settings({"REPORT_MAX_RANGE_DAYS": "TELEMETRY_EXPORT=31, FEED_INTAKE_EXPORT=400"})
    assert one.max_range_days == {JobType.TELEMETRY_EXPORT: 31, JobType.FEED_INTAKE_EXPORT: 400}
    every = load_settings({"REPORT_MAX_RANGE_DAYS": "60"})
    assert every.max_range_days == {t: 60 for t in JobType}
    assert load_settings({}).max_range_days is None


@pytest.mark.parametrize(
    "raw", ["0", "TELEMETRY=5", "TELEMETRY_EXPORT=", "FEED_INTAKE_EXPORT=\u0665"]
)
def test_a_malformed_maximum_range_stops_the_process_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^REPORT_MAX_RANGE_DAYS must be a number of days"):
        load_settings({"REPORT_MAX_RANGE_DAYS": raw})


def test_whole_numbers_in_settings_are_ascii_digits_only() -> None:
    with pytest.raises(ConfigError, match="WORKER_CONCURRENCY must be a whole number"):
        load_settings({"WORKER_CONCURRENCY": "\u0664"})


def test_the_s3_store_is_chosen_by_file_store_and_needs_a_bucket() -> None:
    chosen = load_settings({"FILE_STORE": "S3", "S3_BUCKET": "b", "REPORT_DOWNLOAD_REDIRECT": "1"})
    assert (chosen.file_store, chosen.s3_bucket, chosen.s3_prefix) == ("s3", "b", "reports/")
    assert chosen.download_redirect is True
    with pytest.raises(ConfigError, match="S3_BUCKET is required when FILE_STORE=s3"):
        load_settings({"FILE_STORE": "s3"})
    with pytest.raises(ConfigError, match="REPORT_DOWNLOAD_REDIRECT=1 needs FILE_STORE=s3"):
        load_settings({"REPORT_DOWNLOAD_REDIRECT": "1"})
    with pytest.raises(ConfigError, match="FILE_STORE must be filesystem or s3"):
        load_settings({"FILE_STORE": "gcs"})
    with pytest.raises(ConfigError, match="S3_PREFIX must end with /"):
        load_settings({"FILE_STORE": "s3", "S3_BUCKET": "b", "S3_PREFIX": "reports"})


@pytest.mark.parametrize("raw", ["", "  "])
def test_an_empty_s3_prefix_puts_the_files_at_the_bucket_s_root(raw: str) -> None:
    """docs/operations.md: the prefix may be empty; set to empty it is not the default."""
    chosen = load_settings({"FILE_STORE": "s3", "S3_BUCKET": "b", "S3_PREFIX": raw})
    assert chosen.s3_prefix == ""


@pytest.mark.parametrize("raw", ["inf", "Infinity", "1e400", "nan", "-1", "0"])
def test_a_duration_must_be_a_finite_number_above_zero(raw: str) -> None:
    """``float()`` reads ``inf`` and ``1e400`` as infinity: a lease never renewed, a timeout
    never reached, an overflow in the first sum of times (docs/operations.md: decimals)."""
    with pytest.raises(
        ConfigError, match=r"^UPSTREAM_TIMEOUT_SEC must be (at least|a finite|a number)"
    ):
        load_settings({"UPSTREAM_TIMEOUT_SEC": raw})


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("REPORT_DOWNLOAD_TTL_SEC", "1000000000000"),  # every download a 500 (an overflow)
        ("REPORT_DOWNLOAD_TTL_SEC", "100000000000"),  # exp > 10^11: read as milliseconds
        ("REPORT_RETENTION_SEC", "315360001"),
        ("REPORT_LEASE_SEC", "1e12"),
        ("UPSTREAM_TIMEOUT_SEC", "315360000.5"),
    ],
)
def test_a_duration_is_at_most_ten_years(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: raw})
    assert raised.value.problems == (
        f"{variable} must be at most 315360000 (ten years), got {raw!r}",
    )
    ten_years = load_settings({variable: "315360000"})  # the bound itself is fine
    assert ten_years is not None


def test_every_problem_is_found_before_one_is_reported() -> None:
    env = {"REPORT_LEASE_SEC": "0", "LOG_LEVEL": "loud", "FILE_STORE": "s3"}
    with pytest.raises(ConfigError) as raised:
        load_settings(env, required=("database_url", "jwt_secret"))
    assert raised.value.problems == (
        "REPORT_LEASE_SEC must be at least 0.001 (a millisecond), got '0'",
        "LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'loud'",
        "DATABASE_URL is required but not set",
        raised.value.problems[3],  # JWT_SECRET's, with its hint (tests/unit/test_cli.py)
        "S3_BUCKET is required when FILE_STORE=s3",
    )
    assert raised.value.problems[3].startswith("JWT_SECRET is required but not set: ")
    assert str(raised.value) == "; ".join(raised.value.problems)


def test_a_malformed_required_variable_is_named_once_as_malformed() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"DATABASE_URL": "mysql://db/x"}, required=("database_url",))
    assert raised.value.problems == (
        "DATABASE_URL must be a postgresql:// URL with a host, got 'mysql://db/x'",
    )


def test_each_settings_parser_gives_a_value_of_its_fields_type() -> None:
    # the declaration's parser and the field's type sit side by side; mypy does not compare
    # them (Annotated metadata), this does
    from typing import get_type_hints

    from entrypoints.settings import DECLARED

    fields = get_type_hints(Settings)
    for setting, declared in DECLARED.items():
        given = get_type_hints(declared.parse)["return"]
        assert fields[setting] in (given, given | None), setting


def test_every_upstream_has_the_setting_its_variables_are_read_into() -> None:
    # one map (adapters.upstream.config.BASE_URLS) says which variables set which upstream's
    # URL; the settings, the worker's warnings, the export command and the container read it
    from adapters.upstream.config import BASE_URLS
    from entrypoints.containers import upstream_config
    from entrypoints.settings import SETTING_TO_VARIABLE, UPSTREAM_URLS
    from reportcore.jobtypes import Upstream

    assert set(UPSTREAM_URLS) == set(BASE_URLS) == set(Upstream)
    env = {SETTING_TO_VARIABLE[s]: f"http://{u.name.lower()}" for u, s in UPSTREAM_URLS.items()}
    config = upstream_config(load_settings(env))
    for upstream, where in BASE_URLS.items():
        assert getattr(config, where.attribute) == f"http://{upstream.name.lower()}"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DATABASE_URL", "postgresql+psycopg://admin:S3cretPassw0rd@db/x"),
        ("DATABASE_URL", "postgresql://admin:S3cretPassw0rd@db:99999/x"),
        ("DATABASE_URL", "postgresql://admin:S3cret@Passw0rd@[db/x"),
        ("RABBITMQ_URL", "http://guest:S3cretPassw0rd@mq:5672/"),
        ("FEED_SERVICE_URL", "ftp://svc:S3cretPassw0rd@feed.internal"),
    ],
)
def test_a_refused_url_is_shown_without_its_password(name: str, raw: str) -> None:
    """The message quoted the whole URL: `reportsvc migrate` with a mistyped scheme printed
    the database's password on stderr (and into whatever collects it)."""
    with pytest.raises(ConfigError) as refused:
        load_settings({name: raw})
    message = str(refused.value)
    assert "S3cret" not in message and "Passw0rd" not in message
    assert "***@" in message
