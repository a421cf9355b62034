"""Issue 15 acceptance (tracing): one trace shows a whole export, through real processes.

``reportsvc api`` and ``reportsvc worker`` run with ``OTEL_TRACES_EXPORTER=otlp`` against a
small OTLP/HTTP receiver in this test, over real PostgreSQL and RabbitMQ; the upstream is the
demo upstream behind a proxy that records the headers of every request. A create carrying a W3C
``traceparent`` must be continued by the API, through the queue message's AMQP headers, into
the worker and into every upstream request of the job, also those of its window threads.
The queue's part is also checked alone against the broker: the context rides in the AMQP
headers, and the body stays byte for byte the old service's.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.rabbitmq import RabbitMQConsumer, RabbitMQQueue
from entrypoints.runtime.otel import Tracing
from reportcore.jobs import JobType
from reportcore.ports import Disposition

from .procs import (
    Proc,
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_demo_upstream,
    start_worker,
    user_token,
)
from .test_end_to_end import demo_scope
from .test_queue_contract import a_message
from .test_rabbitmq import plain_channel

JOB_DEADLINE_SEC = 60.0
SPANS_DEADLINE_SEC = 15.0
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    service: str


@dataclass
class Received:
    """What the in-test servers were sent, guarded by one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    spans: list[Span] = field(default_factory=list)
    upstream: list[dict[str, str]] = field(default_factory=list)  # headers of each request

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def requests_of(self, job_id: str) -> list[dict[str, str]]:
        # the service sends the job id as x-trace-id upstream (the contract)
        with self.lock:
            return [h for h in self.upstream if h.get("x-trace-id") == job_id]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _decode_spans(body: bytes) -> list[Span]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        service=str(resource.get("service.name")),
                    )
                )
    return spans


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def otlp_receiver(received: Received) -> tuple[ThreadingHTTPServer, str]:
    """An OTLP/HTTP (protobuf) trace receiver: what an OpenTelemetry collector would get."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path == "/v1/traces":
                spans = _decode_spans(body)
                with received.lock:
                    received.spans.extend(spans)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return _serve(Handler)


def recording_proxy(received: Received, upstream: str) -> tuple[ThreadingHTTPServer, str]:
    """The demo upstream as the service sees it, recording each request's headers."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with received.lock:
                received.upstream.append({k.lower(): v for k, v in self.headers.items()})
            with urllib.request.urlopen(upstream + self.path, timeout=10) as answer:
                body = answer.read()
                status = answer.status
                content_type = answer.headers.get("content-type", "application/json")
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return _serve(Handler)


@dataclass
class TracedStack:
    api: Proc
    worker: Proc
    base_url: str
    token: str
    received: Received


@pytest.fixture
def traced(database_url: str, amqp_url: str, tmp_path: Path) -> Iterator[TracedStack]:
    from adapters.demo_upstream import DEMO_TENANT

    received = Received()
    with Procs(tmp_path / "logs") as procs:
        receiver, receiver_url = otlp_receiver(received)
        proxy, proxy_url = recording_proxy(received, start_demo_upstream(procs))
        try:
            env = service_env(
                database_url,
                amqp_url,
                tmp_path / "exports",
                proxy_url,
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver_url,
                OTEL_SERVICE_NAME="reportsvc-it",
                OTEL_BSP_SCHEDULE_DELAY="100",  # ms: spans reach the receiver quickly
                UPSTREAM_CONCURRENCY="4",  # windows fetched by threads of their own
            )
            migrated = run_reportsvc(env, "migrate")
            assert migrated.returncode == 0, migrated.stderr
            api, base_url = start_api(procs, env)
            worker = start_worker(procs, env)
            yield TracedStack(
                api=api,
                worker=worker,
                base_url=base_url,
                token=user_token(env, DEMO_TENANT, "tenant_admin"),
                received=received,
            )
        finally:
            for server in (proxy, receiver):
                server.shutdown()
                server.server_close()


def _create(stack: TracedStack, headers: dict[str, str]) -> httpx.Response:
    job_type = JobType.FEED_INTAKE_EXPORT
    body = {"job_type": str(job_type), "format": "csv", **demo_scope(job_type)}
    answer = httpx.post(
        f"{stack.base_url}/api/v1/reports/jobs",
        json=body,
        headers={"Authorization": f"Bearer {stack.token}", **headers},
        timeout=10.0,
    )
    assert answer.status_code == 201, answer.text
    return answer


def _wait_succeeded(stack: TracedStack, job_id: str) -> None:
    deadline = time.monotonic() + JOB_DEADLINE_SEC
    while True:
        job = httpx.get(
            f"{stack.base_url}/api/v1/reports/jobs/{job_id}",
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=10.0,
        ).json()
        if job["status"] == "succeeded":
            return
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"job still {job['status']}"
        time.sleep(0.2)


def _wait_for_spans(stack: TracedStack, trace_id: str, *names: str) -> list[Span]:
    deadline = time.monotonic() + SPANS_DEADLINE_SEC
    while True:
        spans = stack.received.trace(trace_id)
        if set(names) <= {s.name for s in spans}:
            return spans
        assert time.monotonic() < deadline, (
            f"spans {sorted(set(names) - {s.name for s in spans})} of trace {trace_id} never "
            f"arrived; got {sorted({s.name for s in spans})}"
        )
        time.sleep(0.1)


