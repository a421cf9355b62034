"""The composition root: the one place that knows which adapter serves which port.

``Container`` starts out wired to the in-memory adapters; :func:`wire_service` swaps in the
real ones (PostgreSQL, RabbitMQ, HTTP upstreams, filesystem) and :func:`wire_embedded` the
embedded ones of ``reportsvc dev``. Tests build a fresh container and override a provider.

Nothing connects when this module (or a wiring function) runs: adapters that hold connections
are ``Resource`` providers, created on first use or by ``container.init_resources()`` and
closed by ``container.shutdown_resources()``. The adapters' modules are imported inside the
wiring functions, so that a process only loads the drivers it uses (``reportsvc token`` needs
no PostgreSQL driver). A process calls ``init_resources()`` before it shares the container
between threads: a ``Resource`` provider does not lock its first creation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from dependency_injector import containers, providers

from adapters.clock import SystemClock
from reportcore.encoding import CORE_ROW_FORMATS, RowFormats
from reportcore.jobs import ReportFormat
from reportcore.ports import ByteSink, Clock, RowEncoder, SheetRequest
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    RecordingWebhookSender,
    StaticRecordSource,
)
from reportcore.usecases import Policy
from reportcore.webhooks import WebhookRules

from .runtime.extras import require
from .runtime.metering import MeteredJobQueue, MeteredJobRepository
from .settings import Settings

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
    )


def webhook_rules_from(settings: Settings) -> WebhookRules:
    """The webhook knobs of the core, from settings."""
    return msgspec.structs.replace(
        WebhookRules(),
        secret=(settings.webhook_secret or "").encode(),
        allowed_hosts=settings.webhook_allowed_hosts or (),
        max_attempts=settings.webhook_max_attempts,
        retry_base_sec=settings.webhook_retry_base_sec,
    )


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


class Container(containers.DeclarativeContainer):
    """Ports -> adapters. Every provider here is a port of ``reportcore`` or a knob."""

    settings = providers.Object(Settings())
    policy = providers.Singleton(policy_from, settings)
    clock = providers.Singleton(SystemClock)
    jobs = providers.ThreadSafeSingleton(InMemoryJobRepository)
    queue = providers.ThreadSafeSingleton(InMemoryQueue)
    consumer = providers.Callable(lambda q: q, queue)
    source = providers.ThreadSafeSingleton(StaticRecordSource, records={})
    store = providers.ThreadSafeSingleton(InMemoryFileStore)
    # the file formats a worker writes as rows: the core's CSV and this service's xlsx
    formats = providers.Singleton(row_formats)
    # the in-memory repository keeps its outbox; SQL ones share their database with it
    outbox = providers.Callable(lambda jobs: jobs.outbox, jobs)
    webhook_sender = providers.ThreadSafeSingleton(RecordingWebhookSender)
    webhook_rules = providers.Singleton(webhook_rules_from, settings)


def build_container(settings: Settings) -> Container:
    """A container over in-memory adapters with ``settings`` (tests override further)."""
    container = Container()
    container.settings.override(providers.Object(settings))
    return container


class _Closable(Protocol):
    def close(self) -> None: ...


def _closing(make: Callable[..., _Closable], *args: Any, **kwargs: Any) -> Iterator[_Closable]:
    """A resource that is closed on ``shutdown_resources()``."""
    resource = make(*args, **kwargs)
    try:
        yield resource
    finally:
        resource.close()


def upstream_config(settings: Settings, **urls: str | None) -> Any:
    """The HTTP source's configuration from settings; ``urls`` replace the configured ones."""
    from adapters.upstream import UpstreamConfig

    given: dict[str, str | None] = {
        "feed_url": settings.feed_service_url,
        "telemetry_url": settings.telemetry_service_url,
        "weighvision_url": settings.weighvision_url,
    }
    given.update(urls)
    return UpstreamConfig(
        feed_url=given["feed_url"],
        telemetry_url=given["telemetry_url"],
        weighvision_url=given["weighvision_url"],
        token=settings.internal_service_token,
        timeout_sec=settings.upstream_timeout_sec,
        retries=settings.upstream_retries,
        concurrency=settings.upstream_concurrency,
        host_concurrency=settings.upstream_host_concurrency,
        ca_bundle=settings.upstream_ca_bundle,
        client_cert=settings.upstream_client_cert,
        client_key=settings.upstream_client_key,
        transport=settings.upstream_transport,
    )


