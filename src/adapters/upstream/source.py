"""The record source over HTTP: :class:`HttpRecordSource` serves every job type through a
table (job type -> how to page it), fetching in threads and decoding where the file is
written."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import operator
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import msgspec

from adapters import metrics
from reportcore.errors import UpstreamBadResponse, UpstreamUnavailable
from reportcore.jobs import JobType
from reportcore.jobtypes import JOB_TYPES, Upstream
from reportcore.policy import ExportLimits, limit_exceeded
from reportcore.ports import SourcePage, SourceRequest

from . import pagers
from .client import Clients
from .config import (
    BASE_URLS,
    FEED_INTAKE_PATH,
    FEED_PAGE_MAX,
    KPI_FEEDING_PATH,
    TELEMETRY_LIMIT_MAX,
    TELEMETRY_PATH,
    WEIGHVISION_PATH,
    UpstreamConfig,
)
from .pagers import Bounds
from .retry import Retrying
from .windows import Checks, Range, SplitPolicy, Task, WindowRun, plan
from .wire import (
    DECODERS,
    FEED_KEYS,
    READING_KEYS,
    Call,
    Decoders,
    Fetched,
    RecordKey,
    camel,
    decode,
    instants_of,
    kept,
    query,
)

WINDOWS_PER_THREAD = 1  # a window a thread: a thread done early splits a running one


class HttpRecordSource:
    """:class:`reportcore.ports.RecordSource` over the FarmIQ services' HTTP APIs.

    One :class:`~adapters.upstream.client.Clients` (an ``httpx.Client`` per upstream
    origin and the per-host cap) serves every export of the process. A bounded feed intake or
    telemetry export is cut into time windows fetched ``config.concurrency`` at once
    (:mod:`adapters.upstream.windows`); any other export is fetched in one thread
    while the exporter writes. ``transport`` replaces the network (tests: ``httpx.MockTransport``);
    ``sleep`` and ``rng`` are the backoff's clock and dice; ``on_client`` sees each new
    ``httpx.Client`` (tracing instruments it); ``split`` is how an idle window thread picks
    the window it takes the older part of (default
    :func:`~adapters.upstream.windows.most_work_left`; tests drive their own schedules).
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_client: Callable[[httpx.Client], None] | None = None,
        split: SplitPolicy | None = None,
    ) -> None:
        self.config = config
        self._split = split
        self.clients = Clients(config, transport, on_client)
        self._retrying = Retrying(config, self.clients, sleep=sleep, rng=rng)
        self._runs: set[WindowRun] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the clients (and their connections)."""
        self.clients.close()

    def __enter__(self) -> HttpRecordSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running_threads(self) -> int:
        """Window threads of this source still alive (none once every export has ended,
        unless one was abandoned in the middle of a request)."""
        with self._lock:
            return sum(run.alive() for run in self._runs)

    # --- the port ---

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        """The job's records, page by page, in upstream order."""
        call, tasks, checks = self._plan(request)
        decoders = DECODERS[_own(request.job_type)]
        run = WindowRun(tasks, self.config.concurrency, checks=checks)
        with self._lock:
            self._runs = {r for r in self._runs if r.alive()} | {run}
        max_items = self.config.max_page_items
        checked = checks is not None  # every page went through the windows' checks.keys
        try:
            for fetched in run.answers():
                yield _page(call, fetched, decoders, request, max_items, checked)
        finally:
            run.close()

    # --- what to fetch ---

    def _plan(self, request: SourceRequest) -> tuple[Call, list[Task], Checks | None]:
        job_type = _own(request.job_type)
        path = _PATHS[job_type]
        call = self._call(request, path)
        params = _scope_params(request)
        scope = request.scope

        target = self._retrying.target(call)
        checkpoint = request.checkpoint or _carry_on
        arrived = request.fetched or _carry_on
        max_pages, max_bytes = request.max_pages, request.max_bytes
        fetched = itertools.count(1)  # pages asked for, every window together
        fetched_bytes = [0]
        count_lock = threading.Lock()

        def get(stop: threading.Event, q: str) -> bytes:
            # counted as they are asked, not as the exporter reads them: windows ahead of the
            # exporter would otherwise spool a never-ending upstream to disk meanwhile
            if max_pages is not None and next(fetched) > max_pages:
                raise limit_exceeded(ExportLimits(max_pages=max_pages), "max_pages")
            body = self._retrying.get(target, q, stop, checkpoint)
            arrived()
            if max_bytes is not None:
                with count_lock:
                    fetched_bytes[0] += len(body)
                    over = fetched_bytes[0] > max_bytes
                if over:
                    raise limit_exceeded(
                        ExportLimits(max_bytes=max_bytes), "max_bytes", "bytes fetched upstream"
                    )
            return body

        def task(page: Callable[[pagers.Get], pagers.Pager]) -> Task:
            return lambda stop: page(functools.partial(get, stop))

        if job_type in (JobType.KPI_FEEDING_EXPORT, JobType.WEIGHVISION_EXPORT):
            names = (
                ("startDate", "endDate")
                if job_type == JobType.KPI_FEEDING_EXPORT
                else (
                    "start",
                    "end",
                )
            )
            if scope.start_date is not None:
                params[names[0]] = scope.start_date.isoformat()
            if scope.end_date is not None:
                params[names[1]] = scope.end_date.isoformat()
            q = query(params)
            return call, [task(lambda g: pagers.single(g, q))], None

        start, end = scope.start_date, scope.end_date
        if job_type == JobType.FEED_INTAKE_EXPORT:
            params["limit"] = min(self.config.feed_page_limit, FEED_PAGE_MAX)
            lower = f"{start.isoformat()}T00:00:00Z" if start else None
            upper = f"{end.isoformat()}T23:59:59Z" if end else None
        else:
            limit = max(1, min(self.config.telemetry_limit, TELEMETRY_LIMIT_MAX))
            params["limit"] = limit
            lower = f"{start.isoformat()}T00:00:00Z" if start else None
            upper = f"{end.isoformat()}T23:59:59.999Z" if end else None
        q = query(params)
        # what is kept is the end date's whole day, whatever the query's end says: the feed's
        # end=...T23:59:59Z (the contract's) left a record at 23:59:59.5 out, though its day
        after_end = None
        if end is not None:
            after_end = dt.datetime.combine(end, dt.time.min, tzinfo=dt.UTC) + dt.timedelta(days=1)
        windows = [Bounds(lower=lower, upper=upper, below=after_end)]
        if start is not None and after_end is not None and self.config.concurrency > 1:
            first = dt.datetime.combine(start, dt.time.min, tzinfo=dt.UTC)
            whole = Range(first=first, end=after_end, lower=lower or "", upper=upper or "")
            windows = plan(whole, self.config.concurrency * WINDOWS_PER_THREAD)
        opener: Callable[[Bounds], Task]
        if job_type == JobType.FEED_INTAKE_EXPORT:
            page_size = params["limit"]
            # the service caps limit at 100 (the contract): more than that is never a page
            most = max(page_size, FEED_PAGE_MAX)
            keys = functools.partial(_window_keys, call, request.tenant_id, FEED_KEYS, most)
            opener = lambda b: task(functools.partial(_feed, call=call, q=q, bounds=b))  # noqa: E731
        else:
            page_size = limit
            keys = functools.partial(_window_keys, call, request.tenant_id, READING_KEYS, limit)
            opener = lambda b: task(  # noqa: E731
                functools.partial(_telemetry, call=call, q=q, bounds=b, limit=limit)
            )
        checks = Checks(
            windows=windows,
            opener=opener,
            keys=keys,
            call=call,
            page_size=page_size,
            split=self._split,
        )
        return call, [opener(b) for b in windows], checks

    def _call(self, request: SourceRequest, path: str) -> Call:
        job_type = _own(request.job_type)
        upstream = Upstream(JOB_TYPES[job_type].upstream)
        where = BASE_URLS[upstream]
        base_url = getattr(self.config, where.attribute)
        if not base_url:
            raise UpstreamUnavailable(
                f"{upstream.value} is not configured: set {where.variables[0]} to export "
                f"{job_type.value}"
            )
        return Call(
            upstream=upstream, base_url=base_url.rstrip("/"), path=path, trace_id=request.job_id
        )


