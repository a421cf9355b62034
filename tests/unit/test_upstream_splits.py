"""Windows that split while they run, and windows held to their bounds (issues 26 and 27).

The fake services of tests/unit/test_upstream_windows.py answer a three-day range; the same
export is run sequentially (``concurrency=1``: one window, one thread, no split possible) and
in windows that idle threads split, by the default policy or by a schedule hypothesis draws
(any running window, split anywhere, also exactly at a record's instant or at the instant the
window stands at), and the files are compared byte for byte. Upstreams that misbehave (ignore
the range asked, repeat records across pages, answer out of order) are run as real handlers
behind ``httpx.MockTransport``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import metrics
from adapters.upstream.pagers import Bounds
from adapters.upstream.windows import Candidate, Checks, Range, Task, WindowRun, plan
from adapters.upstream.wire import Call, Fetched, instant_text
from reportcore.errors import ExportFailure
from reportcore.jobs import JobType, ReportFormat
from reportcore.jobtypes import Upstream as Service
from tests.unit.test_upstream_windows import (
    END,
    FIRST,
    URL,
    Upstream,
    bounds_of_plan,
    export,
    ids_in,
    parsed,
    record,
    stamp,
)

FEED, TELEMETRY = JobType.FEED_INTAKE_EXPORT, JobType.TELEMETRY_EXPORT
MS = dt.timedelta(milliseconds=1)
SPAN = END - FIRST


def dropped(reason: str, upstream: str = "feed") -> float:
    sample = "reportsvc_upstream_records_dropped_total"
    labels = {"upstream": upstream, "reason": reason}
    return metrics.REGISTRY.get_sample_value(sample, labels) or 0.0


def splits(upstream: str = "feed") -> float:
    sample = "reportsvc_upstream_window_splits_total"
    return metrics.REGISTRY.get_sample_value(sample, {"upstream": upstream}) or 0.0


class Fast(Upstream):
    """The fake services over many records: instants parsed once, a range found by bisection;
    ``ignore`` names the ends of the range asked that it does not honour (``lower``: ``start``
    or ``from``; ``both``)."""

    def __init__(self, records: list[dict[str, Any]], *, ignore: str = "") -> None:
        super().__init__(records)
        self.ignore = ignore
        self.keys = [-parsed(r["occurredAt"]).timestamp() for r in self.records]  # ascending

    def within(self, lo: str | None, hi: str | None) -> list[dict[str, Any]]:
        lo = None if self.ignore else lo
        hi = None if self.ignore == "both" else hi
        first = 0 if hi is None else bisect.bisect_left(self.keys, -parsed(hi).timestamp())
        last = len(self.keys)
        if lo is not None:
            last = bisect.bisect_right(self.keys, -parsed(lo).timestamp())
        return self.records[first:last]


class RandomSplits:
    """A split schedule: any running window, split anywhere it may be, and now and then where
    it may not (the run must refuse those: above where the window stands, at its floor, off a
    whole millisecond). Split points favour the instants records sit on."""

    def __init__(self, rng: random.Random, instants: Sequence[dt.datetime]) -> None:
        self.rng = rng
        self.instants = sorted(
            {t.replace(microsecond=t.microsecond // 1000 * 1000) for t in instants}
        )
        self.lock = threading.Lock()
        self.asked = 0

    def __call__(self, candidates: Sequence[Candidate]) -> tuple[int, dt.datetime] | None:
        with self.lock:
            self.asked += 1
            rng = self.rng
            if rng.random() < 0.2:
                return None
            c = rng.choice(candidates)
            roll = rng.random()
            if roll < 0.1:  # not allowed: the run must refuse it and lose nothing
                at = rng.choice([c.reach + MS, c.floor, c.reach + dt.timedelta(microseconds=1)])
                return c.window, at
            inside = [t for t in self.instants if c.floor < t <= c.reach]
            if roll < 0.4 and inside:
                return c.window, rng.choice(inside)  # ties on the split point
            top = c.reach.replace(microsecond=c.reach.microsecond // 1000 * 1000)
            if roll < 0.55 and top > c.floor:
                return c.window, top  # exactly where the window stands
            steps = (top - c.floor) // MS
            if steps < 1:
                return None
            return c.window, c.floor + MS * rng.randint(1, steps)


edges = st.one_of(
    st.sampled_from([*bounds_of_plan(), FIRST, END - MS]),
    st.integers(0, SPAN // MS - 1).map(lambda n: FIRST + n * MS),
).flatmap(
    lambda t: st.sampled_from(
        [t, t + dt.timedelta(microseconds=1), t - dt.timedelta(microseconds=1)]
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.lists(st.tuples(edges, st.integers(1, 5), st.integers(0, 3)), max_size=40),
    job_type=st.sampled_from([FEED, TELEMETRY]),
    fmt=st.sampled_from([ReportFormat.CSV, ReportFormat.JSON]),
    page=st.integers(2, 9),
    seed=st.integers(0, 2**32),
    delay=st.sampled_from([0.0, 0.0005]),
)
def test_random_split_schedules_write_what_a_sequential_export_writes(
    layout: list[tuple[dt.datetime, int, int]],
    job_type: JobType,
    fmt: ReportFormat,
    page: int,
    seed: int,
    delay: float,
) -> None:
    records = []
    for at, count, style in layout:
        for _ in range(count):  # records sharing an instant, on window bounds and split points
            records.append(record(len(records), stamp(at, style)))
    if job_type is TELEMETRY:  # a telemetry page must not be all one instant: 50 a page here
        records = records[:49]
    sequential = export(Upstream(records), job_type, fmt, 1, page=page)
    policy = RandomSplits(random.Random(seed), [parsed(r["occurredAt"]) for r in records])
    upstream = Upstream(records)
    upstream.delay = delay  # a slower upstream: other interleavings of the threads
    assert export(upstream, job_type, fmt, 4, split=policy, page=page) == sequential


def test_a_random_schedule_does_split_and_still_writes_every_record_once() -> None:
    """The property above is worth something only if splits happen: here they must."""
    records = [record(n, stamp(END - (n + 1) * dt.timedelta(seconds=7), n % 4)) for n in range(600)]
    policy = RandomSplits(random.Random(7), [parsed(r["occurredAt"]) for r in records])
    before = splits()
    upstream = Upstream(records)
    upstream.delay = 0.001
    windowed = export(upstream, FEED, ReportFormat.CSV, 4, split=policy, page=5)
    assert splits() - before >= 3
    assert windowed == export(Upstream(records), FEED, ReportFormat.CSV, 1, page=5)
    assert len(set(ids_in(windowed))) == 600


def place(kind: str, n: int, rng: random.Random) -> list[dt.datetime]:
    """``n`` instants across the range as the bench places them."""
    span = SPAN.total_seconds()
    if kind == "even":
        fractions = [rng.random() for _ in range(n)]
    elif kind == "newest-1pct":
        fractions = [1 - 0.01 * rng.random() for _ in range(n)]
    elif kind == "spikes":
        fractions = [0.005 * rng.random() + 0.995 * (i % 2) for i in range(n)]
    elif kind == "power":
        fractions = [1 - rng.random() ** 4 for _ in range(n)]
    else:  # recent: the newest 8 %, five records an instant
        fractions = [1 - 0.08 * rng.random() for _ in range(n // 5 + 1) for _ in range(5)][:n]
    return [FIRST + dt.timedelta(seconds=round(f * span * 0.999, 3)) for f in fractions]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["even", "newest-1pct", "spikes", "power", "recent"]),
    n=st.integers(100, 4000),
    seed=st.integers(0, 2**32),
)
def test_the_default_policy_costs_at_most_five_percent_more_requests_plus_64(
    kind: str, n: int, seed: int
) -> None:
    page = 10
    instants = place(kind, n, random.Random(seed))
    records = [record(i, stamp(t, 1)) for i, t in enumerate(instants)]
    upstream = Fast(records)
    upstream.delay = 0.0002
    windowed = export(upstream, FEED, ReportFormat.JSON, 8, page=page)
    assert upstream.calls <= 1.05 * n / page + 64
    assert windowed == export(Fast(records), FEED, ReportFormat.JSON, 1, page=page)


def test_idle_threads_take_over_the_one_window_that_holds_the_data() -> None:
    """All records in the newest 1 % of the range: the other windows come back empty at once,
    and their threads split the newest window instead of waiting for it."""
    records = [
        record(i, stamp(t, 1)) for i, t in enumerate(place("newest-1pct", 2000, random.Random(1)))
    ]
    upstream = Fast(records)
    upstream.delay = 0.002
    ends: set[str] = set()
    answer = upstream.__call__

    def seen(req: httpx.Request) -> httpx.Response:
        response = answer(req)
        if response.json()["items"]:
            ends.add(req.url.params["end"])
        return response

    before = splits()
    windowed = export(seen, FEED, ReportFormat.CSV, 4, page=10)  # type: ignore[arg-type]
    assert splits() - before >= 3
    assert len(ends) >= 4  # windows that brought records: the plan's one and the splits'
    assert windowed == export(Fast(records), FEED, ReportFormat.CSV, 1, page=10)


def _window_page(at: Sequence[dt.datetime], size: int = 0) -> Fetched:
    """A page of records at ``at`` (newest first) as JSON, padded with blanks to ``size``."""
    items = [{"id": f"{t.timestamp()}", "occurredAt": instant_text(t)} for t in at]
    return Fetched(msgspec.json.encode(items).ljust(size))


def _window_keys(page: Fetched) -> tuple[list[str], list[dt.datetime]]:
    items = msgspec.json.decode(page.body)
    return [i["id"] for i in items], [parsed(i["occurredAt"]) for i in items]


def _four_windows(
    task: Callable[[Bounds], Task], windows: list[Bounds], threads: int, budget: int, **more: Any
) -> WindowRun:
    """A run of ``windows`` (the range's plan), each paged by ``task``, its pages' keys read
    from their JSON; ``more``: the rest of its :class:`Checks`."""
    checks = Checks(
        windows=windows,
        opener=task,
        keys=_window_keys,
        call=Call(upstream=Service.FEED, base_url=URL, path="/x", trace_id="j"),
        page_size=5,
        **more,
    )
    return WindowRun([task(b) for b in windows], threads=threads, budget=budget, checks=checks)


def _plan() -> list[Bounds]:
    whole = Range(first=FIRST, end=END, lower=instant_text(FIRST), upper=instant_text(END - MS))
    return plan(whole, 4)


def test_idle_threads_wait_for_a_split_one_look_a_page_not_one_each() -> None:
    """Eight threads, one window of data, the other three empty: the seven threads left idle
    wait for a window worth splitting, and each page checked wakes one of them to look (what
    it finds, any other would find too), not all seven; waking all of them made every page
    cost seven looks and seven hand-overs of the interpreter."""
    windows = _plan()
    pages = 200
    asked = 0
    lock = threading.Lock()

    def task(bounds: Bounds) -> Task:
        top = bounds.below or END - MS
        count = pages if bounds is windows[0] else 0

        def paging(stop: threading.Event) -> Any:
            for p in range(count):
                stop.wait(0.001)  # an answer on its way: the interpreter is free meanwhile
                yield _window_page([top - dt.timedelta(seconds=10 * p + i + 1) for i in range(5)])

        return paging

    def never(candidates: Sequence[Candidate]) -> None:
        nonlocal asked
        with lock:
            asked += 1

    started = time.monotonic()
    run = _four_windows(task, windows, threads=8, budget=1 << 24, split=never)
    try:
        got = sum(1 for _ in run.answers())
    finally:
        run.close()
    elapsed = time.monotonic() - started
    assert got == pages
    # one look a page, and each idle thread's own every 0.1 s
    assert asked <= pages + 7 * (elapsed / 0.1 + 2), (asked, elapsed)


# --- held to their bounds (issue 26, row 7) ---


def spread(n: int, outside: bool = True) -> list[dict[str, Any]]:
    """``n`` records over the range, a few more outside it on both sides."""
    records = [record(i, stamp(FIRST + SPAN * (i + 0.5) / n, i % 4)) for i in range(n)]
    if outside:
        records += [record(n + 1, stamp(FIRST - dt.timedelta(hours=5), 0))]
        records += [record(n + 2, stamp(END + dt.timedelta(hours=5), 0))]
    return records


@pytest.mark.parametrize("job_type", [FEED, TELEMETRY], ids=lambda t: t.value)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_upstream_that_ignores_the_range_asked_gets_each_record_once_and_only_those_in_range(
    job_type: JobType, concurrency: int
) -> None:
    records = spread(240)
    honest = export(Fast(records), job_type, ReportFormat.CSV, 1)
    label = "feed" if job_type is FEED else "telemetry"
    before = dropped("out_of_range", label)
    # a telemetry service that ignores ``to`` fails as ever (no cursor: it cannot be paged)
    ignore = "both" if job_type is FEED else "lower"
    ignoring = export(Fast(records, ignore=ignore), job_type, ReportFormat.CSV, concurrency)
    assert ignoring == honest
    assert len(ids_in(honest)) == 240
    assert dropped("out_of_range", label) > before


@pytest.mark.parametrize("concurrency", [1, 4])
def test_every_page_that_arrives_is_told_though_none_of_its_records_is_kept(
    concurrency: int,
) -> None:
    """A feed that ignores start and end sends every newer record first: pages whose records
    are all dropped were never written, so the worker's liveness probe saw an export that
    wrote nothing for minutes and restarted a worker that was busy fetching."""
    records = spread(40, outside=False)
    records += [record(100 + n, stamp(END + dt.timedelta(hours=n + 1), 0)) for n in range(60)]
    arrived = []
    upstream = Fast(records, ignore="both")
    csv_file = export(
        upstream, FEED, ReportFormat.CSV, concurrency, fetched=lambda: arrived.append(1)
    )
    assert len(ids_in(csv_file)) == 40
    assert len(arrived) == upstream.calls > 60 // 7


class Repeating(Fast):
    """Offset paging that drifts: every page after the first starts with the last ``drift``
    records of the page before (as when records are inserted between two requests)."""

    def __init__(self, records: list[dict[str, Any]], drift: int = 1) -> None:
        super().__init__(records)
        self.drift = drift

    def __call__(self, req: httpx.Request) -> httpx.Response:
        p = req.url.params
        limit = min(int(p.get("limit", "25")), 100)
        hits = self.within(p.get("start"), p.get("end"))
        at = int(p.get("cursor", "0"))
        back = min(self.drift, at, limit - 1)
        page = hits[at - back : at - back + limit]
        step = at - back + len(page)
        more = step < len(hits)
        return httpx.Response(200, json={"items": page, "nextCursor": str(step) if more else None})


@pytest.mark.parametrize("drift", [1, 2, 3])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_records_repeated_across_pages_are_written_once_and_counted(
    concurrency: int, drift: int
) -> None:
    """Two or more repeated records (the first newer than the last one kept) failed the
    export as out of order; a repeat is dropped before the order is looked at."""
    records = spread(120, outside=False)
    honest = export(Fast(records), FEED, ReportFormat.JSON, 1)
    before = dropped("repeated_id")
    repeated = export(Repeating(records, drift), FEED, ReportFormat.JSON, concurrency)
    assert repeated == honest
    assert dropped("repeated_id") - before >= (120 // 7 - concurrency) * drift


class Oversized(Fast):
    """A service that ignores ``limit``: pages of 150 feed records (the contract caps them
    at 100), or every reading in range at once."""

    def __call__(self, req: httpx.Request) -> httpx.Response:
        p = req.url.params
        if not req.url.path.endswith("/intake-records"):
            return httpx.Response(200, json=self.within(p.get("from"), p.get("to")))
        hits = self.within(p.get("start"), p.get("end"))
        at = int(p.get("cursor", "0"))
        more = at + 150 < len(hits)
        body = {"items": hits[at : at + 150], "nextCursor": str(at + 150) if more else None}
        return httpx.Response(200, json=body)


@pytest.mark.parametrize("job_type", [FEED, TELEMETRY], ids=lambda t: t.value)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_page_of_more_records_than_asked_fails_the_export_as_a_bad_response(
    job_type: JobType, concurrency: int
) -> None:
    """Each window holds a page and its keys: eight pages of 80,000 records (under the byte
    cap, within UPSTREAM_MAX_PAGE_ITEMS) held ~600 MB. A page is what ``limit`` asked."""
    with pytest.raises(ExportFailure) as failure:
        export(Oversized(spread(2000, outside=False)), job_type, ReportFormat.CSV, concurrency)
    assert failure.value.code == "UPSTREAM_BAD_RESPONSE"
    assert "asked (limit)" in str(failure.value)


class Shuffled(Fast):
    """Records in the range asked, oldest first instead of newest first."""

    def within(self, lo: str | None, hi: str | None) -> list[dict[str, Any]]:
        return super().within(lo, hi)[::-1]


@pytest.mark.parametrize("job_type", [FEED, TELEMETRY], ids=lambda t: t.value)
def test_records_out_of_order_fail_the_export_as_a_bad_response(job_type: JobType) -> None:
    with pytest.raises(ExportFailure) as failure:
        export(Shuffled(spread(30, outside=False)), job_type, ReportFormat.CSV, 4)
    assert failure.value.code == "UPSTREAM_BAD_RESPONSE"
    assert "out of order" in str(failure.value)


def test_windows_ahead_of_the_one_being_read_wait_beyond_the_look_ahead() -> None:
    """A slow reader: the windows ahead hold at most the look-ahead in their files, the one
    being read as much again (and each a page on its way), and the pages come out in order."""
    windows = _plan()
    size = 1000

    def task(bounds: Bounds) -> Task:
        top = bounds.below or END - MS

        def pages(stop: threading.Event) -> Any:
            for p in range(20):
                at = [top - dt.timedelta(minutes=5 * p + i + 1) for i in range(5)]
                yield _window_page(at, size)

        return pages

    run = _four_windows(
        task, windows, threads=4, budget=2 * size, lookahead=3 * size, split=lambda c: None
    )
    spilled: list[int] = []
    got: list[bytes] = []
    try:
        for item in run.answers():
            spilled.append(run.budget.spilled)
            got.append(item.body)
            threading.Event().wait(0.001)  # the slow reader (pacing, not synchronisation)
    finally:
        run.close()
    assert got == [body for b in windows for body in (f.body for f in task(b)(threading.Event()))]
    assert max(spilled) <= 2 * 3 * size + 4 * (size + 8)
    assert run.budget.spilled == 0


@settings(max_examples=400, deadline=None)
@given(
    records=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 11)), max_size=40),
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=10),
    in_order=st.integers(0, 5),
    below=st.booleans(),
)
def test_a_page_kept_whole_at_once_is_kept_as_record_by_record(
    records: list[tuple[int, int]], sizes: list[int], in_order: int, below: bool
) -> None:
    """Window.check takes a plainly clean page in a few whole-page passes: whatever the pages
    (ids repeated, across pages too, instants out of bounds, out of order, ties over several
    pages), it decides what checking each record decides (a pager's all-true ``keep`` sends
    a page record by record)."""
    from adapters.upstream.spools import Spool
    from adapters.upstream.window import Window
    from reportcore.errors import UpstreamBadResponse

    call = Call(upstream=Service.FEED, base_url=URL, path="/x", trace_id="j")
    at = [FIRST + n * dt.timedelta(minutes=1) for n in range(12)]
    bounds = Bounds(lower=stamp(at[2], 1), upper=stamp(at[9], 1), below=at[9] if below else None)
    fast, slow = (Window(lambda stop: iter(()), Spool(1), bounds) for _ in range(2))  # type: ignore[arg-type,return-value]
    if in_order:  # newest first, as asked, most of the time
        records = sorted(records, key=lambda r: -r[1])
    pages, i = [], 0
    for size in sizes * 8:
        if i < len(records):
            pages.append(records[i : i + size])
            i += size
    for page in pages:
        ids = [f"r{n}" for n, _ in page]
        instants = [at[t] for _, t in page]
        outcomes = []
        for window, flags in ((fast, None), (slow, (True,) * len(ids))):
            try:
                outcomes.append(window.check(call, ids, instants, flags))
            except UpstreamBadResponse:
                outcomes.append(None)
        a, b = outcomes
        if a is None or b is None:
            assert a is b
            return
        assert (a.keep or (True,) * len(ids)) == b.keep
        assert a[1:] == b[1:]
        state = ("last", "at_last", "previous", "kept", "first")
        assert [getattr(fast, s) for s in state] == [getattr(slow, s) for s in state]
