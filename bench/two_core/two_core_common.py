"""What both splits of issue 27's two-core experiment share: a child process started with the
worker, spoken to through two pipes in length-prefixed frames, and kept between exports."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

LENGTH = struct.Struct("<I")
F_SETPIPE_SZ = 1031


def write_all(fd: int, parts: list[bytes]) -> None:
    """``parts`` written whole to ``fd`` (a pipe's writev may take part of them)."""
    total = sum(map(len, parts))
    done = os.writev(fd, parts)
    if done < total:
        rest = b"".join(parts)[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


class Child:
    """``python -m module`` with 1 MiB pipes, without the experiment's switch in its
    environment; with ``ready``, it writes one byte ``R`` once set up, and this waits for it
    (its imports are not an export's time)."""

    def __init__(self, module: str, ready: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TWO_CORE_EXPERIMENT"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, 1 << 20)
        self.out = self.proc.stdin.fileno()
        self.clean = False  # lent for an export: it ended the export and waits for the next
        self._read = self.proc.stdout.read  # buffered: n bytes, or fewer at its end
        if ready and self._read(1) != b"R":
            raise RuntimeError(f"{module} did not start")

    def send(self, *parts: bytes) -> None:
        """One frame: the parts' length, then the parts."""
        write_all(self.out, [LENGTH.pack(sum(map(len, parts))), *parts])

    def read(self, n: int) -> bytes:
        data = self._read(n) if n else b""
        if len(data) < n:
            raise RuntimeError("the child process ended")
        return data

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Spare:
    """One child kept between exports: an export takes it (or a new one, if it has ended) and
    gives it back when it ended cleanly; one that ended early is killed instead."""

    def __init__(self, module: str, ready: bool = False) -> None:
        self._module, self._ready = module, ready
        self._child: Child | None = Child(module, ready)  # started with the worker
        self._lock = threading.Lock()

    def take(self) -> Child:
        with self._lock:
            child, self._child = self._child, None
        if child is not None and child.proc.poll() is None:
            return child
        return Child(self._module, self._ready)

    def give_back(self, child: Child) -> None:
        with self._lock:
            self._child = child

    @contextlib.contextmanager
    def lend(self) -> Iterator[Child]:
        """A child for one export: given back if the export set its ``clean``, else killed."""
        child = self.take()
        child.clean = False
        try:
            yield child
        finally:
            if child.clean:
                self.give_back(child)
            else:
                child.kill()
