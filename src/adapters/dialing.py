"""Connecting within a deadline: the addresses of a name, each with the time its connect may
take. ``socket.create_connection`` gives each address the whole timeout, so a name of ten
addresses that never answer holds a request ten timeouts long; the upstream transport and the
webhook sender each connect address by address through :func:`addresses_in_time` instead."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

Address = tuple[int, int, int, Any]  # family, socket type, protocol, address (getaddrinfo's)


def addresses_in_time(
    host: str,
    port: int,
    timeout: float | None,
    ends: float | None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[Address, float | None]]:
    """Each stream address of ``host``:``port`` with the seconds its connect may take: what
    is left before ``ends`` (``time.monotonic()``; ``None``: no deadline), at most
    ``timeout``. None is given once ``ends`` has passed or ``stop()`` says so: the caller,
    out of addresses, tells that from a failure of the last one with :func:`over`."""
    for family, kind, proto, _, where in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        if over(ends, stop):
            return
        left = None if ends is None else ends - time.monotonic()
        each = left if timeout is None else timeout if left is None else min(timeout, left)
        yield (family, kind, proto, where), each


def over(ends: float | None, stop: Callable[[], bool] | None = None) -> bool:
    """Whether a connect may no longer be tried: past ``ends``, or ``stop()`` says so."""
    return (ends is not None and time.monotonic() >= ends) or (stop is not None and stop())
