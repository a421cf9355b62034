"""What only the RabbitMQ adapter promises: the old service's topology, persistent messages,
old clients' messages, surviving connection loss and long handlers, and bounded waits when
the broker is unreachable. Each test runs on its own vhost; the broker is looked at from the
side with plain pika and ``rabbitmqctl``.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import pika
import pytest

from adapters.rabbitmq import RabbitMQConsumer, RabbitMQQueue
from reportcore.errors import QueueUnavailable, ServiceUnavailable
from reportcore.ports import Disposition

from .test_queue_contract import a_message

DEADLINE_SEC = 20.0
# how late a caller's wait may end past its timeout on a loaded CI machine (the thread is not
# scheduled at once); far below pika's own socket (10 s) and stack (15 s) timeouts, which a
# caller that our timeout did not bound would wait out
LATE_SEC = 2.0

# The contract's topology, written out (not imported from the adapter).
QUEUE_ARGUMENTS = {
    "x-dead-letter-exchange": "report.jobs.dlx",
    "x-dead-letter-routing-key": "report.jobs.dlq",
}


# --- helpers ---


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path[1:])


def rabbitmqctl(*args: str) -> str:
    exe = shutil.which("rabbitmqctl")
    assert exe is not None, "rabbitmqctl is needed by these tests"
    done = subprocess.run(
        [exe, "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def listing(what: str, vhost: str, *columns: str) -> list[dict[str, Any]]:
    out = rabbitmqctl(what, "-p", vhost, *columns, "--formatter", "json")
    rows: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return rows


def queue_row(vhost: str, name: str) -> dict[str, Any]:
    rows = listing(
        "list_queues",
        vhost,
        "name",
        "durable",
        "arguments",
        "messages_ready",
        "messages_unacknowledged",
    )
    [row] = [r for r in rows if r["name"] == name]
    return row


def consumer_connections(vhost: str) -> list[dict[str, Any]]:
    # list_connections ignores -p: it lists the whole broker's, other test runs' included
    rows = listing("list_connections", vhost, "name", "vhost", "timeout", "client_properties")
    return [
        r
        for r in rows
        if r["vhost"] == vhost and "reportsvc consumer" in json.dumps(r["client_properties"])
    ]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_SEC) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def settled(vhost: str) -> bool:
    row = queue_row(vhost, "report.jobs")
    return bool(row["messages_ready"] == 0 and row["messages_unacknowledged"] == 0)


@contextmanager
def plain_channel(url: str) -> Iterator[Any]:
    """A channel of a plain pika client, as the old service or an operator would use."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@contextmanager
def running(
    consumer: RabbitMQConsumer, handle: Callable[[bytes], Disposition], concurrency: int = 1
) -> Iterator[None]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(handle, concurrency, stop.is_set)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="consumer-under-test", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(DEADLINE_SEC)
    assert not thread.is_alive(), "run() did not return after stop"
    assert errors == []


@pytest.fixture
def publisher(amqp_url: str) -> Iterator[RabbitMQQueue]:
    queue = RabbitMQQueue(amqp_url, confirm_timeout=5.0)
    yield queue
    queue.close()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"password": "wrong"}, "refused the login"),
        ({"vhost": "no-such-vhost"}, "refused the vhost"),
    ],
)
def test_a_broker_that_refuses_us_says_so_not_that_it_is_unreachable(
    amqp_url: str, change: dict[str, str], said: str
) -> None:
    """A wrong password or vhost read 'RabbitMQ at ... is unreachable' in /api/ready (the
    broker had answered and refused), sending an operator to the network."""
    parts = urlsplit(amqp_url)
    user = unquote(parts.username or "guest")
    password = change.get("password", unquote(parts.password or "guest"))
    vhost = change.get("vhost", parts.path.lstrip("/"))
    url = f"amqp://{user}:{password}@{parts.hostname}:{parts.port or 5672}/{vhost}"
    queue = RabbitMQQueue(url, confirm_timeout=5.0)
    try:
        with pytest.raises(QueueUnavailable, match=said):
            queue.publish(a_message())
    finally:
        queue.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port nothing listens on: bound and never listening, so connections to it are
    refused (RST), and held for the test, so no other process can start listening there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def expected_arguments(row: dict[str, Any]) -> dict[str, Any]:
    # rabbitmqctl's JSON lists arguments as [name, type, value]
    return {name: value for name, _type, value in row["arguments"]}


# --- topology ---


def _declare_by_publishing(url: str) -> None:
    queue = RabbitMQQueue(url)
    try:
        queue.publish(a_message())
    finally:
        queue.close()


