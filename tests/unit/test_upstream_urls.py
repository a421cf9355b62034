"""A page's URL (``Target.url_with``): the call's URL parsed once, each page's query put in as
it is, must be the URL httpx parses from the whole string, whatever the query holds: what our
encoders write (scope values, filters, windows and an upstream's cursor, any text), and any
other string (which takes httpx's own way)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.upstream import UpstreamConfig
from adapters.upstream.client import Clients
from adapters.upstream.retry import Target
from adapters.upstream.slots import FairSlots
from adapters.upstream.wire import Call, and_, query
from reportcore.jobtypes import Upstream

BASES = (
    ("http://feed:3000", "/api/v1/feed/intake-records"),
    ("HTTP://Feed.Example:80", "/api/v1/feed/intake-records"),  # normalised once, by httpx
    ("https://gateway.example/farmiq/feed", "/api/v1/feed/intake-records"),
    ("http://[::1]:8080", "/api/v1/telemetry/readings"),
    ("http://feed:3000", "/p?fixed=1"),  # a query of its own: every page takes the long way
)


def target(base_url: str, path: str) -> Target:
    call = Call(upstream=Upstream.FEED, base_url=base_url, path=path, trace_id="t")
    clients = Clients(UpstreamConfig(feed_url="http://feed:3000"), None, None)
    return Target(call, clients.host(base_url), None)


TARGETS = [target(*base) for base in BASES]
texts = st.text(max_size=40)
values = st.one_of(texts, st.integers(), st.lists(texts, max_size=3))


def same(url: httpx.URL, expected: httpx.URL) -> None:
    assert str(url) == str(expected)
    assert url.raw_path == expected.raw_path
    assert (url.scheme, url.host, url.port, url.query) == (
        expected.scheme,
        expected.host,
        expected.port,
        expected.query,
    )
    assert url == expected


@given(
    st.sampled_from(TARGETS),
    st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=5),
    st.lists(st.tuples(st.sampled_from(["start", "end", "cursor"]), texts), max_size=3),
)
def test_a_query_our_encoders_write_goes_in_as_httpx_would_parse_it(
    t: Target, params: dict[str, object], pairs: list[tuple[str, str]]
) -> None:
    q = query(params)
    for key, value in pairs:
        q = and_(q, key, value)
    same(t.url_with(q), httpx.URL(f"{t.url}?{q}" if q else t.url))


# mostly the characters of a URL, where the edge between kept and escaped lies, and any text
raw_queries = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.text(max_size=60),
)


@given(st.sampled_from(TARGETS), raw_queries)
@example(TARGETS[0], "cursor=%zz")  # not an escape: httpx keeps it all the same
@example(TARGETS[0], "cursor=%4")
@example(TARGETS[0], "cursor=50%")
@example(TARGETS[0], "cursor=%4g%41")
@example(TARGETS[0], "a b")
@example(TARGETS[0], "a#b")
@example(TARGETS[0], 'a"<>b')
@example(TARGETS[0], "a\x7fb")
@example(TARGETS[0], "a\nb")
def test_any_other_query_is_the_url_httpx_parses_or_its_refusal(t: Target, q: str) -> None:
    try:
        expected = httpx.URL(f"{t.url}?{q}" if q else t.url)
    except httpx.InvalidURL as exc:
        with pytest.raises(httpx.InvalidURL, match=re.escape(str(exc))):
            t.url_with(q)
        return
    same(t.url_with(q), expected)


def test_a_query_too_long_for_httpx_is_refused_as_httpx_refuses_it() -> None:
    t = TARGETS[0]
    q = and_("limit=100", "cursor", "c" * 70_000)  # an upstream's cursor: untrusted
    with pytest.raises(httpx.InvalidURL, match="too long"):
        httpx.URL(f"{t.url}?{q}")
    with pytest.raises(httpx.InvalidURL, match="too long"):
        t.url_with(q)


def test_the_pages_of_one_call_share_its_parsed_url_and_differ_in_their_query() -> None:
    t = TARGETS[0]
    first, second = t.url_with("limit=100"), t.url_with("limit=100&cursor=2")
    assert first.raw_path == b"/api/v1/feed/intake-records?limit=100"
    assert second.raw_path == b"/api/v1/feed/intake-records?limit=100&cursor=2"
    assert t.url_with("") == httpx.URL(t.url)


@pytest.mark.parametrize("t", TARGETS, ids=[b[0] + b[1] for b in BASES])
def test_a_page_request_is_the_one_httpx_builds_from_its_url_and_headers(t: Target) -> None:
    url = t.url_with("tenantId=t-1&limit=100&cursor=abc")
    built = t.request(url, 2, 123.0, lambda: False)
    headers = httpx.Headers(t.host.client.headers)
    headers["x-trace-id"] = "t"
    headers["x-request-id"] = built.headers["x-request-id"]
    expected = httpx.Request("GET", url, headers=headers)
    assert (built.method, built.url, built.content) == ("GET", expected.url, b"")
    assert built.headers.raw == expected.headers.raw
    assert b"".join(built.stream) == b""  # type: ignore[arg-type]
    again = t.request(url, 2, 123.0, lambda: False)  # the shared headers are not changed
    assert again.headers["x-request-id"] != built.headers["x-request-id"]
    assert [k for k, _ in again.headers.raw].count(b"x-request-id") == 1


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://feed", "http://feed:80/"),
        ("http://FEED:3000", "http://feed:3000/api"),
        ("https://feed", "https://user:pass@feed:443"),
        ("http://[::1]", "http://[::1]:80"),
    ],
)
def test_one_origin_however_spelled_has_one_client_and_one_cap_of_requests_in_flight(
    one: str, other: str
) -> None:
    """UPSTREAM_HOST_CONCURRENCY caps a host by scheme, host and port: a default port
    spelled out or left out, a host's case or user info do not make a second host."""
    clients = Clients(UpstreamConfig(host_concurrency=1, trust_env=False))
    try:
        assert clients.client(one) is clients.client(other)
        first, second = clients.host(one), clients.host(other)
        stop = threading.Event()
        assert first.acquire(stop)
        # the one slot is taken: the other spelling waits for it, as the same host
        assert not second.acquire(stop, until=time.monotonic() + 0.2)
        first.release()
        assert second.acquire(stop)
        second.release()
    finally:
        clients.close()


