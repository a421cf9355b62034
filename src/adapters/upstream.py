"""Record sources over HTTP: the feed service, the telemetry service and the WeighVision read
model, as the contract's "Upstream sources" describes them.

One :class:`HttpRecordSource` serves every job type through a table (job type -> how to page
it). Transient faults (connect errors, timeouts, 429, 5xx) are retried with exponential
backoff and full jitter, honouring ``Retry-After``; what is left becomes the core's
``UpstreamUnavailable`` / ``UpstreamRejected`` / ``UpstreamBadResponse``, whose messages name
the service, the status and the path, never the token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import multiprocessing
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar
from urllib.parse import quote, urlencode

import msgspec

from reportcore.errors import UpstreamBadResponse, UpstreamRejected, UpstreamUnavailable
from reportcore.jobs import JobType, Scope
from reportcore.jobtypes import JOB_TYPES, Upstream
from reportcore.ports import SourcePage, SourceRequest
from reportcore.records import (
    FeedingKpiRecord,
    FeedIntakeRecord,
    TelemetryReading,
    WeightAggregate,
)

from .http_client import Answer, BadEncoding, HttpClient, NoAnswer

FEED_INTAKE_PATH = "/api/v1/feed/intake-records"
KPI_FEEDING_PATH = "/api/v1/kpi/feeding"
TELEMETRY_PATH = "/api/v1/telemetry/readings"
WEIGHVISION_PATH = "/api/v1/weighvision/weight-aggregates"

FEED_PAGE_MAX = 100  # the feed service caps ``limit`` here
TELEMETRY_LIMIT_MAX = 10_000  # the telemetry service caps ``limit`` here
_ONE_MS = dt.timedelta(milliseconds=1)


class UpstreamConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where the upstream services are and how patiently to ask them."""

    feed_url: str | None = None
    telemetry_url: str | None = None
    weighvision_url: str | None = None
    token: str | None = None
    timeout_sec: float = 10.0
    retries: int = 4  # tries after the first one
    backoff_base_sec: float = 0.5
    backoff_max_sec: float = 8.0
    feed_page_limit: int = FEED_PAGE_MAX
    telemetry_limit: int = TELEMETRY_LIMIT_MAX
    prefetch_pages: int = 2  # pages fetched ahead by a thread while the export writes; 0: none
    fetch_process: bool = False  # fetch in a process of its own (see HttpRecordSource)


# upstream -> (config attribute of its base URL, the variable an operator sets)
_BASE_URLS: Mapping[Upstream, tuple[str, str]] = {
    Upstream.FEED: ("feed_url", "CLOUD_FEED_SERVICE_URL"),
    Upstream.TELEMETRY: ("telemetry_url", "CLOUD_TELEMETRY_SERVICE_URL"),
    Upstream.WEIGHVISION: ("weighvision_url", "CLOUD_WEIGHVISION_READMODEL_URL"),
}


# --- the pages on the wire ---

T = TypeVar("T")


class ItemsPage(msgspec.Struct, Generic[T]):
    """``{"items": [...]}``: KPI feeding and WeighVision answers."""

    items: list[T]


class CursorPage(msgspec.Struct, Generic[T]):
    """``{"items": [...], "nextCursor": id|null}``: feed intake answers."""

    items: list[T]
    nextCursor: str | int | None = None


class _Cursor(msgspec.Struct):
    """What feed paging needs of a page when its records are decoded elsewhere."""

    nextCursor: str | int | None = None


class _ReadingKey(msgspec.Struct, rename="camel", frozen=True):
    """What telemetry paging needs of a reading when the records themselves are not asked."""

    id: str
    occurred_at: str


class _Decoders(NamedTuple):
    """The decoders of one kind of answer, built once: records typed, and records raw."""

    typed: msgspec.json.Decoder[Any]
    raw: msgspec.json.Decoder[Any]


