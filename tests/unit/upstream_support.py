"""HTTP for the record source's unit tests: a handler plays the upstream service behind
``httpx.MockTransport``, under the same ``httpx.Client`` (hooks, headers) the service uses.

Handlers take an ``httpx.Request`` and return an ``httpx.Response``; one that raises
``httpx.ConnectError`` or ``httpx.ReadTimeout`` plays a request that got no answer.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


def transport(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)
