"""How many messages wait in the service's queues, for the worker's metrics.

A short-lived connection per reading (the worker's metrics cache a reading for a few seconds):
a passive ``queue_declare`` answers the number of messages ready without changing anything,
and fails, rather than creating the queue, if it is missing.
"""

from __future__ import annotations

import pika

from .topology import DEAD_LETTER_QUEUE, QUEUE, close_quietly, connection_parameters

DEPTH_TIMEOUT_SEC = 2.0


def queue_depths(url: str) -> dict[str, int]:
    """Messages ready in ``report.jobs`` and ``report.jobs.dlq`` (unacknowledged ones are not
    counted: they are being worked on)."""
    params = connection_parameters(
        url,
        name="reportsvc metrics",
        heartbeat=0,
        timeout=DEPTH_TIMEOUT_SEC,
        blocked_timeout=DEPTH_TIMEOUT_SEC,
    )
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        depths: dict[str, int] = {}
        for name in (QUEUE, DEAD_LETTER_QUEUE):
            declared = channel.queue_declare(name, passive=True)
            depths[name] = int(declared.method.message_count)
        return depths
    finally:
        close_quietly(connection)
