"""The webhook sender (:class:`reportcore.ports.WebhookSender`): one POST over httpx.

Redirects are not followed (a 3xx is a failed attempt: a redirect could lead to a host the
allow list does not name), the receiver's body is never read (only its status counts), and
every failure comes back as a :class:`reportcore.webhooks.SendResult`, never an exception.

Each attempt has a total deadline, not only a timeout per read: a receiver that drips its
status line a byte at a time would otherwise hold the attempt (and the sender's thread) for as
long as it likes. httpx has no total timeout, so a watchdog timer shuts the attempt's socket
down at the deadline; the read waiting on it returns at once and the attempt fails. The socket
is the one httpcore reports through its ``trace`` extension when it connects; every attempt
opens a connection of its own (no keep-alive), so there always is one to watch.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from reportcore.webhooks import SendResult, WebhookRules

USER_AGENT = "farmiq-reportsvc-webhooks/1"
DEFAULT_DEADLINE_SEC = WebhookRules().timeout_sec
# httpcore's trace event once a TCP connection is open (directly or to a proxy); its
# return_value is the network stream, whose "socket" is the connection's
_CONNECTED = "connection.connect_tcp.complete"


def _cut(sock: socket.socket) -> None:
    """Shut ``sock``'s connection down both ways: a read blocked on it in another thread
    returns at once (closing the descriptor would not wake it)."""
    with contextlib.suppress(OSError):  # already closed by the peer or by us
        sock.shutdown(socket.SHUT_RDWR)


class _Deadline:
    """Ends one attempt's connections ``seconds`` after it started."""

    def __init__(self, seconds: float) -> None:
        self._expired = False
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        # duplicates of the attempt's sockets: TLS takes the original over (detaching it),
        # while a shutdown through a duplicate still ends the one connection both name
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        """Whether the attempt's time is up: the timer fired, or it is past the deadline and
        the timer thread has not run yet (httpx's own read timeout, as long as the deadline,
        can end the attempt first on a busy machine)."""
        return self._expired or time.monotonic() >= self._ends

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's ``trace`` hook: watch each connection the attempt opens."""
        if event != _CONNECTED:
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        watched = sock.dup()
        with self._lock:
            self._watched.append(watched)
            if self.expired:  # the connect itself took until past the deadline
                _cut(watched)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._watched:
                _cut(sock)

    def close(self) -> None:
        """The attempt is over: stop the timer and drop the duplicates."""
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


class HttpWebhookSender:
    """POSTs with one client; each attempt ends within ``deadline_sec`` (connect, send and the
    answer's status line and headers together), whatever the receiver does. Name resolution
    comes before the connection and is bounded by the system resolver's own timeout."""

    def __init__(
        self,
        deadline_sec: float = DEFAULT_DEADLINE_SEC,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.deadline_sec = deadline_sec
        self._client = httpx.Client(
            timeout=deadline_sec,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
            # a connection per attempt: the deadline watches the socket each attempt opens
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        deadline = _Deadline(self.deadline_sec)
        try:
            with self._client.stream(
                "POST",
                url,
                content=body,
                headers=dict(headers),
                extensions={"trace": deadline.trace},
            ) as r:
                return SendResult(status=r.status_code)
        except httpx.HTTPError as exc:
            if deadline.expired:
                return SendResult(
                    error=f"no answer within the attempt's deadline of {self.deadline_sec:g} s "
                    f"({type(exc).__name__})"
                )
            if isinstance(exc, httpx.TimeoutException):
                return SendResult(error=f"timeout ({type(exc).__name__})")
            return SendResult(error=f"{type(exc).__name__}: {exc}")
        except (httpx.InvalidURL, ValueError) as exc:
            # a URL the create's checks took and httpx refuses (an IDNA host such as
            # xn--a.example): a failed attempt, counted, not an error the pool cannot record
            # (which left the delivery to be taken again after every lease, for ever)
            return SendResult(error=f"the URL cannot be sent: {type(exc).__name__}: {exc}")
        finally:
            deadline.close()

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()
