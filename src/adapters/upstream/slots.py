"""A host's slots for requests in flight, handed out first come, first served.

``threading.Semaphore`` wakes its waiters in no order, and here they poll (a waiting page
must notice a cancel or its deadline): a window that releases a slot and asks again at once
for its next page takes it back before a page that has waited for seconds. One export's
windows could so keep every slot of a host while another tenant's page waited past its
deadline and failed ``UPSTREAM_UNAVAILABLE``, its own upstream never asked. Here a released
slot goes to the longest waiter, and a new request queues behind anyone waiting.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable


class FairSlots:
    """``count`` slots; :meth:`acquire` in the order asked, :meth:`release` to the first."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._lock = threading.Lock()
        self._waiting: collections.deque[threading.Event] = collections.deque()

    def acquire(
        self,
        stop: threading.Event,
        abort: Callable[[], bool] | None = None,
        until: float | None = None,
    ) -> bool:
        """Take a slot; False (holding nothing) when ``stop`` is set, or ``abort()`` is true,
        or ``time.monotonic()`` passes ``until``, first (what ``abort`` raises goes up)."""
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        try:
            while not turn.wait(0.1):
                if (
                    stop.is_set()
                    or (abort is not None and abort())
                    or (until is not None and time.monotonic() >= until)
                ):
                    self._leave(turn)
                    return False
        except BaseException:
            self._leave(turn)
            raise
        return True

    def release(self) -> None:
        """Give the slot to the longest waiter, else back to the free ones."""
        with self._lock:
            self._hand_on()

    def _hand_on(self) -> None:
        if self._waiting:
            self._waiting.popleft().set()
        else:
            self._free += 1

    def _leave(self, turn: threading.Event) -> None:
        """A waiter gives up: out of the line, or, handed a slot as it gave up, passes it on."""
        with self._lock:
            if turn.is_set():
                self._hand_on()
            else:
                self._waiting.remove(turn)
