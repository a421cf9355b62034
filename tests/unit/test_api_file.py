"""``GET .../file?token=``: the download token's verdicts, the headers, and resumable ranges."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrypoints.api import Unsatisfiable, byte_range
from reportcore import tokens
from reportcore.testing import InMemoryFileStore
from tests.containers import replace

from .api_support import (
    DOWNLOAD_SECRET,
    JOBS,
    TENANT,
    ApiWorld,
    api_world,
    auth,
    feed_record,
    mint,
    new_id,
)

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world() as w:
        yield w


class Download:
    """A succeeded job, its URL and the bytes the store holds for it."""

    def __init__(self, world: ApiWorld, rows: int = 40) -> None:
        self.job = world.succeeded_job(rows)
        self.url = world.download_url(self.job["id"])
        self.path, _, query = self.url.partition("?")
        self.token = query.removeprefix("token=")
        stored = world.jobs.get(self.job["id"])
        assert stored is not None and stored.file_path is not None
        self.location = stored.file_path
        self.content = world.store.files[self.location]


def _token(
    job_id: str, tenant: str = TENANT, exp: int = 2**31 - 1, secret: str = DOWNLOAD_SECRET
) -> str:
    claims = tokens.DownloadClaims(tenant_id=tenant, job_id=job_id, exp=exp)
    return tokens.sign(secret.encode(), claims)


def test_the_file_is_served_whole_with_its_headers(world: ApiWorld) -> None:
    dl = Download(world)
    answer = world.client.get(dl.url)
    assert answer.status_code == 200
    assert answer.content == dl.content
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-length"] == str(len(dl.content))
    assert answer.headers["content-disposition"] == 'attachment; filename="feed_intake_export.csv"'
    assert answer.headers["etag"] == f'"{hashlib.sha256(dl.content).hexdigest()}"'
    assert answer.headers["etag"] == f'"{dl.job["sha256"]}"'
    assert answer.headers["accept-ranges"] == "bytes"


def test_an_ndjson_file_is_served_as_ndjson(world: ApiWorld) -> None:
    job = world.create({"job_type": "FEED_INTAKE_EXPORT", "format": "json"})
    world.run_queued([feed_record(i) for i in range(5)])
    answer = world.client.get(world.download_url(job["id"]))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert answer.headers["content-disposition"].endswith('filename="feed_intake_export.json"')
    # NDJSON lines end at LF only, as its clients split them
    lines = answer.content.split(b"\n")
    assert lines.pop() == b"" and len(lines) == 5


def test_head_answers_the_headers_without_the_file(world: ApiWorld) -> None:
    dl = Download(world)
    answer = world.client.head(dl.url)
    assert answer.status_code == 200
    assert answer.content == b""
    assert answer.headers["content-length"] == str(len(dl.content))
    assert answer.headers["etag"] == f'"{dl.job["sha256"]}"'


@pytest.mark.parametrize(
    "token",
    [None, "", "nodot", "a.b.c", "!!!.???", "eyJ0ZW5hbnRfaWQiOiJ4In0.AAAA", "x" * 5000],
)
def test_a_missing_or_malformed_token_is_401(world: ApiWorld, token: str | None) -> None:
    dl = Download(world, rows=3)
    params = {} if token is None else {"token": token}
    answer = world.client.get(dl.path, params=params)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHORIZED"


def test_a_forged_token_is_401(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    forged = _token(dl.job["id"], secret="not-the-download-secret-at-all-0123456789")
    answer = world.client.get(dl.path, params={"token": forged})
    assert answer.status_code == 401


def test_a_token_with_a_changed_payload_is_401(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    genuine_for_other = _token(new_id())
    tampered = genuine_for_other.split(".")[0] + "." + dl.token.split(".")[1]
    answer = world.client.get(dl.path, params={"token": tampered})
    assert answer.status_code == 401


def test_an_expired_token_is_401(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    world.clock.advance(world.policy.download_ttl_sec + 1)
    answer = world.client.get(dl.url)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHORIZED"


def test_a_token_of_another_job_is_403(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    other = world.succeeded_job(rows=2)
    answer = world.client.get(f"{JOBS}/{other['id']}/file", params={"token": dl.token})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "FORBIDDEN"


def test_a_genuine_token_for_a_job_without_a_file_is_404(world: ApiWorld) -> None:
    queued = world.create()
    answer = world.client.get(f"{JOBS}/{queued['id']}/file", params={"token": _token(queued["id"])})
    assert answer.status_code == 404
    unknown = new_id()
    answer = world.client.get(f"{JOBS}/{unknown}/file", params={"token": _token(unknown)})
    assert answer.status_code == 404


def test_a_file_gone_from_the_store_is_404(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    world.store.delete(dl.location)
    answer = world.client.get(dl.url)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"


def test_a_file_deleted_between_its_size_and_its_read_is_404_in_the_envelope(
    world: ApiWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention may delete it between the two: the read fails at its call, before any byte
    (the store's contract), which was a 500 and an "unhandled error" traceback."""
    dl = Download(world, rows=3)
    store = world.store
    sized = store.size

    def size_then_gone(location: str) -> int | None:
        size = sized(location)
        store.delete(location)
        return size

    monkeypatch.setattr(store, "size", size_then_gone)
    answer = world.client.get(dl.url)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"


