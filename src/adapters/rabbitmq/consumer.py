"""The job queue's consumer: manual acknowledgements, handlers on a thread pool, outcomes settled
on the connection's own thread."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from reportcore.ports import Disposition

from .topology import (
    FIRST_RETRY_DELAY_SEC,
    HEARTBEAT_SEC,
    QUEUE,
    TICK_SEC,
    close_quietly,
    connection_parameters,
    declare_topology,
    describe_url,
    wait_or_stop,
)

log = logging.getLogger(__name__)

AroundDelivery = Callable[
    [Mapping[str, Any] | None, bytes], contextlib.AbstractContextManager[object]
]
"""Wraps the handling of one delivery, given its AMQP headers and body (with tracing on: the
job's span, continuing the trace context the headers carry)."""


class _Session:
    """One connection's consumption; touched only by the connection's thread."""

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        self.connection = connection
        self.channel = channel
        # the session's consumers and the prefetch each was started with
        self.consumers: dict[str, int] = {}
        # handlers not finished, by the consumer they were delivered to (under the consumer's
        # lock: a handler's thread ends them, the connection's thread reads them)
        self.running: dict[str, int] = {}
        self.in_flight = 0
        self.cancelling = False
        self.cancelled_by_broker = False
        # set when the session ends: deliveries still waiting for a thread are not handled,
        # since the broker gives them to the next connection anyway
        self.over = threading.Event()


class _ChannelClosed(pika.exceptions.ChannelWrongStateError):
    """The broker closed the channel (for one, a delivery unacknowledged past its
    ``consumer_timeout``): consume again."""


def _closed_because(channel: BlockingChannel) -> str:
    """Why the broker closed ``channel`` (pika keeps it, unnamed, as ``_closing_reason``); for
    an acknowledgement timeout, what to set so that it does not happen again."""
    reason = getattr(channel, "_closing_reason", None)
    text = f"the channel closed: {reason}" if reason is not None else "the channel closed"
    if "acknowledgement" in text and "timed out" in text:
        text += (
            " (an export outlived the broker's consumer_timeout: set it above "
            "REPORT_MAX_EXPORT_SEC; docs/operations.md)"
        )
    return text


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

    A handler outlives its connection when the connection is lost mid-export: the new
    connection then asks only for as many messages as threads are free (none while none is,
    so that no message waits here behind a long export while other workers are idle), and
    starts one more consumer for the threads those handlers free as they end.
    ``consumer_timeout_sec``
    asks the broker (RabbitMQ 3.12 and later: ``x-consumer-timeout``) to wait that long for an
    acknowledgement before it closes the channel; older brokers take their ``consumer_timeout``
    from their own configuration (docs/operations.md).
    """

    def __init__(
        self,
        url: str,
        *,
        reconnect_max_delay: float = 10.0,
        heartbeat: int = HEARTBEAT_SEC,
        around_delivery: AroundDelivery | None = None,
        consumer_timeout_sec: float | None = None,
    ) -> None:
        self._url = url
        self._around = around_delivery
        self._where = describe_url(url)
        self._max_delay = reconnect_max_delay
        self._heartbeat = heartbeat
        self._arguments = (
            None
            if consumer_timeout_sec is None
            else {"x-consumer-timeout": int(consumer_timeout_sec * 1000)}
        )
        self._lock = threading.Lock()
        self._running = 0  # handlers not finished, of every connection

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
                if not self._wait_for_a_free_thread(concurrency, stop):
                    break
                session: _Session | None = None
                try:
                    session = self._open()
                    on_message = functools.partial(self._deliver, session, pool, handle, stop)
                    self._consume_with(session, on_message, concurrency - self._running)
                    if failures:
                        log.info("consumer connected to RabbitMQ at %s again", self._where)
                    failures = 0
                    self._consume(session, stop, concurrency, on_message)
                except (pika.exceptions.AMQPError, OSError, _ConsumerCancelled) as exc:
                    failures += 1
                    delay = min(self._max_delay, FIRST_RETRY_DELAY_SEC * 2.0 ** (failures - 1))
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
                        close_quietly(session.connection)
                    wait_or_stop(delay, stop)
                else:
                    session.over.set()
                    close_quietly(session.connection)

    def _wait_for_a_free_thread(self, concurrency: int, stop: Callable[[], bool]) -> bool:
        """Wait while every thread runs a handler of a lost connection (a prefetch of 0 would
        be no limit at all); False if ``stop`` came first."""
        while self._running >= concurrency:
            if stop():
                return False
            wait_or_stop(TICK_SEC, stop)
        return not stop()

    def _consume_with(self, session: _Session, on_message: Any, prefetch: int) -> None:
        """One more consumer on the session's channel, given ``prefetch`` messages at most (a
        consumer's prefetch is the one the channel had when it started)."""
        session.channel.basic_qos(prefetch_count=prefetch)
        tag = session.channel.basic_consume(
            QUEUE, on_message, auto_ack=False, arguments=self._arguments
        )
        session.consumers[tag] = prefetch

    def _open(self) -> _Session:
        params = connection_parameters(
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
        except BaseException:
            close_quietly(connection)
            raise
        session = _Session(connection, channel)

        def cancelled(_frame: pika.frame.Method[pika.spec.Basic.Cancel]) -> None:
            session.cancelled_by_broker = True

        channel.add_on_cancel_callback(cancelled)
        return session

    def _consume(
        self, session: _Session, stop: Callable[[], bool], concurrency: int, on_message: Any
    ) -> None:
        """Process I/O until stop, then cancel the consumer and drain this session."""
        while True:
            # short ticks: heartbeats and settlements flow, and stop is seen within a tick
            session.connection.process_data_events(time_limit=TICK_SEC)
            if session.cancelled_by_broker:
                raise _ConsumerCancelled("the broker cancelled the consumer")
            if not session.channel.is_open:
                raise _ChannelClosed(_closed_because(session.channel))
            if not session.cancelling and not stop():
                self._widen(session, concurrency, on_message)
            if stop():
                if not session.cancelling:
                    session.cancelling = True
                    # also hands back deliveries not yet dispatched to us
                    for tag in session.consumers:
                        session.channel.basic_cancel(tag)
                if session.in_flight == 0:
                    return

    def _widen(self, session: _Session, concurrency: int, on_message: Any) -> None:
        """Once handlers of a lost connection end, consume with the threads they freed too: a
        consumer's prefetch holds for its life, so one more consumer on the channel takes
        them (the session's consumers together never ask for more than the free threads)."""
        with self._lock:
            free = concurrency - self._running
            room = sum(p - session.running.get(t, 0) for t, p in session.consumers.items())
        extra = free - room  # threads that ended a lost connection's handler
        if extra <= 0:
            return
        self._consume_with(session, on_message, extra)
        log.info(
            "consumer takes %d more messages at once, as a lost connection's handlers ended",
            extra,
            extra={"consumers": len(session.consumers)},
        )

    # on the connection's thread
    def _deliver(
        self,
        session: _Session,
        pool: ThreadPoolExecutor,
        handle: Callable[[bytes], Disposition],
        stop: Callable[[], bool],
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        session.in_flight += 1
        consumer = method.consumer_tag or ""
        with self._lock:
            self._running += 1
            session.running[consumer] = session.running.get(consumer, 0) + 1
        headers = getattr(properties, "headers", None)
        pool.submit(self._work, session, handle, stop, method.delivery_tag, body, headers, consumer)

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
        headers: Mapping[str, Any] | None = None,
        consumer: str = "",
    ) -> None:
        try:
            if session.over.is_set():
                return  # its connection is gone, so the broker redelivers it elsewhere
            disposition = self._outcome(handle, stop, body, headers)
        finally:
            with self._lock:
                self._running -= 1
                session.running[consumer] -= 1
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

    def _outcome(
        self,
        handle: Callable[[bytes], Disposition],
        stop: Callable[[], bool],
        body: bytes,
        headers: Mapping[str, Any] | None,
    ) -> Disposition:
        if stop():  # it waited for a free thread past stop: back untouched
            return Disposition.REQUEUE
        try:
            with contextlib.nullcontext() if self._around is None else self._around(headers, body):
                return handle(body)
        except Exception:
            log.exception("job handler failed; the message goes back to the queue")
            return Disposition.REQUEUE
