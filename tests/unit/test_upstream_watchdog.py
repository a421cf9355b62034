"""The transport's watchdog (issue 26, row 5): a read blocked on an upstream that drips its body
is ended from another thread, at the page's deadline or once its export stops, by shutting the
request's socket; a request that finished in time is left alone."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import types
from typing import cast

from adapters.upstream.transport import Watchdog


def connection_over(sock: socket.socket) -> http.client.HTTPConnection:
    return cast(http.client.HTTPConnection, types.SimpleNamespace(sock=sock))


def blocked_read_ends_after(sock: socket.socket) -> float:
    sock.settimeout(10)
    began = time.monotonic()
    assert sock.recv(1) == b""  # the end of a stream the peer never closed
    return time.monotonic() - began


def test_a_read_past_its_deadline_is_ended_from_the_watchdog() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        dog = Watchdog(every_sec=0.05)
        try:
            dog.watch(connection_over(ours), time.monotonic() + 0.3, None)
            assert 0.25 <= blocked_read_ends_after(ours) < 5.0
        finally:
            dog.close()


def test_a_read_whose_export_stopped_is_ended_and_one_that_raises_too() -> None:
    stop = threading.Event()
    dog = Watchdog(every_sec=0.05)
    try:
        for abort in (stop.is_set, _raises):
            ours, peer = socket.socketpair()
            with ours, peer:
                dog.watch(connection_over(ours), None, abort)
                threading.Timer(0.2, stop.set).start()
                assert blocked_read_ends_after(ours) < 5.0
    finally:
        dog.close()


def _raises() -> bool:
    raise RuntimeError("the export's checkpoint: cancelled")


def test_a_request_forgotten_in_time_is_left_alone() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        dog = Watchdog(every_sec=0.05)
        try:
            entry = dog.watch(connection_over(ours), time.monotonic() + 0.2, None)
            dog.forget(entry)
            time.sleep(0.5)
            peer.sendall(b"x")
            ours.settimeout(5)
            assert ours.recv(1) == b"x"
            assert entry is not None and not entry.shut
        finally:
            dog.close()


def test_nothing_is_watched_without_a_deadline_or_an_abort() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        dog = Watchdog()
        assert dog.watch(connection_over(ours), None, None) is None
        dog.close()


class CountingCondition(threading.Condition):
    """A condition that counts its notifications (each one wakes the watchdog's thread) and
    tells whether its waiter waits with no timeout (for a first request)."""

    notified = 0
    idle = False

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)

    def wait(self, timeout: float | None = None) -> bool:
        self.idle = timeout is None
        try:
            return super().wait(timeout)
        finally:
            self.idle = False


def test_requests_one_after_another_wake_the_watchdog_only_from_its_idle_wait() -> None:
    """One window's requests come one after another: each would otherwise wake the watchdog
    (a thread hand-over a page). It is woken only when it waits for a first request with no
    timeout; looking every ``every_sec``, it sees a new request in time anyway."""
    ours, peer = socket.socketpair()
    with ours, peer:
        dog = Watchdog(every_sec=0.2)
        counting = CountingCondition()
        dog._cond = counting  # before its thread starts
        try:
            dog.forget(dog.watch(connection_over(ours), None, lambda: False))
            until = time.monotonic() + 10
            while not counting.idle and time.monotonic() < until:  # its look found nothing
                time.sleep(0.01)
            assert counting.idle  # it waits for a first request again
            for _ in range(100):
                dog.forget(dog.watch(connection_over(ours), None, lambda: False))
            # each notification wakes it from its idle wait, to which it goes back only when it
            # gets the interpreter between two of these requests: a few times at most (before,
            # every one of the 100 woke it)
            assert 1 <= counting.notified <= 10
            # woken from that wait, it still ends a read that outlives its deadline
            time.sleep(0.6)
            dog.watch(connection_over(ours), time.monotonic() + 0.3, None)
            assert 0.25 <= blocked_read_ends_after(ours) < 5.0
        finally:
            dog.close()
