"""The composition root: the one place that knows which adapter serves which port.

:class:`Container` declares the real adapters of every port and picks them by the
:class:`Profile` it is built with: the scaled-out service (PostgreSQL, RabbitMQ, HTTP upstreams,
the folder or S3 bucket) or the embedded default of ``reportsvc dev`` (SQLite, the in-process
queue, the demo upstream). Nothing is an in-memory stand-in: a setting a profile needs and does
not have stops the process. Tests replace adapters with ``.override()``.

Nothing connects when this module runs or a container is built: adapters that hold connections
are ``Resource`` providers, created on first use or by ``container.init_resources()`` and
closed by ``container.shutdown_resources()``. The adapters' modules are imported inside the
functions that make them, so that a process only loads the drivers it uses (``reportsvc
token`` needs no PostgreSQL driver). A process calls ``init_resources()`` before it shares the
container between threads: a ``Resource`` provider does not lock its first creation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from dependency_injector import containers, providers

from adapters.clock import ScaledClock, SystemClock
from adapters.cron import CronsimRules
from adapters.metering import MeteredJobQueue, MeteredJobRepository
from reportcore.deps import Deps
from reportcore.encoding import CORE_ROW_FORMATS, RowFormats
from reportcore.jobs import ReportFormat
from reportcore.jobtypes import JOB_TYPES
from reportcore.policy import ExportLimits
from reportcore.ports import (
    ByteSink,
    Clock,
    FileStore,
    JobConsumer,
    RowEncoder,
    ScheduleRepository,
    SheetRequest,
    WebhookOutbox,
)
from reportcore.schedules import ScheduleRules
from reportcore.service import ReportService
from reportcore.testing import FakeClock, InMemoryQueue
from reportcore.usecases import Policy
from reportcore.webhooks import WebhookRules

from .runtime.extras import require
from .settings import UPSTREAM_URLS, ConfigError, Settings

if TYPE_CHECKING:
    from .runtime.otel import Tracing


def policy_from(settings: Settings) -> Policy:
    """The lifecycle knobs of the core, from settings; knobs the settings do not carry keep
    the core's defaults."""
    defaults = Policy()
    return msgspec.structs.replace(
        defaults,
        download_ttl_sec=settings.download_ttl_sec,
        retention_sec=settings.retention_sec,
        lease_sec=settings.lease_sec,
        # a short lease needs a heartbeat often enough to renew it a few times before it ends
        heartbeat_sec=min(defaults.heartbeat_sec, settings.lease_sec / 3),
        max_attempts=settings.max_attempts,
        max_range_days=dict(settings.max_range_days or {}),
        notify_hosts=settings.webhook_allowed_hosts or (),
        limits=ExportLimits(
            max_pages=settings.export_max_pages,
            max_rows=settings.export_max_rows,
            max_bytes=settings.export_max_bytes,
            max_sec=settings.export_max_sec,
        ),
        max_unfinished_jobs=settings.max_unfinished_jobs,
    )


def webhook_rules_from(settings: Settings) -> WebhookRules:
    """The webhook knobs of the core, from settings."""
    return msgspec.structs.replace(
        WebhookRules(),
        secret=(settings.webhook_secret or "").encode(),
        allowed_hosts=settings.webhook_allowed_hosts or (),
        max_attempts=settings.webhook_max_attempts,
        retry_base_sec=settings.webhook_retry_base_sec,
        timeout_sec=settings.webhook_timeout_sec,
        concurrency=settings.webhook_concurrency,
        # an attempt ends by its deadline: the lease outlives it, so a live sender keeps it
        lease_sec=max(WebhookRules().lease_sec, 3 * settings.webhook_timeout_sec),
    )


def schedule_rules_from(settings: Settings) -> ScheduleRules:
    """The schedules' knobs of the core, from settings."""
    return msgspec.structs.replace(ScheduleRules(), max_per_tenant=settings.max_schedules)


def make_clock(settings: Settings) -> Clock:
    """The real time, unless the test-only ``REPORT_TEST_CLOCK_ANCHOR`` speeds it up."""
    if settings.test_clock_anchor is not None:
        return ScaledClock(settings.test_clock_anchor, settings.test_clock_speed)
    return SystemClock()


def make_schedules(sql_jobs: Any) -> ScheduleRepository:
    """The schedules, in the SQL repository's database."""
    from adapters.sql_schedules import SqlScheduleRepository

    return SqlScheduleRepository(sql_jobs)


