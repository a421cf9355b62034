"""Tracing: off unless OTEL_* turn it on, and then one trace across threads and the queue.

The whole path through real processes is tests/integration/test_tracing.py; these check the
switch, the hooks and the log fields without a broker.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.upstream.windows import WindowRun
from adapters.upstream.wire import Fetched
from entrypoints.runtime.otel import TraceIdsFilter, Tracing
from entrypoints.runtime.tracing import exporters
from entrypoints.settings import ConfigError
from reportcore.jobs import JobMessage

# What a worker and an API process load and call with tracing off, in a fresh interpreter:
# the worker's side loads not one opentelemetry module. Building the Litestar app probes for
# Litestar's own OpenTelemetry plugin (litestar/app.py, _patch_opentelemetry_middleware),
# which finds the package installed and gives up at a missing instrumentation: that loads
# the namespace and two constant modules (~10 KiB), and nothing that runs.
_OFF_PROCESS = """
import json, sys

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")

from entrypoints.runtime import tracing
from entrypoints.cli import _traced_app
from entrypoints.containers import service_container, upstream_config
from entrypoints.settings import Settings
from entrypoints.worker import Worker
from adapters.upstream import HttpRecordSource

assert tracing.setup_tracing({}, command="all", database=True) is None
settings = Settings(
    database_url="postgresql://u@127.0.0.1:1/db",
    rabbitmq_url="amqp://guest:guest@127.0.0.1:1/%2F",
    jwt_secret="unit-test-jwt-secret-0123456789",
    download_secret="unit-test-download-secret-0123",
)
container = service_container(settings, None)
Worker(container.reports(), settings)
HttpRecordSource(upstream_config(settings)).clients.client("http://127.0.0.1:1")
with tracing.span("nothing", a=1) as span:
    span.set(b=2)
with tracing.untraced():
    pass
worker_side = loaded()

from entrypoints.api import create_app
_traced_app(create_app(container), None)
print(json.dumps({"worker": worker_side, "api": loaded()}))
"""
LITESTAR_PROBE = {
    "opentelemetry",
    "opentelemetry.instrumentation",
    "opentelemetry.semconv",
    "opentelemetry.semconv.attributes",
    "opentelemetry.semconv.attributes.http_attributes",
}


def test_with_the_otel_variables_unset_no_opentelemetry_module_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _OFF_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded["worker"] == []
    assert set(loaded["api"]) <= LITESTAR_PROBE


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "reportsvc"}, ()),  # naming the service turns nothing on
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": " Console , otlp "}, ("console", "otlp")),
        ({"OTEL_TRACES_EXPORTER": "otlp,none"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"},
         ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
         ("otlp",)),
    ],
)  # fmt: skip
def test_the_otel_variables_decide_whether_and_where_spans_go(
    env: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert exporters(env) == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
         "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
          "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    ],
)  # fmt: skip
def test_an_exporter_or_protocol_the_service_lacks_stops_it_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        exporters(env)


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter
    provider.shutdown()


def _message() -> JobMessage:
    return JobMessage(
        job_id="7d5b3f3c-0e4e-4a41-9c2f-0d8a4b8f6c11",
        tenant_id="tenant-a",
        job_type="FEED_INTAKE_EXPORT",
        format="csv",
    )


def test_a_delivery_continues_the_trace_its_publish_put_in_the_headers(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    message = _message()
    with tracing.span("create job", {}), tracing.publishing(message) as headers:
        sent = dict(headers)
    # pika hands header values over as bytes or str
    received = {key: value.encode() for key, value in sent.items()}
    with tracing.consuming(received, b'{"job_id": "%s"}' % message.job_id.encode()):
        pass
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    create, publish = by_name["create job"], by_name["publish report.jobs"]
    process = by_name["process report.jobs"]
    assert publish.parent is not None and publish.parent.span_id == create.context.span_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == create.context.trace_id
    assert process.kind is trace.SpanKind.CONSUMER
    assert process.attributes is not None
    assert process.attributes["report.job_id"] == message.job_id


def test_a_delivery_without_a_trace_context_starts_a_trace_of_its_own(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    with tracing.consuming(None, b"not json at all"):
        pass
    (process,) = exporter.get_finished_spans()
    assert process.parent is None


def test_the_window_threads_run_in_the_context_of_the_export_that_started_them() -> None:
    current: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="none")
    seen: list[str] = []
    lock = threading.Lock()

    def window(stop: threading.Event) -> Iterator[Fetched]:
        with lock:
            seen.append(current.get())
        yield Fetched(b"page", None)

    current.set("job-1")
    run = WindowRun([window] * 6, threads=3)
    try:
        assert len(list(run.answers())) == 6
    finally:
        run.close()
    assert seen == ["job-1"] * 6


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_record_written_in_a_span_carries_its_trace_and_span_id(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, _ = spans
    with tracing.span("job", {}):
        context = trace.get_current_span().get_span_context()
        record = _record(trace_id="the-x-trace-id")
        TraceIdsFilter().filter(record)
    assert vars(record)["trace_id"] == format(context.trace_id, "032x")
    assert vars(record)["span_id"] == format(context.span_id, "016x")
    # the request's own x-trace-id (or the job id sent upstream) is kept beside it
    assert vars(record)["x_trace_id"] == "the-x-trace-id"


def test_a_record_written_outside_any_span_is_left_as_it_was() -> None:
    record = _record(trace_id="the-x-trace-id")
    TraceIdsFilter().filter(record)
    assert vars(record)["trace_id"] == "the-x-trace-id"
    assert "span_id" not in vars(record)


@pytest.mark.parametrize("body", [b"not json", b'{"job_id":"\xff"}', b"\xff\xfe"])
def test_a_message_the_worker_cannot_read_gives_its_span_no_job_attributes(body: bytes) -> None:
    """Invalid UTF-8 inside a string is msgspec's UnicodeDecodeError, not its DecodeError:
    it escaped here and the message went back to the queue for ever, never dead-lettered."""
    from entrypoints.runtime.otel import _job_attributes

    assert _job_attributes(body) == {}