def test_a_file_past_retention_is_410(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    world.jobs.mark_file_deleted(dl.job["id"], world.clock.now())
    answer = world.client.get(dl.url)
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "REPORT_EXPIRED"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=100-", 100, None), ("bytes=-50", -50, None), ("bytes=5-5", 5, 5)],
)
def test_a_range_is_answered_with_206_and_exactly_those_bytes(
    world: ApiWorld, header: str, start: int, end: int | None
) -> None:
    dl = Download(world)
    size = len(dl.content)
    answer = world.client.get(dl.url, headers={"Range": header})
    want = dl.content[start : None if end is None else end + 1]
    assert answer.status_code == 206
    assert answer.content == want
    first = start if start >= 0 else size + start
    assert answer.headers["content-range"] == f"bytes {first}-{first + len(want) - 1}/{size}"
    assert answer.headers["content-length"] == str(len(want))


def test_a_broken_download_resumes_with_the_exact_tail(world: ApiWorld) -> None:
    dl = Download(world, rows=200)
    broken_at = len(dl.content) // 3
    head = world.client.get(dl.url).content[:broken_at]  # the connection dropped here
    etag = f'"{dl.job["sha256"]}"'
    tail = world.client.get(dl.url, headers={"Range": f"bytes={broken_at}-", "If-Range": etag})
    assert tail.status_code == 206
    assert head + tail.content == dl.content
    assert hashlib.sha256(head + tail.content).hexdigest() == dl.job["sha256"]


def test_a_range_past_the_end_is_416_with_the_size(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    size = len(dl.content)
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        answer = world.client.get(dl.url, headers={"Range": header})
        assert answer.status_code == 416, header
        assert answer.headers["content-range"] == f"bytes */{size}"
        assert answer.json()["error"]["code"] == "VALIDATION_ERROR"


def test_an_if_range_of_another_version_gets_the_whole_file(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    answer = world.client.get(dl.url, headers={"Range": "bytes=10-", "If-Range": '"0000"'})
    assert answer.status_code == 200
    assert answer.content == dl.content


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",
        "items=0-5",
        "bytes=9-3",
        "bytes=abc",
        "bytes=-",
        "garbage",
        # a space inside a position: "1 0" was read as 10, a range nobody asked for
        "bytes=1 0-20",
        "bytes=0-2 0",
        "bytes=- 1 2",
    ],
)
def test_a_range_we_do_not_serve_is_ignored_for_the_whole_file(
    world: ApiWorld, header: str
) -> None:
    dl = Download(world, rows=3)
    answer = world.client.get(dl.url, headers={"Range": header})
    assert answer.status_code == 200
    assert answer.content == dl.content


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("BYTES=0-1", (0, 1)),  # the unit is case-insensitive (RFC 9110 14.1)
        ("Bytes=-2", (8, 9)),
        ("bytes=0-" + "9" * 20, (0, 9)),  # an end past the file is clamped, however long
        ("bytes=3-" + "9" * 5000, (3, 9)),  # past int()'s 4,300 digits: no 500 either
        ("bytes=-" + "9" * 25, (0, 9)),  # more than the file: all of it
        (" bytes = 2 - 5 ", (2, 5)),  # spaces around the positions, never inside one
    ],
)
def test_a_range_in_another_case_or_with_a_huge_end_is_served_as_rfc_9110_says(
    header: str, want: tuple[int, int]
) -> None:
    assert byte_range(header, None, None, 10) == want


