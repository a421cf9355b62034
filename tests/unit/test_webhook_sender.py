"""The HTTP webhook sender against real receivers on loopback sockets (issue 26, row 13): an
attempt ends at its total deadline whatever the receiver does, and counts as a failed one."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.webhook_sender import HttpWebhookSender
from entrypoints.containers import open_sender
from entrypoints.settings import Settings
from reportcore.webhooks import SendResult

from .upstream_support import (
    Authority,
    TcpServer,
    read_request_head,
    resolving,
    unanswered_addresses,
)

DRIP = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def _request_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


class Receiver:
    """A TCP server that reads a request and answers ``DRIP`` one byte every ``every_sec`` (0:
    at once), ``answer_after`` seconds after the request came; ``hold=True`` never answers at
    all. ``requests`` counts the requests read."""

    def __init__(
        self, every_sec: float = 0.0, hold: bool = False, answer_after: float = 0.0
    ) -> None:
        self.every_sec = every_sec
        self.hold = hold
        self.answer_after = answer_after
        self.done = threading.Event()
        self.sent_bytes = 0
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hooks"
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            serve = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            serve.start()
            self._threads.append(serve)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data or len(data) < _request_length(data):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            if self.hold:
                self.done.wait()
                return
            if self.answer_after and self.done.wait(self.answer_after):
                return
            for i in range(len(DRIP)):
                if self.every_sec and self.done.wait(self.every_sec):
                    return
                try:
                    conn.sendall(DRIP[i : i + 1])
                except OSError:
                    return  # the sender cut the connection
                self.sent_bytes += 1

    def close(self) -> None:
        self.done.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close does not)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def receiver(
    every_sec: float = 0.0, hold: bool = False, answer_after: float = 0.0
) -> Iterator[Receiver]:
    r = Receiver(every_sec, hold, answer_after)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def sender() -> Iterator[HttpWebhookSender]:
    s = HttpWebhookSender(deadline_sec=1.0)
    yield s
    s.close()


def test_a_receiver_that_drips_its_status_line_is_cut_off_at_the_deadline(
    sender: HttpWebhookSender,
) -> None:
    # each byte comes well within any read timeout; the whole line would take 20 s
    with receiver(every_sec=0.5) as dripping:
        began = time.monotonic()
        result = sender.send(dripping.url, b"{}", {"Content-Type": "application/json"})
        took = time.monotonic() - began
        assert dripping.sent_bytes < len(DRIP), "the sender waited for the whole line"
    assert not result.ok and result.status is None
    assert result.error is not None and "deadline of 1 s" in result.error
    assert 0.9 <= took < 5.0, took


def test_a_receiver_that_never_answers_is_cut_off_at_the_deadline(
    sender: HttpWebhookSender,
) -> None:
    with receiver(hold=True) as silent:
        began = time.monotonic()
        result = sender.send(silent.url, b"{}", {})
        took = time.monotonic() - began
    assert result.error is not None and "deadline" in result.error
    assert took < 5.0, took


def test_a_deadline_whose_timer_is_late_still_ends_the_attempt_as_the_deadline(
    sender: HttpWebhookSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx's read timeout is as long as the deadline: on a busy machine (a CI run) it ended
    the attempt before the timer thread ran, and the attempt read 'timeout (ReadTimeout)'
    though its deadline had passed. Here the timer never runs at all."""
    import threading

    class LateTimer:
        daemon = False

        def __init__(self, *args: object) -> None:
            pass

        def start(self) -> None:
            pass

        def cancel(self) -> None:
            pass

    monkeypatch.setattr(threading, "Timer", LateTimer)
    with receiver(hold=True) as silent:
        result = sender.send(silent.url, b"{}", {})
    assert result.error is not None and "deadline" in result.error, result.error


def test_a_prompt_receiver_is_answered_on_a_connection_of_each_attempt(
    sender: HttpWebhookSender,
) -> None:
    with receiver() as prompt:
        for _ in range(3):
            assert sender.send(prompt.url, b"{}", {}).status == 200


