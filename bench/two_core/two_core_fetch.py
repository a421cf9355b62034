"""The other split of issue 27's two-core experiment, patched into a ``reportsvc worker``: the
fetching on the second core.

A feed or telemetry export's pages are fetched by a child process (two_core_fetch_child.py,
started with the worker) running the product's own :class:`HttpRecordSource`: its window
threads, requests, retries, key decode, checks, splits, spools and look-ahead. The child hands
the pages over, in plan order, as bytes with their window's keep mask, through a pipe (1 MiB);
the worker decodes them with the product's ``_page`` (the windows checked them, as in the
product) and writes the file with the product's exporter. So the child's interpreter fetches
while the worker's decodes and encodes, on the other core. A measurement, not a design: the
child asks no checkpoint while it waits (the worker asks it after each page, as always), an
export that ends early leaves the child to be restarted, the child's metrics are its own, and
the host slots are the child's, not shared with other exports of the worker.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

LENGTH = struct.Struct("<I")
# status (0 a page, 1 an error, 2 the export's end), keep mask length, body length
HEAD = struct.Struct("<BII")
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
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TWO_CORE_EXPERIMENT"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "two_core_fetch_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, 1 << 20)
        self.out = self.proc.stdin.fileno()
        self.read = self.proc.stdout.read  # buffered: read(n) answers n bytes, or fewer at EOF
        if self.read(1) != b"R":  # ready: its imports and its source are not the export's time
            raise RuntimeError("the fetching process did not start")

    def send(self, data: bytes) -> None:
        write_all(self.out, [LENGTH.pack(len(data)), data])

    def exactly(self, n: int) -> bytes:
        data = self.read(n) if n else b""
        if len(data) < n:
            raise RuntimeError("the fetching process ended")
        return data


_child: Child | None = None
_lock = threading.Lock()


def _take_child() -> Child:
    global _child
    with _lock:
        child, _child = _child, None
    return child if child is not None and child.proc.poll() is None else Child()


def _give_back(child: Child) -> None:
    global _child
    with _lock:
        _child = child


def install() -> None:
    import msgspec

    from adapters.upstream import source
    from adapters.upstream.wire import DECODERS, Fetched
    from reportcore.jobs import JobType
    from reportcore.ports import SourcePage, SourceRequest

    global _child
    _child = Child()  # started with the worker, not inside an export's time
    windowed = {JobType.FEED_INTAKE_EXPORT, JobType.TELEMETRY_EXPORT}

    def pages(self: Any, request: SourceRequest) -> Iterator[SourcePage]:
        job_type = source._own(request.job_type)
        call = self._call(request, source._PATHS[job_type])
        decoders = DECODERS[job_type]
        max_items = self.config.max_page_items
        checked = job_type in windowed  # the child's windows checked every page, as here
        child = _take_child()
        clean = False
        try:
            child.send(pickle.dumps(msgspec.structs.replace(request, checkpoint=None)))
            while True:
                status, keep_len, body_len = HEAD.unpack(child.exactly(HEAD.size))
                keep = child.exactly(keep_len)
                body = child.exactly(body_len)
                if status == 2:
                    break
                if status == 1:
                    clean = True  # the child ended the export and waits for the next
                    raise pickle.loads(body)
                mask = tuple(map(bool, keep)) if keep_len else None
                yield source._page(call, Fetched(body, mask), decoders, request, max_items, checked)
            clean = True
        finally:
            if clean:
                _give_back(child)
            else:
                child.proc.kill()
                child.proc.wait()

    source.HttpRecordSource.pages = pages  # type: ignore[method-assign]