def demo_clock(settings: Settings) -> Clock:
    """The demo upstream's "now": ``DEMO_NOW`` held still when set, else the real time."""
    return FakeClock(settings.demo_now) if settings.demo_now is not None else SystemClock()


def _xlsx_rows(request: SheetRequest, out: ByteSink) -> RowEncoder:
    """xlsx rows. xlsxwriter is loaded by a worker's first xlsx export, not by every
    worker's first job: a worker's peak RSS is a target (docs/performance.md)."""
    from adapters.xlsx import XlsxEncoder

    return XlsxEncoder(request, out)


def row_formats() -> RowFormats:
    """The row formats a worker writes: the core's CSV and xlsx."""
    return {**CORE_ROW_FORMATS, ReportFormat.XLSX: _xlsx_rows}


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """Which adapters serve the ports: the scaled-out service's (PostgreSQL, RabbitMQ, the
    configured upstreams and file store) or the embedded ones of ``reportsvc dev`` (SQLite and
    files under ``data_dir``, the in-process queue, every upstream at ``upstream_url``)."""

    embedded: bool = False
    data_dir: Path | None = None
    upstream_url: str | None = None


SERVICE = Profile()


def embedded(data_dir: Path, upstream_url: str) -> Profile:
    """The profile of ``reportsvc dev``."""
    return Profile(embedded=True, data_dir=data_dir, upstream_url=upstream_url)


class _Closable(Protocol):
    def close(self) -> None: ...


def _closing(make: Callable[..., _Closable], *args: Any, **kwargs: Any) -> Iterator[_Closable]:
    """A resource that is closed on ``shutdown_resources()``."""
    resource = make(*args, **kwargs)
    try:
        yield resource
    finally:
        resource.close()


def _hooks(tracing: Tracing | None, port: str) -> dict[str, Any]:
    """The tracing hooks one adapter takes (none without tracing)."""
    if tracing is None:
        return {}
    if port == "queue":
        return {"around_publish": tracing.publishing}
    if port == "consumer":
        return {"around_delivery": tracing.consuming}
    return {"on_client": tracing.instrument_client}


def _needed(value: str | None, variable: str) -> str:
    """A setting the profile cannot run without: a missing one stops the process (load_settings
    checks the command's required settings first; this is the last line, never a fake)."""
    if not value:
        raise ConfigError(f"{variable} is required but not set")
    return value


def open_sql_jobs(settings: Settings, profile: Profile) -> Iterator[Any]:
    """The SQL job repository: PostgreSQL (``DATABASE_URL``), or SQLite under the embedded
    profile's data folder. Closed at shutdown."""
    if profile.embedded:
        from adapters.sqlite import SqliteJobRepository

        assert profile.data_dir is not None
        repository = SqliteJobRepository(str(profile.data_dir / "jobs.sqlite3"))
        try:
            yield repository
        finally:
            repository.close()
        return
    from adapters.postgres import PostgresJobRepository, create_pool

    pool = create_pool(_needed(settings.database_url, "DATABASE_URL"))
    try:
        yield PostgresJobRepository(pool)
    finally:
        pool.close()


def open_queue(settings: Settings, profile: Profile, tracing: Tracing | None) -> Iterator[Any]:
    """The job queue: RabbitMQ (``RABBITMQ_URL``), or the in-process queue of the embedded
    profile, which is its consumer too. Metered; closed at shutdown."""
    if profile.embedded:
        yield MeteredJobQueue(InMemoryQueue())
        return
    from adapters.rabbitmq import RabbitMQQueue

    url = _needed(settings.rabbitmq_url, "RABBITMQ_URL")
    queue = RabbitMQQueue(url, **_hooks(tracing, "queue"))
    try:
        yield MeteredJobQueue(queue)
    finally:
        queue.close()


ACK_MARGIN_SEC = 15 * 60


def make_consumer(
    settings: Settings, profile: Profile, queue: Any, tracing: Tracing | None
) -> JobConsumer:
    """What a worker consumes: ``report.jobs`` on RabbitMQ, or the embedded in-process queue."""
    if profile.embedded:
        return queue.inner  # type: ignore[no-any-return]
    from adapters.rabbitmq import RabbitMQConsumer

    url = _needed(settings.rabbitmq_url, "RABBITMQ_URL")
    # a message is acknowledged when its export ends: the broker must wait that long for it
    # (the export's limit, and a margin for the claim, the commit and a slow database)
    timeout = settings.export_max_sec + ACK_MARGIN_SEC
    return RabbitMQConsumer(url, consumer_timeout_sec=timeout, **_hooks(tracing, "consumer"))


