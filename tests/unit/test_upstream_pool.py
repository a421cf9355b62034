"""The transport's idle connections (issue 27, item 2: the system calls a page costs).

A connection back in the pool less than ``look_after_sec`` ago carries the next request
without a ``select`` (each system call hands the interpreter to another thread); one idle for
longer is looked at first, and dropped if the peer closed it. Since a peer may close a
connection at any moment, a reused connection whose request ends before any answer (closed or
reset) is asked once more on a new connection: a GET's, not a POST's, not a new connection's,
and not one the watchdog shut. Over TLS too: a peer that ends a kept-alive TLS connection
may send its close_notify first, or not (an EOF in violation of the protocol to OpenSSL)."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.upstream.transport import ABORT, DEADLINE, StdlibTransport

from .upstream_support import Authority, TcpServer, read_request_head, unanswered_addresses


class _Server:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 answering ``answers`` requests on each
    connection (``answer <n>``, n counting every answer), then, at the next request's head
    (or at once, for ``after="close at once"``), closing it (``close``; over TLS,
    ``close_notify`` says so first), resetting it (``reset``) or holding it without a word
    (``stall``); over TLS with ``tls``."""

    def __init__(self, answers: int, after: str, tls: ssl.SSLContext | None = None) -> None:
        self._answers = answers
        self._after = after
        self.answered = 0
        self._lock = threading.Lock()
        self._tcp = TcpServer(self._one, tls)
        self.url = self._tcp.url

    @property
    def connections(self) -> int:
        return self._tcp.connections

    def _one(self, conn: socket.socket, stop: threading.Event) -> None:
        for _ in range(self._answers):
            if not read_request_head(conn):
                return
            with self._lock:
                self.answered += 1
                body = b"answer %d" % self.answered
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        if self._after == "close at once" or not read_request_head(conn):
            return
        if self._after == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self._after == "close_notify" and isinstance(conn, ssl.SSLSocket):
            conn.settimeout(0.5)  # the client answers its own close_notify only when it reads
            with contextlib.suppress(OSError):
                conn.unwrap()
        elif self._after == "stall":
            stop.wait(5)

    def close(self) -> None:
        self._tcp.close()


@contextlib.contextmanager
def _client(
    look_after_sec: float, context: ssl.SSLContext | None = None, timeout: float = 5.0
) -> Iterator[httpx.Client]:
    transport = StdlibTransport(
        timeout=timeout,
        ssl_context=context or ssl.create_default_context(),
        look_after_sec=look_after_sec,
    )
    with httpx.Client(transport=transport) as client:
        yield client


@contextlib.contextmanager
def _serving(answers: int, after: str, tls: ssl.SSLContext | None = None) -> Iterator[_Server]:
    server = _Server(answers, after, tls)
    try:
        yield server
    finally:
        server.close()


def _looks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``select`` calls the transport makes from here on."""
    calls: list[Any] = []
    real = select.select

    def counting(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(select, "select", counting)
    return calls


def test_a_connection_just_back_carries_the_next_request_without_a_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks = _looks(monkeypatch)
    with _serving(answers=10, after="close") as server, _client(look_after_sec=60) as client:
        bodies = [client.get(server.url).content for _ in range(4)]
    assert bodies == [b"answer 1", b"answer 2", b"answer 3", b"answer 4"]
    assert server.connections == 1
    assert looks == []


def test_a_connection_idle_longer_is_looked_at_and_dropped_if_its_peer_closed_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks = _looks(monkeypatch)
    with _serving(answers=1, after="close at once") as server, _client(look_after_sec=0) as client:
        bodies = []
        for _ in range(3):
            bodies.append(client.get(server.url).content)
            time.sleep(0.05)  # the peer's close has arrived before the next request
    assert bodies == [b"answer 1", b"answer 2", b"answer 3"]
    assert server.connections == 3
    assert len(looks) == 2  # the second and third requests found one idle, and looked


@pytest.mark.parametrize(
    ("after", "tls"),
    [
        *((after, False) for after in ("close", "close at once", "reset")),
        *((after, True) for after in ("close", "close_notify", "close at once", "reset")),
    ],
)
def test_a_reused_connection_its_peer_ended_is_asked_again_on_a_new_one(
    after: str, tls: bool, tmp_path: Path
) -> None:
    authority = Authority(tmp_path) if tls else None
    server_tls = authority.server() if authority else None
    trusting = ssl.create_default_context(cafile=authority.bundle) if authority else None
    with (
        _serving(answers=1, after=after, tls=server_tls) as server,
        _client(look_after_sec=60, context=trusting) as client,
    ):
        bodies = []
        for _ in range(4):
            bodies.append(client.get(server.url).content)
            time.sleep(0.05)
    assert bodies == [b"answer 1", b"answer 2", b"answer 3", b"answer 4"]
    assert server.connections == 4


@pytest.mark.parametrize(
    "ended",
    [BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError],
    ids=lambda e: e.__name__,
)
def test_a_reused_connection_whose_request_cannot_be_sent_is_asked_again(
    ended: type[OSError], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send itself fails on a connection its peer ended: a broken pipe over TCP, an EOF
    (or a close_notify) over TLS; the next request goes out on a new connection at once."""
    from adapters.upstream import connections

    real = connections.HTTPConnection.send
    failures = [ended("the peer ended it")]

    def send(self: Any, data: Any) -> None:
        if failures:  # the first send once patched: the reused connection's
            raise failures.pop()
        real(self, data)

    with _serving(answers=10, after="close") as server, _client(look_after_sec=60) as client:
        assert client.get(server.url).content == b"answer 1"
        monkeypatch.setattr(connections.HTTPConnection, "send", send)
        assert client.get(server.url).content == b"answer 2"
        assert failures == []
        assert server.connections == 2


