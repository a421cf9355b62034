"""The transport's connections (issue 27, item 2: the CPU a page costs).

A response's head is read without ``email.parser`` (24 -> 12 us a response). Whatever a valid
head holds, the transport's response makes of it what the standard
library's makes: status, reason, version, the headers in order with repeats and folds, the
body's length or chunking, whether the connection closes, and the body read after it. A line
that is no header is refused, not taken for the start of the body.

A plain connection is read under the kernel's timeout instead of Python's (no poll before each
read): a stalled head or body still ends in ``httpx.ReadTimeout`` at the timeout, which is
still the most one read may wait, not the whole body.

A header or target that ``http.client`` refuses to send fails the request as httpx's
``LocalProtocolError``, before anything is sent."""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import string
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.upstream.connections import HTTPConnection, Response, kernel_timeouts
from adapters.upstream.transport import StdlibTransport

from .upstream_support import TcpServer, read_request_head

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

    def gettimeout(self) -> float:
        return 10.0  # a Python timeout: read through what makefile gives


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
    assert read(Response, raw, method) == read(http.client.HTTPResponse, raw, method)


def test_repeated_and_folded_headers_are_kept_as_sent() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Long: one\r\n\ttwo\r\n"
        b"set-cookie: b=2\r\nContent-Length: 2\r\n\r\nhi"
    )
    status, _, _, headers, _, will_close, body = read(Response, raw, "GET")
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
    assert read(Response, raw, "GET") is http.client.HTTPException


@pytest.mark.parametrize("count", [99, 100])
def test_as_many_header_lines_as_the_standard_library_takes(count: int) -> None:
    raw = b"HTTP/1.1 204 No Content\r\n" + b"X-A: 1\r\n" * count + b"\r\n"
    ours, theirs = read(Response, raw, "GET"), read(http.client.HTTPResponse, raw, "GET")
    assert ours == theirs
    assert (ours is http.client.HTTPException) == (count == 100)


def test_a_header_line_too_long_is_refused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n"
    assert read(Response, raw, "GET") is http.client.LineTooLong


# --- the kernel's timeout on plain connections ---


def _answering(answer: Callable[[socket.socket], None]) -> TcpServer:
    """A server that answers each connection with ``answer(conn)`` once the request's head is
    read, then holds the connection open (a stalled upstream)."""

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        if read_request_head(conn):  # else the client left before its request was whole
            answer(conn)
            stop.wait(5)

    return TcpServer(handle)


def _get(url: str, timeout: float) -> tuple[bytes, float]:
    transport = StdlibTransport(timeout=timeout, ssl_context=ssl.create_default_context())
    with httpx.Client(transport=transport) as client:
        began = time.monotonic()
        with client.stream("GET", url) as answer:
            body = answer.read()
        return body, time.monotonic() - began


def test_a_stalled_body_ends_in_a_read_timeout_at_the_timeout() -> None:
    server = _answering(
        lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    )
    try:
        began = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            _get(server.url, 0.3)
        assert 0.25 <= time.monotonic() - began < 3.0
    finally:
        server.close()


def test_a_stalled_head_ends_in_a_read_timeout() -> None:
    server = _answering(lambda conn: None)
    try:
        with pytest.raises(httpx.ReadTimeout):
            _get(server.url, 0.3)
    finally:
        server.close()


def test_the_timeout_is_between_reads_not_for_the_whole_body() -> None:
    """Each gap well under the timeout (room for a loaded machine): a body that takes longer
    than the timeout in all is read."""
    body = b"0123456789AB"

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for byte in body:
            time.sleep(0.12)
            conn.sendall(bytes([byte]))

    server = _answering(drip)
    try:
        got, took = _get(server.url, 1.0)
        assert got == body
        assert took > 1.0
    finally:
        server.close()


def test_an_answer_that_closes_its_connection_is_read_to_its_end() -> None:
    """http.client hands a closing connection's socket to its response: it stays open until
    the body is read."""

    def closing(conn: socket.socket) -> None:
        body = b"x" * 200_000
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
        conn.shutdown(socket.SHUT_WR)

    server = _answering(closing)
    try:
        body, _ = _get(server.url, 2.0)
        assert body == b"x" * 200_000
    finally:
        server.close()


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's timeouts are set on Linux")
def test_a_plain_connection_is_blocking_with_the_kernels_timeout() -> None:
    server = _answering(lambda conn: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n"))
    try:
        host, port = server.url[len("http://") :].split("/")[0].split(":")
        connection = HTTPConnection(host, int(port), timeout=1.25)
        connection.connect()
        sock = connection.sock
        assert sock.gettimeout() is None
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            seconds, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
            assert abs(seconds + micros / 1e6 - 1.25) < 0.02  # the kernel rounds to its tick
        connection.request("GET", "/page")
        assert connection.getresponse().status == 204
        connection.close()
    finally:
        server.close()


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's timeouts are set on Linux")
@pytest.mark.parametrize(("seconds", "kept"), [(0.0, False), (-1.0, False), (1e-9, True)])
def test_no_timeout_is_never_handed_to_the_kernel_as_none_at_all(
    seconds: float, kept: bool
) -> None:
    """A zero ``timeval`` means "wait forever" to the kernel: a timeout that is not positive
    keeps Python's, and one that rounds to zero microseconds is one microsecond."""
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(5.0)
        assert kernel_timeouts(ours, seconds) is kept
        raw = ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
        assert (struct.unpack("ll", raw) != (0, 0)) is kept
        assert ours.gettimeout() == (None if kept else 5.0)


def test_a_header_that_cannot_be_sent_fails_the_request_as_a_local_protocol_error() -> None:
    transport = StdlibTransport(timeout=5.0, ssl_context=ssl.create_default_context())
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        httpx.Client(transport=transport) as client,
    ):
        url = f"http://127.0.0.1:{server.getsockname()[1]}/p"
        for bad in ("a\r\nb", "a\nInjected: 1"):
            request = httpx.Request("GET", url, headers={"x-token": bad})
            with pytest.raises(httpx.LocalProtocolError, match="not sendable"):
                client.send(request)
            accepted, _ = server.accept()  # the request's connection, closed with nothing sent
            with accepted:
                accepted.settimeout(5)
                assert accepted.recv(1024) == b""
