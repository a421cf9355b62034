"""The contract of the JobQueue + JobConsumer pair, run against every adapter of it.

An adapter joins with one entry in PAIR_FACTORIES: a function that builds, for one test, the
publisher, the consumer and a probe that looks at the broker from the side (raw publishes of
an old client, dead letters, messages still waiting). RabbitMQ runs on a fresh vhost per test.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest

from reportcore.jobs import Job, JobMessage, JobType, ReportFormat, message_for
from reportcore.ports import Disposition, JobConsumer, JobQueue
from reportcore.testing import InMemoryQueue

DEADLINE_SEC = 15.0

# The old service's message, written out here rather than taken from JobMessage, so that a
# change of the Struct that breaks old consumers fails this suite.
OLD_MESSAGE_KEYS = ["job_id", "tenant_id", "job_type", "format", "scope", "requested_by"]
OLD_SCOPE_KEYS = ["farm_id", "barn_id", "batch_id", "start_date", "end_date", "filters"]


class Pair:
    """A publisher, a consumer, and a probe of the broker they share."""

    queue: JobQueue
    consumer: JobConsumer

    def publish_raw(self, body: bytes) -> None:
        """Put ``body`` on ``report.jobs`` as another client would."""
        raise NotImplementedError

    def dead_letters(self) -> list[bytes]:
        """Every message dead-lettered so far."""
        raise NotImplementedError

    def waiting(self) -> int:
        """Messages on ``report.jobs`` that no consumer holds."""
        raise NotImplementedError


class MemoryPair(Pair):
    def __init__(self) -> None:
        self._queue = InMemoryQueue()
        self.queue = self._queue
        self.consumer = self._queue

    def publish_raw(self, body: bytes) -> None:
        self._queue.publish_raw(body)

    def dead_letters(self) -> list[bytes]:
        return list(self._queue.dead_letters)

    def waiting(self) -> int:
        return self._queue.pending()


class RabbitPair(Pair):
    def __init__(self, url: str) -> None:
        import pika

        from adapters.rabbitmq import RabbitMQConsumer, RabbitMQQueue, declare_topology

        self._pika = pika
        self._publisher = RabbitMQQueue(url, confirm_timeout=5.0)
        self.queue = self._publisher
        self.consumer = RabbitMQConsumer(url, reconnect_max_delay=1.0)
        # the probe's own plain connection, used from the test's thread only
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()
        declare_topology(self._channel)
        self._dead: list[bytes] = []

    def publish_raw(self, body: bytes) -> None:
        self._channel.basic_publish("", "report.jobs", body)

    def dead_letters(self) -> list[bytes]:
        while True:
            method, _properties, body = self._channel.basic_get("report.jobs.dlq", auto_ack=True)
            if method is None:
                return list(self._dead)
            self._dead.append(body)

    def waiting(self) -> int:
        ok = self._channel.queue_declare("report.jobs", passive=True)
        return int(ok.method.message_count)

    def close(self) -> None:
        self._publisher.close()
        self._connection.close()


def _memory(request: pytest.FixtureRequest) -> Pair:
    return MemoryPair()


def _rabbitmq(request: pytest.FixtureRequest) -> Pair:
    pair = RabbitPair(request.getfixturevalue("amqp_url"))
    request.addfinalizer(pair.close)
    return pair


PAIR_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Pair]] = {
    "memory": _memory,
    "rabbitmq": _rabbitmq,
}


@pytest.fixture(params=sorted(PAIR_FACTORIES))
def pair(request: pytest.FixtureRequest) -> Pair:
    return PAIR_FACTORIES[request.param](request)


# --- helpers ---


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_SEC) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def a_message(**overrides: Any) -> JobMessage:
    now = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    job = Job(
        id=str(uuid.uuid4()),
        tenant_id="tenant-a",
        requested_by="user-1",
        job_type=JobType.FEED_INTAKE_EXPORT,
        format=ReportFormat.CSV,
        farm_id=str(uuid.uuid4()),
        barn_id=str(uuid.uuid4()),
        start_date=dt.date(2026, 2, 1),
        end_date=dt.date(2026, 2, 28),
        filters={"source": ["MANUAL", "SILO_AUTO"]},
        created_at=now,
        updated_at=now,
    )
    return msgspec.structs.replace(message_for(job), **overrides)


def job_id_of(body: bytes) -> str:
    return str(json.loads(body)["job_id"])


class Recorder:
    """A handler that records every body it is given and answers as told."""

    def __init__(self, answer: Callable[[bytes, int], Disposition] | None = None) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._answer = answer

    def __call__(self, body: bytes) -> Disposition:
        with self._lock:
            self.bodies.append(body)
            seen = self.bodies.count(body)
        return self._answer(body, seen) if self._answer else Disposition.ACK

    def count(self) -> int:
        with self._lock:
            return len(self.bodies)


@contextmanager
def consuming(
    pair: Pair, handle: Callable[[bytes], Disposition], concurrency: int = 1
) -> Iterator[threading.Event]:
    """Run the consumer on a thread; on exit stop it and require that ``run`` returned."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pair.consumer.run(handle, concurrency, stop.is_set)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="consumer-under-test", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=DEADLINE_SEC)
    assert not thread.is_alive(), "run() did not return after stop"
    assert errors == []


