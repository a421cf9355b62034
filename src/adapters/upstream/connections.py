"""The ``http.client`` connections and responses of the transport
(:mod:`adapters.upstream.transport`), changed in two ways, each for the CPU a page costs:

- a response's head is read by :func:`read_head` instead of ``email.parser`` (24 -> 12 us a
  response), with ``http.client``'s limits and email's reading of names, values, repeats and
  folds; the rest of :class:`Response` is the standard library's;
- a plain TCP connection is read and written under the kernel's timeout (``SO_RCVTIMEO``,
  ``SO_SNDTIMEO``: :func:`kernel_timeouts`) rather than Python's, which polls the socket
  before every read and write: one system call instead of two, and fewer hand-overs of the
  interpreter between the window threads (docs/performance.md). The timeout is the same
  number of seconds, between two reads as before, and ends a read with ``TimeoutError`` as
  before (:class:`KernelTimedIO`). TLS connections keep Python's timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import ssl
import struct
import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_MAXLINE = 65536  # http.client's limits on a header line and on the lines of a head
_MAXHEADERS = 100
_FOLD = (32, 9)  # a line that starts with a space or a tab continues the header before
# what one read of a plain connection asks the kernel for: a page of 100 records (~50 KB) in
# one read where it has come whole, not 8 KiB at a time
READ_BUFFER = 64 * 1024


def read_head(fp: IO[bytes]) -> http.client.HTTPMessage:
    """The header lines of a response up to the empty line, as ``http.client.parse_headers``
    reads them (the same limits, names and values, repeated names kept, a folded line joined to
    the one before it), without ``email.parser``. A line that is no header (no colon, or a
    name with a space before the colon) is refused, where ``email.parser`` would have taken it
    for the start of the body and dropped the headers after it."""
    message = http.client.HTTPMessage()
    lines: list[str] = []  # the lines of the header being read: its first and its folds

    def add() -> None:  # as email's compat32 policy joins them
        name, colon, value = lines[0].partition(":")
        if not colon or not name or name != name.strip(" \t"):
            raise http.client.HTTPException(f"not a header line: {lines[0][:80]!r}")
        message[name] = (value.lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")

    for count in range(1, _MAXHEADERS + 2):  # the empty line that ends them counts too
        line = fp.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise http.client.LineTooLong("header line")
        if count > _MAXHEADERS:
            raise http.client.HTTPException(f"got more than {_MAXHEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
        text = line.decode("iso-8859-1")
        if line[0] in _FOLD and lines:
            lines.append(text)
            continue
        if lines:
            add()
        lines = [text]
    if lines:
        add()
    return message


class KernelTimedIO(io.RawIOBase):
    """A plain socket read for ``http.client`` when the kernel keeps its read timeout
    (:func:`kernel_timeouts`): a read the kernel ends at the timeout with nothing read raises
    ``TimeoutError``, as a read of a socket with a Python timeout does (the standard
    library's ``SocketIO`` would take that ``EAGAIN`` for a non-blocking socket's "nothing
    yet" and return ``None``). ``raw`` is that ``SocketIO``: it keeps the socket open while
    the response is read (a connection that closes hands its socket to its response)."""

    def __init__(self, sock: socket.socket, raw: io.RawIOBase) -> None:
        super().__init__()
        self._sock = sock
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            return self._sock.recv_into(buffer)
        except BlockingIOError:
            raise TimeoutError("timed out") from None

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def kernel_timeouts(sock: socket.socket, seconds: float) -> bool:
    """Make ``sock`` blocking with ``seconds`` as the kernel's timeout of each read and write
    (Linux); False, and ``sock`` as it was, elsewhere or for no positive timeout (a zero
    ``timeval`` is no timeout at all to the kernel)."""
    if sys.platform != "linux" or not seconds > 0:
        return False
    whole = int(seconds)
    micros = min(999_999, round((seconds - whole) * 1e6))
    timeval = struct.pack("ll", whole, micros if whole or micros else 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.settimeout(None)
    return True


class Response(http.client.HTTPResponse):
    """``http.client``'s response, its head read by :func:`read_head`; :meth:`begin` is the
    standard library's (3.11) but for that line. A plain socket without a Python timeout (a
    connection with the kernel's, :class:`HTTPConnection`) is read through
    :class:`KernelTimedIO`."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        if sock.gettimeout() is None and not isinstance(sock, ssl.SSLSocket):
            self.fp = io.BufferedReader(KernelTimedIO(sock, self.fp.detach()), READ_BUFFER)

    def begin(self) -> None:
        if self.headers is not None:  # begun already
            return
        while True:  # past any interim 100 Continue
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            read_head(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = read_head(self.fp)
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding and encoding.lower() == "chunked")
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            with contextlib.suppress(ValueError):
                self.length = int(length)
            if self.length is not None and self.length < 0:
                self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or status < 200:
            self.length = 0
        if self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class HTTPConnection(http.client.HTTPConnection):
    """A plain connection: connected under Python's timeout, then read and written under the
    kernel's (:func:`kernel_timeouts`), the same number of seconds."""

    response_class = Response

    def connect(self) -> None:
        super().connect()
        if isinstance(self.timeout, int | float):
            kernel_timeouts(self.sock, self.timeout)


class HTTPSConnection(http.client.HTTPSConnection):
    response_class = Response
