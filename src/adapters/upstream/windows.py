"""Cutting a bounded export into time windows fetched at once, splitting them while they
run, and handing their answers to the exporter in order.

Plan (:func:`plan`): the range is cut at whole milliseconds into ``count`` windows, newest
first, as the upstreams answer. Adjacent windows both ask for their shared bound; the older
one drops what it gets at or after it (``Bounds.below``), so a record on a bound is written
once, by the newer window, whatever its timestamp's precision, and records sharing an instant
are never split. The newest and oldest windows send the export's own first and last bounds,
so the windows together ask exactly what one sequential export asks.

Run (:class:`WindowRun`): ``threads`` threads take windows in order and put each answer into
the window's :class:`~adapters.upstream.spools.Spool`; the exporter reads window after
window. The spools of a run hold up to ``budget`` bytes in memory together (one
:class:`~adapters.upstream.spools.Budget`, however many windows there are) and the rest in
unlinked temporary files, up to a look-ahead beyond which the windows ahead of the one being
read wait for it. A window that fails stops the others and fails the export with its own
error; closing the run (a cancel, a shutdown, a failed write) stops every window at its next
request or backoff and waits at most a second; a request already in flight is abandoned, its
thread ending when it returns.

Checks and splits (:class:`Checks`, a bounded feed intake or telemetry export): each window
keeps only the records inside its own bounds, on both ends, newest first, each id once; and a
thread that finds no window waiting takes over the unread, older part of a running window
instead of idling (dynamic work rebalancing, as Apache Beam's ``RestrictionTracker.try_split``
and BigQuery Storage's ``SplitReadStream``: the running window keeps what it has read and
everything down to the split point, the new window everything older, so both together are
exactly the old window, and no record is read twice or lost). Newest first, the oldest instant
a window has read tells where it stands: a split point is a whole millisecond strictly above
its floor and at or below that instant, so records sharing an instant, all at or above it,
stay in the running window. The running window's pager keeps its query (a cursor belongs to
it) and is closed at the first page that reaches below its new floor. The new window goes
right after the old one in the list, so the list stays the plan: the exporter reads it newest
first and writes byte for byte what one sequential export writes. Splits are bounded: each
part at least ``min_width`` wide and worth two pages by the window's density so far, and the
requests they may cost (two each at most: the new window's last page and the old one's page
that crosses the split point) stay within ``split_requests`` plus 4 % of the pages kept.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import msgspec

from adapters import metrics

from .pagers import Bounds
from .retry import Stopped
from .spools import Budget, End, Spool
from .window import State, Window
from .window import Task as Task  # the type of a window's pager, named here too
from .wire import Call, Fetched, instant_text

_ONE_MS = dt.timedelta(milliseconds=1)
STOP_WAIT_SEC = 1.0  # how long closing a run waits for its threads


class Range(msgspec.Struct, frozen=True, kw_only=True):
    """An export's time range: the instants it covers (``first`` inclusive, ``end``
    exclusive) and the query values a sequential export sends for its two ends."""

    first: dt.datetime
    end: dt.datetime
    lower: str
    upper: str


def plan(whole: Range, count: int) -> list[Bounds]:
    """``whole`` cut into up to ``count`` windows, newest first (one: the whole range)."""
    span_ms = (whole.end - whole.first) // _ONE_MS
    count = max(1, min(count, span_ms))
    cuts: list[dt.datetime] = []  # ascending, strictly inside the range, whole milliseconds
    for j in range(1, count):
        cut = whole.first + _ONE_MS * (span_ms * j // count)
        if cut > whole.first and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    tops: list[dt.datetime | None] = [*cuts, None]  # each window's ``below``, oldest first
    bottoms: list[dt.datetime | None] = [None, *cuts]
    windows = [
        Bounds(
            lower=whole.lower if bottom is None else instant_text(bottom),
            upper=whole.upper if top is None else instant_text(top),
            below=whole.end if top is None else top,  # the newest keeps all of the last day
        )
        for bottom, top in zip(bottoms, tops, strict=True)
    ]
    return windows[::-1]


Keys = Callable[[Fetched], tuple[Sequence[str], Sequence[dt.datetime]]]
"""A page's record ids and instants, in the page's order (an unreadable page raises)."""


class Candidate(NamedTuple):
    """A running window as a split policy sees it: its unread part is ``floor`` (inclusive)
    up to ``reach`` (the oldest instant it has read, or its top if older still), and it has
    kept ``kept`` records since ``first`` (the instant of the first)."""

    window: int  # its place in the plan
    floor: dt.datetime
    reach: dt.datetime
    kept: int
    first: dt.datetime


SplitPolicy = Callable[[Sequence[Candidate]], tuple[int, dt.datetime] | None]
"""Which candidate to split and where (the instant its older part starts below), or none.
The run checks the answer: a split point that would lose or repeat a record is refused."""


class Checks:
    """What a run needs to hold a bounded export's windows to their bounds and to split them.

    ``windows``: each task's bounds (the tasks' own order); ``opener``: the task of a new
    window; ``keys``: a page's record ids and instants; ``call``: the endpoint, for messages
    and metrics; ``page_size``: records a full page holds; ``min_width``: no window is split
    into parts narrower than this; ``lookahead``: bytes the windows ahead of the one being
    read may hold in their files before they wait for it; ``split``: the split policy
    (default :func:`most_work_left`); ``split_requests``: requests the splits may cost on
    top of one a window, beside 4 % of the pages kept so far.
    """

    def __init__(
        self,
        *,
        windows: Sequence[Bounds],
        opener: Callable[[Bounds], Task],
        keys: Keys,
        call: Call,
        page_size: int,
        min_width: dt.timedelta = dt.timedelta(seconds=1),
        lookahead: int = 256 * 1024 * 1024,
        split: SplitPolicy | None = None,
        split_requests: int = 48,
    ) -> None:
        self.windows = list(windows)
        self.opener = opener
        self.keys = keys
        self.call = call
        self.page_size = max(1, page_size)
        self.min_width = max(min_width, _ONE_MS)
        self.lookahead = lookahead
        self.split = split or functools.partial(
            most_work_left, min_width=self.min_width, min_records=2 * self.page_size
        )
        self.split_requests = split_requests


def most_work_left(
    candidates: Sequence[Candidate], *, min_width: dt.timedelta, min_records: int
) -> tuple[int, dt.datetime] | None:
    """The candidate with the most records left by its own density so far (records kept over
    the time they spanned, times the unread time), split in the middle of its unread part,
    if each part is at least ``min_width`` wide and ``min_records`` are expected left."""
    best: tuple[float, int, dt.datetime] | None = None
    for c in candidates:
        unread = c.reach - c.floor
        if unread < 2 * min_width or not c.kept:
            continue
        read = max(c.first - c.reach, _ONE_MS)
        left = c.kept * (unread / read)
        if left >= min_records and (best is None or left > best[0]):
            best = (left, c.window, c.floor + _ONE_MS * (unread // 2 // _ONE_MS))
    return None if best is None else (best[1], best[2])


class WindowRun:
    """The windows of one export, fetched by up to ``threads`` threads, read in order; with
    ``checks``, held to their bounds and split while they run (the module's docstring)."""

    def __init__(
        self,
        tasks: Sequence[Task],
        threads: int,
        budget: int = 1024 * 1024,
        *,
        checks: Checks | None = None,
    ) -> None:
        self.budget = Budget(budget)
        self._checks = checks
        if checks is not None and len(checks.windows) != len(tasks):
            raise ValueError("checks name the bounds of every task")
        self._windows = [
            Window(task, Spool(self.budget), None if checks is None else checks.windows[i])
            for i, task in enumerate(tasks)
        ]
        for newer, older in itertools.pairwise(self._windows):
            newer.next = older
        self._first = self._windows[0] if self._windows else None
        self._head: Window | None = self._first  # the window the exporter reads
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._failure: BaseException | None = None
        self._idle = 0  # threads waiting in _take for a window to split
        self.splits = 0
        self._kept = 0
        self._splitting = checks is not None and all(w.floor is not None for w in self._windows)
        count = max(1, threads if self._splitting else min(threads, len(self._windows)))
        if checks is not None:
            upstream = checks.call.upstream.name.lower()
            self._out_of_range = metrics.UPSTREAM_RECORDS_DROPPED.labels(upstream, "out_of_range")
            self._repeated = metrics.UPSTREAM_RECORDS_DROPPED.labels(upstream, "repeated_id")
            self._split_count = metrics.UPSTREAM_WINDOW_SPLITS.labels(upstream)
        # Each thread runs in a copy of the caller's context variables (a thread starts with
        # none): the job's trace context among them, so that the upstream requests of every
        # window carry the job's trace. One copy each: a context is entered by one thread only.
        self._threads = [
            threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._work,),
                name="upstream-window",
                daemon=True,
            )
            for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def answers(self) -> Iterator[Fetched]:
        """Every window's answers, newest window first; a window's failure is raised here."""
        window = self._first
        while window is not None:
            self._head = window
            spool = window.spool
            while True:
                item = spool.take(0.1)
                if self._failure is not None:
                    raise self._failure
                if item is End.DONE:
                    break
                if item is not None:
                    yield item
            with self._cond:  # DONE: no split inserts behind it any more
                window = window.next

    def close(self) -> None:
        """Stop every window, wait for their threads (at most a second), free the spools."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + STOP_WAIT_SEC
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            windows = list(self._windows)
        for window in windows:
            window.spool.close()

    def alive(self) -> int:
        """Threads still running (after :meth:`close`: those abandoned mid-request)."""
        return sum(thread.is_alive() for thread in self._threads)

    # --- the window threads ---

    def _take(self) -> Window | None:
        """A window waiting, else the older part of a running one, else (once every window
        is done, or the run stopped) ``None``; waits while windows run that cannot split."""
        with self._cond:
            while not self._stop.is_set():
                running = False
                for window in self._windows:
                    if window.state is State.WAITING:
                        window.state = State.RUNNING
                        return window
                    running = running or window.state is State.RUNNING
                if not running or not self._splitting:
                    return None
                if (new := self._split()) is not None:
                    if self._idle:  # another split may be worth it now
                        self._cond.notify()
                    return new
                self._idle += 1
                try:
                    self._cond.wait(0.1)
                finally:
                    self._idle -= 1
            return None

    def _split(self) -> Window | None:
        """A new running window over the older part of a running one, if the policy names
        one, the split is sound and the requests it may cost are within the budget."""
        checks = self._checks
        assert checks is not None
        # each split may cost two requests: the new window's last page, the old one's last
        if 2 * (self.splits + 1) > checks.split_requests + self._kept * 0.04 / checks.page_size:
            return None
        candidates = []
        for i, w in enumerate(self._windows):
            reach = w.reach()
            if (
                w.state is State.RUNNING
                and w.floor is not None
                and reach is not None
                and w.first is not None
                and reach > w.floor
            ):
                candidates.append(Candidate(i, w.floor, reach, w.kept, w.first))
        if not candidates:
            return None
        choice = checks.split(candidates)
        if choice is None:
            return None
        index, at = choice
        old = self._windows[index]
        reach = old.reach()
        # sound: the old window keeps what it read (all at or after ``reach``) and the rest
        # down to ``at``; the new one asks exactly [floor, at) (whole milliseconds: the query)
        if (
            old.state is not State.RUNNING
            or old.floor is None
            or reach is None
            or not old.floor < at <= reach
            or at.microsecond % 1000
            or at.tzinfo is None
        ):
            return None
        bounds = Bounds(lower=old.floor_text, upper=instant_text(at), below=at)
        new = Window(checks.opener(bounds), Spool(self.budget), bounds)
        new.base = old.floor  # what it drops below is the old window's business too
        new.state = State.RUNNING
        old.floor, old.floor_text = at, instant_text(at)
        new.next, old.next = old.next, new
        self._windows.insert(index + 1, new)
        self.splits += 1
        self._split_count.inc()
        return new

    def _work(self) -> None:
        while (window := self._take()) is not None:
            if not self._fetch(window):
                return

    def _fetch(self, window: Window) -> bool:
        """Page ``window`` into its spool; False when the run stops or fails."""
        pager = window.task(self._stop)
        checks = self._checks
        try:
            with contextlib.closing(pager):
                for item in pager:
                    if self._stop.is_set():
                        return False
                    passed = False
                    if checks is not None:
                        ids, instants = checks.keys(item)
                        item, passed = self._check(window, item, ids, instants)
                    if item.keys is not None:  # what the spool holds is the page alone
                        item = Fetched(item.body, item.keep)
                    if item.keep is None or any(item.keep):
                        window.spool.put(item)
                    if passed:  # newest first: the rest is older, another window's or none's
                        break
                    self._wait_for_room(window)
        except Stopped:
            return False
        except BaseException as exc:  # raised to the exporter by answers()
            with self._cond:
                if self._failure is None:
                    self._failure = exc
                self._cond.notify_all()
            self._stop.set()
            return False
        with self._cond:
            window.state = State.DONE
            self._cond.notify_all()
        window.spool.finish()
        return True

    def _wait_for_room(self, window: Window) -> None:
        """The look-ahead: a window ahead of the one being read waits while the spools' files
        hold more than ``lookahead`` bytes; the one being read, while its own file does (the
        exporter is draining it, so the run cannot stall)."""
        checks = self._checks
        if checks is None:
            return
        while not self._stop.is_set():
            if self._head is window:
                if window.spool.in_file() <= checks.lookahead:
                    return
            elif self.budget.spilled <= checks.lookahead:
                return
            self._stop.wait(0.01)

    def _check(
        self,
        window: Window,
        item: Fetched,
        ids: Sequence[str],
        instants: Sequence[dt.datetime],
    ) -> tuple[Fetched, bool]:
        """What ``window`` keeps of a page (:meth:`Window.check`, against its floor as it
        stands now: a split moves it under the same lock), and whether it read past it."""
        checks = self._checks
        assert checks is not None
        with self._cond:
            verdict = window.check(checks.call, ids, instants, item.keep)
            self._kept += verdict.kept
            if self._idle:  # a running window may be worth splitting now: one idle thread
                self._cond.notify()  # looks (what it finds, any other would find too)
        if verdict.out_of_range:
            self._out_of_range.inc(verdict.out_of_range)
        if verdict.repeated:
            self._repeated.inc(verdict.repeated)
        if verdict.keep is item.keep:
            return item, verdict.passed
        return Fetched(item.body, verdict.keep), verdict.passed