_FEED = _Decoders(
    typed=msgspec.json.Decoder(CursorPage[FeedIntakeRecord]),
    raw=msgspec.json.Decoder(CursorPage[msgspec.Raw]),
)
_KPI = _Decoders(
    typed=msgspec.json.Decoder(ItemsPage[FeedingKpiRecord]),
    raw=msgspec.json.Decoder(ItemsPage[msgspec.Raw]),
)
_WEIGHVISION = _Decoders(
    typed=msgspec.json.Decoder(ItemsPage[WeightAggregate]),
    raw=msgspec.json.Decoder(ItemsPage[msgspec.Raw]),
)
_TELEMETRY = _Decoders(
    typed=msgspec.json.Decoder(list[TelemetryReading]),
    raw=msgspec.json.Decoder(list[msgspec.Raw]),
)
_TELEMETRY_KEYS = msgspec.json.Decoder(list[_ReadingKey])
_FEED_CURSOR = msgspec.json.Decoder(_Cursor)


class _Body(NamedTuple):
    """One answer as fetched: the call that got it (for error messages), its bytes, and which
    of its records to keep (``None``: all). Picklable: a fetch process sends these to the
    exporter, which decodes them by the job type's decoders."""

    call: _Call
    body: bytes
    keep: list[bool] | None = None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _instant(value: dt.datetime) -> str:
    """An instant as upstream reads it: UTC, milliseconds, ``Z``."""
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _day_start(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _parse_instant(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


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


class _Call(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream endpoint of one job: who answers, where, and for which job."""

    upstream: Upstream
    base_url: str
    path: str
    trace_id: str

    def describe(self) -> str:
        return f"GET {self.path}"


class Http(Protocol):
    """What a record source asks of HTTP (:class:`adapters.http_client.HttpClient`; tests
    pass fakes): a GET whose failures are :class:`NoAnswer` or :class:`BadEncoding`."""

    def get(self, base_url: str, target: str, headers: Mapping[str, str]) -> Answer: ...

    def close(self) -> None: ...


class HttpRecordSource:
    """:class:`reportcore.ports.RecordSource` over the FarmIQ services' HTTP APIs.

    One :class:`HttpClient` (keep-alive connections per service) per source, shared by the
    threads of a worker; an ``http`` passed in is used as it is and left to its owner to close
    (tests pass fakes). ``sleep`` and ``rng`` are the backoff's clock and dice (tests pass
    fakes too).

    ``pages`` fetches up to ``config.prefetch_pages`` pages ahead in a thread of its own, so the
    next page is on its way while the consumer writes the current one; see :class:`_Prefetch`.
    That thread shares the interpreter lock with the consumer, so it overlaps only waiting.
    With ``config.fetch_process`` (and an HTTP client of its own) the fetching - HTTP and
    paging - runs in a process of its own instead, which hands the answers' bytes over a
    socket; the records are decoded where they are written. Fetching and encoding then run on
    two cores: each costs a few microseconds of CPU a record, and one interpreter would run
    them in turn. See :class:`_Fetchers`.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        http: Http | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._owns_http = http is None
        self._http: Http = HttpClient(timeout=config.timeout_sec) if http is None else http
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._local = threading.local()  # .stop: the prefetch thread's stop event
        self._fetchers = _Fetchers(config) if config.fetch_process and self._owns_http else None

    def close(self) -> None:
        """Close the connection pool (a client passed in is its owner's to close)."""
        if self._fetchers is not None:
            self._fetchers.close()
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> HttpRecordSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the port ---

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        """The job's records, page by page, in upstream order."""
        bodies: _Pager
        if self._fetchers is not None:
            bodies = self._fetchers.bodies(request)
        else:
            bodies = _PAGERS[request.job_type](self, request)
            if self.config.prefetch_pages > 0:
                bodies = _Prefetch(self, bodies, self.config.prefetch_pages).pages()
        return self._decoded(request, bodies)

    def _decoded(self, request: SourceRequest, bodies: _Pager) -> Iterator[SourcePage]:
        decoders = _DECODERS[request.job_type]
        try:
            for fetched in bodies:
                yield self._page(fetched, decoders, request)
        finally:
            bodies.close()

    # --- plumbing ---

    def _call(self, request: SourceRequest, path: str) -> _Call:
        upstream = JOB_TYPES[request.job_type].upstream
        attr, variable = _BASE_URLS[upstream]
        base_url = getattr(self.config, attr)
        if not base_url:
            raise UpstreamUnavailable(
                f"{upstream.value} is not configured: set {variable} to export "
                f"{request.job_type.value}"
            )
        return _Call(
            upstream=upstream, base_url=base_url.rstrip("/"), path=path, trace_id=request.job_id
        )

    def _headers(self, call: _Call) -> dict[str, str]:
        headers = {
            "accept": "application/json",
            "x-request-id": str(uuid.uuid4()),
            "x-trace-id": call.trace_id,
        }
        if self.config.token:
            headers["authorization"] = f"Bearer {self.config.token}"
        return headers

    def _backoff(self, attempt: int) -> float:
        """Full jitter: anywhere between 0 and the capped exponential step."""
        step = self.config.backoff_base_sec * 2 ** min(attempt, 32)  # no float overflow
        cap = min(self.config.backoff_max_sec, step)
        return self._rng.uniform(0.0, cap)

    def _get(self, call: _Call, query: str) -> bytes:
        """The body of a 2xx answer to ``call`` with ``query`` (see :func:`_query`), after
        retrying transient failures."""
        tries = self.config.retries + 1
        service = call.upstream.value
        target = f"{call.path}?{query}" if query else call.path
        for attempt in range(tries):
            try:
                answer = self._http.get(call.base_url, target, self._headers(call))
            except NoAnswer as exc:
                if exc.timed_out:
                    problem = f"{service} did not answer {call.describe()} in time"
                else:
                    problem = f"{service} could not be reached for {call.describe()} ({exc})"
                delay = self._backoff(attempt)
            except BadEncoding as exc:
                raise UpstreamBadResponse(
                    f"{service} sent an undecodable body for {call.describe()}: {exc}"
                ) from exc
            else:
                status = answer.status
                if 200 <= status < 300:
                    return answer.body
                problem = f"{service} answered {status} for {call.describe()}"
                if status != 429 and status < 500:
                    raise UpstreamRejected(problem)
                waited = retry_after_seconds(
                    answer.headers.get("retry-after"), dt.datetime.now(dt.UTC)
                )
                delay = (
                    self._backoff(attempt)
                    if waited is None
                    else min(waited, self.config.backoff_max_sec)
                )
            if attempt + 1 == tries:
                raise UpstreamUnavailable(f"{problem} (gave up after {tries} tries)")
            self._pause(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _pause(self, delay: float) -> None:
        """Back off; in a prefetch thread told to stop, stop waiting (and fetching) at once."""
        stop: threading.Event | None = getattr(self._local, "stop", None)
        if stop is None:
            self._sleep(delay)
            return
        if self._sleep is time.sleep:
            stop.wait(delay)
        else:
            self._sleep(delay)
        if stop.is_set():
            raise _Stopped

    def _decode(self, call: _Call, decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise UpstreamBadResponse(
                f"{call.upstream.value} sent an unreadable page for {call.describe()}: {exc}"
            ) from exc

    def _page(self, fetched: _Body, decoders: _Decoders, request: SourceRequest) -> SourcePage:
        """An answer decoded as ``request`` asks: typed records, raw records, or both (decoded
        from the same bytes, so aligned), less those the pager did not keep."""
        call, body, keep = fetched
        typed = self._decode(call, decoders.typed, body) if request.typed else None
        raw = self._decode(call, decoders.raw, body) if request.raw else None
        records = typed.items if isinstance(typed, ItemsPage | CursorPage) else typed
        raws = raw.items if isinstance(raw, ItemsPage | CursorPage) else raw
        if keep is not None:
            records = _kept(records, keep) if records is not None else None
            raws = _kept(raws, keep) if raws is not None else None
        return SourcePage(records=records, raw=raws)

    # --- one pager per job type ---

    def _scope_params(self, request: SourceRequest) -> dict[str, Any]:
        scope: Scope = request.scope
        params: dict[str, Any] = {"tenantId": request.tenant_id}
        for name in ("farm_id", "barn_id", "batch_id"):
            value = getattr(scope, name)
            if value is not None:
                params[_camel(name)] = value
        for key, value in request.upstream_filters.items():
            params[_camel(key)] = value
        return params

    def _feed_intake(self, request: SourceRequest) -> _Pager:
        call = self._call(request, FEED_INTAKE_PATH)
        scope = request.scope
        params = self._scope_params(request)
        if scope.start_date is not None:
            params["start"] = _day_start(scope.start_date)
        if scope.end_date is not None:
            params["end"] = f"{scope.end_date.isoformat()}T23:59:59Z"
        params["limit"] = min(self.config.feed_page_limit, FEED_PAGE_MAX)
        query = _query(params)
        loop = _CursorLoop()
        cursor: str | None = None
        while True:
            body = self._get(call, query if cursor is None else _and(query, "cursor", cursor))
            next_cursor = self._decode(call, _FEED_CURSOR, body).nextCursor
            yield _Body(call, body)
            if next_cursor is None:
                return
            cursor = str(next_cursor)
            if loop.repeats(cursor):
                raise UpstreamBadResponse(
                    f"{call.upstream.value} repeated the cursor {cursor!r} for "
                    f"{call.describe()}; paging would never end"
                )

    def _kpi_feeding(self, request: SourceRequest) -> _Pager:
        call = self._call(request, KPI_FEEDING_PATH)
        params = self._scope_params(request)
        params |= _dates(request.scope, "startDate", "endDate")
        yield _Body(call, self._get(call, _query(params)))

    def _weighvision(self, request: SourceRequest) -> _Pager:
        call = self._call(request, WEIGHVISION_PATH)
        params = self._scope_params(request)
        params |= _dates(request.scope, "start", "end")
        yield _Body(call, self._get(call, _query(params)))

    def _telemetry(self, request: SourceRequest) -> _Pager:
        """Page backwards by time: the service has no cursor and answers newest first.

        After a full page the next window ends just after the oldest instant seen (``to`` =
        that instant + 1 ms, right whether the service reads ``to`` as inclusive or
        exclusive); readings newer than it, or at it and already emitted, are skipped. So no
        reading is lost or repeated however many share a timestamp, unless more than a whole
        page share one: that cannot be paged past, and fails rather than truncates.
        """
        call = self._call(request, TELEMETRY_PATH)
        scope = request.scope
        limit = max(1, min(self.config.telemetry_limit, TELEMETRY_LIMIT_MAX))
        params = self._scope_params(request)
        params["limit"] = limit
        if scope.start_date is not None:
            params["from"] = _day_start(scope.start_date)
        query = _query(params)
        upper: str | None = None
        if scope.end_date is not None:
            upper = f"{scope.end_date.isoformat()}T23:59:59.999Z"
        boundary: dt.datetime | None = None  # everything newer than it is emitted
        emitted_at_boundary: set[str] = set()
        service = call.upstream.value
        while True:
            body = self._get(call, query if upper is None else _and(query, "to", upper))
            keys: Sequence[_ReadingKey] = self._decode(call, _TELEMETRY_KEYS, body)
            try:
                instants = [_parse_instant(k.occurred_at) for k in keys]
            except ValueError as exc:
                raise UpstreamBadResponse(
                    f"{service} sent a reading with an unreadable occurredAt for "
                    f"{call.describe()}: {exc}"
                ) from exc
            keep = [
                boundary is None
                or t < boundary
                or (t == boundary and k.id not in emitted_at_boundary)
                for k, t in zip(keys, instants, strict=True)
            ]
            yield _Body(call, body, None if all(keep) else keep)
            if len(keys) < limit:
                return
            oldest, newest = min(instants), max(instants)
            if oldest == newest:
                raise UpstreamBadResponse(
                    f"{service} filled a whole page (limit {limit}) of {call.describe()} with "
                    f"readings at one instant, {keys[0].occurred_at}: the rest of that instant "
                    f"cannot be paged to, and the export would silently lose readings"
                )
            if boundary is not None and oldest >= boundary:
                raise UpstreamBadResponse(
                    f"{service} did not page back in time for {call.describe()} (to={upper} "
                    f"answered readings up to {keys[0].occurred_at}); paging would never end"
                )
            # oldest < boundary here: every reading at the old boundary is behind us
            emitted_at_boundary = {k.id for k, t in zip(keys, instants, strict=True) if t == oldest}
            boundary = oldest
            upper = _instant(oldest + _ONE_MS)


class _CursorLoop:
    """Finds a feed that pages in a circle, in memory that does not grow with the export.

    A cursor among the last ``recent`` is caught at once; a longer circle by Brent's cycle
    detection (compare with a mark moved at doubling distances), within about twice its
    length. Keeping every cursor seen held ~5 MB more at 5 million records.
    """

    def __init__(self, recent: int = 4096) -> None:
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._limit = recent
        self._mark: str | None = None
        self._steps = 0
        self._power = 1

    def repeats(self, cursor: str) -> bool:
        if cursor in self._recent_set or cursor == self._mark:
            return True
        self._recent.append(cursor)
        self._recent_set.add(cursor)
        if len(self._recent) > self._limit:
            self._recent_set.discard(self._recent.popleft())
        self._steps += 1
        if self._steps == self._power:
            self._mark, self._steps, self._power = cursor, 0, self._power * 2
        return False


def _query(params: Mapping[str, Any]) -> str:
    """``params`` as a percent-encoded query string (a list value as the key repeated)."""
    return urlencode(params, doseq=True, quote_via=quote)


def _and(query: str, key: str, value: str) -> str:
    """``query`` and one more parameter: a page's cursor or window, added to the parameters
    encoded once for the whole export rather than encoding them all again for each page."""
    pair = f"{key}={quote(value, safe='')}"
    return f"{query}&{pair}" if query else pair


class _Stopped(Exception):
    """The consumer of a prefetch thread went away: stop fetching."""


_END = object()


class _Prefetch:
    """Runs a pager in a thread, at most ``depth`` pages ahead of the consumer.

    Pages come out in order; an exception of the pager (an ``UpstreamUnavailable`` with its
    code, say) comes out of the consumer's ``next`` after the pages before it. When the
    consumer stops early (``close()`` of its generator: a cancel, a shutdown, a failed write)
    the thread is told to stop, stops at its next page or backoff, closes the pager and is
    joined, so no thread and no connection outlives the export by more than one request.
    """

    def __init__(self, source: HttpRecordSource, pager: _Pager, depth: int) -> None:
        self._source = source
        self._pager = pager
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream-prefetch", daemon=True)

    def _put(self, item: Any) -> bool:
        """Hand ``item`` over, waiting for room; False once the consumer has gone."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return not self._stop.is_set()  # told to stop while it waited: fetch no more
        return False

    def _run(self) -> None:
        self._source._local.stop = self._stop
        try:
            for page in self._pager:
                if not self._put(page):
                    return
            self._put(_END)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
        finally:
            self._pager.close()
            self._source._local.stop = None

    def pages(self) -> _Pager:
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            self._stop.set()
            with contextlib.suppress(queue.Empty):  # room for a put the thread waits on
                while True:
                    self._queue.get_nowait()
            self._thread.join()


class _Failed(NamedTuple):
    exc: BaseException


# --- fetching in a process of its own ---

_STOP = "stop"  # to a fetch process: stop the export it is fetching (or ignore, when idle)
_QUIT = None  # to a fetch process: exit


class _Fetchers:
    """Fetch processes, one per export running at once, kept between exports.

    A fetch process runs a :class:`HttpRecordSource` of its own (same configuration, no
    prefetch thread, no process of its own) and serves one request at a time: it runs that
    request's pager and sends each answer as a :class:`_Body` (its bytes and what to keep of
    them) through a socket pair, then ``("end",)``; a failure is sent as ``("error", exc)``
    with the pager's own exception (``UpstreamUnavailable`` with its message, say). A full
    socket blocks it, so it runs at most about a socket buffer ahead of the exporter, and
    memory stays flat. An exporter that stops early sends ``stop`` and reads what is still
    coming until the process says ``("stopped",)``; a process that is asked to stop in a
    backoff stops waiting at once. A process that dies mid-export fails that export as
    ``UpstreamUnavailable`` (the job is retried) and is replaced by the next export.

    Processes are started with ``spawn`` (the worker has threads, which ``fork`` would copy
    half-way); that costs a few hundred milliseconds, once per process.
    """

    def __init__(self, config: UpstreamConfig) -> None:
        self._config = msgspec.structs.replace(config, fetch_process=False, prefetch_pages=0)
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Fetcher] = []
        self._lock = threading.Lock()
        self._closed = False

    def bodies(self, request: SourceRequest) -> _Pager:
        fetcher = self._checkout()
        try:
            yield from fetcher.bodies(request)
        finally:
            self._checkin(fetcher)

    def _checkout(self) -> _Fetcher:
        with self._lock:
            if self._closed:
                raise RuntimeError("the record source is closed")
            while self._idle:
                fetcher = self._idle.pop()
                if fetcher.alive():
                    return fetcher
                fetcher.close()
        return _Fetcher(self._context, self._config)

    def _checkin(self, fetcher: _Fetcher) -> None:
        with self._lock:
            if fetcher.reusable and not self._closed:
                self._idle.append(fetcher)
                return
        fetcher.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for fetcher in idle:
            fetcher.close()


class _Fetcher:
    """One fetch process and the exporter's end of its socket pair."""

    def __init__(self, context: Any, config: UpstreamConfig) -> None:
        self.reusable = True
        self._conn, child = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_fetch_process, args=(child, config), name="upstream-fetch", daemon=True
        )
        self._process.start()
        child.close()

    def alive(self) -> bool:
        return bool(self._process.is_alive())

    def bodies(self, request: SourceRequest) -> _Pager:
        """The answers to ``request``; afterwards ``reusable`` says whether the process can
        serve another request (it can once it said how the export ended, or stopped it)."""
        self.reusable = False
        try:
            self._conn.send(request)
            while True:
                message = self._receive()
                if isinstance(message, _Body):
                    yield message
                    continue
                self.reusable = True
                if message[0] == "error":
                    raise message[1]
                return  # ("end",)
        finally:
            if not self.reusable:
                self.reusable = self._stop()

    def _receive(self) -> Any:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(1.0)
            raise UpstreamUnavailable(
                f"the upstream fetch process ended in the middle of an export "
                f"(exit code {self._process.exitcode})"
            ) from exc

    def _stop(self) -> bool:
        """Tell the process to stop this export and read until it has; False if it cannot."""
        try:
            self._conn.send(_STOP)
            while True:
                message = self._conn.recv()
                if not isinstance(message, _Body):
                    return True  # ("stopped",), or an end or error that crossed the stop
        except (EOFError, OSError):
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(_QUIT)
        self._process.join(2.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _fetch_process(conn: Any, config: UpstreamConfig) -> None:
    """A fetch process's life: serve requests from ``conn`` until told to quit or orphaned."""

    def sleep(delay: float) -> None:  # a backoff that a stop interrupts
        if conn.poll(delay):
            raise _Stopped

    with HttpRecordSource(config, sleep=sleep) as source:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the exporter is gone
            if message is _QUIT:
                return
            if message == _STOP:
                continue  # a stop that crossed the end of the last export
            try:
                _serve(conn, source, message)
            except OSError:
                return  # the exporter went away in the middle (a killed worker): so do we


def _serve(conn: Any, source: HttpRecordSource, request: SourceRequest) -> None:
    """Send the answers to ``request``, then how it ended; stop when the exporter asks."""
    pager = _PAGERS[request.job_type](source, request)
    try:
        for fetched in pager:
            if conn.poll():
                raise _Stopped
            conn.send(fetched)
        conn.send(("end",))
    except _Stopped:
        conn.recv()  # the stop
        conn.send(("stopped",))
    except OSError:
        raise  # the socket itself failed: nobody to tell
    except Exception as exc:
        try:
            conn.send(("error", exc))
        except Exception:  # an exception that does not pickle: its text will do
            conn.send(("error", UpstreamUnavailable(f"the upstream fetch failed: {exc!r}")))
    finally:
        pager.close()


def _kept(items: Sequence[T], keep: Sequence[bool]) -> list[T]:
    return [item for item, k in zip(items, keep, strict=True) if k]


def _dates(scope: Scope, start: str, end: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if scope.start_date is not None:
        params[start] = scope.start_date.isoformat()
    if scope.end_date is not None:
        params[end] = scope.end_date.isoformat()
    return params


_DECODERS: Mapping[JobType, _Decoders] = {
    JobType.FEED_INTAKE_EXPORT: _FEED,
    JobType.KPI_FEEDING_EXPORT: _KPI,
    JobType.TELEMETRY_EXPORT: _TELEMETRY,
    JobType.WEIGHVISION_EXPORT: _WEIGHVISION,
}

_Pager = Generator[_Body, None, None]

_PAGERS: Mapping[JobType, Callable[[HttpRecordSource, SourceRequest], _Pager]] = {
    JobType.FEED_INTAKE_EXPORT: HttpRecordSource._feed_intake,
    JobType.KPI_FEEDING_EXPORT: HttpRecordSource._kpi_feeding,
    JobType.TELEMETRY_EXPORT: HttpRecordSource._telemetry,
    JobType.WEIGHVISION_EXPORT: HttpRecordSource._weighvision,
}