def test_a_refused_connection_is_a_failed_attempt_not_a_deadline(
    sender: HttpWebhookSender,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        result = sender.send(f"http://127.0.0.1:{port}/hooks", b"{}", {})
    assert result.error is not None and result.error.startswith("ConnectError")


@pytest.mark.parametrize(
    "failure",
    [
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    ],
)
def test_a_name_that_does_not_resolve_is_a_failed_attempt_not_an_error(
    sender: HttpWebhookSender, monkeypatch: pytest.MonkeyPatch, failure: OSError
) -> None:
    """The resolver's error escaped the sender: the pool could not record the attempt, so the
    delivery was taken again after every lease, uncounted and without backoff, for ever."""

    def resolve(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    result = sender.send("https://retired.example/hooks", b"{}", {})
    assert result.status is None
    assert result.error is not None and result.error.startswith("ConnectError: ")
    assert str(failure.strerror) in result.error


@pytest.mark.parametrize(
    "url", ["https://xn--a.example/h", "https://\u2603.example/h", "http://[::1/hooks"]
)
def test_a_url_httpx_refuses_is_a_failed_attempt_not_an_error(
    sender: HttpWebhookSender, url: str
) -> None:
    """A host the create's checks let through (an allowed host's IDNA spelling) and httpx
    refuses: the attempt fails, and the delivery's attempts count it towards its limit."""
    result = sender.send(url, b"{}", {})
    assert result.status is None
    assert result.error is not None and result.error.startswith("the URL cannot be sent: ")


def test_a_name_of_many_silent_addresses_ends_the_attempt_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpcore's connect gave each of a name's addresses the whole timeout, and the
    watchdog only sees a connected socket: four silent addresses held an attempt with a
    2 s deadline for 8 s (six or more: past the delivery's lease, then sent twice)."""
    sender = HttpWebhookSender(deadline_sec=1.0)
    try:
        with unanswered_addresses(4, monkeypatch, "silent.test") as base:
            began = time.monotonic()
            result = sender.send(base + "/hook", b"{}", {})
            took = time.monotonic() - began
    finally:
        sender.close()
    assert result.error is not None and "deadline" in result.error, result
    assert took < 2.5, took


def _answer_204(conn: socket.socket) -> None:
    """Answer 204, then wait for the client to close: closing first, with its body unread,
    resets the connection, and the client may see the reset before the answer."""
    conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    conn.settimeout(2)
    with contextlib.suppress(OSError):
        while conn.recv(1024):
            pass


def test_an_https_receiver_is_verified_by_its_name_though_its_address_is_dialled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounded connect dials each address itself; TLS must still send and check the
    receiver's name (SNI, the certificate's name), as httpx's own connect does."""
    authority = Authority(tmp_path / "ca")
    answered: list[bytes] = []

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        if read_request_head(conn):
            answered.append(b"hook")
            _answer_204(conn)

    server = TcpServer(answer, authority.server(hosts=("hook.test",)))
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    resolving(monkeypatch, "hook.test", port)
    monkeypatch.setenv("SSL_CERT_FILE", authority.bundle)  # as an operator trusts a CA
    sender = HttpWebhookSender(deadline_sec=5.0)
    try:
        result = sender.send(f"https://hook.test:{port}/h", b"{}", {})
        refused = sender.send(f"https://127.0.0.1:{port}/h", b"{}", {})  # not its name
    finally:
        sender.close()
        server.close()
    assert result.status == 204, result
    assert answered == [b"hook"]
    assert refused.status is None and refused.error is not None


def test_a_proxy_the_environment_names_still_carries_the_webhooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx reads the environment's proxies only for a client without a transport of its
    own: the bounded transport is left out where a proxy is named (the connect is then to
    the proxy), so webhooks keep going through it."""
    lines: list[bytes] = []

    def proxy(conn: socket.socket, stop: threading.Event) -> None:
        if head := read_request_head(conn):
            lines.append(head.split(b"\r\n", 1)[0])
            _answer_204(conn)

    server = TcpServer(proxy)
    for name in ("http_proxy", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # Python reads the lower-case ones first
    monkeypatch.setenv("HTTP_PROXY", server.url.removesuffix("/page"))
    sender = HttpWebhookSender(deadline_sec=5.0)
    try:
        result = sender.send("http://hook.test/h", b"{}", {})
    finally:
        sender.close()
        server.close()
    assert result.status == 204, result
    assert lines == [b"POST http://hook.test/h HTTP/1.1"]


def test_attempts_beyond_ten_wait_for_no_connection_held_by_other_receivers() -> None:
    """The client's pool held httpcore's default of 10 connections whatever
    REPORT_WEBHOOK_CONCURRENCY said: with 12 attempts in flight, 10 to a receiver that never
    answers, the 2 to a prompt one waited for a connection until those 10 were cut at their
    deadline, that wait counted against their own deadline, and they failed unsent ("no answer
    within the attempt's deadline"). The sender is the worker's, built from its settings."""
    deadline = 2.0
    settings = Settings(webhook_concurrency=12, webhook_timeout_sec=deadline)
    opened = open_sender(settings)
    sender = next(opened)
    results: dict[str, tuple[float, SendResult]] = {}

    def attempt(name: str, url: str) -> None:
        began = time.monotonic()
        result = sender.send(url, b"{}", {"Content-Type": "application/json"})
        results[name] = (time.monotonic() - began, result)

    try:
        with receiver(hold=True) as silent, receiver(answer_after=0.5) as prompt:
            slow = [
                threading.Thread(target=attempt, args=(f"silent{i}", silent.url)) for i in range(10)
            ]
            for thread in slow:
                thread.start()
            until = time.monotonic() + deadline / 2
            while silent.requests < 10 and time.monotonic() < until:
                time.sleep(0.01)
            assert silent.requests == 10, "the silent receiver's attempts did not all connect"
            fast = [
                threading.Thread(target=attempt, args=(f"prompt{i}", prompt.url)) for i in range(2)
            ]
            for thread in fast:
                thread.start()
            for thread in slow + fast:
                thread.join(3 * deadline)
    finally:
        with contextlib.suppress(StopIteration):
            next(opened)  # closes the sender
    for i in range(2):
        took, result = results[f"prompt{i}"]
        assert result.status == 200, result
        assert took < deadline, took
    for i in range(10):
        _, result = results[f"silent{i}"]
        assert result.error is not None and "deadline" in result.error, result