def test_an_answer_with_a_latin_1_header_is_read_as_any_other() -> None:
    """A header value with a byte above 127 (RFC 9110 5.5: obs-text, Latin-1 to http.client):
    it raised UnicodeEncodeError past every handler of the transport and the retry."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        while read_request_head(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Note: caf\xe9\r\nContent-Length: 2\r\n\r\nok")

    server = TcpServer(answer)
    try:
        with _client(look_after_sec=60) as client:
            for _ in range(2):  # and the connection is kept for the next request
                response = client.get(server.url)
                assert (response.status_code, response.content) == (200, b"ok")
                assert response.headers.raw[0] == (b"X-Note", b"caf\xe9")
        assert server.connections == 1
    finally:
        server.close()


def test_a_new_connection_that_ends_before_an_answer_is_not_asked_again() -> None:
    with _serving(answers=0, after="close") as server, _client(look_after_sec=60) as client:
        with pytest.raises(httpx.ReadError, match="RemoteDisconnected"):
            client.get(server.url)
        assert server.connections == 1


def test_a_request_with_a_method_that_may_change_something_is_not_asked_again() -> None:
    with _serving(answers=1, after="close") as server, _client(look_after_sec=60) as client:
        assert client.post(server.url).content == b"answer 1"
        time.sleep(0.05)
        with pytest.raises(httpx.ReadError):
            client.post(server.url)
        assert server.connections == 1


def test_a_reused_connection_the_watchdog_shut_is_not_asked_again() -> None:
    """Past its deadline the watchdog shuts the socket: the read ends with nothing, which is
    no peer's close to work around."""
    with _serving(answers=1, after="stall") as server, _client(look_after_sec=60) as client:
        assert client.get(server.url).content == b"answer 1"
        request = client.build_request(
            "GET", server.url, extensions={DEADLINE: time.monotonic() + 0.3}
        )
        began = time.monotonic()
        with pytest.raises(httpx.ReadError):
            client.send(request)
        assert time.monotonic() - began < 3.0
        assert server.connections == 1


def test_a_body_cut_short_of_its_length_is_a_read_error_and_its_connection_is_dropped() -> None:
    """``http.client`` reads an end of the connection before ``Content-Length`` as the end of
    the body (``b""``): the half page was taken for the page, and the job failed as a bad
    response (an unreadable page) instead of a dropped connection, which is asked again."""

    def half_then_close(conn: socket.socket, stop: threading.Event) -> None:
        if read_request_head(conn):
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"items": [')

    server = TcpServer(half_then_close)
    try:
        with (
            _client(look_after_sec=60) as client,
            pytest.raises(httpx.ReadError, match="989 of 1000 bytes missing"),
        ):
            client.get(server.url)
    finally:
        server.close()


@pytest.mark.parametrize("ends_by", ["deadline", "abort"])
def test_connecting_to_a_name_of_many_silent_addresses_ends_with_the_request(
    ends_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """socket.create_connection gave each address the whole timeout: ten silent addresses
    held a page (and its host's slot) for ten timeouts, past its deadline and its cancel,
    the watchdog having no socket to shut yet."""
    began = time.monotonic()
    if ends_by == "deadline":
        extensions: dict[str, Any] = {DEADLINE: began + 1.5}
    else:
        extensions = {ABORT: lambda: time.monotonic() - began > 0.3}
    with (
        unanswered_addresses(10, monkeypatch) as base,
        _client(look_after_sec=60, timeout=1.0) as client,
        pytest.raises(httpx.ConnectTimeout),
    ):
        client.send(client.build_request("GET", base + "/page", extensions=extensions))
    assert time.monotonic() - began < 3.0