def _own(job_type: JobType | str) -> JobType:
    """One of the service's job types (the ones this source has paths for): a consumer's own
    job type, a plain string, comes with its own source."""
    try:
        return JobType(job_type)
    except ValueError:
        raise ValueError(f"the HTTP record source has no upstream for {job_type!r}") from None


def _feed(get: pagers.Get, *, call: Call, q: str, bounds: Bounds) -> pagers.Pager:
    return pagers.feed_intake(get, call, q, bounds)


def _telemetry(get: pagers.Get, *, call: Call, q: str, bounds: Bounds, limit: int) -> pagers.Pager:
    return pagers.telemetry(get, call, q, bounds, limit)


def _window_keys(
    call: Call, tenant_id: str, decoder: msgspec.json.Decoder[Any], most: int, fetched: Fetched
) -> tuple[list[str], Sequence[dt.datetime]]:
    """A page's ids and instants for its window (``decoder``: ``FEED_KEYS`` or
    ``READING_KEYS``), its records' tenant checked, so that :func:`_page` checks none of it
    again; the keys the pager read already, if it did, else read here. A page of more than
    ``most`` records (the ``limit`` asked) is not the page asked for: each window holds a page
    and its keys, and eight of 80,000 records each (under the byte cap) held ~600 MB."""
    keys = fetched.keys
    if keys is None:
        keys = _items(decode(call, decoder, fetched.body))
    if len(keys) > most:
        raise UpstreamBadResponse(
            f"{call.upstream.value} sent {len(keys)} records in one page of "
            f"{call.describe()}, more than the {most} asked (limit)"
        )
    _one_tenant(call, keys, tenant_id)
    instants = fetched.instants
    return [k.id for k in keys], _instants(call, keys) if instants is None else instants


