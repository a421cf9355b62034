"""Asking an upstream until it answers: transient faults (connect errors, timeouts, 429, 5xx)
are retried with exponential backoff and full jitter, honouring ``Retry-After``; what is left
becomes the core's ``UpstreamUnavailable`` / ``UpstreamRejected`` / ``UpstreamBadResponse``,
whose messages name the service, the status and the path, never the token."""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import logging
import random
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable

import httpx
from httpx._urlparse import MAX_URL_LENGTH

from reportcore.errors import UpstreamBadResponse, UpstreamRejected, UpstreamUnavailable

from .client import ATTEMPT, UPSTREAM, Clients, Host
from .config import UpstreamConfig
from .transport import ABORT, DEADLINE
from .wire import Call

# the upstream client's logger: httpx's own line per request is off (entrypoints.runtime.logs), so
# these are the upstream lines an operator sees: a retry (client.py), a failure, a slow page
log = logging.getLogger("reportsvc.upstream")


class Stopped(Exception):
    """The export stopped (a cancel, a failed window, a shutdown): fetch no more."""


def _carry_on() -> None:
    """The default checkpoint: nothing stops the export from outside."""


Checkpoint = Callable[[], None]
"""Raises when the export must end now (the core's: cancelled, handed back, over a limit);
asked before each try, during backoff and, by the transport's watchdog, while a request is in
flight."""


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; ``None`` if absent/unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


# a query httpx keeps as it is: printable ASCII but for what its query percent-encode set
# escapes (space, '"', '#', '<', '>'; WHATWG URL's, httpx._urlparse.QUERY_SAFE): what our
# encoders write (wire.query, wire.and_); tests/unit/test_upstream_urls.py holds the two ways
# to the same URL
_AS_IS = re.compile(r"[!$-;=?-~]*")
_NO_BODY = httpx.ByteStream(b"")


class Target:
    """One call's requests as they share what can be: the origin's client and slots, the URL
    without its query (parsed once), and every header but the request id.

    The requests are built here, not by ``client.build_request``: that merges the client's
    headers and timeout into each request again (our clients carry no cookies, params or
    auth to merge), and a page's CPU bounds a fast export.
    """

    def __init__(self, call: Call, host: Host, token: str | None) -> None:
        self.call = call
        self.host = host
        self.url = f"{call.base_url}{call.path}"
        base = httpx.URL(self.url)
        self._base = base
        # the parts httpx parsed, when a query can be put in them as it is (none there yet)
        parts = base._uri_reference
        self._parts = parts if parts.query is None and parts.fragment is None else None
        client = host.client
        headers = httpx.Headers(client.headers)
        headers["x-trace-id"] = call.trace_id
        if token:
            headers["authorization"] = f"Bearer {token}"
        # first the Host header, as httpx puts it, so that a request is built without httpx
        # working out its headers and empty body again (a page's CPU: 16 -> 4 us)
        self._headers = httpx.Headers([(b"Host", base.netloc), *headers.raw])
        self._timeout = client.timeout.as_dict()
        self._upstream = call.upstream.name.lower()  # feed, telemetry, weighvision: a label
        # request ids: a UUID (version 4 in form) drawn once for the export, its last 48 bits
        # a counter, so a request does not ask the OS for randomness; drawn here rather than
        # at import, so that processes forked from one another do not share it
        self._id_prefix = str(uuid.uuid4())[:24]
        self._id_count = itertools.count()

    def url_with(self, query: str) -> httpx.URL:
        """``httpx.URL(f"{self.url}?{query}")``, without parsing the whole URL again for each
        page: httpx parses in Python (about 20 us a URL, 5 % of a fast export's CPU), and only
        the query changes between pages. A query httpx would change (characters it escapes)
        takes the long way, as does one too long for httpx (which refuses it there).

        The query goes into httpx's parsed form of the URL (``URL._uri_reference``, a named
        tuple: private to httpx, pinned by the lock); tests/unit/test_upstream_urls.py holds
        the result to ``httpx.URL`` of the whole string, so an httpx that changes it fails the
        suite rather than an export."""
        if not query:
            return self._base
        parts = self._parts
        too_long = len(self.url) + 1 + len(query) > MAX_URL_LENGTH
        if parts is None or too_long or _AS_IS.fullmatch(query) is None:
            return httpx.URL(f"{self.url}?{query}")
        url = httpx.URL.__new__(httpx.URL)
        url._uri_reference = parts._replace(query=query)
        return url

    def request(
        self, url: httpx.URL, attempt: int, deadline: float, abort: Callable[[], bool]
    ) -> httpx.Request:
        """A GET of ``url`` with the shared headers and a request id of its own; the transport
        abandons it past ``deadline`` (``time.monotonic()``) or once ``abort()`` is true."""
        request = httpx.Request(
            "GET",
            url,
            headers=self._headers,  # copied by the request
            stream=_NO_BODY,
            extensions={
                "timeout": self._timeout,
                ATTEMPT: attempt,
                UPSTREAM: self._upstream,
                DEADLINE: deadline,
                ABORT: abort,
            },
        )
        request.headers["x-request-id"] = (
            f"{self._id_prefix}{next(self._id_count) & 0xFFFFFFFFFFFF:012x}"
        )
        request.read()  # its content is b"", as of any GET httpx builds
        return request


