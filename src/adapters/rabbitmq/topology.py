"""The contract's RabbitMQ topology and what the publisher and the consumer share.

Byte for byte the old service's, so that a broker it set up is accepted and a fresh one is set
up the same way: a durable queue ``report.jobs`` whose dead letters go through the durable
direct exchange ``report.jobs.dlx`` to the durable queue ``report.jobs.dlq``. Messages are
persistent JSON :class:`reportcore.jobs.JobMessage`\\ s published to the default exchange.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

log = logging.getLogger(__name__)

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


def message_properties(headers: Mapping[str, str] | None) -> pika.BasicProperties:
    """The contract's properties, plus ``headers`` (a trace context) when there are any: the
    body stays the old service's, and its consumers ignore headers they do not know."""
    if not headers:
        return MESSAGE_PROPERTIES
    return pika.BasicProperties(
        delivery_mode=MESSAGE_PROPERTIES.delivery_mode,
        content_type=MESSAGE_PROPERTIES.content_type,
        headers=dict(headers),
    )


# Long enough not to be noise, short enough that a dead peer is noticed within a minute.
HEARTBEAT_SEC = 30
# How long ping() waits for the broker (a readiness probe must answer quickly).
PING_TIMEOUT_SEC = 2.0
# The consumer's and the idle publisher's I/O tick: the longest a stop request or an idle
# heartbeat waits to be noticed.
TICK_SEC = 0.2
IDLE_TICK_SEC = 1.0
FIRST_RETRY_DELAY_SEC = 0.5


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


def connection_parameters(
    url: str, *, name: str, heartbeat: int, timeout: float, blocked_timeout: float | None
) -> pika.URLParameters:
    """pika's parameters for ``url``: one attempt a call, named, with our timeouts."""
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


def close_quietly(connection: BlockingConnection | None) -> None:
    """Close a connection that is being dropped anyway; a failure to close is only logged."""
    if connection is None or connection.is_closed:
        return
    try:
        connection.close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        # the connection is being dropped anyway; the broker requeues what it held
        log.debug("closing a broken connection failed: %s", exc)


def wait_or_stop(seconds: float, stop: Callable[[], bool]) -> bool:
    """Wait up to ``seconds``, checking ``stop`` every tick; True if stop turned true."""
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(TICK_SEC, left))
    return True