_FROM_ISO = dt.datetime.fromisoformat


def _instants(call: Call, keys: Sequence[RecordKey]) -> list[dt.datetime]:
    """Each record's ``occurredAt`` for the windows' checks: read as it is when every one
    carries its offset (the upstreams' way; a function call less a record than
    :func:`~adapters.upstream.wire.instants_of`), else by ``instants_of`` (a naive instant as
    UTC, an unreadable one a bad page naming it)."""
    try:
        instants = [_FROM_ISO(k.occurred_at) for k in keys]
    except ValueError:
        return instants_of(call, keys)
    if any(t.tzinfo is None for t in instants):
        return instants_of(call, keys)
    return instants


def _scope_params(request: SourceRequest) -> dict[str, Any]:
    scope = request.scope
    params: dict[str, Any] = {"tenantId": request.tenant_id}
    for name in ("farm_id", "barn_id", "batch_id"):
        value = getattr(scope, name)
        if value is not None:
            params[camel(name)] = value
    for key, value in request.upstream_filters.items():
        params[camel(key)] = value
    return params


def _carry_on() -> None:
    """No checkpoint: nothing outside stops the export."""


_TENANT = operator.attrgetter("tenant_id")


def _items(page: Any) -> Any:
    """A decoded page's records: the page itself (a telemetry list) or its ``items``."""
    return page if isinstance(page, list) else page.items


def _page(
    call: Call,
    fetched: Fetched,
    decoders: Decoders,
    request: SourceRequest,
    max_items: int,
    checked: bool = False,
) -> SourcePage:
    """An answer decoded as ``request`` asks: typed records, raw records, or both (decoded
    from the same bytes, so aligned), less those its window did not keep.

    Every record is checked as a CSV export checks it, also when only raw bytes are asked
    (through the job type's ``check`` decoder, first, so that a page of three million ``1``
    fails at its first item instead of allocating three million raw values), unless its
    window did (``checked``: the windows' keys are the check's fields, :func:`wire.keyed`,
    and their tenant was checked); a page of more than ``max_items`` records, or with a
    record of another tenant, fails the export."""
    body = fetched.body
    # an NDJSON export reads only what its filters (and progress) need of the typed record
    whole = decoders.filtered if request.raw else decoders.typed
    typed = decode(call, whole, body) if request.typed else None
    raws = None
    if typed is not None:
        items = _items(typed)
    elif checked and request.raw:  # the windows checked them: the raw records are counted
        items = raws = _items(decode(call, decoders.raw, body))
    else:
        items = _items(decode(call, decoders.check, body))
    if len(items) > max_items:
        raise UpstreamBadResponse(
            f"{call.upstream.value} sent {len(items)} records in one page of "
            f"{call.describe()}, over {max_items} (UPSTREAM_MAX_PAGE_ITEMS)"
        )
    if decoders.tenant and not checked:
        _one_tenant(call, items, request.tenant_id)
    keep = fetched.keep
    if fetched.keep is None and request.job_type in _DAILY:
        keep = _days_asked(call, items, request)
    records = None if typed is None else items
    if request.raw and raws is None:  # after the checks: an over-long page is never held raw
        raws = _items(decode(call, decoders.raw, body))
    if request.raw and not body.isascii():
        _utf8(call, body)  # raw records go to the file as they came: they must be JSON's text
    if keep is not None:
        records = kept(records, keep) if records is not None else None
        raws = kept(raws, keep) if raws is not None else None
    return SourcePage(records=records, raw=raws)