def test_a_range_starting_past_any_file_is_unsatisfiable() -> None:
    with pytest.raises(Unsatisfiable):
        byte_range("bytes=" + "9" * 30 + "-", None, None, 10)


@settings(max_examples=300)
@given(
    size=st.integers(min_value=0, max_value=50),
    first=st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
    last=st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
)
def test_byte_range_selects_the_bytes_rfc_9110_says(
    size: int, first: int | None, last: int | None
) -> None:
    content = bytes(range(size))
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    # an independent reading of RFC 9110 14.1.2 on a small file
    expected: Any
    both = first is not None and last is not None
    if (first is None and last is None) or (both and last < first):  # type: ignore[operator]
        expected = content
    elif first is None:
        assert last is not None
        expected = "416" if last == 0 or size == 0 else content[-last:]
    elif first >= size:
        expected = "416"
    else:
        expected = content[first : None if last is None else last + 1]
    try:
        chosen = byte_range(header, None, None, size)
    except Unsatisfiable:
        assert expected == "416"
        return
    got = content if chosen is None else content[chosen[0] : chosen[1] + 1]
    assert got == expected


def test_random_range_headers_never_get_a_500() -> None:
    with api_world() as world:
        dl = Download(world, rows=3)

        @settings(max_examples=100)
        @given(header=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
        def check(header: str) -> None:
            answer = world.client.get(dl.url, headers={"Range": header, "If-Range": header})
            assert answer.status_code in (200, 206, 416), answer.text

        check()


def test_the_user_token_plays_no_part_in_a_file_download(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    answer = world.client.get(dl.url, headers=auth(mint({"tenant_id": "tenant-b"})))
    assert answer.status_code == 200


class LargeStore(InMemoryFileStore):
    """Serves one big file made up on the fly, counting the chunks it has produced."""

    CHUNK = 64 * 1024

    def __init__(self, location: str, size: int) -> None:
        super().__init__()
        self.location = location
        self.total = size
        self.produced = 0

    def size(self, location: str) -> int | None:
        return self.total if location == self.location else None

    def read(self, location: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        stop = self.total if end is None else end + 1
        for offset in range(start, stop, self.CHUNK):
            self.produced += 1
            yield b"x" * min(self.CHUNK, stop - offset)


def test_a_large_file_is_streamed_chunk_by_chunk_never_held_whole(world: ApiWorld) -> None:
    dl = Download(world, rows=3)
    store = LargeStore(dl.location, size=32 * 1024 * 1024)
    replace(world.container, "store", store)
    produced_at_each_send: list[int] = []
    received = 0
    status = 0

    requested = False
    finished = anyio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()  # as a server does: the client goes once the body is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal received, status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            if message.get("body"):
                received += len(message["body"])
                produced_at_each_send.append(store.produced)
            if not message.get("more_body"):
                finished.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": dl.path,
        "raw_path": dl.path.encode(),
        "root_path": "",
        "query_string": f"token={dl.token}".encode(),
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    anyio.run(world.client.app, scope, receive, send)
    assert status == 200
    assert received == store.total
    # each chunk went out before the next was read: never more than one ahead
    assert all(p <= i + 2 for i, p in enumerate(produced_at_each_send))
    assert len(produced_at_each_send) == store.total // LargeStore.CHUNK


def test_an_old_service_token_with_exp_in_milliseconds_downloads_and_an_absurd_exp_is_a_401(
    world: ApiWorld,
) -> None:
    from tests.unit.test_tokens import old_service_token

    job = world.succeeded_job(rows=2)
    now = int(world.clock.now().timestamp())
    for exp, status in (((now + 60) * 1000, 200), (2**63 - 1, 401), (2**53, 401)):
        claims = {"tenant_id": TENANT, "job_id": job["id"], "exp": exp}
        token = old_service_token(DOWNLOAD_SECRET.encode(), claims)
        answer = world.client.get(f"{JOBS}/{job['id']}/file", params={"token": token})
        assert answer.status_code == status, (exp, answer.text)
        if status == 401:
            assert answer.json()["error"]["code"] == "UNAUTHORIZED"
