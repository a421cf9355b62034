"""One time window of a run: the part of the export's range it owns, where its pager stands,
and which records of a page it keeps (:meth:`Window.check`)."""

from __future__ import annotations

import datetime as dt
import enum
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

from reportcore.errors import UpstreamBadResponse

from .pagers import Bounds, Pager
from .spools import Spool
from .wire import Call, instant_text, parse_instant

Task = Callable[[threading.Event], Pager]
"""One window's pager, told by an event when to stop."""


class State(enum.Enum):
    WAITING = "waiting"  # planned, no thread yet
    RUNNING = "running"
    DONE = "done"  # its spool has (or will have, at once) everything it will hold


class Verdict(NamedTuple):
    """What a window keeps of a page: ``keep`` (``None``: every record), whether the page
    reached below its floor (``passed``: paging ends), and the counts."""

    keep: tuple[bool, ...] | None
    passed: bool
    kept: int
    out_of_range: int
    repeated: int


class Window:
    """One window of a run: its pager's bounds, the part of the range it owns, where it
    stands and its spool. ``floor`` moves up when an idle thread takes its older part; the
    run holds one lock over :meth:`check` and that move."""

    def __init__(self, task: Task, spool: Spool, bounds: Bounds | None) -> None:
        self.task = task
        self.spool = spool
        self.state = State.WAITING
        self.next: Window | None = None
        self.bounds = bounds
        self.floor: dt.datetime | None = None  # records older are not this window's
        self.floor_text: str | None = None  # ``floor`` as the query spells it
        self.base: dt.datetime | None = None  # the floor the window was planned with
        self.top: dt.datetime | None = None  # records newer are not this window's
        self.top_inclusive = True
        if bounds is not None:
            if bounds.lower is not None:
                self.floor = self.base = parse_instant(bounds.lower)
                self.floor_text = bounds.lower
            if bounds.below is not None:
                self.top, self.top_inclusive = bounds.below, False
            elif bounds.upper is not None:
                self.top = parse_instant(bounds.upper)
        self.last: dt.datetime | None = None  # the oldest instant read so far
        self.first: dt.datetime | None = None  # the instant of the first record kept
        self.kept = 0
        self.at_last: set[str] = set()  # ids kept at ``last``
        self.previous: set[str] = set()  # ids kept on the page before

    def reach(self) -> dt.datetime | None:
        """The newest instant of the part not read yet (``None``: no page yet)."""
        if self.last is None or self.top is None:
            return self.last
        return min(self.last, self.top)

    def check(
        self,
        call: Call,
        ids: Sequence[str],
        instants: Sequence[dt.datetime],
        given: tuple[bool, ...] | None,
    ) -> Verdict:
        """Which of a page's records the window keeps, and where it stands after it.

        Kept: what the pager kept (``given``), inside the window's bounds (its floor as it
        stands now, inclusive; its top), and not an id kept already at the same instant or
        on this or the page before. The records must come newest first: one newer than the
        one before fails the export (paging and windows both rest on it). Records outside
        the bounds the window was asked for, and repeated ids, are dropped and counted; a
        record below the floor ends the window's paging. A page that is plainly all in
        bounds, in order and without repeats (the usual one) is kept in a few C-level
        passes; any other goes record by record.
        """
        if given is None and ids and self._all_kept(ids, instants):
            return Verdict(None, False, len(ids), 0, 0)
        floor, base, top = self.floor, self.base, self.top
        inclusive = self.top_inclusive
        last, at_last, previous = self.last, self.at_last, self.previous
        keep: list[bool] = []
        page: set[str] = set()
        kept = out_of_range = repeated = 0
        passed = False
        for i, (rid, t) in enumerate(zip(ids, instants, strict=True)):
            if given is not None and not given[i]:
                keep.append(False)
                continue
            if rid in previous or rid in page or (t == last and rid in at_last):
                # a record kept already (offset paging that drifted): dropped before its
                # instant is looked at, so that two repeated ones are not taken for disorder
                keep.append(False)
                repeated += 1
                continue
            if last is not None and t > last:
                raise UpstreamBadResponse(
                    f"{call.upstream.value} sent records out of order for "
                    f"{call.describe()}: {instant_text(t)} after {instant_text(last)}, "
                    f"newest first was asked"
                )
            if t != last:
                last, at_last = t, set()
            if floor is not None and t < floor:
                passed = True
                keep.append(False)
                out_of_range += base is None or t < base  # below a split: the new window's
                continue
            if top is not None and (t > top or (t == top and not inclusive)):
                keep.append(False)
                out_of_range += 1
                continue
            at_last.add(rid)
            page.add(rid)
            keep.append(True)
            kept += 1
            if self.first is None:
                self.first = t
        self.last, self.at_last, self.previous = last, at_last, page
        self.kept += kept
        every = given is None and kept == len(keep)
        return Verdict(None if every else tuple(keep), passed, kept, out_of_range, repeated)

    def _all_kept(self, ids: Sequence[str], instants: Sequence[dt.datetime]) -> bool:
        """Whether every record of the page is kept, taken into account if so; ``False``
        (nothing changed) when any record needs a closer look."""
        newest, oldest = instants[0], instants[-1]
        last, top = self.last, self.top
        if (
            (last is not None and newest > last)
            or (self.floor is not None and oldest < self.floor)
            or (top is not None and (newest > top or (newest == top and not self.top_inclusive)))
        ):
            return False
        page = set(ids)
        if (
            len(page) != len(ids)
            or not page.isdisjoint(self.previous)
            or (newest == last and not page.isdisjoint(self.at_last))
            or list(instants) != sorted(instants, reverse=True)
        ):
            return False
        if newest == oldest:
            at_oldest = self.at_last | page if newest == last else page
        else:  # the records at the oldest instant close the page
            j = len(instants) - 1
            while instants[j - 1] == oldest:
                j -= 1
            at_oldest = set(ids[j:])
        self.last, self.at_last, self.previous = oldest, at_oldest, page
        self.kept += len(ids)
        if self.first is None:
            self.first = newest
        return True