def _one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r}"
    return found[0]


def test_a_traceparent_sent_on_create_reaches_every_upstream_request_of_the_job(
    traced: TracedStack,
) -> None:
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer = _create(traced, {"traceparent": f"00-{trace_id}-{caller_span}-01"})
    job_id = answer.json()["id"]
    # the response names the trace, as the error envelope would
    assert answer.headers["x-trace-id"] == trace_id
    _wait_succeeded(traced, job_id)

    requests = traced.received.requests_of(job_id)
    # several pages over more than one window (windows start one a thread and split: 4 or more)
    assert len(requests) >= 4, "the demo export should take several pages and windows"
    parents = set()
    for headers in requests:
        found = TRACEPARENT.fullmatch(headers.get("traceparent", ""))
        assert found, f"an upstream request without a traceparent: {headers}"
        assert found.group(1) == trace_id
        parents.add(found.group(2))
    assert len(parents) == len(requests), "each upstream request is a span of its own"

    spans = _wait_for_spans(
        traced,
        trace_id,
        "POST /api/v1/reports/jobs",
        "create job",
        "publish report.jobs",
        "process report.jobs",
    )
    by_id = {s.span_id: s for s in spans}
    server = _one(spans, "POST /api/v1/reports/jobs")
    create = _one(spans, "create job")
    publish = _one(spans, "publish report.jobs")
    process = _one(spans, "process report.jobs")
    # one chain: caller -> API request -> create -> publish -> (queue) -> the worker's job
    assert server.parent_id == caller_span
    assert create.parent_id == server.span_id
    assert publish.parent_id == create.span_id
    assert process.parent_id == publish.span_id
    assert process.attributes["report.job_id"] == job_id
    assert {server.service, process.service} == {"reportsvc-it"}

    # every upstream request was a client span under the job's span, and its traceparent named it
    deadline = time.monotonic() + SPANS_DEADLINE_SEC
    while not parents <= {s.span_id for s in traced.received.trace(trace_id)}:
        assert time.monotonic() < deadline, "the upstream requests' spans never arrived"
        time.sleep(0.1)
    spans = traced.received.trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    for parent in parents:
        assert by_id[parent].parent_id == process.span_id
    # the SQL of the create and of the job, as spans of the same trace
    sql = [s for s in spans if any(k.startswith("db.") for k in s.attributes)]
    assert any(s.parent_id == create.span_id for s in sql), "no SQL span under the create"
    assert any(s.parent_id == process.span_id for s in sql), "no SQL span under the job"

    # the log lines carry the trace and the span: the API's access line, the worker's job line
    access = next(
        line
        for line in traced.api.stderr().splitlines()
        if "method=POST path=/api/v1/reports/jobs status=201" in line
    )
    assert f"trace_id={trace_id}" in access
    assert f"span_id={server.span_id}" in access
    line = next(
        line
        for line in traced.worker.stderr().splitlines()
        if 'msg="job succeeded"' in line and job_id in line
    )
    assert f"trace_id={trace_id}" in line
    assert f"span_id={process.span_id}" in line


def test_without_a_traceparent_the_job_trace_starts_at_the_api(traced: TracedStack) -> None:
    answer = _create(traced, {})
    job_id = answer.json()["id"]
    trace_id = answer.headers["x-trace-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id), "x-trace-id is the request's trace id"
    _wait_succeeded(traced, job_id)

    requests = traced.received.requests_of(job_id)
    assert requests
    for headers in requests:
        found = TRACEPARENT.fullmatch(headers.get("traceparent", ""))
        assert found and found.group(1) == trace_id

    spans = _wait_for_spans(traced, trace_id, "POST /api/v1/reports/jobs", "process report.jobs")
    assert _one(spans, "POST /api/v1/reports/jobs").parent_id == ""  # the root


# --- the queue's part, over the real broker ---


def test_the_trace_context_rides_in_amqp_headers_and_the_body_stays_the_old_services(
    amqp_url: str,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    message = a_message()

    queue = RabbitMQQueue(amqp_url, around_publish=tracing.publishing)
    try:
        queue.publish(message)
    finally:
        queue.close()
    (publish,) = exporter.get_finished_spans()
    with plain_channel(amqp_url) as channel:
        method, properties, body = channel.basic_get("report.jobs", auto_ack=False)
        assert method is not None
        # byte for byte what a publish without tracing sends (tests/integration/test_rabbitmq.py)
        assert body == msgspec.json.encode(message)
        assert properties.delivery_mode == 2
        assert properties.content_type == "application/json"
        traceparent = properties.headers["traceparent"]
        if isinstance(traceparent, bytes):
            traceparent = traceparent.decode()
        found = TRACEPARENT.fullmatch(traceparent)
        assert found
        assert found.group(1) == format(publish.context.trace_id, "032x")
        assert found.group(2) == format(publish.context.span_id, "016x")
        channel.basic_nack(method.delivery_tag, requeue=True)

    stop = threading.Event()
    handled: list[str] = []

    def handle(delivered: bytes) -> Disposition:
        handled.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))
        stop.set()
        return Disposition.ACK

    RabbitMQConsumer(amqp_url, around_delivery=tracing.consuming).run(handle, 1, stop.is_set)
    assert handled == [format(publish.context.trace_id, "032x")]
    process = next(s for s in exporter.get_finished_spans() if s.name == "process report.jobs")
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    provider.shutdown()
