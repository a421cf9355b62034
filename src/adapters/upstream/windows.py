"""Cutting a bounded export into time windows fetched at once, and handing their answers to
the exporter in order.

Plan (:func:`plan`): the range is cut at whole milliseconds into ``count`` windows, newest
first, as the upstreams answer. Adjacent windows both ask for their shared bound; the older
one drops what it gets at or after it (``Bounds.below``), so a record on a bound is written
once, by the newer window, whatever its timestamp's precision, and records sharing an instant
are never split. The newest and oldest windows send the export's own first and last bounds,
so the windows together ask exactly what one sequential export asks.

Run (:class:`WindowRun`): ``threads`` threads take windows in order and put each answer into
the window's :class:`Spool`; the exporter reads window after window. The spools of a run hold
up to ``budget`` bytes in memory together (one :class:`Budget`, however many windows the range
is cut into) and the rest in unlinked temporary files, so memory stays flat whatever the skew
of the data across windows, while every window fetches at full speed (a bounded queue would
stall the windows ahead of the exporter). A window that fails stops the
others and fails the export with its own error; closing the run (a cancel, a shutdown, a
failed write) stops every window at its next request or backoff and waits at most a second;
a request already in flight is abandoned, its thread ending when it returns.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import enum
import os
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import msgspec

from .pagers import Bounds, Pager
from .retry import Stopped
from .wire import Fetched, instant_text

_ONE_MS = dt.timedelta(milliseconds=1)
_HEAD = struct.Struct("<II")
_NO_KEEP = 0xFFFFFFFF
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
            below=top,
        )
        for bottom, top in zip(bottoms, tops, strict=True)
    ]
    return windows[::-1]


class End(enum.Enum):
    """What a spool says once its window has nothing more."""

    DONE = "done"


class Budget:
    """Bytes of answers that the spools of one run may hold in memory together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes in memory if they fit; False (nothing counted) if not."""
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size


class Spool:
    """One window's answers in order, from its fetching thread to the exporter; in memory
    while ``budget`` has room, else in a temporary file."""

    def __init__(self, budget: Budget | int) -> None:
        self._budget = Budget(budget) if isinstance(budget, int) else budget
        self._cond = threading.Condition()
        self._memory: deque[Fetched] = deque()
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._write_at = 0
        self._read_at = 0
        self._in_file = 0  # frames written to the file and not read yet
        self._finished = False
        self._closed = False

    def put(self, item: Fetched) -> None:
        with self._cond:
            if self._closed:
                return
            size = len(item.body)
            if self._in_file == 0 and self._budget.take(size):
                self._memory.append(item)
                self._memory_bytes += size
            else:  # behind what is already in the file, so order is kept
                self._spill(item)
            self._cond.notify()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify()

    def take(self, timeout: float) -> Fetched | End | None:
        """The next answer, :attr:`End.DONE` after the last, ``None`` if none came in time."""
        with self._cond:
            if not self._memory and not self._in_file and not self._finished:
                self._cond.wait(timeout)
            if self._memory:
                item = self._memory.popleft()
                self._memory_bytes -= len(item.body)
                self._budget.give(len(item.body))
                return item
            if self._in_file:
                return self._unspill()
            return End.DONE if self._finished else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._memory.clear()
            self._budget.give(self._memory_bytes)
            self._memory_bytes = 0
            if self._file is not None:
                self._file.close()
                self._file = None

    def _spill(self, item: Fetched) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="reportsvc-window-")  # noqa: SIM115
        keep = b"" if item.keep is None else bytes(item.keep)
        head = _HEAD.pack(len(item.body), _NO_KEEP if item.keep is None else len(keep))
        size = len(head) + len(item.body) + len(keep)
        # the parts as they are: a page is not copied into a frame before it is written
        written = os.pwritev(self._file.fileno(), [head, item.body, keep], self._write_at)
        if written != size:
            raise OSError(f"a window's spool wrote {written} of {size} bytes")
        self._write_at += size
        self._in_file += 1

    def _unspill(self) -> Fetched:
        assert self._file is not None
        fd = self._file.fileno()
        size, keep_size = _HEAD.unpack(os.pread(fd, _HEAD.size, self._read_at))
        at = self._read_at + _HEAD.size
        body = os.pread(fd, size, at)
        if len(body) != size:
            raise OSError(f"a window's spool read {len(body)} of {size} bytes")
        keep: tuple[bool, ...] | None = None
        if keep_size != _NO_KEEP:
            keep = tuple(map(bool, os.pread(fd, keep_size, at + size)))
            at += keep_size
        self._read_at = at + size
        self._in_file -= 1
        if self._in_file == 0:  # drained: the file starts over (and stays small)
            self._read_at = self._write_at = 0
            self._file.truncate(0)
        return Fetched(body, keep)


Task = Callable[[threading.Event], Pager]
"""One window's pager, told by an event when to stop."""


class WindowRun:
    """The windows of one export, fetched by up to ``threads`` threads, read in order."""

    def __init__(self, tasks: Sequence[Task], threads: int, budget: int = 1024 * 1024) -> None:
        self._tasks = list(tasks)
        self.budget = Budget(budget)
        self._spools = [Spool(self.budget) for _ in self._tasks]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._failure: BaseException | None = None
        count = max(1, min(threads, len(self._tasks)))
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
        for spool in self._spools:
            while True:
                item = spool.take(0.1)
                if self._failure is not None:
                    raise self._failure
                if item is End.DONE:
                    break
                if item is not None:
                    yield item

    def close(self) -> None:
        """Stop every window, wait for their threads (at most a second), free the spools."""
        self._stop.set()
        deadline = time.monotonic() + STOP_WAIT_SEC
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for spool in self._spools:
            spool.close()

    def alive(self) -> int:
        """Threads still running (after :meth:`close`: those abandoned mid-request)."""
        return sum(thread.is_alive() for thread in self._threads)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self._tasks) or self._stop.is_set():
                return None
            index, self._next = self._next, self._next + 1
            return index

    def _work(self) -> None:
        while (index := self._take()) is not None:
            spool = self._spools[index]
            pager = self._tasks[index](self._stop)
            try:
                with contextlib.closing(pager):
                    for item in pager:
                        if self._stop.is_set():
                            return
                        spool.put(item)
            except Stopped:
                return
            except BaseException as exc:  # raised to the exporter by answers()
                with self._lock:
                    if self._failure is None:
                        self._failure = exc
                self._stop.set()
                return
            spool.finish()
