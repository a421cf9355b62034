"""Faults a test injects into the demo upstream, and the requests it saw."""

from __future__ import annotations

import threading

import msgspec


class Fault(msgspec.Struct, kw_only=True):
    kind: str  # status | hang | malformed | drop | body
    remaining: int
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    path: str | None = None
    after: int = 0  # matching requests to let through first
    # kind body: ``body`` written ``repeat`` times after ``headers``; with ``drip_sec`` one
    # byte at a time, that long apart; without ``length`` delimited by closing the connection
    body: bytes = b""
    repeat: int = 1
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    drip_sec: float = 0.0
    length: bool = True


class Faults:
    """Faults for the next requests, taken in the order they were added.

    Each applies to ``times`` requests (of ``path`` only, when given) once ``after`` matching
    requests went through unharmed; a request meets at most one fault, the first added that
    matches it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._queue.append(fault)

    def status(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: float | str | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer ``status`` (with ``Retry-After`` when given: seconds or an HTTP date)."""
        header = None if retry_after is None else str(retry_after)
        self._add(
            Fault(
                kind="status",
                remaining=times,
                status=status,
                retry_after=header,
                path=path,
                after=after,
            )
        )

    def hang(
        self, seconds: float, times: int = 1, *, path: str | None = None, after: int = 0
    ) -> None:
        """Wait ``seconds`` before answering (a client with a shorter timeout gives up)."""
        self._add(Fault(kind="hang", remaining=times, seconds=seconds, path=path, after=after))

    def malformed(self, times: int = 1, *, path: str | None = None, after: int = 0) -> None:
        """Answer 200 with a body that is not JSON."""
        self._add(Fault(kind="malformed", remaining=times, path=path, after=after))

    def body(
        self,
        body: bytes,
        times: int = 1,
        *,
        repeat: int = 1,
        headers: dict[str, str] | None = None,
        drip_sec: float = 0.0,
        length: bool = True,
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer 200 with ``body`` ``repeat`` times over (never held whole: a page of
        hundreds of megabytes), with ``headers`` added (``Content-Encoding: gzip``...); with
        ``drip_sec``, one byte every ``drip_sec`` seconds; ``length=False`` sends no
        ``Content-Length`` and ends the body by closing the connection."""
        self._add(
            Fault(
                kind="body",
                remaining=times,
                status=200,
                body=body,
                repeat=repeat,
                headers=dict(headers or {}),
                drip_sec=drip_sec,
                length=length,
                path=path,
                after=after,
            )
        )

    def drop(self, times: int = 1, *, path: str | None = None, after: int = 0) -> None:
        """Close the connection without answering."""
        self._add(Fault(kind="drop", remaining=times, path=path, after=after))

    def clear(self) -> None:
        """Forget every fault not yet taken."""
        with self._lock:
            self._queue.clear()

    @property
    def pending(self) -> int:
        """How many faulty answers are still to come."""
        with self._lock:
            return sum(f.remaining for f in self._queue)

    def take(self, path: str) -> Fault | None:
        """The fault this request gets, if any."""
        with self._lock:
            for fault in self._queue:
                if fault.remaining > 0 and (fault.path is None or fault.path == path):
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._queue.remove(fault)
                    return fault
        return None


class SeenRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request as the demo upstream received it."""

    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case

    def param(self, name: str) -> str | None:
        """The (last) value of a query parameter."""
        values = self.params.get(name)
        return values[-1] if values else None