class Retrying:
    """GETs with retries. ``sleep`` and ``rng`` are the backoff's clock and dice (tests pass
    fakes); with the real ``time.sleep`` a backoff is a wait on the export's stop event, so a
    cancel does not wait it out."""

    def __init__(
        self,
        config: UpstreamConfig,
        clients: Clients,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._clients = clients
        self._sleep = sleep
        self._rng = rng or random.Random()

    def backoff(self, attempt: int) -> float:
        """Full jitter: anywhere between 0 and the capped exponential step."""
        step = self._config.backoff_base_sec * 2 ** min(attempt, 32)  # no float overflow
        return self._rng.uniform(0.0, min(self._config.backoff_max_sec, step))

    def target(self, call: Call) -> Target:
        """What every request of ``call`` shares, made once for an export."""
        return Target(call, self._clients.host(call.base_url), self._config.token)

    def get(
        self,
        target: Target,
        query: str,
        stop: threading.Event,
        checkpoint: Checkpoint = _carry_on,
    ) -> bytes:
        """The body of a 2xx answer to ``target``'s call with ``query``, after retrying
        transient failures; :class:`Stopped` once ``stop`` is set; what ``checkpoint`` raises
        once the export must end (asked also while a request is in flight).

        The page has ``page_deadline_sec`` in all, tries and backoff included, past which it
        fails ``UpstreamUnavailable``; its body is read as a stream, inflated as it comes, and
        refused past ``max_page_bytes`` on the wire or inflated."""
        call = target.call
        config = self._config
        tries = config.retries + 1
        service = call.upstream.value
        host = target.host
        client = host.client
        url = target.url_with(query)
        began = time.monotonic()
        deadline = began + config.page_deadline_sec

        def abort() -> bool:
            if stop.is_set():
                return True
            checkpoint()  # raising: the watchdog abandons the request too
            return False

        for attempt in range(tries):
            if stop.is_set():
                raise Stopped
            if not host.acquire(stop, abort, deadline):  # every slot held by other exports
                if stop.is_set():
                    raise Stopped
                raise self._late(target, url)
            try:
                checkpoint()
                if time.monotonic() >= deadline:
                    raise self._late(target, url)
            except BaseException:
                host.release()
                raise
            request = target.request(url, attempt, deadline, abort)
            answered = False  # the response hook counted the answer once its head came
            try:
                answer = client.send(request, stream=True)
                answered = True
                try:
                    status = answer.status_code
                    ok = 200 <= status < 300  # an error's body is not read: it is closed
                    body = (
                        read_body(answer, call, config.max_page_bytes, deadline, abort)
                        if ok
                        else b""
                    )
                finally:
                    answer.close()
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if not answered:
                    self._clients.failed(request)
                if stop.is_set():
                    raise Stopped from None
                checkpoint()  # abandoned for the export's sake: its own reason, not a retry
                if time.monotonic() >= deadline:
                    raise self._late(target, url) from None
                if isinstance(exc, httpx.TimeoutException):
                    problem = f"{service} did not answer {call.describe()} in time"
                else:
                    # never the text of a protocol error: it may quote a header (the token)
                    reason = (
                        "a header or the target is not sendable"
                        if isinstance(exc, httpx.LocalProtocolError)
                        else f"{type(exc).__name__}: {exc}"
                    )
                    problem = f"{service} could not be reached for {call.describe()} ({reason})"
                delay = self.backoff(attempt)
            else:
                if 200 <= status < 300:
                    took = time.monotonic() - began
                    if took > config.slow_page_sec:
                        log.warning(
                            "upstream slow page",
                            extra={
                                **_where(target, url),
                                "seconds": round(took, 3),
                                "tries": attempt + 1,
                            },
                        )
                    return body
                problem = f"{service} answered {status} for {call.describe()}"
                if status != 429 and status < 500:
                    log.warning("upstream request failed: %s", problem, extra=_where(target, url))
                    raise UpstreamRejected(problem)
                waited = retry_after_seconds(
                    answer.headers.get("retry-after"), dt.datetime.now(dt.UTC)
                )
                delay = (
                    self.backoff(attempt) if waited is None else min(waited, config.backoff_max_sec)
                )
            finally:
                host.release()
            if attempt + 1 == tries:
                problem = f"{problem} (gave up after {tries} tries)"
                log.warning("upstream request failed: %s", problem, extra=_where(target, url))
                raise UpstreamUnavailable(problem)
            self._pause(min(delay, max(0.0, deadline - time.monotonic())), stop, checkpoint)
        raise AssertionError("unreachable: the loop returns or raises")

    def _late(self, target: Target, url: httpx.URL) -> UpstreamUnavailable:
        call = target.call
        problem = (
            f"{call.upstream.value} did not deliver a page of {call.describe()} within "
            f"{self._config.page_deadline_sec:g} s (UPSTREAM_PAGE_DEADLINE_SEC), tries and "
            f"backoff included"
        )
        log.warning("upstream request failed: %s", problem, extra=_where(target, url))
        return UpstreamUnavailable(problem)

    def _pause(self, delay: float, stop: threading.Event, checkpoint: Checkpoint) -> None:
        if self._sleep is time.sleep:
            until = time.monotonic() + delay
            while not stop.wait(max(0.0, min(_TICK_SEC, until - time.monotonic()))):
                checkpoint()
                if time.monotonic() >= until:
                    break
        else:
            self._sleep(delay)
        if stop.is_set():
            raise Stopped
        checkpoint()


_TICK_SEC = 0.2  # how often a backoff asks the checkpoint


def read_body(
    answer: httpx.Response,
    call: Call,
    cap: int,
    deadline: float,
    abort: Callable[[], bool] = lambda: False,
) -> bytes:
    """``answer``'s body, read as a stream and inflated as it comes (gzip or deflate), at
    most ``cap`` bytes on the wire and ``cap`` inflated: a bigger one is
    :class:`UpstreamBadResponse` as soon as it shows (its ``Content-Length`` first), so
    memory holds at most one capped page however much the upstream sends. Past ``deadline``
    the read ends as a timeout, and once ``abort()`` is true it is abandoned, both checked
    between chunks (the stdlib transport's watchdog also shuts a blocked read; httpx's own
    transport has no such watchdog, so there a read blocks up to the timeout)."""
    service = call.upstream.value

    def too_big(how: str = "") -> UpstreamBadResponse:
        return UpstreamBadResponse(
            f"{service} sent a page of {call.describe()} over {cap} bytes{how} "
            f"(UPSTREAM_MAX_PAGE_BYTES); no page the contract describes is that big"
        )

    declared = (answer.headers.get("content-length") or "").strip()
    # a length of thousands of digits is refused before int() would refuse to read it; ASCII
    # digits only (a header is read as Latin-1, where "\xb2" is a digit int() refuses)
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > cap):
        raise too_big()
    if answer.is_stream_consumed:  # an answer made in memory (httpx.MockTransport), inflated
        if len(answer.content) > cap:
            raise too_big()
        return answer.content
    coding = answer.headers.get("content-encoding", "").strip().lower()
    inflater = None
    if coding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == "deflate":
        inflater = zlib.decompressobj()
    elif coding not in ("", "identity"):
        raise UpstreamBadResponse(
            f"{service} sent a page of {call.describe()} in an encoding not asked for: "
            f"{coding[:40]!r}"
        )
    parts: list[bytes] = []  # joined once at the end: a page is mostly one chunk, not copied
    wire = held = 0
    try:
        for chunk in answer.iter_raw():
            wire += len(chunk)
            if wire > cap:
                raise too_big()
            if inflater is not None:
                chunk = inflater.decompress(chunk, cap + 1 - held)
                if held + len(chunk) > cap or inflater.unconsumed_tail:
                    raise too_big(" once inflated")
            parts.append(chunk)
            held += len(chunk)
            if time.monotonic() >= deadline:
                raise httpx.ReadTimeout("the page's deadline passed", request=answer.request)
            if abort():
                raise httpx.ReadError("read abandoned", request=answer.request)
        if inflater is not None:
            rest = inflater.flush()
            if held + len(rest) > cap:
                raise too_big(" once inflated")
            parts.append(rest)
            if not inflater.eof:
                raise UpstreamBadResponse(
                    f"{service} sent a page of {call.describe()} whose {coding} stream ends early"
                )
    except zlib.error as exc:
        raise UpstreamBadResponse(
            f"{service} sent an undecodable body for {call.describe()}: {exc}"
        ) from exc
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _where(target: Target, url: httpx.URL) -> dict[str, object]:
    """The fields of an upstream log line, as the retry line has them (client.py): host, path
    and the export's trace id (the job id); not the query, a cursor of no use in a log."""
    return {"host": url.host, "path": url.path, "trace_id": target.call.trace_id}
