"""A fake of HTTP for the record source's unit tests: a handler plays the upstream service.

Handlers speak ``httpx.Request`` and ``httpx.Response`` (handy values for a request's URL,
parameters and headers and for an answer's status and body); a handler that raises
:class:`adapters.http_client.NoAnswer` plays a request that got no answer (refused, timed out).
The real client is tested against real sockets in tests/integration/test_http_client.py.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Mapping

import httpx

from adapters.http_client import Answer

Handler = Callable[[httpx.Request], httpx.Response]


class MockHttp:
    """:class:`adapters.upstream.Http` answered by ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.closed = False

    def get(self, base_url: str, target: str, headers: Mapping[str, str]) -> Answer:
        response = self.handler(httpx.Request("GET", base_url + target, headers=headers))
        message = http.client.HTTPMessage()
        for name, value in response.headers.multi_items():
            message[name] = value
        return Answer(response.status_code, message, response.read())

    def close(self) -> None:
        self.closed = True