# --- the contract ---


def test_ping_answers_while_the_broker_is_up(pair: Pair) -> None:
    pair.queue.ping()


def test_a_published_message_reaches_the_handler_byte_equal_and_in_the_old_format(
    pair: Pair,
) -> None:
    message = a_message()
    pair.queue.publish(message)
    recorder = Recorder()
    with consuming(pair, recorder):
        wait_until(lambda: recorder.count() == 1, "the message is handled")

    [body] = recorder.bodies
    assert body == msgspec.json.encode(message)
    decoded = json.loads(body)
    assert list(decoded) == OLD_MESSAGE_KEYS
    assert list(decoded["scope"]) == OLD_SCOPE_KEYS
    assert decoded["job_id"] == message.job_id
    assert decoded["scope"]["start_date"] == "2026-02-01"
    assert decoded["scope"]["filters"] == {"source": ["MANUAL", "SILO_AUTO"]}


def test_a_message_of_another_publisher_reaches_the_handler_unchanged(pair: Pair) -> None:
    # what the old Node.js API sent: JSON.stringify of the same object, nulls included
    body = (
        b'{"job_id":"6a1f2c9e-0d4b-4f7a-9c1e-2b3d4e5f6a7b","tenant_id":"t-1",'
        b'"job_type":"TELEMETRY_EXPORT","format":"json","scope":{"farm_id":null,'
        b'"barn_id":null,"batch_id":null,"start_date":null,"end_date":null,"filters":{}},'
        b'"requested_by":"u-1"}'
    )
    pair.publish_raw(body)
    recorder = Recorder()
    with consuming(pair, recorder):
        wait_until(lambda: recorder.count() == 1, "the message is handled")
    assert recorder.bodies == [body]
    assert msgspec.json.decode(body, type=JobMessage).job_id == (
        "6a1f2c9e-0d4b-4f7a-9c1e-2b3d4e5f6a7b"
    )


def test_a_dead_lettered_message_ends_in_the_dead_letter_queue_and_is_not_redelivered(
    pair: Pair,
) -> None:
    doomed, fine = a_message(), a_message()
    pair.queue.publish(doomed)
    pair.queue.publish(fine)
    recorder = Recorder(
        lambda body, _seen: (
            Disposition.DEAD_LETTER if job_id_of(body) == doomed.job_id else Disposition.ACK
        )
    )
    with consuming(pair, recorder):
        wait_until(lambda: len(pair.dead_letters()) == 1, "the message is dead-lettered")
        wait_until(lambda: recorder.count() == 2, "both messages are handled")

    assert pair.dead_letters() == [msgspec.json.encode(doomed)]
    assert sorted(job_id_of(b) for b in recorder.bodies) == sorted([doomed.job_id, fine.job_id])
    assert pair.waiting() == 0


