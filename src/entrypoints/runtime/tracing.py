"""Tracing: off unless the standard ``OTEL_*`` variables turn it on (docs/operations.md).

This module is the switch and imports nothing of OpenTelemetry: with tracing off, a process
loads none of it (``tests/unit/test_tracing.py`` checks), :func:`span` and :func:`untraced`
hand out one shared do-nothing context, and the adapters get no hooks at all. With tracing on,
:func:`setup_tracing` loads :mod:`entrypoints.runtime.otel`, which builds the SDK from the same
variables (sampler, resource, exporter endpoints, batch sizes are the SDK's own handling) and
holds the hooks the container gives the adapters.

On, when ``OTEL_SDK_DISABLED`` is not ``true`` and either ``OTEL_TRACES_EXPORTER`` names an
exporter (``otlp``, ``console``, or both comma-separated; ``none`` is off) or it is unset and an
OTLP endpoint is (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): the
SDK's default exporter is ``otlp``, so an endpoint alone means "send them there".
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ..settings import ConfigError
from .extras import require

if TYPE_CHECKING:
    from .otel import Tracing

EXPORTERS = ("otlp", "console")
# the only OTLP protocol installed: OTLP over HTTP with protobuf bodies (no gRPC stack)
OTLP_PROTOCOL = "http/protobuf"

Attribute = str | int | float | bool


class SpanHandle(Protocol):
    """What code holding a span may do with it: add attributes once it knows them (names
    with dots, as OpenTelemetry's are, come in ``attributes``; mypy checks a dict literal's
    values there, not when it is unpacked into ``**more``)."""

    def set(
        self, attributes: Mapping[str, Attribute] | None = None, /, **more: Attribute
    ) -> None: ...


class _NoSpan:
    """The span of a process without tracing: takes attributes, keeps nothing."""

    def set(self, attributes: Mapping[str, Attribute] | None = None, /, **more: Attribute) -> None:
        return None


# one shared do-nothing context: with tracing off a span costs a function call
_NO_SPAN: contextlib.AbstractContextManager[SpanHandle] = contextlib.nullcontext(_NoSpan())
_NOTHING: contextlib.AbstractContextManager[None] = contextlib.nullcontext()

_active: Tracing | None = None  # set once by setup_tracing, like the SDK's own global provider


def exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the ``OTEL_*`` variables of ``env`` ask for; empty: tracing off.

    Raises :class:`ConfigError` for an exporter or OTLP protocol this service does not ship,
    so that a typo stops the process at start instead of silently dropping every span.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    given = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not given:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names: tuple[str, ...] = ("otlp",) if endpoint and endpoint.strip() else ()
    else:
        names = tuple(dict.fromkeys(n.strip().lower() for n in given.split(",") if n.strip()))
        if "none" in names:
            return ()
        unknown = [n for n in names if n not in EXPORTERS]
        if unknown:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER must be otlp, console or none (comma-separated), "
                f"got {given!r}"
            )
    if "otlp" in names:
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env.get(variable, "").strip()
            if protocol:
                if protocol != OTLP_PROTOCOL:
                    raise ConfigError(
                        f"{variable} must be {OTLP_PROTOCOL} (the OTLP exporter installed), "
                        f"got {protocol!r}"
                    )
                break
    return names


def setup_tracing(env: Mapping[str, str], *, command: str, database: bool) -> Tracing | None:
    """Turn tracing on for this process if ``env`` asks for it; ``None`` (and nothing
    imported) when it does not. ``database``: the process talks to PostgreSQL, so its SQL
    statements become spans. Call it once, after logging is set up (log records then carry the
    ids of the current span) and before the container makes any client or pool."""
    global _active
    names = exporters(env)
    if not names:
        return None
    require("tracing", "tracing (turned on by the OTEL_* variables)")
    from .otel import Tracing

    _active = Tracing.start(names, command=command, database=database)
    return _active


def span(name: str, **attributes: Attribute) -> contextlib.AbstractContextManager[SpanHandle]:
    """A span of our own code named ``name``, the current one inside the block (a no-op when
    tracing is off)."""
    if _active is None:
        return _NO_SPAN
    return _active.span(name, attributes)


def untraced() -> contextlib.AbstractContextManager[None]:
    """A block whose library calls (SQL, HTTP) make no spans: housekeeping that runs every few
    seconds (recovery passes, lease renewals, probes) would otherwise start a trace each time."""
    if _active is None:
        return _NOTHING
    return _active.untraced()