def wire_service(
    container: Container, settings: Settings, tracing: Tracing | None = None
) -> Container:
    """Wire the scaled-out service: PostgreSQL, RabbitMQ, HTTP upstreams, the file store;
    with ``tracing``, the adapters get its hooks (publish and delivery spans carrying the trace
    context in AMQP headers, instrumented upstream clients)."""
    from adapters.postgres import PostgresJobRepository, create_pool
    from adapters.rabbitmq import RabbitMQConsumer, RabbitMQQueue
    from adapters.upstream import HttpRecordSource

    hooks: dict[str, dict[str, Any]] = {"queue": {}, "consumer": {}, "source": {}}
    if tracing is not None:
        hooks["queue"]["around_publish"] = tracing.publishing
        hooks["consumer"]["around_delivery"] = tracing.consuming
        hooks["source"]["on_client"] = tracing.instrument_client
    container.settings.override(providers.Object(settings))
    pool = providers.Resource(_closing, create_pool, settings.database_url)
    # the metered wrappers count creates, finishes and refused publishes (adapters.metrics)
    container.jobs.override(
        providers.ThreadSafeSingleton(
            MeteredJobRepository, providers.ThreadSafeSingleton(PostgresJobRepository, pool)
        )
    )
    container.queue.override(
        providers.Singleton(
            MeteredJobQueue,
            providers.Resource(_closing, RabbitMQQueue, settings.rabbitmq_url, **hooks["queue"]),
        )
    )
    container.consumer.override(
        providers.Factory(RabbitMQConsumer, settings.rabbitmq_url, **hooks["consumer"])
    )
    container.source.override(
        providers.Resource(_closing, HttpRecordSource, upstream_config(settings), **hooks["source"])
    )
    container.store.override(file_store(settings))
    wire_webhooks(container)
    return container


def wire_webhooks(container: Container) -> None:
    """The SQL outbox beside the SQL job repository, and the HTTP sender."""
    from adapters.sql_webhooks import SqlWebhookOutbox
    from adapters.webhook_sender import HttpWebhookSender

    container.outbox.override(providers.ThreadSafeSingleton(SqlWebhookOutbox, container.jobs))
    container.webhook_sender.override(providers.Resource(_closing, HttpWebhookSender))


def file_store(settings: Settings) -> providers.Provider[Any]:
    """The export files' store that ``FILE_STORE`` names: the folder, or an S3 bucket."""
    if settings.file_store == "s3":
        require("s3", "FILE_STORE=s3")
        from adapters.s3 import S3Store, create_client

        client = providers.ThreadSafeSingleton(
            create_client, settings.s3_endpoint_url, settings.s3_region
        )
        return providers.ThreadSafeSingleton(
            S3Store,
            client,
            settings.s3_bucket,
            settings.s3_prefix,
            redirect=settings.download_redirect,
        )
    from adapters.filesystem import FilesystemStore

    return providers.ThreadSafeSingleton(FilesystemStore, settings.export_root)


def wire_embedded(
    container: Container, settings: Settings, data_dir: Path, upstream_url: str
) -> Container:
    """Wire ``reportsvc dev``: SQLite under ``data_dir``, the in-process queue, files under
    ``data_dir/exports``, every upstream served by the demo upstream at ``upstream_url``."""
    from adapters.filesystem import FilesystemStore
    from adapters.sqlite import SqliteJobRepository
    from adapters.upstream import HttpRecordSource

    container.settings.override(providers.Object(settings))
    container.jobs.override(
        providers.Singleton(
            MeteredJobRepository,
            providers.Resource(_closing, SqliteJobRepository, str(data_dir / "jobs.sqlite3")),
        )
    )
    # the default in-process queue serves as publisher and consumer
    container.source.override(
        providers.Resource(
            _closing,
            HttpRecordSource,
            upstream_config(
                settings,
                feed_url=upstream_url,
                telemetry_url=upstream_url,
                weighvision_url=upstream_url,
            ),
        )
    )
    container.store.override(
        providers.ThreadSafeSingleton(FilesystemStore, str(data_dir / "exports"))
    )
    wire_webhooks(container)
    return container


def check_file_store(container: Container) -> None:
    """Raise :class:`reportcore.errors.StorageFailure` naming the cause when the configured
    store cannot be used (a bucket that is missing or refuses our credentials), so that a
    process stops at start with one clear line instead of failing every job."""
    check = getattr(container.store(), "check", None)
    if callable(check):
        check()
