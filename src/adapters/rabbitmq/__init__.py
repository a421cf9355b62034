"""RabbitMQ: the job queue's publisher and consumer over the old service's topology.

Three modules: :mod:`.topology` (the contract's queues and exchange, and the connection
settings both sides share), :mod:`.publisher` and :mod:`.consumer`.

A pika connection must only ever be touched by the thread that owns it, so:

- :class:`RabbitMQQueue` publishes from dedicated threads, each owning its connection.
  Callers (API request threads, the recovery pass) hand it their message through a
  thread-safe queue and wait, bounded by ``confirm_timeout``, for the broker's confirm.
- :class:`RabbitMQConsumer` runs its connection on the thread that calls :meth:`run`, which
  keeps processing I/O (so heartbeats flow during a ten-minute export) while handlers run on
  a thread pool; a handler's outcome is settled back on the connection's thread through
  ``add_callback_threadsafe``.

Both (re)connect by themselves with exponential backoff. Nothing here logs a URL's password.
"""

from __future__ import annotations

from .consumer import RabbitMQConsumer
from .publisher import RabbitMQQueue
from .topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_ROUTING_KEY,
    QUEUE,
    declare_topology,
    describe_url,
)

__all__ = [
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DEAD_LETTER_ROUTING_KEY",
    "QUEUE",
    "RabbitMQConsumer",
    "RabbitMQQueue",
    "declare_topology",
    "describe_url",
]
