"""The job queue's publisher: confirmed, persistent publishes from threads that own their
connections.

Three small pieces share the work, each owning its own state: :class:`_Inbox` (the requests
waiting for a thread, and how many threads are idle), :class:`_Backoff` (when the next
connection attempt may be made, shared by every thread) and :class:`_PublisherThread` (one
thread's connection and loop).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable, Mapping, Sized
from concurrent.futures import Future

import msgspec
import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from reportcore.errors import QueueUnavailable, ReportError, ServiceUnavailable
from reportcore.jobs import JobMessage

from .topology import (
    FIRST_RETRY_DELAY_SEC,
    HEARTBEAT_SEC,
    IDLE_TICK_SEC,
    PING_TIMEOUT_SEC,
    QUEUE,
    close_quietly,
    connection_parameters,
    declare_topology,
    describe_url,
    message_properties,
)

log = logging.getLogger(__name__)

AroundPublish = Callable[[JobMessage], contextlib.AbstractContextManager[Mapping[str, str]]]
"""Wraps one publish (a span, with tracing on) and gives the AMQP headers to send with it."""
_NO_HEADERS: contextlib.AbstractContextManager[Mapping[str, str]] = contextlib.nullcontext({})


class _Request:
    """One call waiting for a publisher thread: a message to publish, or a ping."""

    __slots__ = ("body", "deadline", "future", "headers")

    def __init__(
        self, body: bytes | None, timeout: float, headers: Mapping[str, str] | None = None
    ) -> None:
        self.body = body
        self.headers = headers
        self.deadline = time.monotonic() + timeout
        self.future: Future[None] = Future()


class _Signal(enum.Enum):
    """What a publisher thread may be told instead of a request."""

    STOP = "stop"  # the queue is closing: leave the loop
    IDLE = "idle"  # nothing came within a tick: keep the connection alive


class _Inbox:
    """The requests waiting for a publisher thread, and how many threads wait for one."""

    def __init__(self) -> None:
        self._requests: stdqueue.SimpleQueue[_Request | _Signal] = stdqueue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def put(self, request: _Request, error: type[ReportError], start: _Threads) -> None:
        """Queue ``request``; ``start`` a thread first when none is idle and one may be added."""
        with self._lock:
            if self._closed:
                raise error("the queue publisher is closed")
            if self._idle == 0 and start():
                self._idle += 1  # counted as waiting until it takes its first request
            self._requests.put(request)

    def take(self) -> _Request | _Signal:
        """The next request for a thread; :attr:`_Signal.IDLE` after an idle tick."""
        try:
            request = self._requests.get(timeout=IDLE_TICK_SEC)
        except stdqueue.Empty:
            return _Signal.IDLE
        if isinstance(request, _Request):
            with self._lock:
                self._idle -= 1
        return request

    def done(self) -> None:
        """A thread finished its request and waits for the next."""
        with self._lock:
            self._idle += 1

    def close(self, threads: Sized) -> bool:
        """Refuse new requests and tell every thread to stop; False if already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            for _ in range(len(threads)):
                self._requests.put(_Signal.STOP)
        return True

    def fail_pending(self) -> None:
        """Fail every request no thread will take any more (the queue closed)."""
        stops = 0
        while True:
            try:
                request = self._requests.get_nowait()
            except stdqueue.Empty:
                break
            if request is _Signal.STOP:
                stops += 1  # another thread's: handed back below
            elif isinstance(request, _Request) and request.future.set_running_or_notify_cancel():
                request.future.set_exception(QueueUnavailable("the queue publisher is closed"))
        for _ in range(stops):
            self._requests.put(_Signal.STOP)


class _Threads:
    """The publisher threads; calling it starts one more, up to a limit (under the inbox's
    lock, so that :meth:`_Inbox.close` counts every thread)."""

    def __init__(self, target: Callable[[], _PublisherThread], limit: int) -> None:
        self._target = target
        self._limit = limit
        self.threads: list[threading.Thread] = []

    def __len__(self) -> int:
        return len(self.threads)

    def __call__(self) -> bool:
        if len(self.threads) >= self._limit:
            return False
        thread = threading.Thread(
            target=self._target().serve, name="rabbitmq-publisher", daemon=True
        )
        self.threads.append(thread)
        thread.start()
        return True


