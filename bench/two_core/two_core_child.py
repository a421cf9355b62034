"""The encoding half of the two-core experiment: a process that reads a feed page's bytes
(and which of its records its window keeps) from stdin and writes its CSV lines to stdout.

Frames both ways: a 4-byte little-endian length, then the payload. The first frame is the
export's setup (pickled: job type, tenant, the most records a page may hold, the options and
the scope values); then a page is ``keep mask length (4) + keep mask + body``, and each answer
``status (1) + rows (4) + last instant length (2) + last instant + CSV bytes`` (status 1: the
bytes are an error message).
"""

from __future__ import annotations

import operator
import pickle
import sys

from two_core_common import LENGTH
from two_core_main import ANSWER

from adapters.upstream.wire import DECODERS
from reportcore.encoding import CsvEncoder, SheetRequest
from reportcore.export import row_getter
from reportcore.jobtypes import JOB_TYPES

_TENANT = operator.attrgetter("tenant_id")


class Collected:
    """A ByteSink that keeps what it is given until taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def add(self, data: bytes) -> None:
        self.parts.append(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def main() -> None:
    read, write = sys.stdin.buffer.read, sys.stdout.buffer.write
    flush = sys.stdout.buffer.flush
    while True:
        head = read(4)
        if len(head) < 4:
            return
        job_type, tenant_id, max_items, options, scope_values = pickle.loads(
            read(LENGTH.unpack(head)[0])
        )
        spec = JOB_TYPES[job_type]
        decoders = DECODERS[job_type]
        typed = decoders.typed.decode
        items_of = operator.attrgetter("items")
        progress = operator.attrgetter(spec.progress_attr)
        sink = Collected()
        encoder = CsvEncoder(SheetRequest(columns=options.columns_of(spec), options=options), sink)
        sink.take()  # the header is the parent's
        row_of = row_getter(spec, options.columns, scope_values)
        while True:
            head = read(4)
            if len(head) < 4:
                return
            size = LENGTH.unpack(head)[0]
            if size == 0:  # the export's end
                break
            frame = read(size)
            keep_len = LENGTH.unpack_from(frame)[0]
            keep = frame[4 : 4 + keep_len]
            body = frame[4 + keep_len :]
            try:
                page = typed(body)
                items = page if isinstance(page, list) else items_of(page)
                if len(items) > max_items:
                    raise ValueError(f"{len(items)} records in one page, over {max_items}")
                tenants = set(map(_TENANT, items))
                tenants.discard(None)
                tenants.discard(tenant_id)
                if tenants:
                    raise ValueError("a record of another tenant")
                if keep_len:
                    items = [r for r, k in zip(items, keep, strict=True) if k]
                if items:
                    encoder.add(list(map(row_of, items)))
                last = progress(items[-1]).encode() if items else b""
                data = sink.take()
                out = ANSWER.pack(0, len(items), len(last)) + last
            except Exception as exc:
                data = f"{type(exc).__name__}: {exc}".encode()
                out = ANSWER.pack(1, 0, 0)
            write(LENGTH.pack(len(out) + len(data)))
            write(out)
            write(data)
            flush()


if __name__ == "__main__":
    main()
