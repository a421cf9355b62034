"""RabbitMQ: the job queue's publisher and consumer over the old service's topology.

Topology (the contract's, byte for byte, so that a broker set up by the old service is
accepted and a fresh one is set up the same way): a durable queue ``report.jobs`` whose dead
letters go through the durable direct exchange ``report.jobs.dlx`` to the durable queue
``report.jobs.dlq``. Messages are persistent JSON :class:`reportcore.jobs.JobMessage`\\ s
published to the default exchange.

A pika connection must only ever be touched by the thread that owns it, so:

- :class:`RabbitMQQueue` owns one connection on one dedicated thread. Callers (API request
  threads, the recovery pass) hand it their message through a thread-safe queue and wait,
  bounded by ``confirm_timeout``, for the broker's publisher confirm.
- :class:`RabbitMQConsumer` runs its connection on the thread that calls :meth:`run`, which
  keeps processing I/O (so heartbeats flow during a ten-minute export) while handlers run on
  a thread pool; a handler's outcome is settled back on the connection's thread through
  ``add_callback_threadsafe``.

Both (re)connect by themselves with exponential backoff. Nothing here logs a URL's password.
"""

from __future__ import annotations

import functools
import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from reportcore.errors import QueueUnavailable, ReportError, ServiceUnavailable
from reportcore.jobs import JobMessage
from reportcore.ports import Disposition

log = logging.getLogger(__name__)

# --- the topology of the contract ---

QUEUE = "report.jobs"
DEAD_LETTER_EXCHANGE = "report.jobs.dlx"
DEAD_LETTER_QUEUE = "report.jobs.dlq"
DEAD_LETTER_ROUTING_KEY = "report.jobs.dlq"
# Exactly what the old service declared: a queue declared again with other arguments is
# refused by the broker (PRECONDITION_FAILED), so these must never change.
QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "x-dead-letter-routing-key": DEAD_LETTER_ROUTING_KEY,
}
MESSAGE_PROPERTIES = pika.BasicProperties(
    delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json"
)

# Long enough not to be noise, short enough that a dead peer is noticed within a minute.
HEARTBEAT_SEC = 30
# How long ping() waits for the broker (a readiness probe must answer quickly).
PING_TIMEOUT_SEC = 2.0
# The consumer's and the idle publisher's I/O tick: the longest a stop request or an idle
# heartbeat waits to be noticed.
_TICK_SEC = 0.2
_IDLE_TICK_SEC = 1.0
_FIRST_RETRY_DELAY_SEC = 0.5


def declare_topology(channel: BlockingChannel) -> None:
    """Declare the contract's exchange, queues and binding on ``channel`` (idempotent)."""
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="direct", durable=True)
    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True)
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, routing_key=DEAD_LETTER_ROUTING_KEY)
    channel.queue_declare(QUEUE, durable=True, arguments=QUEUE_ARGUMENTS)


def describe_url(url: str) -> str:
    """``host:port/vhost`` of an AMQP URL: what logs may say about it (no credentials)."""
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return f"{parts.hostname}:{parts.port or 5672}/{vhost}"


def _parameters(
    url: str, *, name: str, heartbeat: int, timeout: float, blocked_timeout: float | None
) -> pika.URLParameters:
    params = pika.URLParameters(url)
    if "heartbeat" not in parse_qs(urlsplit(url).query):
        params.heartbeat = heartbeat
    # one attempt per call: the retry policy (backoff, giving up) is ours, not pika's
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = blocked_timeout
    params.client_properties = {"connection_name": name}
    return params


def _close_quietly(connection: BlockingConnection | None) -> None:
    if connection is None or connection.is_closed:
        return
    try:
        connection.close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        # the connection is being dropped anyway; the broker requeues what it held
        log.debug("closing a broken connection failed: %s", exc)


def _wait(seconds: float, stop: Callable[[], bool]) -> bool:
    """Wait up to ``seconds``, checking ``stop`` every tick; True if stop turned true."""
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(_TICK_SEC, left))
    return True


# --- the publisher ---


class _Request:
    """One call waiting for the publisher thread: a message to publish, or a ping."""

    __slots__ = ("body", "deadline", "future")

    def __init__(self, body: bytes | None, timeout: float) -> None:
        self.body = body
        self.deadline = time.monotonic() + timeout
        self.future: Future[None] = Future()


_STOP = None


