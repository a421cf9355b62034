"""A host's slots for requests in flight, shared by the exports of the process.

``threading.Semaphore`` wakes its waiters in no order, and here they poll (a waiting page
must notice a cancel or its deadline): a window that releases a slot and asks again at once
for its next page takes it back before a page that has waited for seconds. One export's
windows could so keep every slot of a host while another tenant's page waited past its
deadline and failed ``UPSTREAM_UNAVAILABLE``, its own upstream never asked. Nor is first come,
first served enough: an export's eight windows each ask again as their page ends, so a page
of another export still waits in line behind up to eight of them, each as slow as the host.
Here a freed slot goes to the waiting export that holds the fewest slots of the host, and
among its waiters (or equals) to the longest waiting; a new request queues behind anyone
waiting. A page of an export holding none so waits at most for the first request in flight
to end.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable


class FairSlots:
    """``count`` slots; :meth:`acquire` for an ``owner`` (an export), :meth:`release` to the
    waiter whose owner holds the fewest, the longest waiting among equals."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._lock = threading.Lock()
        self._waiting: list[tuple[Hashable, threading.Event]] = []  # in the order asked
        self._held: collections.Counter[Hashable] = collections.Counter()

    def acquire(
        self,
        stop: threading.Event,
        abort: Callable[[], bool] | None = None,
        until: float | None = None,
        owner: Hashable = None,
    ) -> bool:
        """Take a slot for ``owner``; False (holding nothing) when ``stop`` is set, or
        ``abort()`` is true, or ``time.monotonic()`` passes ``until``, first (what ``abort``
        raises goes up)."""
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                self._held[owner] += 1
                return True
            turn = threading.Event()
            waiter = (owner, turn)
            self._waiting.append(waiter)
        try:
            while not turn.wait(0.1):
                if (
                    stop.is_set()
                    or (abort is not None and abort())
                    or (until is not None and time.monotonic() >= until)
                ):
                    self._leave(waiter)
                    return False
        except BaseException:
            self._leave(waiter)
            raise
        return True

    def release(self, owner: Hashable = None) -> None:
        """``owner``'s slot to the next waiter (see the class), else back to the free ones."""
        with self._lock:
            self._drop(owner)
            self._hand_on()

    def _hand_on(self) -> None:
        waiting = self._waiting
        if not waiting:
            self._free += 1
            return
        held = self._held
        # the first of the fewest: min keeps the earliest of equal keys
        index = min(range(len(waiting)), key=lambda i: held[waiting[i][0]])
        owner, turn = waiting.pop(index)
        held[owner] += 1
        turn.set()

    def _drop(self, owner: Hashable) -> None:
        held = self._held
        held[owner] -= 1
        if held[owner] <= 0:
            del held[owner]

    def _leave(self, waiter: tuple[Hashable, threading.Event]) -> None:
        """A waiter gives up: out of the line, or, handed a slot as it gave up, passes it on."""
        owner, turn = waiter
        with self._lock:
            if turn.is_set():
                self._drop(owner)
                self._hand_on()
            else:
                self._waiting.remove(waiter)
