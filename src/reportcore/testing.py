"""In-memory adapters of every port of :mod:`reportcore.ports`, and a clock to pin time.

Real, maintained implementations (the way procrastinate ships ``InMemoryConnector``), kept to
the same contract suites as the service's PostgreSQL, RabbitMQ and filesystem adapters, so a
consumer of the library can run its tests on them. Standard library and msgspec only, typed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import queue as stdqueue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from .errors import QueueUnavailable, ServiceUnavailable
from .jobs import JobMessage
from .jobtypes import JOB_TYPES, JobTypeRegistry
from .memory_files import InMemoryFileStore
from .memory_jobs import InMemoryJobRepository
from .memory_schedules import InMemoryScheduleRepository
from .outbox import InMemoryOutbox, RecordingWebhookSender
from .ports import Disposition, SourcePage, SourceRequest

__all__ = [
    "FakeClock",
    "InMemoryFileStore",
    "InMemoryJobRepository",
    "InMemoryOutbox",
    "InMemoryQueue",
    "InMemoryScheduleRepository",
    "RecordingWebhookSender",
    "SequentialIds",
    "StaticRecordSource",
]


class SequentialIds:
    """A :class:`reportcore.ports.IdSource` that names things in order: the UUIDs of 1, 2, 3...
    (thread-safe). A run replayed with a fresh one gets the same ids again, which random ids
    would not give (hypothesis replays a failing case and must meet the same jobs)."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=next(self._numbers)))


def _utc(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC, as a clock tells it; a naive instant names no moment: refused."""
    if when.utcoffset() is None:
        raise ValueError(f"a clock's instant is aware: {when!r} has no zone")
    return when.astimezone(dt.UTC)


class FakeClock:
    """A :class:`reportcore.ports.Clock` that moves only when told to (thread-safe); an
    instant it is given in another zone is told in UTC, as every clock tells it."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = _utc(start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """The time it was set or advanced to."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> dt.datetime:
        """Move on by ``seconds``; returns the new time."""
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            return self._now

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when``."""
        when = _utc(when)
        with self._lock:
            self._now = when


class InMemoryQueue:
    """A job queue in process: publish is the broker's confirm; ``run`` consumes.

    Dead-lettered messages are kept in ``dead_letters`` for inspection.
    """

    def __init__(self) -> None:
        self._queue: stdqueue.Queue[bytes] = stdqueue.Queue()
        self.dead_letters: list[bytes] = []
        self.available = True

    def publish(self, message: JobMessage) -> None:
        if not self.available:
            raise QueueUnavailable("queue is not available")
        self._queue.put(msgspec.json.encode(message))

    def publish_raw(self, body: bytes) -> None:
        """Put any bytes on the queue (as an old or broken publisher might)."""
        self._queue.put(body)

    def ping(self) -> None:
        if not self.available:
            raise ServiceUnavailable("queue is not available")

    def pending(self) -> int:
        return self._queue.qsize()

    def take(self) -> bytes | None:
        """The next message, if any, without a consumer (for tests driving a worker by hand)."""
        try:
            return self._queue.get_nowait()
        except stdqueue.Empty:
            return None

    def settle(self, body: bytes, disposition: Disposition) -> None:
        """What a consumer does with a handled message."""
        if disposition is Disposition.DEAD_LETTER:
            self.dead_letters.append(body)
        elif disposition is Disposition.REQUEUE:
            self._queue.put(body)

    def run(
        self,
        handle: Callable[[bytes], Disposition],
        concurrency: int,
        stop: Callable[[], bool],
    ) -> None:
        """Deliver messages to ``handle`` on ``concurrency`` threads until ``stop()``."""
        slots = threading.Semaphore(concurrency)

        def work(body: bytes) -> None:
            try:
                self.settle(body, handle(body))
            except Exception:
                self._queue.put(body)  # the handler crashed: redeliver, as a broker would
                raise
            finally:
                slots.release()

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="job") as pool:
            while not stop():
                if not slots.acquire(timeout=0.2):
                    continue
                try:
                    body = self._queue.get(timeout=0.2)
                except stdqueue.Empty:
                    slots.release()
                    continue
                pool.submit(work, body)


class StaticRecordSource:
    """Records held in memory, served in pages: for tests and the library examples.

    ``records`` maps a job type to its upstream records as JSON-ready dicts (camelCase), in
    upstream order; they are encoded and decoded exactly as a real source would, into the
    record type ``job_types`` (a consumer's own registry, say) gives for the job type.
    """

    def __init__(
        self,
        records: Mapping[str, Sequence[Mapping[str, Any]]],
        page_size: int = 100,
        fail_with: Exception | None = None,
        *,
        job_types: JobTypeRegistry = JOB_TYPES,
    ) -> None:
        self._records = records
        self._job_types = job_types
        self._page_size = page_size
        self.fail_with = fail_with
        self.requests: list[SourceRequest] = []

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        self.requests.append(request)
        spec = self._job_types[request.job_type]
        items = list(self._records.get(str(request.job_type), ()))
        for start in range(0, max(len(items), 1), self._page_size):
            if self.fail_with is not None:
                raise self.fail_with
            chunk = items[start : start + self._page_size]
            body = msgspec.json.encode(chunk)
            raws = msgspec.json.decode(body, type=list[msgspec.Raw]) if request.raw else None
            record_list: Any = list[spec.record_type]  # type: ignore[name-defined]
            typed = msgspec.json.decode(body, type=record_list) if request.typed else None
            yield SourcePage(records=typed, raw=raws)