def the_longest_waiter_wins(first: Any, second: Any, waiting: Callable[[], bool]) -> None:
    """``first`` holds the one slot, ``second`` waits for it (``waiting()`` says it does):
    ``first`` releases it and asks again at once, and must not get it back before ``second``."""
    stop = threading.Event()
    assert first.acquire(stop)
    got: list[bool] = []
    waiter = threading.Thread(
        target=lambda: got.append(second.acquire(stop, until=time.monotonic() + 5))
    )
    waiter.start()
    deadline = time.monotonic() + 5
    while not waiting():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.release()
    assert not first.acquire(stop, until=time.monotonic() + 0.3), "taken back past a waiter"
    waiter.join(5)
    assert got == [True]
    second.release()


def test_a_released_slot_goes_to_the_longest_waiter_not_back_to_its_holder() -> None:
    """A window released its slot and asked again at once for its next page, and took it back
    before a page that had waited for seconds (the semaphore's waiters poll): one export's
    windows kept every slot of a host while another tenant's page waited past its deadline."""
    slots = FairSlots(1)
    the_longest_waiter_wins(slots, slots, lambda: bool(slots._waiting))
    assert slots.acquire(threading.Event(), until=time.monotonic() + 1)


def test_a_waiter_that_gives_up_as_it_is_handed_a_slot_passes_it_on() -> None:
    slots = FairSlots(1)
    stop = threading.Event()
    assert slots.acquire(stop)
    calls = [0]

    def abort() -> bool:  # the slot arrives between two looks: it is given up all the same
        calls[0] += 1
        if calls[0] == 1:
            slots.release()
            return True
        return False

    assert not slots.acquire(stop, abort=abort)
    assert slots.acquire(stop, until=time.monotonic() + 0.5), "the slot was lost"
    assert not slots.acquire(stop, until=time.monotonic() + 0.2), "a slot was made up"


def test_a_hosts_slots_go_to_the_longest_waiter_through_the_clients() -> None:
    """The same, as exports take them: a host of the process's clients (a semaphore there let
    a window that released a slot take it back before a page waiting for seconds)."""
    clients = Clients(UpstreamConfig(host_concurrency=1, trust_env=False))
    try:
        first, second = clients.host("http://feed"), clients.host("http://feed:80/")
        (slots,) = clients._slots.values()  # one origin, however spelled
        the_longest_waiter_wins(first, second, lambda: bool(slots._waiting))
    finally:
        clients.close()


def an_export_holding_none_is_served_before_one_holding_all(
    windows: Any, other: Any, waiting: Callable[[], int]
) -> None:
    """``windows`` (one export) holds both slots of a host and two of its windows wait for
    their next pages; ``other`` (another export, holding none) asks after them. The first slot
    freed is ``other``'s: first come, first served alone gave it to the first window in line,
    so a host's slots all went to one export's windows while another tenant's page waited
    behind every one of them (its deadline counting)."""
    stop = threading.Event()
    assert windows.acquire(stop) and windows.acquire(stop)
    got: list[str] = []
    lock = threading.Lock()

    def ask(who: str, slots: Any) -> None:
        if slots.acquire(stop, until=time.monotonic() + 5):
            with lock:
                got.append(who)

    askers = []
    for who, slots, queued in (("window", windows, 1), ("window", windows, 2), ("other", other, 3)):
        asker = threading.Thread(target=ask, args=(who, slots))
        asker.start()
        askers.append(asker)
        deadline = time.monotonic() + 5
        while waiting() < queued:  # in line in this order
            assert time.monotonic() < deadline
            time.sleep(0.01)
    windows.release()
    deadline = time.monotonic() + 5
    while not got:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert got == ["other"], "the export holding every slot was served first"
    windows.release()
    other.release()  # each freed slot to a window in line: both served, in turn
    for asker in askers:
        asker.join(5)
    assert got == ["other", "window", "window"]
    windows.release()
    windows.release()


def test_a_freed_slot_goes_to_the_export_holding_fewest_then_to_the_longest_waiter() -> None:
    slots = FairSlots(2)
    windows, other = object(), object()

    class Owned:
        def __init__(self, owner: object) -> None:
            self.owner = owner

        def acquire(self, stop: threading.Event, until: float | None = None) -> bool:
            return slots.acquire(stop, until=until, owner=self.owner)

        def release(self) -> None:
            slots.release(self.owner)

    an_export_holding_none_is_served_before_one_holding_all(
        Owned(windows), Owned(other), lambda: len(slots._waiting)
    )
    assert slots._free == 2 and not slots._held


def test_each_export_is_its_own_claimant_of_a_hosts_slots() -> None:
    """The same through the clients: each export's target takes a host of its own."""
    clients = Clients(UpstreamConfig(host_concurrency=2, trust_env=False))
    try:
        windows, other = clients.host("http://feed"), clients.host("http://feed:80")
        (slots,) = clients._slots.values()
        an_export_holding_none_is_served_before_one_holding_all(
            windows, other, lambda: len(slots._waiting)
        )
    finally:
        clients.close()