def _declare_by_consuming(url: str) -> None:
    # a worker may start before any API published: its consumer declares the queue itself
    with running(RabbitMQConsumer(url), lambda body: Disposition.ACK):
        wait_until(lambda: bool(consumer_connections(vhost_of(url))), "the consumer connects")
        wait_until(
            lambda: any(r["name"] == "report.jobs" for r in listing("list_queues", vhost_of(url))),
            "the queue is declared",
        )


@pytest.mark.parametrize(
    "declare", [_declare_by_publishing, _declare_by_consuming], ids=["publisher", "consumer"]
)
def test_the_topology_is_declared_exactly_as_the_contract_says(
    amqp_url: str, declare: Callable[[str], None]
) -> None:
    vhost = vhost_of(amqp_url)
    declare(amqp_url)

    jobs = queue_row(vhost, "report.jobs")
    assert jobs["durable"] is True
    assert expected_arguments(jobs) == QUEUE_ARGUMENTS
    dlq = queue_row(vhost, "report.jobs.dlq")
    assert dlq["durable"] is True
    assert dlq["arguments"] == []
    exchanges = listing("list_exchanges", vhost, "name", "type", "durable")
    assert {"name": "report.jobs.dlx", "type": "direct", "durable": True} in exchanges
    bindings = listing("list_bindings", vhost, "source_name", "destination_name", "routing_key")
    assert {
        "source_name": "report.jobs.dlx",
        "destination_name": "report.jobs.dlq",
        "routing_key": "report.jobs.dlq",
    } in bindings


def declare_as_the_old_service(url: str, arguments: dict[str, Any]) -> None:
    with plain_channel(url) as channel:
        channel.exchange_declare("report.jobs.dlx", exchange_type="direct", durable=True)
        channel.queue_declare("report.jobs.dlq", durable=True)
        channel.queue_bind("report.jobs.dlq", "report.jobs.dlx", routing_key="report.jobs.dlq")
        channel.queue_declare("report.jobs", durable=True, arguments=arguments)


def test_a_queue_declared_by_the_old_service_is_accepted(
    amqp_url: str, publisher: RabbitMQQueue
) -> None:
    declare_as_the_old_service(amqp_url, dict(QUEUE_ARGUMENTS))
    message = a_message()
    publisher.publish(message)
    got: list[bytes] = []

    def handle(body: bytes) -> Disposition:
        got.append(body)
        return Disposition.ACK

    with running(RabbitMQConsumer(amqp_url), handle):
        wait_until(lambda: len(got) == 1, "the message is handled")
    assert got == [msgspec.json.encode(message)]
    assert settled(vhost_of(amqp_url))


def test_a_queue_declared_with_other_arguments_makes_publishing_fail_loudly(
    amqp_url: str, publisher: RabbitMQQueue, caplog: pytest.LogCaptureFixture
) -> None:
    # the broker refuses a redeclaration with different arguments: our declaration must be
    # the old one exactly, and a mismatch must be an error, not a silent second topology
    declare_as_the_old_service(amqp_url, {"x-dead-letter-exchange": "somewhere.else"})
    with (
        caplog.at_level(logging.WARNING, logger="adapters.rabbitmq"),
        pytest.raises(QueueUnavailable),
    ):
        publisher.publish(a_message())
    assert "PRECONDITION_FAILED" in caplog.text


# --- messages ---


def test_published_messages_are_persistent_json(amqp_url: str, publisher: RabbitMQQueue) -> None:
    message = a_message()
    publisher.publish(message)
    with plain_channel(amqp_url) as channel:
        method, properties, body = channel.basic_get("report.jobs", auto_ack=True)
    assert method is not None, "the confirmed message is not on report.jobs"
    assert method.routing_key == "report.jobs"
    assert method.exchange == ""
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert body == msgspec.json.encode(message)


def test_a_message_published_raw_by_an_old_client_is_consumed(amqp_url: str) -> None:
    declare_as_the_old_service(amqp_url, dict(QUEUE_ARGUMENTS))
    body = json.dumps(
        {
            "job_id": "0b9c6d1e-5a4f-4e2b-8c3d-7f6a5b4c3d2e",
            "tenant_id": "tenant-old",
            "job_type": "WEIGHVISION_EXPORT",
            "format": "csv",
            "scope": {
                "farm_id": "f-1",
                "barn_id": None,
                "batch_id": None,
                "start_date": "2025-01-01",
                "end_date": "2025-01-31",
                "filters": {},
            },
            "requested_by": "u-old",
        }
    ).encode()
    with plain_channel(amqp_url) as channel:
        channel.basic_publish(
            "", "report.jobs", body, properties=pika.BasicProperties(delivery_mode=2)
        )
    got: list[bytes] = []

    def handle(raw: bytes) -> Disposition:
        got.append(raw)
        return Disposition.ACK

    with running(RabbitMQConsumer(amqp_url), handle):
        wait_until(lambda: len(got) == 1, "the old message is handled")
    assert got == [body]
    assert settled(vhost_of(amqp_url))


