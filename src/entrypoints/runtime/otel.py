"""Tracing on: the OpenTelemetry SDK and the hooks the container gives the adapters.

Imported only by :func:`entrypoints.runtime.tracing.setup_tracing`, when the ``OTEL_*``
variables turn tracing on. The SDK reads its own variables (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` / ``_ARG``, ``OTEL_EXPORTER_OTLP_*``,
``OTEL_BSP_*``, ``OTEL_PROPAGATORS``); this module adds the spans of our own code and carries
the trace across the queue and into the window threads:

- API: a server span per request (``api/spans.py``), continuing a W3C ``traceparent``;
- create: ``create job`` (``entrypoints.api.routes``);
- publish: a producer span whose context travels in the message's AMQP headers (never in its
  body, which stays the old service's);
- worker: a consumer span per delivery, the child of that context, so one trace shows a whole
  export; every upstream request of the job (httpx instrumentation) and every SQL statement
  (psycopg instrumentation) under it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import msgspec
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind

from reportcore.jobs import JobMessage
from reportsvc import __version__

from .logs import add_record_filter

DEFAULT_SERVICE_NAME = "farmiq-reportsvc"
QUEUE = "report.jobs"  # the contract's queue (adapters.rabbitmq.topology.QUEUE)
Attribute = str | int | float | bool  # as entrypoints.runtime.tracing.Attribute


class _Span:
    """A ``tracing.SpanHandle`` over an SDK span."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, attributes: Mapping[str, Attribute] | None = None, /, **more: Attribute) -> None:
        self._span.set_attributes({**attributes, **more} if attributes else more)


class TraceIdsFilter(logging.Filter):
    """Puts the current span's ``trace_id`` and ``span_id`` (hex, as trace backends show them)
    on every record written inside a span. A record's own ``trace_id`` (the ``x-trace-id`` of
    a request, the job id sent upstream) that differs is kept as ``x_trace_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            trace_id = format(context.trace_id, "032x")
            own = getattr(record, "trace_id", None)
            if own is not None and own != trace_id:
                record.x_trace_id = own
            record.trace_id = trace_id
            record.span_id = format(context.span_id, "016x")
        return True


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*


def _resource(command: str) -> Resource:
    resource = Resource.create({SERVICE_VERSION: __version__, "reportsvc.command": command})
    # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins; else ours, not the
    # SDK's "unknown_service:python3"
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def _text_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """AMQP header values as text (pika hands long strings over as bytes or str)."""
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            out[key.lower()] = value
    return out


class _JobFields(msgspec.Struct):
    """What a span says about a queue message (anything else of it is left undecoded)."""

    job_id: str | None = None
    tenant_id: str | None = None
    job_type: str | None = None


def _job_attributes(body: bytes) -> dict[str, Attribute]:
    try:
        fields = msgspec.json.decode(body, type=_JobFields)
    except (msgspec.DecodeError, UnicodeDecodeError):  # the worker refuses it and says why
        return {}
    named = {
        "report.job_id": fields.job_id,
        "report.tenant_id": fields.tenant_id,
        "report.job_type": fields.job_type,
    }
    return {k: v for k, v in named.items() if v is not None}


class Tracing:
    """The process's tracer provider and the hooks the container hands the adapters."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("reportsvc")
        self._httpx = HTTPXClientInstrumentor()

    @classmethod
    def start(cls, exporters: tuple[str, ...], *, command: str, database: bool) -> Tracing:
        """Build the provider (sampler from the environment), install it as the global one,
        instrument psycopg (``database``) and tag every log record with the span's ids."""
        provider = TracerProvider(resource=_resource(command))  # shuts down (flushes) at exit
        for name in exporters:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
        trace.set_tracer_provider(provider)
        if database:
            from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

            # wraps psycopg.Connection.connect, which the pool calls for each connection: every
            # statement of the repository (conn.execute, cursors) becomes a client span
            PsycopgInstrumentor().instrument(tracer_provider=provider)
        add_record_filter(TraceIdsFilter())
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is buffered and stop (also done at interpreter exit)."""
        self.provider.shutdown()

    # --- our own spans ---

    def span(
        self, name: str, attributes: Mapping[str, Attribute]
    ) -> contextlib.AbstractContextManager[_Span]:
        return self._own_span(name, dict(attributes))

    @contextlib.contextmanager
    def _own_span(self, name: str, attributes: dict[str, Attribute]) -> Iterator[_Span]:
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield _Span(span)

    def untraced(self) -> contextlib.AbstractContextManager[None]:
        return suppress_instrumentation()

    # --- hooks of the adapters ---

    def instrument_client(self, client: httpx.Client) -> None:
        """A client span per upstream request, with ``traceparent`` injected."""
        self._httpx.instrument_client(client, tracer_provider=self.provider)

    @contextlib.contextmanager
    def publishing(self, message: JobMessage) -> Iterator[Mapping[str, str]]:
        """The publish of ``message`` as a producer span; yields the AMQP headers that carry
        its context (``traceparent``, ``tracestate``) to the worker."""
        attributes: dict[str, Attribute] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.destination.name": QUEUE,
            "report.job_id": message.job_id,
        }
        for key, value in (("tenant_id", message.tenant_id), ("job_type", message.job_type)):
            if value:
                attributes[f"report.{key}"] = value
        with self._tracer.start_as_current_span(
            f"publish {QUEUE}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            headers: dict[str, str] = {}
            propagate.inject(headers)
            yield headers

    @contextlib.contextmanager
    def consuming(self, headers: Mapping[str, Any] | None, body: bytes) -> Iterator[None]:
        """One delivery's handling as a consumer span, the child of the context its headers
        carry (a message without one, from the old API or a recovery republish of a job whose
        create trace is gone, starts a trace of its own)."""
        parent = propagate.extract(_text_headers(headers))
        attributes: dict[str, Attribute] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": QUEUE,
            **_job_attributes(body),
        }
        with self._tracer.start_as_current_span(
            f"process {QUEUE}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ):
            yield

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer of our own spans (the API's server spans: ``api/spans.py``)."""
        return self._tracer
