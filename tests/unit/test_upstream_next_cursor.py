"""A feed page's ``nextCursor`` read from the end of its body is what decoding the whole page
reads, whatever the page's key order, whitespace, and records (nested objects, strings and
keys that spell ``nextCursor`` included)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.upstream.wire import FEED_CURSOR, Call, decode, next_cursor
from reportcore.errors import UpstreamBadResponse
from reportcore.jobtypes import Upstream
from reportcore.records import FeedIntakeRecord

CALL = Call(upstream=Upstream.FEED, base_url="http://feed", path="/p", trace_id="t")

cursors = st.one_of(st.none(), st.integers(-(2**40), 2**40), st.text(max_size=8))
tricky_text = st.sampled_from(['"nextCursor":"9"}', "nextCursor", '\\"nextCursor\\"', "}", ""])
values = st.recursive(
    st.one_of(st.none(), st.integers(), tricky_text, st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["nextCursor", "id", "n"]), inner, max_size=3),
    ),
    max_leaves=8,
)


@given(
    items=st.lists(st.dictionaries(st.sampled_from(["nextCursor", "id", "notes"]), values)),
    cursor=cursors,
    cursor_first=st.booleans(),
    has_cursor=st.booleans(),
    extra=st.one_of(st.none(), values),
    spaced=st.booleans(),
)
def test_the_cursor_read_from_the_tail_is_the_cursor_of_the_whole_page(
    items: list[dict[str, Any]],
    cursor: str | int | None,
    cursor_first: bool,
    has_cursor: bool,
    extra: Any,
    spaced: bool,
) -> None:
    fields: list[tuple[str, Any]] = [("items", items)]
    if extra is not None:
        fields.append(("extra", extra))
    if has_cursor:
        fields.insert(0 if cursor_first else len(fields), ("nextCursor", cursor))
    indent = 1 if spaced else None
    body = json.dumps(dict(fields), indent=indent).encode()
    assert next_cursor(CALL, body) == FEED_CURSOR.decode(body).nextCursor


@pytest.mark.parametrize(
    "body", [b'{"items": [], "nextCursor": [1]}', b"not json", b'["nextCursor"]']
)
def test_a_page_whose_cursor_cannot_be_read_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(UpstreamBadResponse):
        next_cursor(CALL, body)


class FeedPage(msgspec.Struct):
    items: list[FeedIntakeRecord]


def test_invalid_utf8_in_a_page_is_a_bad_response_never_an_uncaught_decode_error() -> None:
    # msgspec raises UnicodeDecodeError (not its DecodeError) for these: it failed the job as a
    # bug ("failed unexpectedly") with a traceback in the log
    in_a_record = b'{"items":[{"id":"\xff"}],"nextCursor":null}'
    in_the_cursor = b'{"items":[],"nextCursor":"\xc3\x28"}'
    with pytest.raises(UpstreamBadResponse, match="unreadable page"):
        decode(CALL, msgspec.json.Decoder(FeedPage), in_a_record)
    with pytest.raises(UpstreamBadResponse, match="unreadable page"):
        next_cursor(CALL, in_the_cursor)
    # a record's bytes are read where the file is written: the cursor needs only the tail
    assert next_cursor(CALL, in_a_record) is None