class _Backoff:
    """When the next connection attempt may be made, shared by every publisher thread."""

    def __init__(self, max_delay: float) -> None:
        self._max_delay = max_delay
        self._lock = threading.Lock()
        self._failures = 0
        self._next_attempt = 0.0

    def wait_left(self) -> float:
        """Seconds until an attempt may be made (0 or less: now)."""
        with self._lock:
            return self._next_attempt - time.monotonic()

    def failed(self) -> float:
        """Record a failed attempt; the delay before the next, doubling from 0.5 s."""
        with self._lock:
            self._failures += 1
            delay = min(self._max_delay, FIRST_RETRY_DELAY_SEC * 2.0 ** (self._failures - 1))
            self._next_attempt = time.monotonic() + delay
            return delay

    def succeeded(self) -> bool:
        """Record a connection made; whether it ended a run of failures."""
        with self._lock:
            recovered, self._failures = self._failures, 0
        return recovered > 0


class _Broker(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how a publisher thread connects."""

    url: str
    where: str
    heartbeat: int
    timeout: float


class RabbitMQQueue:
    """:class:`reportcore.ports.JobQueue` over RabbitMQ with publisher confirms.

    Safe to call from any number of threads: every publish is carried out by a publisher
    thread that owns its own connection (pika is not thread-safe). A confirm takes a round
    trip and the broker's disk write, so one connection waiting for each confirm in turn caps
    the rate of creates (docs/performance.md has the figures). Threads are therefore added
    while every one is busy, up to ``max_publishers``: concurrent publishes wait for their
    confirms side by side, and each publish still returns only once the broker confirmed that
    message. A caller waits at most ``confirm_timeout`` seconds and gets
    :class:`QueueUnavailable` for a nack, an unroutable message, a timeout or no connection.
    Connections are made on first use; after a failed attempt the next (by any thread) waits
    ``0.5 s``, doubling up to ``reconnect_max_delay`` (publishes meanwhile fail at once, and
    the recovery pass publishes their jobs later). :meth:`close` stops the threads.
    """

    def __init__(
        self,
        url: str,
        *,
        confirm_timeout: float = 5.0,
        reconnect_max_delay: float = 5.0,
        heartbeat: int = HEARTBEAT_SEC,
        max_publishers: int = 8,
        around_publish: AroundPublish | None = None,
    ) -> None:
        if confirm_timeout <= 0:
            raise ValueError("confirm_timeout must be greater than 0")
        if max_publishers < 1:
            raise ValueError("max_publishers must be at least 1")
        self._confirm_timeout = confirm_timeout
        self._around_publish = around_publish
        broker = _Broker(
            url=url, where=describe_url(url), heartbeat=heartbeat, timeout=confirm_timeout
        )
        self._inbox = _Inbox()
        backoff = _Backoff(reconnect_max_delay)
        self._start = _Threads(
            lambda: _PublisherThread(broker, self._inbox, backoff), max_publishers
        )

    # port
    def publish(self, message: JobMessage) -> None:
        """Publish ``message`` persistently; return once the broker confirmed it."""
        body = msgspec.json.encode(message)
        around = self._around_publish
        with _NO_HEADERS if around is None else around(message) as headers:
            request = _Request(body, self._confirm_timeout, headers)
            self._inbox.put(request, QueueUnavailable, self._start)
            self._await(request, self._confirm_timeout, QueueUnavailable, "confirm the message")

    def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` unless the broker answers within ~2 s."""
        timeout = min(PING_TIMEOUT_SEC, self._confirm_timeout)
        request = _Request(None, timeout)
        self._inbox.put(request, ServiceUnavailable, self._start)
        self._await(request, timeout, ServiceUnavailable, "answer")

    def close(self) -> None:
        """Stop the publisher threads and close their connections; later calls fail."""
        if not self._inbox.close(self._start):
            return
        threads = self._start.threads
        # a publish stuck on a blocked or silent broker ends by the connection's own
        # timeouts; the threads are daemons, so a process exit never waits for them
        deadline = time.monotonic() + self._confirm_timeout + 1.0
        for thread in list(threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("publisher thread did not stop within its timeouts")

    @staticmethod
    def _await(request: _Request, timeout: float, error: type[ReportError], what: str) -> None:
        try:
            request.future.result(timeout=timeout)
        except TimeoutError:
            # if no thread has taken it yet, none ever will; if one has, a late publish
            # is a duplicate message at worst, which the worker's claim makes harmless
            request.future.cancel()
            raise error(f"the broker did not {what} within {timeout:g}s") from None


class _PublisherThread:
    """One publisher thread's connection and loop (the thread alone touches them)."""

    def __init__(self, broker: _Broker, inbox: _Inbox, backoff: _Backoff) -> None:
        self._broker = broker
        self._inbox = inbox
        self._backoff = backoff
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def serve(self) -> None:
        try:
            while True:
                request = self._inbox.take()
                if request is _Signal.IDLE:
                    if self._inbox.closed:
                        return
                    self._keep_alive()
                    continue
                if request is _Signal.STOP:
                    return
                try:
                    self._handle(request)
                finally:
                    self._inbox.done()
        finally:
            self._drop()
            if self._inbox.closed:
                self._inbox.fail_pending()

    def _handle(self, request: _Request) -> None:
        if not request.future.set_running_or_notify_cancel():
            return  # its caller gave up waiting
        try:
            if request.body is None:
                self._ping_now()
            else:
                self._publish_now(request.body, request.deadline, request.headers)
        except ReportError as exc:
            request.future.set_exception(exc)
        except Exception as exc:
            # a bug must not leave a caller waiting out its timeout, nor kill the thread
            log.exception("publisher failed unexpectedly")
            self._drop()
            request.future.set_exception(QueueUnavailable(f"publish failed: {exc}"))
        else:
            request.future.set_result(None)

    def _keep_alive(self) -> None:
        """Answer heartbeats and notice a closed connection while there is nothing to send."""
        if self._connection is None:
            return
        try:
            self._connection.process_data_events(0)
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("publisher connection to %s lost: %s", self._broker.where, exc)
            self._drop()

    def _publish_now(
        self, body: bytes, deadline: float, headers: Mapping[str, str] | None = None
    ) -> None:
        # A connection that died since the last publish is only found out by using it; one
        # more try on a fresh connection keeps a broker restart from failing the next create.
        properties = message_properties(headers)
        for attempt in (1, 2):
            channel = self._ensure_channel(honour_backoff=True)
            try:
                channel.basic_publish("", QUEUE, body, properties=properties, mandatory=True)
                return
            except pika.exceptions.NackError:
                raise QueueUnavailable("the broker refused the message (nack)") from None
            except pika.exceptions.UnroutableError:
                # the queue is gone (deleted by hand?): a new connection declares it again
                self._drop()
                raise QueueUnavailable(f"no queue {QUEUE!r} took the message") from None
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("publisher connection to %s lost: %s", self._broker.where, exc)
                self._drop()
                if attempt == 2 or time.monotonic() >= deadline:
                    raise QueueUnavailable(f"publish failed: {type(exc).__name__}") from exc

    def _ping_now(self) -> None:
        try:
            channel = self._ensure_channel(honour_backoff=False)
            # a round trip to the broker, not only a look at local socket state
            channel.queue_declare(QUEUE, passive=True)
        except QueueUnavailable as exc:
            raise ServiceUnavailable(exc.message) from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._drop()
            raise ServiceUnavailable(f"RabbitMQ does not answer: {type(exc).__name__}") from exc

    def _ensure_channel(self, *, honour_backoff: bool) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop()
        broker = self._broker
        wait = self._backoff.wait_left()
        if honour_backoff and wait > 0:
            raise QueueUnavailable(
                f"RabbitMQ at {broker.where} is unreachable; next try in {wait:.1f}s"
            )
        params = connection_parameters(
            broker.url,
            name="reportsvc publisher",
            heartbeat=broker.heartbeat,
            timeout=broker.timeout,
            # a broker that blocks publishers (memory or disk alarm) is an outage too
            blocked_timeout=broker.timeout,
        )
        connection: BlockingConnection | None = None
        try:
            connection = pika.BlockingConnection(params)
            channel = connection.channel()
            declare_topology(channel)
            channel.confirm_delivery()
        except (pika.exceptions.AMQPError, OSError) as exc:
            close_quietly(connection)
            delay = self._backoff.failed()
            log.warning(
                "cannot connect to RabbitMQ at %s: %s: %s; next try in %.1fs",
                broker.where,
                type(exc).__name__,
                exc,
                delay,
            )
            raise QueueUnavailable(f"RabbitMQ at {broker.where} {_refused_or_not(exc)}") from exc
        if self._backoff.succeeded():
            log.info("publisher connected to RabbitMQ at %s again", broker.where)
        self._connection, self._channel = connection, channel
        return channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        close_quietly(connection)


def _refused_or_not(exc: BaseException) -> str:
    """What a failed connect says to readiness: a broker that answered and refused the login
    or the vhost is no network outage ("unreachable" sent operators to the network)."""
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "refused the login (RABBITMQ_URL's user or password)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "refused the vhost (RABBITMQ_URL's path: missing, or not the user's)"
    return "is unreachable"
