"""An httpx transport over the standard library's ``http.client``, behind the same
``httpx.Client`` (its URL, headers, hooks and proxies from the environment).

Why a transport of our own: an export pages through millions of records 100 at a time, and on
two cores the CPU a request costs bounds a fast export. httpx's own transport parses in pure
Python (httpcore, h11); ``http.client`` reads headers and bodies mostly in C. bench/export.py
``--transport`` measures both; docs/performance.md has the figures that decided it.

Bodies are streamed (``client.send(..., stream=True)``): the caller reads them chunk by chunk
under its own caps (:mod:`adapters.upstream.retry`), so a page of hundreds of megabytes is
refused while it arrives, not after it is in memory. A request may carry two extensions:
:data:`DEADLINE` (a ``time.monotonic()`` instant) and :data:`ABORT` (a callable, true once the
export stops); a watchdog thread shuts the socket of a request past its deadline or whose
export stopped, so that a read blocked on an upstream that drips a byte every few seconds
(each read under the timeout) ends within a fraction of a second, not when the upstream likes.

Responses and connections are ``http.client``'s with two changes for the CPU a page costs
(:mod:`~adapters.upstream.connections`): a response's head is read without ``email.parser``,
and a plain TCP connection keeps its per-read timeout in the kernel instead of polling the
socket before every read.

Failures are httpx's own exceptions (``ConnectError``, ``ReadTimeout``...), so that code above
the client cannot tell the transports apart. Each request holds a keep-alive connection of its
own; up to ``max_idle`` idle ones are kept per origin (one whose body was not read to its end
is closed).

A connection idle for :data:`LOOK_AFTER_SEC` or more is looked at before it carries another
request (readable while idle: the peer closed it, or sent what nobody asked for; it is
dropped). One back in the pool more recently, which is how a window's next page finds it, goes
out without that look: ``select`` is a system call, and every system call hands the one
interpreter to another thread (docs/performance.md: a few per cent of a 2 ms export). A peer
can close a connection between any look and the request anyway, so a reused connection whose
request ends before any answer (reset, or closed with nothing sent; over TLS, with or without
its close_notify) is asked once more at once on a new connection, as HTTP allows for a safe
method's (RFC 9110, 9.2.2; RFC 9112, 9.3.1); not when the watchdog shut it or its deadline or
export has ended, and not a new connection's.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from adapters.dialing import addresses_in_time, over

from .connections import HTTPConnection, HTTPSConnection

_Origin = tuple[str, str, int]
_Connection = http.client.HTTPConnection

DEADLINE = "farmiq.deadline"  # request extension: time.monotonic() after which the socket is shut
ABORT = "farmiq.abort"  # request extension: a callable, true once the request must be abandoned
WATCH_SEC = 0.2  # how often the watchdog looks at the requests in flight
CHUNK = 64 * 1024
LOOK_AFTER_SEC = 0.5  # a connection idle this long is looked at before it is used again
# the methods asked again on a new connection when a reused one ends before any answer
_AGAIN = frozenset({"GET", "HEAD", "OPTIONS"})
# a connection its peer ended or reset: over TLS too, with its close_notify (zero return) or
# without (an EOF in violation of the protocol, to OpenSSL)
_ENDED = (
    ConnectionResetError,
    BrokenPipeError,
    http.client.RemoteDisconnected,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


class _Watched:
    """One request in flight as the watchdog sees it."""

    __slots__ = ("abort", "connection", "deadline", "shut")

    def __init__(
        self,
        connection: _Connection,
        deadline: float | None,
        abort: Callable[[], bool] | None,
    ) -> None:
        self.connection = connection
        self.deadline = deadline
        self.abort = abort
        self.shut = False

    def due(self, now: float) -> bool:
        """Whether the request must end: past its deadline, or its export stopped."""
        return (self.deadline is not None and now >= self.deadline) or _asks_abort(self.abort)

    def ended(self) -> bool:
        """Whether the request is over for good: shut by the watchdog, or due now."""
        return self.shut or self.due(time.monotonic())


class Watchdog:
    """Shuts the sockets of requests past their deadline or abandoned by their export, from a
    thread of its own (started with the first watched request), every :data:`WATCH_SEC`."""

    def __init__(self, every_sec: float = WATCH_SEC) -> None:
        self._every = every_sec
        self._watched: set[_Watched] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._asleep = False  # waiting for a first request, with no timeout

    def watch(
        self,
        connection: _Connection,
        deadline: float | None,
        abort: Callable[[], bool] | None,
    ) -> _Watched | None:
        if deadline is None and abort is None:
            return None
        entry = _Watched(connection, deadline, abort)
        with self._cond:
            self._watched.add(entry)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._loop, name="upstream-watchdog", daemon=True
                )
                self._thread.start()
            elif self._asleep:  # waiting for a first request; else it looks in time anyway
                self._asleep = False
                self._cond.notify()
        return entry

    def forget(self, entry: _Watched | None) -> None:
        if entry is not None:
            with self._cond:
                self._watched.discard(entry)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                if not self._watched:
                    self._asleep = True
                    self._cond.wait()
                    self._asleep = False
                    continue
                self._cond.wait(self._every)
                entries = list(self._watched)
            now = time.monotonic()
            for entry in entries:
                if entry.shut:
                    continue
                if entry.due(now):
                    entry.shut = True
                    _shut(entry.connection)


def _bounded(
    timeout: float | None, deadline: float | None, abort: Callable[[], bool] | None
) -> Callable[..., socket.socket]:
    """``socket.create_connection`` within a request's deadline and abort (before a socket
    exists the watchdog has nothing to shut): each address gets what is left of the deadline
    at most; past it, or once the request is abandoned, no other is tried. (The name's lookup
    itself is the resolver's, as bounded as it is.)"""

    def stop() -> bool:
        return _asks_abort(abort)

    def create(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        host, port = address
        failure: OSError | None = None
        for (family, kind, proto, where), each in addresses_in_time(
            host, port, timeout, deadline, stop
        ):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(each)
                sock.connect(where)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            sock.settimeout(timeout)  # the connection's own, for every request it carries
            return sock
        if over(deadline, stop):
            raise TimeoutError("connect: past the request's deadline, or abandoned")
        raise failure or OSError(f"{host} resolved to no address")

    return create


def _asks_abort(abort: Callable[[], bool] | None) -> bool:
    if abort is None:
        return False
    try:
        return abort()
    except Exception:  # a broken predicate must not keep a request alive: abandon it
        return True


def _shut(connection: _Connection) -> None:
    """Wake a thread blocked reading ``connection``: its read ends at once (EOF or an error)."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by its thread
            sock.shutdown(socket.SHUT_RDWR)


class StdlibTransport(httpx.BaseTransport):
    """GET (or any method without a body) over pooled ``http.client`` connections."""

    def __init__(
        self,
        *,
        timeout: float | None,
        ssl_context: ssl.SSLContext,
        max_idle: int = 16,
        look_after_sec: float = LOOK_AFTER_SEC,
    ) -> None:
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._look_after = look_after_sec
        # per origin, the idle connections with when each came back, the newest last
        self._idle: dict[_Origin, list[tuple[_Connection, float]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.watchdog = Watchdog()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        connection, reused = self._checkout(origin)
        extensions = request.extensions
        deadline, abort = extensions.get(DEADLINE), extensions.get(ABORT)
        while True:
            if connection.sock is None:  # not connected: no socket the watchdog could shut
                connection._create_connection = _bounded(  # type: ignore[attr-defined]
                    self._timeout, deadline, abort
                )
            watched = self.watchdog.watch(connection, deadline, abort)
            try:
                response = self._exchange(connection, request)
                break
            except _Unanswered as unanswered:
                self.watchdog.forget(watched)
                connection.close()
                again = reused and request.method in _AGAIN
                if not again or (watched is not None and watched.ended()):
                    raise unanswered.failure from unanswered.__cause__
                connection, reused = self._connect(origin), False
            except BaseException:
                self.watchdog.forget(watched)
                connection.close()
                raise
        body = _Body(self, origin, connection, response, request, watched)
        # as bytes, as they came: httpx would encode text as ASCII, and a header with a Latin-1
        # byte (a load balancer's "X-Note: caf\xe9") raised UnicodeEncodeError past every
        # handler, failing the export as a bug with its connection left open
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()]
        return httpx.Response(response.status, headers=headers, stream=body)

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        self.watchdog.close()
        for connections in idle.values():
            for connection, _ in connections:
                connection.close()

    def _exchange(
        self, connection: _Connection, request: httpx.Request
    ) -> http.client.HTTPResponse:
        phase = "connect"
        try:
            if connection.sock is None:
                connection.connect()
            phase = "send"
            connection.putrequest(
                request.method,
                request.url.raw_path.decode("ascii"),
                skip_host=True,
                skip_accept_encoding=True,
            )
            for name, value in request.headers.raw:
                connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
            connection.endheaders()
            phase = "read"
            return connection.getresponse()
        except _ENDED as exc:
            # before any answer (RemoteDisconnected: closed before a status line): the peer
            # had closed or reset the connection; a reused one may be asked again
            raise _Unanswered(_failure(phase, exc, request)) from exc
        except ssl.SSLError as exc:  # first: a refused certificate is a ValueError too
            raise _failure(phase, exc, request) from exc
        except ValueError:  # a header or target http.client refuses to send (a CR or LF in it)
            raise httpx.LocalProtocolError(
                f"{phase} failed: a header or the target is not sendable", request=request
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            raise _failure(phase, exc, request) from exc

    def _checkout(self, origin: _Origin) -> tuple[_Connection, bool]:
        """An idle connection to ``origin`` (and True), else a new one (and False)."""
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                connection, since = idle.pop()
                if connection.sock is not None and (
                    now - since < self._look_after or _reusable(connection)
                ):
                    return connection, True
                connection.close()
        return self._connect(origin), False

    def _connect(self, origin: _Origin) -> _Connection:
        """A new connection (connected when its request is sent)."""
        scheme, host, port = origin
        if scheme == "https":
            return HTTPSConnection(host, port, timeout=self._timeout, context=self._ssl_context)
        return HTTPConnection(host, port, timeout=self._timeout)

    def checkin(self, origin: _Origin, connection: _Connection) -> None:
        if connection.sock is not None:  # None: the answer said the connection closes
            with self._lock:
                idle = self._idle.setdefault(origin, [])
                if not self._closed and len(idle) < self._max_idle:
                    idle.append((connection, time.monotonic()))
                    return
        connection.close()


class _Body(httpx.SyncByteStream):
    """A response body read from its connection as the caller iterates; the connection goes
    back to the pool only when the body was read to its end, else it is closed."""

    def __init__(
        self,
        transport: StdlibTransport,
        origin: _Origin,
        connection: _Connection,
        response: http.client.HTTPResponse,
        request: httpx.Request,
        watched: _Watched | None,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection = connection
        self._response = response
        self._request = request
        self._watched = watched
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as exc:
                raise _failure("read", exc, self._request) from exc
            if not chunk:
                if self._watched is not None and self._watched.shut:
                    # the watchdog shut the socket: an end of the body it did not send
                    raise httpx.ReadError("read failed: abandoned", request=self._request)
                if response.length:  # http.client reads a connection ended early as the end
                    declared = response.getheader("content-length")
                    raise httpx.ReadError(
                        f"read failed: the connection ended with {response.length} of "
                        f"{declared} bytes missing",
                        request=self._request,
                    )
                self._done = True
                return
            yield chunk

    def close(self) -> None:
        transport = self._transport
        transport.watchdog.forget(self._watched)
        shut = self._watched is not None and self._watched.shut
        if self._done and not shut and self._response.isclosed():
            transport.checkin(self._origin, self._connection)
        else:
            # the response too: one that said "Connection: close" holds the socket itself
            self._response.close()
            self._connection.close()


class _Unanswered(Exception):
    """A request that ended before any answer came: ``failure`` is how it fails if it is not
    asked again."""

    def __init__(self, failure: httpx.TransportError) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _failure(phase: str, exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    # an OSError, so first; BlockingIOError: a write the kernel's timeout ended (SO_SNDTIMEO)
    if isinstance(exc, TimeoutError | BlockingIOError):
        if phase == "connect":
            return httpx.ConnectTimeout(f"{phase} timed out", request=request)
        return httpx.ReadTimeout(f"{phase} timed out", request=request)
    if isinstance(exc, ssl.SSLCertVerificationError):  # what an operator must mend: say it
        reason = f"{phase} failed: the upstream's certificate was refused ({exc.verify_message})"
    elif isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        reason = f"{phase} failed: the upstream ended the TLS connection ({type(exc).__name__})"
    elif isinstance(exc, ssl.SSLError):  # OpenSSL's reason: CERTIFICATE_REQUIRED, ...
        reason = f"{phase} failed: TLS {exc.reason or type(exc).__name__}"
    else:
        reason = f"{phase} failed: {type(exc).__name__}"
    if phase == "connect":
        return httpx.ConnectError(reason, request=request)
    return httpx.ReadError(reason, request=request)


def _reusable(connection: _Connection) -> bool:
    """An idle connection can carry another request if it has nothing to read: a readable
    idle socket means the peer closed it (or sent what nobody asked for)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return False
    return not readable
