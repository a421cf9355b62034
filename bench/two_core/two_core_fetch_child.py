"""The fetching half of two_core_fetch.py: a process that runs the product's
:class:`HttpRecordSource` for each export request read from stdin and writes its pages to
stdout, in plan order, undecoded.

Frames: a request is a 4-byte little-endian length and the pickled ``SourceRequest`` (no
checkpoint); the answers are ``status (1) + keep mask length (4) + body length (4)``, the keep
mask (one byte a record) and the body: status 0 a page, 1 the export's error (pickled), 2 its
end. One byte ``R`` first, once the source is built.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from two_core_common import LENGTH, write_all
from two_core_fetch import HEAD

from adapters.upstream import HttpRecordSource, source
from entrypoints.containers import upstream_config
from entrypoints.settings import load_settings
from reportcore.errors import UpstreamBadResponse


def _fetched(call: Any, fetched: Any, *args: Any, **kwargs: Any) -> Any:
    return fetched  # the page as its window handed it over: decoded in the worker


def main() -> None:
    out = sys.stdout.buffer.fileno()
    read = sys.stdin.buffer.read
    records = HttpRecordSource(upstream_config(load_settings(os.environ)))
    source._page = _fetched
    os.write(out, b"R")
    while True:
        head = read(4)
        if len(head) < 4:
            return
        request = pickle.loads(read(LENGTH.unpack(head)[0]))
        try:
            for fetched in records.pages(request):
                keep = bytes(fetched.keep) if fetched.keep is not None else b""
                body = fetched.body
                write_all(out, [HEAD.pack(0, len(keep), len(body)), keep, body])
        except Exception as exc:  # the export's own error, for the worker to raise
            try:
                data = pickle.dumps(exc)
                pickle.loads(data)
            except Exception:
                data = pickle.dumps(UpstreamBadResponse(str(exc)))
            write_all(out, [HEAD.pack(1, 0, len(data)), data])
        else:
            write_all(out, [HEAD.pack(2, 0, 0)])


if __name__ == "__main__":
    main()
