"""The fetching half of issue 27's two-core experiment, patched into a ``reportsvc worker``.

A CSV export's pages are not decoded in the worker: its source hands on each page's bytes
(and its window's keep mask) as they come, the export sends them to a child process
(two_core_child.py, started with the worker) that decodes, checks and encodes them, up to
``LOOKAHEAD`` pages ahead, and writes the CSV lines the child answers, in order. So the worker's
interpreter fetches while the child's encodes, on the other core. Everything else (header,
hashing, writing, progress, limits) is the product's own code. A measurement, not a design:
an export that ends early leaves the child to be restarted, errors come back as text, and
NDJSON, xlsx and stream filters take the product's path unchanged.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import Any

from two_core_common import LENGTH, Spare

LOOKAHEAD = int(os.environ.get("TWO_CORE_LOOKAHEAD", "16"))
ANSWER = struct.Struct("<BIH")


class Pending:
    """A page not decoded: what the child needs of it."""

    __slots__ = ("body", "keep", "max_items")

    def __init__(self, body: bytes, keep: tuple[bool, ...] | None, max_items: int) -> None:
        self.body, self.keep, self.max_items = body, keep, max_items


class Last:
    """The last record of an encoded page, as progress reads it: one attribute, its instant."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __getattr__(self, name: str) -> str:
        return self.value


class Encoded:
    """A page the child encoded: its CSV lines, standing in for the page's records."""

    __slots__ = ("count", "data", "last")

    def __init__(self, count: int, data: bytes, last: str) -> None:
        self.count, self.data, self.last = count, data, last

    def __len__(self) -> int:
        return self.count

    def __iter__(self):  # one row: the page's lines, written whole
        return iter((self,))

    def __getitem__(self, index: int) -> Last:
        return Last(self.last)


def install() -> None:
    from adapters.upstream import source
    from reportcore import export, pipeline
    from reportcore.encoding import CsvEncoder
    from reportcore.errors import UpstreamBadResponse
    from reportcore.jobs import ReportFormat
    from reportcore.ports import SourcePage

    if os.environ.get("TWO_CORE_SWITCH_SEC"):
        sys.setswitchinterval(float(os.environ["TWO_CORE_SWITCH_SEC"]))
    spare = Spare("two_core_child")
    real_page, real_write, real_row_getter = source._page, pipeline.write_export, export.row_getter

    def page(
        call: Any, fetched: Any, decoders: Any, request: Any, max_items: int, checked: bool
    ) -> Any:
        if request.typed and not request.raw:
            return SourcePage(records=Pending(fetched.body, fetched.keep, max_items))
        return real_page(call, fetched, decoders, request, max_items, checked)

    def row_getter(*args: Any) -> Any:
        real = real_row_getter(*args)
        return lambda r: r if type(r) is Encoded else real(r)

    class Lines:
        """The CSV row format with the header written by the product's encoder and each
        page's lines as the child wrote them."""

        def __init__(self, request: Any, out: Any) -> None:
            CsvEncoder(request, out)
            self._out = out

        def add(self, rows: Any) -> None:
            for encoded in rows:
                self._out.add(encoded.data)

        def close(self) -> None:
            pass

        def abort(self) -> None:
            pass

    def write_export(spec: Any, fmt: Any, pages: Any, writer: Any, **kw: Any) -> Any:
        if fmt is not ReportFormat.CSV or kw.get("keep") is not None:
            return real_write(spec, fmt, pages, writer, **kw)
        options = kw.get("options") or export.ExportOptions()
        scope_values = kw["scope_values"]

        def encoded_pages() -> Any:
            with spare.lend() as child:
                inflight = 0  # pages sent whose lines have not come back yet

                def receive() -> SourcePage:
                    size = LENGTH.unpack(child.read(4))[0]
                    frame = child.read(size)
                    status, count, last_len = ANSWER.unpack_from(frame)
                    at = ANSWER.size
                    last = frame[at : at + last_len].decode()
                    data = frame[at + last_len :]
                    if status:
                        raise UpstreamBadResponse(
                            f"the feed sent an unreadable page: {data.decode()}"
                        )
                    return SourcePage(records=Encoded(count, data, last))

                setup = None
                for p in pages:
                    pending = p.records
                    if setup is None:
                        setup = pickle.dumps(
                            (
                                spec.job_type,
                                scope_values["tenant_id"],
                                pending.max_items,
                                options,
                                dict(scope_values),
                            )
                        )
                        child.send(setup)
                    keep = bytes(pending.keep) if pending.keep is not None else b""
                    child.send(LENGTH.pack(len(keep)), keep, pending.body)
                    inflight += 1
                    if inflight >= LOOKAHEAD:
                        inflight -= 1
                        yield receive()
                for _ in range(inflight):
                    yield receive()
                if setup is not None:
                    child.send()  # the export's end: the child waits for the next
                child.clean = True

        kw["formats"] = {ReportFormat.CSV: Lines}
        return real_write(spec, fmt, encoded_pages(), writer, **kw)

    source._page = page
    export.row_getter = row_getter
    pipeline.write_export = write_export