def test_a_requeued_message_is_delivered_again(pair: Pair) -> None:
    message = a_message()
    pair.queue.publish(message)
    recorder = Recorder(lambda _body, seen: Disposition.REQUEUE if seen == 1 else Disposition.ACK)
    with consuming(pair, recorder):
        wait_until(lambda: recorder.count() == 2, "the message is delivered a second time")

    assert recorder.bodies == [msgspec.json.encode(message)] * 2
    assert pair.dead_letters() == []
    assert pair.waiting() == 0


def test_a_message_whose_handler_raises_is_delivered_again(pair: Pair) -> None:
    message = a_message()
    pair.queue.publish(message)

    def flaky(_body: bytes, seen: int) -> Disposition:
        if seen == 1:
            raise RuntimeError("the database went away")
        return Disposition.ACK

    recorder = Recorder(flaky)
    with consuming(pair, recorder):
        wait_until(lambda: recorder.count() == 2, "the message is delivered a second time")

    assert recorder.bodies == [msgspec.json.encode(message)] * 2
    assert pair.dead_letters() == []
    assert pair.waiting() == 0


def test_no_more_than_concurrency_handlers_run_at_once(pair: Pair) -> None:
    concurrency, total = 3, 7
    for _ in range(total):
        pair.queue.publish(a_message())
    lock = threading.Lock()
    release = threading.Event()
    running = peak = started = finished = 0

    def handle(body: bytes) -> Disposition:
        nonlocal running, peak, started, finished
        with lock:
            running += 1
            started += 1
            peak = max(peak, running)
        release.wait(timeout=DEADLINE_SEC)
        with lock:
            running -= 1
            finished += 1
        return Disposition.ACK

    with consuming(pair, handle, concurrency=concurrency):
        wait_until(lambda: started == concurrency, f"{concurrency} handlers run")
        # give an over-eager consumer the chance to start one more while all are busy
        observe_until = time.monotonic() + 0.5
        while time.monotonic() < observe_until:
            assert started == concurrency
            time.sleep(0.02)
        release.set()
        wait_until(lambda: finished == total, "every message is handled")

    assert peak == concurrency


def test_stop_ends_an_idle_run_within_a_second(pair: Pair) -> None:
    recorder = Recorder()
    with consuming(pair, recorder) as stop:
        pair.queue.publish(a_message())
        # the consumer is up (connected, consuming) once it handled something
        wait_until(lambda: recorder.count() == 1, "the consumer is running")
        began = time.monotonic()
        stop.set()
    assert time.monotonic() - began < 1.5


def test_stop_lets_the_handler_in_flight_finish_and_settles_its_message(pair: Pair) -> None:
    entered, release = threading.Event(), threading.Event()
    finished: list[bytes] = []

    def slow(body: bytes) -> Disposition:
        entered.set()
        release.wait(timeout=DEADLINE_SEC)
        finished.append(body)
        return Disposition.ACK

    stop = threading.Event()
    done = threading.Event()

    def run() -> None:
        pair.consumer.run(slow, 1, stop.is_set)
        done.set()

    pair.queue.publish(a_message())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert entered.wait(DEADLINE_SEC), "the handler never started"
        stop.set()
        # run must not return while its handler is still busy
        assert not done.wait(0.5)
    finally:
        release.set()
        thread.join(DEADLINE_SEC)
    assert done.is_set()
    assert len(finished) == 1
    # the handler's ACK was sent before run returned: nothing is left to redeliver
    assert pair.waiting() == 0


def test_messages_published_from_16_threads_at_once_are_each_delivered_exactly_once(
    pair: Pair,
) -> None:
    threads, per_thread = 16, 4
    barrier = threading.Barrier(threads)
    published: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def publisher() -> None:
        try:
            barrier.wait(timeout=DEADLINE_SEC)
            for _ in range(per_thread):
                message = a_message()
                pair.queue.publish(message)
                with lock:
                    published.append(message.job_id)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=publisher) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(DEADLINE_SEC)
    assert errors == []
    assert len(published) == threads * per_thread

    recorder = Recorder()
    with consuming(pair, recorder, concurrency=4):
        wait_until(lambda: recorder.count() >= len(published), "every message is handled")

    seen = collections.Counter(job_id_of(b) for b in recorder.bodies)
    assert set(seen) == set(published)
    assert set(seen.values()) == {1}
    assert pair.waiting() == 0
