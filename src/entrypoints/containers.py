"""The composition root: the one place that knows which adapter serves which port.

``Container`` starts out wired to the in-memory adapters; :func:`wire_service` swaps in the
real ones (PostgreSQL, RabbitMQ, HTTP upstreams, filesystem) and :func:`wire_embedded` the
embedded ones of ``reportsvc dev``. Tests build a fresh container and override a provider.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.clock import SystemClock
from adapters.memory import (
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.usecases import Policy

from .settings import Settings


def policy_from(settings: Settings) -> Policy:
    """The lifecycle knobs of the core, from settings."""
    return Policy(
        download_ttl_sec=settings.download_ttl_sec,
        retention_sec=settings.retention_sec,
        lease_sec=settings.lease_sec,
        heartbeat_sec=min(1.0, settings.lease_sec / 3),
        max_attempts=settings.max_attempts,
    )


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


def build_container(settings: Settings) -> Container:
    """A container over in-memory adapters with ``settings`` (tests override further)."""
    container = Container()
    container.settings.override(providers.Object(settings))
    return container