# --- connection loss and long handlers ---


def test_a_connection_lost_during_a_long_handler_is_reopened_and_the_message_redelivered(
    amqp_url: str, publisher: RabbitMQQueue
) -> None:
    vhost = vhost_of(amqp_url)
    message = a_message()
    publisher.publish(message)
    release = threading.Event()
    lock = threading.Lock()
    got: list[bytes] = []

    def handle(body: bytes) -> Disposition:
        with lock:
            got.append(body)
            first = len(got) == 1
        if first:
            release.wait(DEADLINE_SEC)  # the long export that outlives its connection
        return Disposition.ACK

    # two threads: the redelivery can run while the first handler still holds its thread
    with running(RabbitMQConsumer(amqp_url, reconnect_max_delay=1.0), handle, concurrency=2):
        try:
            wait_until(lambda: len(got) == 1, "the handler starts")
            [before] = consumer_connections(vhost)
            rabbitmqctl("close_all_connections", "-p", vhost, "test")
            wait_until(lambda: len(got) == 2, "the message is redelivered on a new connection")
            [after] = consumer_connections(vhost)
        finally:
            release.set()
        wait_until(lambda: settled(vhost), "the redelivered message is acknowledged")

    assert after["name"] != before["name"]
    assert got == [msgspec.json.encode(message)] * 2


def test_after_a_reconnect_a_worker_busy_with_a_long_export_takes_only_what_it_can_run(
    amqp_url: str, publisher: RabbitMQQueue
) -> None:
    """A connection lost mid-export (a broker restart, its consumer_timeout) used to come back
    with the full prefetch while the export still held a thread: the messages it took waited
    here behind that export, unacknowledged, while other workers idled. Now it takes one per
    free thread, and all of them again once the long export ends."""
    vhost = vhost_of(amqp_url)
    long_one = a_message()
    publisher.publish(long_one)
    release_long, release_rest = threading.Event(), threading.Event()
    lock = threading.Lock()
    started: list[bytes] = []
    busy: set[bytes] = set()

    def handle(body: bytes) -> Disposition:
        with lock:
            again = body in started  # the long one redelivered: a no-op, as for a worker
            started.append(body)
            busy.add(body)
        try:
            if not again:
                (release_long if body == encode(long_one) else release_rest).wait(DEADLINE_SEC)
            return Disposition.ACK
        finally:
            with lock:
                busy.discard(body)

    def encode(message: Any) -> bytes:
        return msgspec.json.encode(message)

    rest = [a_message() for _ in range(3)]
    with running(RabbitMQConsumer(amqp_url, reconnect_max_delay=0.5), handle, 2):
        try:
            wait_until(lambda: started == [encode(long_one)], "the long export starts")
            rabbitmqctl("close_all_connections", "-p", vhost, "test")
            wait_until(lambda: started.count(encode(long_one)) == 2, "its redelivery is a no-op")
            for message in rest:
                publisher.publish(message)
            wait_until(lambda: len(started) == 3, "one more export on the one free thread")
            time.sleep(1.0)  # what a full prefetch would have taken meanwhile
            row = queue_row(vhost, "report.jobs")
            assert (row["messages_unacknowledged"], row["messages_ready"]) == (1, 2), row
            assert len(started) == 3
            release_long.set()  # its thread is free: two at once again
            wait_until(lambda: len(started) == 4, "a second export beside the running one")
            with lock:
                assert len(busy) == 2, busy
        finally:
            release_long.set()
            release_rest.set()
        wait_until(lambda: len(started) == 5 and settled(vhost), "every message is handled")
        # one consumer more for the thread the long export freed, not one a message after it
        consumers = listing("list_consumers", vhost, "prefetch_count")
        assert sorted(c["prefetch_count"] for c in consumers) == [1, 1], consumers
    assert sorted(started) == sorted([encode(long_one)] * 2 + [encode(m) for m in rest])


def test_the_consumer_asks_the_broker_to_wait_for_its_acknowledgements_as_long_as_exports_run(
    amqp_url: str,
) -> None:
    """RabbitMQ closes a channel whose delivery stays unacknowledged past its
    consumer_timeout (30 minutes by default): from 3.12 a consumer may ask for its own."""
    vhost = vhost_of(amqp_url)
    consumer = RabbitMQConsumer(amqp_url, consumer_timeout_sec=6 * 3600 + 900)
    with running(consumer, lambda body: Disposition.ACK):
        wait_until(lambda: bool(listing("list_consumers", vhost, "arguments")), "it consumes")
        [row] = listing("list_consumers", vhost, "arguments", "prefetch_count")
    assert [a[0] for a in row["arguments"]] == ["x-consumer-timeout"], row
    assert row["arguments"][0][2] == 22_500_000, row
    assert row["prefetch_count"] == 1