def open_source(settings: Settings, profile: Profile, tracing: Tracing | None) -> Iterator[Any]:
    """The upstream FarmIQ services over HTTP (every one at the demo upstream's URL under the
    embedded profile). Closed at shutdown."""
    from adapters.upstream import HttpRecordSource

    config = upstream_config(settings, every_upstream=profile.upstream_url)
    yield from _closing(HttpRecordSource, config, **_hooks(tracing, "source"))


def make_store(settings: Settings, profile: Profile, command: str = "all") -> FileStore:
    """The export files' store: the folder (``EXPORT_ROOT``, or the embedded profile's), or the
    S3 bucket that ``FILE_STORE=s3`` names, through a client fit for ``command``: ``api`` one
    bounded for answering requests, ``worker`` one patient with uploads, ``all`` both (the
    bounded one for what a request may wait for: downloads, a cancel's cleanup)."""
    if not profile.embedded and settings.file_store == "s3":
        from adapters.s3 import S3Store, create_client, new_session

        bucket = _needed(settings.s3_bucket, "S3_BUCKET")
        # one session: both clients share the service model it loads
        client = partial(
            create_client, settings.s3_endpoint_url, settings.s3_region, session=new_session()
        )
        main = client(serving=command == "api")
        serving = client(serving=True) if command == "all" else None
        return S3Store(
            main, bucket, settings.s3_prefix, redirect=settings.download_redirect, serving=serving
        )
    from adapters.filesystem import FilesystemStore

    root = str(profile.data_dir / "exports") if profile.data_dir else settings.export_root
    return FilesystemStore(root)


def make_outbox(sql_jobs: Any) -> WebhookOutbox:
    """The webhook outbox, in the SQL repository's database (its transactions put deliveries)."""
    from adapters.sql_webhooks import SqlWebhookOutbox

    return SqlWebhookOutbox(sql_jobs)


def open_sender(settings: Settings) -> Iterator[Any]:
    """The webhook sender over HTTP, each attempt ending by ``REPORT_WEBHOOK_TIMEOUT_SEC``, with
    a connection for each of the ``REPORT_WEBHOOK_CONCURRENCY`` attempts the worker's pool
    (:class:`entrypoints.webhook_pool.WebhookPool`) has in flight. Closed at shutdown."""
    from adapters.webhook_sender import HttpWebhookSender

    yield from _closing(
        HttpWebhookSender, settings.webhook_timeout_sec, concurrency=settings.webhook_concurrency
    )


def download_secret(settings: Settings) -> bytes:
    """The key download tokens are signed with (empty in a process that issues none)."""
    return (settings.download_secret or "").encode()


class Container(containers.DeclarativeContainer):
    """The composition root: each port of ``reportcore`` and the adapter that serves it, for
    the :class:`Profile` given. Built with ``Container(settings=..., profile=...)`` (and
    ``tracing=providers.Object(...)`` when tracing is on); a missing one is an error, never an
    in-memory stand-in. Tests replace adapters with ``.override()``.

    Processes use :attr:`reports`, the application (every use case over :attr:`deps`).
    """

    settings = providers.Dependency(instance_of=Settings)
    profile = providers.Dependency(instance_of=Profile)
    tracing: providers.Provider[Tracing | None] = providers.Object(None)
    # the process: api, worker or all (the S3 store's clients differ, see make_store)
    command: providers.Provider[str] = providers.Object("all")

    policy = providers.Singleton(policy_from, settings)
    webhook_rules = providers.Singleton(webhook_rules_from, settings)
    # the file formats a worker writes as rows: the core's CSV and this service's xlsx
    formats = providers.Singleton(row_formats)
    job_types = providers.Object(JOB_TYPES)

    clock = providers.Singleton(make_clock, settings)
    sql_jobs = providers.Resource(open_sql_jobs, settings, profile)
    # the metered wrappers count creates, finishes and refused publishes (adapters.metrics)
    jobs = providers.Singleton(MeteredJobRepository, sql_jobs)
    queue = providers.Resource(open_queue, settings, profile, tracing)
    consumer = providers.Singleton(make_consumer, settings, profile, queue, tracing)
    source = providers.Resource(open_source, settings, profile, tracing)
    store = providers.Singleton(make_store, settings, profile, command)
    outbox = providers.Singleton(make_outbox, sql_jobs)
    schedules = providers.Singleton(make_schedules, sql_jobs)
    cron = providers.Singleton(CronsimRules)
    schedule_rules = providers.Singleton(schedule_rules_from, settings)
    sender = providers.Resource(open_sender, settings)

    deps = providers.Singleton(
        Deps,
        jobs=jobs,
        queue=queue,
        store=store,
        clock=clock,
        source=source,
        outbox=outbox,
        sender=sender,
        consumer=consumer,
        policy=policy,
        webhook_rules=webhook_rules,
        job_types=job_types,
        formats=formats,
        download_secret=providers.Callable(download_secret, settings),
        schedules=schedules,
        cron=cron,
        schedule_rules=schedule_rules,
    )
    reports = providers.Singleton(ReportService, deps)


