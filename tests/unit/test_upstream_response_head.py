"""The transport reads a response's head without ``email.parser`` (issue 27, item 2: 16 us a
response). Whatever a valid head holds, the transport's response makes of it what the standard
library's makes: status, reason, version, the headers in order with repeats and folds, the
body's length or chunking, whether the connection closes, and the body read after it. A line
that is no header is refused, not taken for the start of the body."""

from __future__ import annotations

import http.client
import io
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.upstream.transport import _Response

TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# what a header's value may hold: visible ASCII and Latin-1, spaces and tabs (no line breaks)
VALUE = st.text(
    alphabet=st.sampled_from([chr(c) for c in (9, *range(32, 127), *range(160, 256))]),
    max_size=30,
)
NAME = st.text(alphabet=TOKEN, min_size=1, max_size=16)


class _Socket:
    """What ``HTTPResponse`` asks of a socket: a file to read the answer from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BytesIO:
        return io.BytesIO(self._data)


def read(response_class: type[http.client.HTTPResponse], raw: bytes, method: str) -> Any:
    response = response_class(_Socket(raw), method=method)  # type: ignore[arg-type]
    try:
        response.begin()
        body = response.read()
    except http.client.HTTPException as exc:
        return type(exc)
    return (
        response.status,
        response.reason,
        response.version,
        response.getheaders(),
        response.chunked,
        response.will_close,
        body,
    )


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, str]:
    """A response as an upstream may send it: an interim 100 or not, HTTP/1.0 or 1.1, any
    headers (some folded over lines, some repeated), the body sized by Content-Length, chunked,
    or ended by the connection's close."""
    method = draw(st.sampled_from(["GET", "HEAD"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    status = draw(st.sampled_from([200, 204, 206, 304, 404, 429, 500, 503]))
    reason = draw(st.sampled_from(["OK", "", "Not Found", " Too  Many "]))
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    lines: list[str] = []
    for name, value in draw(st.lists(st.tuples(NAME, VALUE), max_size=12)):
        lines.append(f"{name}:{value}")
        for fold in draw(st.lists(VALUE.map(lambda v: " " + v), max_size=2)):
            lines.append(fold)
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked", "close", "wrong length"]))
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
    elif framing == "wrong length":
        lines.append(f"content-length: {draw(st.sampled_from(['-1', 'x', '']))}")
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        cut = draw(st.integers(0, len(body)))
        chunks = [c for c in (body[:cut], body[cut:]) if c]
        body = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    connection = draw(st.sampled_from([None, "close", "keep-alive", "Keep-Alive, Upgrade"]))
    if connection is not None:
        lines.append(f"Connection: {connection}")
    lines = draw(st.permutations(lines)) if not any(x[:1] == " " for x in lines) else lines
    head = f"{version} {status} {reason}{newline}" + "".join(x + newline for x in lines)
    interim = "HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n" if draw(st.booleans()) else ""
    return (interim + head + newline).encode("latin-1") + body, method


@given(answers())
def test_a_head_reads_as_the_standard_library_reads_it(answer: tuple[bytes, str]) -> None:
    raw, method = answer
    assert read(_Response, raw, method) == read(http.client.HTTPResponse, raw, method)


def test_repeated_and_folded_headers_are_kept_as_sent() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Long: one\r\n\ttwo\r\n"
        b"set-cookie: b=2\r\nContent-Length: 2\r\n\r\nhi"
    )
    status, _, _, headers, _, will_close, body = read(_Response, raw, "GET")
    assert (status, body, will_close) == (200, b"hi", False)
    assert headers == [
        ("Set-Cookie", "a=1"),
        ("X-Long", "one\r\n\ttwo"),
        ("set-cookie", "b=2"),
        ("Content-Length", "2"),
    ]


@pytest.mark.parametrize(
    "line",
    [b"no colon at all", b" folded first: line", b"Name : space before the colon", b": no name"],
)
def test_a_line_that_is_no_header_is_refused(line: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n"
    assert read(_Response, raw, "GET") is http.client.HTTPException


@pytest.mark.parametrize("count", [99, 100])
def test_as_many_header_lines_as_the_standard_library_takes(count: int) -> None:
    raw = b"HTTP/1.1 204 No Content\r\n" + b"X-A: 1\r\n" * count + b"\r\n"
    ours, theirs = read(_Response, raw, "GET"), read(http.client.HTTPResponse, raw, "GET")
    assert ours == theirs
    assert (ours is http.client.HTTPException) == (count == 100)


def test_a_header_line_too_long_is_refused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n"
    assert read(_Response, raw, "GET") is http.client.LineTooLong
