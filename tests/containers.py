"""The service's container with every adapter replaced by the core's in-memory one: what the
unit tests of the API and the worker run on. Overriding is for tests only; the container itself
declares the real adapters (src/entrypoints/containers.py)."""

from __future__ import annotations

from dependency_injector import providers

from entrypoints.containers import SERVICE, Container
from entrypoints.settings import Settings
from reportcore.testing import (
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    InMemoryScheduleRepository,
    RecordingWebhookSender,
    StaticRecordSource,
)


def in_memory_container(settings: Settings) -> Container:
    """A container whose ports are in-memory adapters; ``container.jobs()`` etc. give the
    fakes, to drive and inspect them."""
    container = Container(settings=settings, profile=SERVICE)
    jobs = InMemoryJobRepository()
    queue = InMemoryQueue()
    container.sql_jobs.override(providers.Object(jobs))
    container.jobs.override(providers.Object(jobs))
    container.queue.override(providers.Object(queue))
    container.consumer.override(providers.Object(queue))
    container.source.override(providers.Object(StaticRecordSource(records={})))
    container.store.override(providers.Object(InMemoryFileStore()))
    container.outbox.override(providers.Object(jobs.outbox))
    container.sender.override(providers.Object(RecordingWebhookSender()))
    container.schedules.override(providers.Object(InMemoryScheduleRepository()))
    return container


def replace(container: Container, port: str, adapter: object) -> None:
    """Serve ``port`` with ``adapter`` from now on: the application built over the old one is
    dropped, and the next request or run builds it anew."""
    getattr(container, port).override(providers.Object(adapter))
    container.deps.reset()
    container.reports.reset()