# the job types of one page of days, asked for by date (the others are paged in windows,
# which hold their answers to the range: windows.py)
_DAILY = frozenset((JobType.KPI_FEEDING_EXPORT, JobType.WEIGHVISION_EXPORT))


def _days_asked(
    call: Call, items: Sequence[Any], request: SourceRequest
) -> tuple[bool, ...] | None:
    """Which days of a KPI or WeighVision page to keep (``None``: all): those inside the
    job's dates, each once (a KPI day, one a barn's day, by its date; a WeighVision
    aggregate by its ``id``: one date holds one a batch, and one without an id is never
    taken for a repeat). The others are dropped and counted, as the windows drop what is
    outside their bounds."""
    start, end = request.scope.start_date, request.scope.end_date
    by_id = request.job_type == JobType.WEIGHVISION_EXPORT
    seen: set[str] = set()
    keep: list[bool] = []
    out_of_range = repeated = 0
    for item in items:
        text = item.record_date
        try:
            day = dt.date.fromisoformat(text[:10])
        except ValueError:
            raise UpstreamBadResponse(
                f"{call.upstream.value} sent a recordDate that is no date for "
                f"{call.describe()}: {text[:40]!r}"
            ) from None
        key = item.id if by_id else text
        if (start is not None and day < start) or (end is not None and day > end):
            out_of_range += 1
            keep.append(False)
        elif key is None:
            keep.append(True)
        elif key in seen:
            repeated += 1
            keep.append(False)
        else:
            seen.add(key)
            keep.append(True)
    upstream = call.upstream.name.lower()
    if out_of_range:
        metrics.UPSTREAM_RECORDS_DROPPED.labels(upstream, "out_of_range").inc(out_of_range)
    if repeated:
        metrics.UPSTREAM_RECORDS_DROPPED.labels(upstream, "repeated_id").inc(repeated)
    return None if all(keep) else tuple(keep)


def _utf8(call: Call, body: bytes) -> None:
    """``body`` is UTF-8, as JSON must be: a raw record is written to the file as it came, and
    msgspec does not look inside the strings of the fields it skips (neither the typed decode
    of a filtered NDJSON export nor the check's). Pages of ASCII, nearly all, never get here."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpstreamBadResponse(
            f"{call.upstream.value} sent a page of {call.describe()} that is not UTF-8, as JSON "
            f"must be ({exc.reason} at byte {exc.start}); no record of it is written"
        ) from None


def _one_tenant(call: Call, items: Sequence[Any], tenant_id: str) -> None:
    """Every record names the export's tenant (or none): one that names another is a leak
    across tenants, never written: the export fails and the metric counts it."""
    tenants = set(map(_TENANT, items))
    tenants.discard(None)
    tenants.discard(tenant_id)
    if tenants:
        foreign = sum(1 for item in items if _TENANT(item) in tenants)
        metrics.UPSTREAM_FOREIGN_RECORDS.labels(call.upstream.name.lower()).inc(foreign)
        raise UpstreamBadResponse(
            f"{call.upstream.value} sent {foreign} record(s) of another tenant for "
            f"{call.describe()}; none is written, and the export fails rather than leave "
            f"them out silently"
        )


_PATHS: Mapping[JobType, str] = {
    JobType.FEED_INTAKE_EXPORT: FEED_INTAKE_PATH,
    JobType.KPI_FEEDING_EXPORT: KPI_FEEDING_PATH,
    JobType.TELEMETRY_EXPORT: TELEMETRY_PATH,
    JobType.WEIGHVISION_EXPORT: WEIGHVISION_PATH,
}
