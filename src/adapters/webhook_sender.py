"""The webhook sender (:class:`reportcore.ports.WebhookSender`): one POST over httpx.

Redirects are not followed (a 3xx is a failed attempt: a redirect could lead to a host the
allow list does not name), the receiver's body is never read (only its status counts), and
every failure comes back as a :class:`reportcore.webhooks.SendResult`, never an exception.

Each attempt has a total deadline, not only a timeout per read: a receiver that drips its
status line a byte at a time would otherwise hold the attempt (and the sender's thread) for as
long as it likes. httpx has no total timeout, so a watchdog timer shuts the attempt's socket
down at the deadline; the read waiting on it returns at once and the attempt fails. The socket
is the one httpcore reports through its ``trace`` extension when it connects; every attempt
opens a connection of its own (no keep-alive), so there always is one to watch. Before there
is a socket, the connect itself keeps to the deadline (:class:`BoundedTransport`: each of the
receiver's addresses gets what is left of it, not the whole timeout each).

The deadline runs from the attempt's start, so nothing inside the sender may make an attempt
wait: the client's connection pool holds as many connections as the sender has attempts in
flight at once (``concurrency``, the worker's ``REPORT_WEBHOOK_CONCURRENCY``). A smaller pool
(httpcore's default is 10) made the attempts beyond it wait for another receiver's attempt to
free a connection, and a healthy receiver's attempt then failed at the deadline unsent.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpcore
import httpx

from adapters.dialing import addresses_in_time, over
from reportcore.webhooks import SendResult, WebhookRules

USER_AGENT = "farmiq-reportsvc-webhooks/1"
DEFAULT_DEADLINE_SEC = WebhookRules().timeout_sec
DEFAULT_CONCURRENCY = WebhookRules().concurrency
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
        self.ends = time.monotonic() + seconds  # time.monotonic() when the attempt is over
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
        return self._expired or time.monotonic() >= self.ends

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


# when the attempt under way must be over (time.monotonic()), for the connect of its socket
_ATTEMPT_ENDS: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "webhook_attempt_ends", default=None
)


class _BoundedBackend(httpcore.SyncBackend):
    """httpcore's own network backend, but a connect gives each of the name's addresses only
    what is left of the attempt's deadline, and tries none past it: the standard connect
    gives each address the whole timeout, so a receiver whose name has four silent addresses
    held an attempt four deadlines long (six: past the delivery's lease, then sent twice).
    The watchdog only sees a socket once it is connected."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        ends = _ATTEMPT_ENDS.get()
        if ends is None:
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        failure: Exception | None = None
        try:
            for (*_, where), each in addresses_in_time(host, port, timeout, ends):
                try:  # to the address itself: TLS still names the host (httpcore's SNI)
                    return super().connect_tcp(
                        str(where[0]), port, each, local_address, socket_options
                    )
                except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                    failure = exc
        except socket.gaierror as exc:  # as httpcore's own connect says it: a failed attempt
            raise httpcore.ConnectError(f"{exc.strerror or exc} ({host})") from exc
        if failure is not None and not over(ends):
            raise failure
        raise httpcore.ConnectTimeout(f"no connection to {host} within the attempt's deadline")


# httpcore's exceptions and httpx's for them, as httpx's own transport maps them
_MAPPED: Mapping[type[Exception], type[httpx.RequestError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProxyError: httpx.ProxyError,
}


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    """httpcore's exceptions raised as httpx's."""
    try:
        yield
    except tuple(_MAPPED) as exc:
        ours = next(o for theirs, o in _MAPPED.items() if isinstance(exc, theirs))
        raise ours(str(exc), request=request) from exc


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx(self._request):
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class BoundedTransport(httpx.BaseTransport):
    """httpx's transport over an httpcore pool (no keep-alive) whose connects keep to the
    attempt's deadline (:class:`_BoundedBackend`); httpx has no option for the backend.

    ``max_connections``: the pool's size, at least the attempts in flight at once (a request
    beyond it waits for a connection to close). httpx's ``limits=`` does not reach a transport
    of one's own, and httpcore's default is 10."""

    def __init__(self, max_connections: int) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            # no idle connection is kept: an attempt's connection closes with it, so the open
            # sockets are those of the attempts in flight, never more than the pool's size
            max_keepalive_connections=0,
            network_backend=_BoundedBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx(request):
            answer = self._pool.handle_request(core)
        assert isinstance(answer.stream, Iterable)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream, request),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _bounded_unless_proxied(max_connections: int) -> httpx.BaseTransport | None:
    """:class:`BoundedTransport`, unless the environment names a proxy: httpx reads the
    proxies only for a client without a transport of its own, and through a proxy the
    connect is to the proxy, not to the receiver's addresses."""
    proxies = urllib.request.getproxies_environment()
    if any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return None
    return BoundedTransport(max_connections)


class HttpWebhookSender:
    """POSTs with one client; each attempt ends within ``deadline_sec`` (connect, send and the
    answer's status line and headers together), whatever the receiver does. Name resolution
    comes before the connection and is bounded by the system resolver's own timeout.

    ``concurrency``: how many attempts the caller has in flight at once (the worker's pool
    size); the client holds that many connections, so no attempt waits for one."""

    def __init__(
        self,
        deadline_sec: float = DEFAULT_DEADLINE_SEC,
        transport: httpx.BaseTransport | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.deadline_sec = deadline_sec
        self._client = httpx.Client(
            timeout=deadline_sec,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            transport=transport if transport is not None else _bounded_unless_proxied(concurrency),
            # a connection per attempt: the deadline watches the socket each attempt opens;
            # these limits reach only the transport httpx builds itself (through a proxy)
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        )

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        deadline = _Deadline(self.deadline_sec)
        ends = _ATTEMPT_ENDS.set(deadline.ends)
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
        except OSError as exc:  # not httpcore's: a failed attempt all the same, recorded
            return SendResult(error=f"{type(exc).__name__}: {exc}")
        except (httpx.InvalidURL, ValueError) as exc:
            # a URL the create's checks took and httpx refuses (an IDNA host such as
            # xn--a.example): a failed attempt, counted, not an error the pool cannot record
            # (which left the delivery to be taken again after every lease, for ever)
            return SendResult(error=f"the URL cannot be sent: {type(exc).__name__}: {exc}")
        finally:
            _ATTEMPT_ENDS.reset(ends)
            deadline.close()

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()
