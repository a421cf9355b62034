"""A window's answers on their way from its fetching thread to the exporter: in memory while
the run's :class:`Budget` has room, else in an unlinked temporary file (:class:`Spool`)."""

from __future__ import annotations

import enum
import os
import tempfile
import threading
from collections import deque
from typing import IO

from adapters import tempfiles

from .wire import Fetched


class End(enum.Enum):
    """What a spool says once its window has nothing more."""

    DONE = "done"


class Budget:
    """Bytes of answers that the spools of one run may hold in memory together (``used``, at
    most ``limit``), and the bytes they hold in their files (``spilled``: the look-ahead)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.spilled = 0
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

    def spill(self, size: int) -> None:
        """``size`` bytes more (or, negative, fewer) in the spools' files."""
        with self._lock:
            self.spilled += size


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
        # the sizes of the frames in the file not read yet (body, keep: None when all are
        # kept), oldest first: a frame is read back without first reading a head of sizes
        self._frames: deque[tuple[int, int | None]] = deque()
        self._finished = False
        self._closed = False

    def put(self, item: Fetched) -> None:
        with self._cond:
            if self._closed:
                return
            size = len(item.body)
            if not self._frames and self._budget.take(size):
                self._memory.append(item)
                self._memory_bytes += size
            else:  # behind what is already in the file, so order is kept
                try:
                    self._spill(item)
                except OSError as exc:
                    raise tempfiles.failure(exc) from exc
            self._cond.notify()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify()

    def take(self, timeout: float) -> Fetched | End | None:
        """The next answer, :attr:`End.DONE` after the last, ``None`` if none came in time."""
        with self._cond:
            if not self._memory and not self._frames and not self._finished:
                self._cond.wait(timeout)
            if self._memory:
                item = self._memory.popleft()
                self._memory_bytes -= len(item.body)
                self._budget.give(len(item.body))
                return item
            if self._frames:
                try:
                    return self._unspill()
                except OSError as exc:
                    raise tempfiles.failure(exc) from exc
            return End.DONE if self._finished else None

    def in_file(self) -> int:
        """Bytes written to the file and not read back yet."""
        return self._write_at - self._read_at

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._memory.clear()
            self._frames.clear()
            self._budget.give(self._memory_bytes)
            self._memory_bytes = 0
            if self._file is not None:
                self._budget.spill(self._read_at - self._write_at)
                self._file.close()
                self._file = None

    def _spill(self, item: Fetched) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="reportsvc-window-")  # noqa: SIM115
        keep = None if item.keep is None else bytes(item.keep)
        parts = [item.body] if keep is None else [item.body, keep]
        size = sum(map(len, parts))
        # the parts as they are: a page is not copied into a frame before it is written
        written = os.pwritev(self._file.fileno(), parts, self._write_at)
        if written != size:
            raise OSError(f"a window's spool wrote {written} of {size} bytes")
        self._write_at += size
        self._frames.append((len(item.body), None if keep is None else len(keep)))
        self._budget.spill(size)

    def _unspill(self) -> Fetched:
        assert self._file is not None
        fd = self._file.fileno()
        size, keep_size = self._frames.popleft()
        body = os.pread(fd, size, self._read_at)
        if len(body) != size:
            raise OSError(f"a window's spool read {len(body)} of {size} bytes")
        end = self._read_at + size
        keep: tuple[bool, ...] | None = None
        if keep_size is not None:
            keep = tuple(map(bool, os.pread(fd, keep_size, end)))
            end += keep_size
        self._budget.spill(self._read_at - end)
        self._read_at = end
        if not self._frames:  # drained: the file starts over (and stays small)
            self._read_at = self._write_at = 0
            self._file.truncate(0)
        return Fetched(body, keep)
