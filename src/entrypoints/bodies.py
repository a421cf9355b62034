"""Reading request bodies: every way a body can be unreadable is a client error, never a 500.

Litestar decodes a JSON body with msgspec and lets whatever that raises escape: a body nested
a thousand levels deep (``RecursionError``) or holding invalid UTF-8 (``UnicodeDecodeError``)
answered 500, a ``text/plain`` body was parsed as JSON anyway, duplicate keys silently took the
last value, and a client hanging up mid-body was an "unhandled error" with a traceback.
:class:`StrictRequest` (the app's ``request_class``) closes each of these where the body is read.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from litestar import Request
from litestar.connection.base import empty_receive, empty_send
from litestar.exceptions import ClientException
from litestar.types import Empty, Receive, Scope, Send
from litestar.types.empty import EmptyType

from reportcore.errors import ValidationError

from .echo import bounded

# A create body is flat but for ``filters`` (an object of strings or lists of strings): a few
# levels. The bound keeps every later step (conversion, checks) far from recursion limits.
MAX_BODY_DEPTH = 32


class ClientDisconnected(Exception):
    """The client went away before its request body was complete: nobody to answer."""


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a structured ``application/<x>+json`` (RFC 6839)."""
    kind, _, subtype = content_type.strip().lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValidationError(f"request body has the key {bounded(key)!r} twice")
        seen[key] = value
    return seen


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    # iterative: the value may be as deep as the decoder allowed
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def decode_json_body(raw: bytes) -> Any:
    """The JSON value of a request body, or a :class:`ValidationError` (400) saying why."""
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        if isinstance(exc, UnicodeDecodeError):
            reason = "it is not valid UTF-8"
        raise ValidationError(f"request body is not valid JSON: {bounded(reason)}") from None
    if _depth(value) > MAX_BODY_DEPTH:
        raise ValidationError(
            f"request body is nested more than {MAX_BODY_DEPTH} levels deep"
        ) from None
    if isinstance(value, dict | list):
        # msgspec keeps the last of two equal keys; a second parse is the only way to see them
        json.loads(raw, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
    return value


class StrictRequest(Request[Any, Any, Any]):
    """A request whose JSON body is checked before Litestar converts it (see the module)."""

    def __init__(
        self, scope: Scope, receive: Receive = empty_receive, send: Send = empty_send
    ) -> None:
        async def watched() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            return message

        super().__init__(scope, watched, send)

    async def json(self) -> Any:
        """The body as JSON: a JSON media type (or none given), UTF-8, no duplicate keys."""
        cached: Any | EmptyType = self._json
        if cached is not Empty:
            return cached
        content_type, options = self.content_type
        if content_type and not is_json_media_type(content_type):
            raise ClientException(
                f"request body must be application/json, not {bounded(content_type)}",
                status_code=415,
            )
        charset = options.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise ClientException(
                f"request body must be UTF-8, not {bounded(charset)}", status_code=415
            )
        body = await self.body()
        self._json = self._connection_state.json = decode_json_body(body or b"null")
        return self._json