def upstream_config(settings: Settings, every_upstream: str | None = None) -> Any:
    """The HTTP source's configuration from settings; ``every_upstream``: the one URL of every
    upstream (the demo upstream) instead of the configured ones."""
    from adapters.upstream import UpstreamConfig
    from adapters.upstream.config import BASE_URLS

    urls = {
        BASE_URLS[upstream].attribute: every_upstream or getattr(settings, setting)
        for upstream, setting in UPSTREAM_URLS.items()
    }
    config = UpstreamConfig(
        token=settings.internal_service_token,
        timeout_sec=settings.upstream_timeout_sec,
        retries=settings.upstream_retries,
        concurrency=settings.upstream_concurrency,
        host_concurrency=settings.upstream_host_concurrency,
        ca_bundle=settings.upstream_ca_bundle,
        client_cert=settings.upstream_client_cert,
        client_key=settings.upstream_client_key,
        transport=settings.upstream_transport,
        page_deadline_sec=settings.upstream_page_deadline_sec,
        max_page_bytes=settings.upstream_max_page_bytes,
        max_page_items=settings.upstream_max_page_items,
        # the demo upstream is in this process, on loopback: no proxy of the environment's
        # could reach it
        trust_env=every_upstream is None,
    )
    return msgspec.structs.replace(config, **urls)


def check_file_store(container: Container, *, writes: bool = True) -> None:
    """Raise :class:`reportcore.errors.StorageFailure` naming the cause when the configured
    store cannot be used (a bucket that is missing or refuses our credentials, an export
    folder this process cannot read, or with ``writes`` write), so that a process stops at
    start with one clear line instead of failing every job."""
    check = getattr(container.store(), "check", None)
    if callable(check):
        check(writes=writes)


def service_container(
    settings: Settings, tracing: Tracing | None = None, command: str = "all"
) -> Container:
    """The scaled-out service's container (``command``: ``reportsvc api``, ``worker`` or
    ``all``); with ``tracing``, the adapters get its hooks (publish and delivery spans carrying
    the trace context in AMQP headers, instrumented upstream clients). An extra the settings
    need and the environment lacks stops here, before anything is opened."""
    if settings.file_store == "s3":
        require("s3", "FILE_STORE=s3")
    return Container(
        settings=settings,
        profile=SERVICE,
        tracing=providers.Object(tracing),
        command=providers.Object(command),
    )


def embedded_container(settings: Settings, data_dir: Path, upstream_url: str) -> Container:
    """``reportsvc dev``'s container: SQLite and files under ``data_dir``, the in-process
    queue, every upstream served by the demo upstream at ``upstream_url``."""
    return Container(settings=settings, profile=embedded(data_dir, upstream_url))


def check_upstream_tls(settings: Settings) -> None:
    """The upstreams' CA bundle and client certificate load: a path that does not (missing,
    unreadable, not PEM, a key that does not match) is a configuration error at start rather
    than every export's failure. Only in the processes that ask upstream."""
    from adapters.upstream.client import TlsFilesError, ssl_context

    try:
        ssl_context(upstream_config(settings))
    except TlsFilesError as exc:
        names = {
            "ca_bundle": "UPSTREAM_CA_BUNDLE",
            "client_cert": "UPSTREAM_CLIENT_CERT / UPSTREAM_CLIENT_KEY",
        }
        variable = names.get(exc.field or "", "SSL_CERT_FILE / SSL_CERT_DIR")
        raise ConfigError(f"{variable}: {exc}") from exc