class RabbitMQQueue:
    """:class:`reportcore.ports.JobQueue` over RabbitMQ with publisher confirms.

    Safe to call from any number of threads: every publish is carried out by a publisher
    thread that owns its own connection (pika is not thread-safe). A confirm takes a round
    trip and, for a persistent message, the broker's disk write (about 1 ms idle, several
    under load), so one connection waiting for each confirm in turn caps creates at a few
    hundred a second. Threads are therefore added while every one is busy, up to
    ``max_publishers``: concurrent publishes wait for their confirms side by side, and each
    publish still returns only once the broker confirmed that message. A caller waits at most
    ``confirm_timeout`` seconds and gets :class:`QueueUnavailable` for a nack, an unroutable
    message, a timeout or no connection. Connections are made on first use; after a failed
    attempt the next (by any thread) waits ``0.5 s``, doubling up to ``reconnect_max_delay``
    (publishes meanwhile fail at once, and the recovery pass publishes their jobs later).
    :meth:`close` stops the threads.
    """

    def __init__(
        self,
        url: str,
        *,
        confirm_timeout: float = 5.0,
        reconnect_max_delay: float = 5.0,
        heartbeat: int = HEARTBEAT_SEC,
        max_publishers: int = 8,
    ) -> None:
        if confirm_timeout <= 0:
            raise ValueError("confirm_timeout must be greater than 0")
        if max_publishers < 1:
            raise ValueError("max_publishers must be at least 1")
        self._url = url
        self._where = describe_url(url)
        self._confirm_timeout = confirm_timeout
        self._max_delay = reconnect_max_delay
        self._heartbeat = heartbeat
        self._max_publishers = max_publishers
        self._requests: stdqueue.SimpleQueue[_Request | None] = stdqueue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a request (under _lock)
        self._closed = False
        # the reconnect backoff, shared by every publisher thread (under _lock)
        self._failures = 0
        self._next_attempt = 0.0

    # port
    def publish(self, message: JobMessage) -> None:
        """Publish ``message`` persistently; return once the broker confirmed it."""
        body = msgspec.json.encode(message)
        request = self._submit(_Request(body, self._confirm_timeout), QueueUnavailable)
        self._await(request, self._confirm_timeout, QueueUnavailable, "confirm the message")

    def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` unless the broker answers within ~2 s."""
        timeout = min(PING_TIMEOUT_SEC, self._confirm_timeout)
        request = self._submit(_Request(None, timeout), ServiceUnavailable)
        self._await(request, timeout, ServiceUnavailable, "answer")

    def close(self) -> None:
        """Stop the publisher threads and close their connections; later calls fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._requests.put(_STOP)
        # a publish stuck on a blocked or silent broker ends by the connection's own
        # timeouts; the threads are daemons, so a process exit never waits for them
        deadline = time.monotonic() + self._confirm_timeout + 1.0
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("publisher thread did not stop within its timeouts")

    # caller side
    def _submit(self, request: _Request, error: type[ReportError]) -> _Request:
        with self._lock:
            if self._closed:
                raise error("the queue publisher is closed")
            if self._idle == 0 and len(self._threads) < self._max_publishers:
                thread = threading.Thread(
                    target=_Publisher(self).serve, name="rabbitmq-publisher", daemon=True
                )
                self._threads.append(thread)
                self._idle += 1  # counted as waiting until it takes its first request
                thread.start()
            self._requests.put(request)
        return request

    def _await(
        self, request: _Request, timeout: float, error: type[ReportError], what: str
    ) -> None:
        try:
            request.future.result(timeout=timeout)
        except TimeoutError:
            # if no thread has taken it yet, none ever will; if one has, a late publish
            # is a duplicate message at worst, which the worker's claim makes harmless
            request.future.cancel()
            raise error(f"the broker did not {what} within {timeout:g}s") from None

    # publisher threads
    def _next_request(self) -> _Request | Literal[False] | None:
        """The next request, ``None`` to stop, or ``False`` after an idle tick."""
        try:
            request = self._requests.get(timeout=_IDLE_TICK_SEC)
        except stdqueue.Empty:
            return False
        with self._lock:
            self._idle -= 1
        return request

    def _done_with_request(self) -> None:
        with self._lock:
            self._idle += 1

    def _fail_pending(self) -> None:
        stops = 0
        while True:
            try:
                request = self._requests.get_nowait()
            except stdqueue.Empty:
                break
            if request is None:
                stops += 1  # another thread's: handed back below
            elif request.future.set_running_or_notify_cancel():
                request.future.set_exception(QueueUnavailable("the queue publisher is closed"))
        for _ in range(stops):
            self._requests.put(_STOP)


class _Publisher:
    """One publisher thread's connection and loop (the thread alone touches them)."""

    def __init__(self, queue: RabbitMQQueue) -> None:
        self._q = queue
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def serve(self) -> None:
        try:
            while True:
                request = self._q._next_request()
                if request is False:
                    if self._q._closed:
                        return
                    self._keep_alive()
                    continue
                if request is _STOP:
                    return
                try:
                    self._handle(request)
                finally:
                    self._q._done_with_request()
        finally:
            self._drop()
            if self._q._closed:
                self._q._fail_pending()

    def _handle(self, request: _Request) -> None:
        if not request.future.set_running_or_notify_cancel():
            return  # its caller gave up waiting
        try:
            if request.body is None:
                self._ping_now()
            else:
                self._publish_now(request.body, request.deadline)
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
            log.warning("publisher connection to %s lost: %s", self._q._where, exc)
            self._drop()

    def _publish_now(self, body: bytes, deadline: float) -> None:
        # A connection that died since the last publish is only found out by using it; one
        # more try on a fresh connection keeps a broker restart from failing the next create.
        for attempt in (1, 2):
            channel = self._ensure_channel(honour_backoff=True)
            try:
                channel.basic_publish(
                    "", QUEUE, body, properties=MESSAGE_PROPERTIES, mandatory=True
                )
                return
            except pika.exceptions.NackError:
                raise QueueUnavailable("the broker refused the message (nack)") from None
            except pika.exceptions.UnroutableError:
                # the queue is gone (deleted by hand?): a new connection declares it again
                self._drop()
                raise QueueUnavailable(f"no queue {QUEUE!r} took the message") from None
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("publisher connection to %s lost: %s", self._q._where, exc)
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
        q = self._q
        now = time.monotonic()
        with q._lock:
            next_attempt = q._next_attempt
        if honour_backoff and now < next_attempt:
            raise QueueUnavailable(
                f"RabbitMQ at {q._where} is unreachable; next try in {next_attempt - now:.1f}s"
            )
        params = _parameters(
            q._url,
            name="reportsvc publisher",
            heartbeat=q._heartbeat,
            timeout=q._confirm_timeout,
            # a broker that blocks publishers (memory or disk alarm) is an outage too
            blocked_timeout=q._confirm_timeout,
        )
        connection: BlockingConnection | None = None
        try:
            connection = pika.BlockingConnection(params)
            channel = connection.channel()
            declare_topology(channel)
            channel.confirm_delivery()
        except (pika.exceptions.AMQPError, OSError) as exc:
            _close_quietly(connection)
            with q._lock:
                q._failures += 1
                delay = min(q._max_delay, _FIRST_RETRY_DELAY_SEC * 2 ** (q._failures - 1))
                q._next_attempt = time.monotonic() + delay
            log.warning(
                "cannot connect to RabbitMQ at %s: %s: %s; next try in %.1fs",
                q._where,
                type(exc).__name__,
                exc,
                delay,
            )
            raise QueueUnavailable(f"RabbitMQ at {q._where} is unreachable") from exc
        with q._lock:
            recovered, q._failures = q._failures, 0
        if recovered:
            log.info("publisher connected to RabbitMQ at %s again", q._where)
        self._connection, self._channel = connection, channel
        return channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        _close_quietly(connection)


# --- the consumer ---


class _Session:
    """One connection's consumption; touched only by the connection's thread."""

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        self.connection = connection
        self.channel = channel
        self.tag = ""
        self.in_flight = 0
        self.cancelling = False
        self.cancelled_by_broker = False
        # set when the session ends: deliveries still waiting for a thread are not handled,
        # since the broker gives them to the next connection anyway
        self.over = threading.Event()


class _ConsumerCancelled(Exception):
    """The broker cancelled our consumer (the queue was deleted): consume again."""


class RabbitMQConsumer:
    """:class:`reportcore.ports.JobConsumer` over RabbitMQ with manual acknowledgements.

    :meth:`run` consumes ``report.jobs`` with a prefetch of ``concurrency`` and hands each
    delivery to one of ``concurrency`` handler threads; the outcome is applied on the
    connection's thread: ACK -> ack, DEAD_LETTER -> nack without requeue (to the DLQ through
    the DLX), REQUEUE or a raising handler -> nack with requeue. After a connection loss it
    reconnects with backoff (``0.5 s`` doubling up to ``reconnect_max_delay``); messages not
    acknowledged by then are redelivered by the broker.
    """

    def __init__(
        self, url: str, *, reconnect_max_delay: float = 10.0, heartbeat: int = HEARTBEAT_SEC
    ) -> None:
        self._url = url
        self._where = describe_url(url)
        self._max_delay = reconnect_max_delay
        self._heartbeat = heartbeat

    def run(
        self,
        handle: Callable[[bytes], Disposition],
        concurrency: int,
        stop: Callable[[], bool],
    ) -> None:
        """Consume until ``stop()`` is true; return once in-flight handlers finished (and
        their outcome was sent, if the connection is alive)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        failures = 0
        # leaving the block waits for handlers of connections lost earlier, too
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="job") as pool:
            while not stop():
                session: _Session | None = None
                try:
                    session = self._open(concurrency)
                    session.tag = session.channel.basic_consume(
                        QUEUE,
                        functools.partial(self._deliver, session, pool, handle, stop),
                        auto_ack=False,
                    )
                    if failures:
                        log.info("consumer connected to RabbitMQ at %s again", self._where)
                    failures = 0
                    self._consume(session, stop)
                except (pika.exceptions.AMQPError, OSError, _ConsumerCancelled) as exc:
                    failures += 1
                    delay = min(self._max_delay, _FIRST_RETRY_DELAY_SEC * 2 ** (failures - 1))
                    log.warning(
                        "consumer connection to RabbitMQ at %s failed: %s: %s; "
                        "reconnecting in %.1fs",
                        self._where,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    if session is not None:
                        session.over.set()
                        _close_quietly(session.connection)
                    _wait(delay, stop)
                else:
                    session.over.set()
                    _close_quietly(session.connection)

    def _open(self, concurrency: int) -> _Session:
        params = _parameters(
            self._url,
            name="reportsvc consumer",
            heartbeat=self._heartbeat,
            timeout=10.0,
            blocked_timeout=None,
        )
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            declare_topology(channel)
            channel.basic_qos(prefetch_count=concurrency)
        except BaseException:
            _close_quietly(connection)
            raise
        session = _Session(connection, channel)

        def cancelled(_frame: Any) -> None:
            session.cancelled_by_broker = True

        channel.add_on_cancel_callback(cancelled)
        return session

    def _consume(self, session: _Session, stop: Callable[[], bool]) -> None:
        """Process I/O until stop, then cancel the consumer and drain this session."""
        while True:
            # short ticks: heartbeats and settlements flow, and stop is seen within a tick
            session.connection.process_data_events(time_limit=_TICK_SEC)
            if session.cancelled_by_broker:
                raise _ConsumerCancelled("the broker cancelled the consumer")
            if not session.channel.is_open:
                raise pika.exceptions.ChannelWrongStateError("the channel closed")
            if stop():
                if not session.cancelling:
                    session.cancelling = True
                    # also hands back deliveries not yet dispatched to us
                    session.channel.basic_cancel(session.tag)
                if session.in_flight == 0:
                    return

    # on the connection's thread
    def _deliver(
        self,
        session: _Session,
        pool: ThreadPoolExecutor,
        handle: Callable[[bytes], Disposition],
        stop: Callable[[], bool],
        channel: BlockingChannel,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        session.in_flight += 1
        pool.submit(self._work, session, handle, stop, method.delivery_tag, body)

    def _settle(self, session: _Session, tag: int, disposition: Disposition) -> None:
        session.in_flight -= 1
        try:
            if disposition is Disposition.ACK:
                session.channel.basic_ack(tag)
            elif disposition is Disposition.DEAD_LETTER:
                session.channel.basic_nack(tag, requeue=False)
            else:
                session.channel.basic_nack(tag, requeue=True)
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not %s a message (the broker redelivers it): %s", disposition, exc)

    # on a handler thread
    def _work(
        self,
        session: _Session,
        handle: Callable[[bytes], Disposition],
        stop: Callable[[], bool],
        tag: int,
        body: bytes,
    ) -> None:
        if session.over.is_set():
            return  # its connection is gone, so the broker redelivers it elsewhere
        if stop():
            # it waited for a free thread past stop: back untouched
            disposition = Disposition.REQUEUE
        else:
            try:
                disposition = handle(body)
            except Exception:
                log.exception("job handler failed; the message goes back to the queue")
                disposition = Disposition.REQUEUE
        try:
            session.connection.add_callback_threadsafe(
                functools.partial(self._settle, session, tag, disposition)
            )
        except pika.exceptions.AMQPError as exc:
            log.warning(
                "connection lost before a message could be settled (%s); "
                "the broker redelivers it: %s",
                disposition,
                exc,
            )
