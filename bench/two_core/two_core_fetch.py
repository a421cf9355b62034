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

import pickle
import struct
from collections.abc import Iterator
from typing import Any

from two_core_common import Spare

# status (0 a page, 1 an error, 2 the export's end), keep mask length, body length
HEAD = struct.Struct("<BII")


def install() -> None:
    import msgspec

    from adapters.upstream import source
    from adapters.upstream.wire import DECODERS, Fetched
    from reportcore.jobs import JobType
    from reportcore.ports import SourcePage, SourceRequest

    spare = Spare("two_core_fetch_child", ready=True)
    windowed = {JobType.FEED_INTAKE_EXPORT, JobType.TELEMETRY_EXPORT}

    def pages(self: Any, request: SourceRequest) -> Iterator[SourcePage]:
        job_type = source._own(request.job_type)
        call = self._call(request, source._PATHS[job_type])
        decoders = DECODERS[job_type]
        max_items = self.config.max_page_items
        checked = job_type in windowed  # the child's windows checked every page, as here
        with spare.lend() as child:
            # the callbacks are this process's (closures pickle not): the child gets none
            asked = msgspec.structs.replace(request, checkpoint=None, fetched=None)
            child.send(pickle.dumps(asked))
            while True:
                status, keep_len, body_len = HEAD.unpack(child.read(HEAD.size))
                keep = child.read(keep_len)
                body = child.read(body_len)
                if status == 2:
                    break
                if status == 1:
                    child.clean = True  # the child ended the export and waits for the next
                    raise pickle.loads(body)
                if request.fetched is not None:
                    request.fetched()  # a page arrived (the worker's liveness probe)
                mask = tuple(map(bool, keep)) if keep_len else None
                yield source._page(call, Fetched(body, mask), decoders, request, max_items, checked)
            child.clean = True

    source.HttpRecordSource.pages = pages  # type: ignore[method-assign]