def test_a_channel_closed_for_an_acknowledgement_timeout_says_what_to_set() -> None:
    from adapters.rabbitmq.consumer import _closed_because

    class Closed:
        _closing_reason = pika.exceptions.ChannelClosedByBroker(
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout "
            "value used: 1800000 ms. This timeout value can be configured, see consumers doc "
            "guide to learn more",
        )

    said = _closed_because(Closed())  # type: ignore[arg-type]
    assert said.startswith("the channel closed: (406, 'PRECONDITION_FAILED - delivery ack")
    assert said.endswith(
        "(an export outlived the broker's consumer_timeout: set it above "
        "REPORT_MAX_EXPORT_SEC; docs/operations.md)"
    )


def test_a_handler_running_longer_than_two_heartbeats_keeps_its_connection(
    amqp_url: str, publisher: RabbitMQQueue
) -> None:
    vhost = vhost_of(amqp_url)
    heartbeat = 2
    publisher.publish(a_message())
    entered = threading.Event()
    got: list[bytes] = []

    def long_export(body: bytes) -> Disposition:
        got.append(body)
        entered.set()
        # the export itself: busy for three heartbeat intervals (the broker drops a
        # connection that stays silent for two)
        threading.Event().wait(3 * heartbeat)
        return Disposition.ACK

    with running(RabbitMQConsumer(amqp_url, heartbeat=heartbeat), long_export):
        assert entered.wait(DEADLINE_SEC), "the handler never started"
        [before] = consumer_connections(vhost)
        assert before["timeout"] == heartbeat
        wait_until(lambda: settled(vhost), "the message is acknowledged")
        [after] = consumer_connections(vhost)

    assert after["name"] == before["name"]
    assert len(got) == 1


def test_the_publisher_reconnects_after_the_broker_closed_its_connection(
    amqp_url: str, publisher: RabbitMQQueue
) -> None:
    vhost = vhost_of(amqp_url)
    publisher.publish(a_message())
    rabbitmqctl("close_all_connections", "-p", vhost, "test")
    publisher.publish(a_message())
    assert queue_row(vhost, "report.jobs")["messages_ready"] == 2


# --- an unreachable broker ---


def test_publishing_to_an_unreachable_broker_raises_queue_unavailable_within_the_timeout(
    caplog: pytest.LogCaptureFixture, closed_port: int
) -> None:
    password = "pw-that-must-not-be-logged"
    url = f"amqp://guest:{password}@127.0.0.1:{closed_port}/%2F"
    timeout = 2.0
    queue = RabbitMQQueue(url, confirm_timeout=timeout)
    try:
        with caplog.at_level(logging.DEBUG):
            began = time.monotonic()
            with pytest.raises(QueueUnavailable):
                queue.publish(a_message())
            assert time.monotonic() - began < timeout + LATE_SEC
            # during the backoff that follows, a publish fails at once: in less than half the
            # timeout it would wait out for a broker that does not answer
            began = time.monotonic()
            with pytest.raises(QueueUnavailable):
                queue.publish(a_message())
            assert time.monotonic() - began < timeout / 2
            began = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                queue.ping()
            assert time.monotonic() - began < timeout + LATE_SEC  # the ping's own 2 s
    finally:
        queue.close()
    assert "cannot connect to RabbitMQ at 127.0.0.1" in caplog.text
    assert password not in caplog.text


def test_a_broker_that_never_answers_blocks_no_caller_past_its_timeout(
    silent_broker: int,
) -> None:
    timeout = 1.0
    url = f"amqp://guest:guest@127.0.0.1:{silent_broker}/%2F"
    queue = RabbitMQQueue(url, confirm_timeout=timeout)
    try:
        began = time.monotonic()
        with pytest.raises(QueueUnavailable):
            queue.publish(a_message())
        assert time.monotonic() - began < timeout + LATE_SEC
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            queue.ping()
        assert time.monotonic() - began < timeout + LATE_SEC
    finally:
        queue.close()


def test_close_stops_the_publisher_thread_and_later_publishes_fail(amqp_url: str) -> None:
    def publisher_threads() -> int:
        return sum(t.name == "rabbitmq-publisher" for t in threading.enumerate())

    before = publisher_threads()
    queue = RabbitMQQueue(amqp_url)
    queue.publish(a_message())
    assert publisher_threads() == before + 1
    queue.close()
    assert publisher_threads() == before
    with pytest.raises(QueueUnavailable):
        queue.publish(a_message())
