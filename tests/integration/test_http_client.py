"""The upstream sources' HTTP client against real sockets: servers on 127.0.0.1 that answer
as HTTP/1.1 servers do, and as broken ones do (silent, cut short, closing, compressing
unasked), and a real TLS server."""

from __future__ import annotations

import gzip
import socket
import ssl
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.http_client import BadEncoding, HttpClient, NoAnswer

Script = Callable[[socket.socket, bytes, int], bool]  # (conn, request head, n) -> keep going?
Client = Callable[..., HttpClient]


def ok(body: bytes = b"{}", *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Server:
    """Accepts connections and answers each request head read from them by ``script``;
    records the heads and how many connections it accepted."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.heads: list[bytes] = []
        self.connections = 0
        self.closed_by_peer = threading.Event()
        self.hung_up = threading.Semaphore(0)  # released each time it closes a connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        self.closed_by_peer.set()
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                if not self.script(conn, head, len(self.heads)):
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()
            self.hung_up.release()

    def close(self) -> None:
        self._listener.close()


Serve = Callable[..., "Server"]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[Server] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> Server:
        servers.append(Server(script, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[Client]:
    """Clients made by ``client(**options)`` (timeout 5 s unless said), closed afterwards."""
    made: list[HttpClient] = []

    def make(**options: object) -> HttpClient:
        made.append(HttpClient(**({"timeout": 5.0} | options)))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for one in made:
        one.close()


def answering(*answers: bytes) -> Script:
    """Answers the n-th request with ``answers[n-1]`` (the last one over and over)."""

    def script(conn: socket.socket, head: bytes, n: int) -> bool:
        conn.sendall(answers[min(n, len(answers)) - 1])
        return True

    return script


def test_a_get_sends_the_target_under_the_base_path_with_the_headers_and_host(
    serve, client
) -> None:
    server = serve(answering(ok(b'{"items": []}', "x-extra: 1")))
    with_prefix = client()
    answer = with_prefix.get(
        server.url + "/gateway/", "/api/v1/x?a=1&b=%2F", {"authorization": "t"}
    )
    assert answer.status == 200 and answer.body == b'{"items": []}'
    assert answer.headers.get("X-Extra") == "1"
    request_line, *headers = server.heads[0].decode().split("\r\n")
    assert request_line == "GET /gateway/api/v1/x?a=1&b=%2F HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in headers
    assert "authorization: t" in headers


def test_every_status_is_an_answer_with_its_body(serve: Serve, client: Client) -> None:
    answer_503 = b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\ncontent-length: 4\r\n\r\nbusy"
    server = serve(answering(answer_503))
    answer = client().get(server.url, "/", {})
    assert (answer.status, answer.headers.get("retry-after"), answer.body) == (503, "7", b"busy")


def test_requests_reuse_one_keep_alive_connection(serve: Serve, client: Client) -> None:
    server = serve(answering(ok()))
    one = client()
    for _ in range(5):
        assert one.get(server.url, "/", {}).status == 200
    assert server.connections == 1
    one.close()
    assert server.closed_by_peer.wait(5), "close() closes the idle connection"


def test_an_idle_connection_the_server_closed_is_not_reused(serve: Serve, client: Client) -> None:
    def once_per_connection(conn: socket.socket, head: bytes, n: int) -> bool:
        conn.sendall(ok())  # says nothing of closing, then closes: a keep-alive timeout
        return False

    server = serve(once_per_connection)
    one = client()
    for _ in range(3):
        assert one.get(server.url, "/", {}).status == 200
        assert server.hung_up.acquire(timeout=5)
    assert server.connections == 3


def test_an_answer_that_says_connection_close_is_read_whole_and_its_connection_dropped(
    serve, client
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    server = serve(answering(chunked))
    one = client()
    assert one.get(server.url, "/", {}).body == b"hello world"
    assert one.get(server.url, "/", {}).body == b"hello world"
    assert server.connections == 2


def test_a_refused_connection_is_no_answer_that_says_so(client: Client) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with pytest.raises(NoAnswer) as failure:
        client().get(f"http://127.0.0.1:{port}", "/", {})
    assert failure.value.reason == "connect failed: ConnectionRefusedError"
    assert not failure.value.timed_out


def test_a_server_that_never_answers_is_a_timeout(serve: Serve, client: Client) -> None:
    server = serve(lambda conn, head, n: threading.Event().wait(5) and False)
    with pytest.raises(NoAnswer) as failure:
        client(timeout=0.2).get(server.url, "/", {})
    assert failure.value.timed_out and failure.value.reason == "read timed out"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"", "read failed: RemoteDisconnected"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ntoo short", "read failed: IncompleteRead"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "read failed: BadStatusLine"),
    ],
)
def test_a_dropped_or_broken_answer_is_no_answer(
    serve: Serve, client: Client, answer: bytes, reason: str
) -> None:
    def script(conn: socket.socket, head: bytes, n: int) -> bool:
        conn.sendall(answer)
        return False  # and close

    server = serve(script)
    with pytest.raises(NoAnswer) as failure:
        client().get(server.url, "/", {})
    assert failure.value.reason == reason and not failure.value.timed_out


def test_a_header_that_cannot_be_sent_is_no_answer_that_does_not_echo_it(
    serve: Serve, client: Client
) -> None:
    server = serve(answering(ok()))
    with pytest.raises(NoAnswer) as failure:
        client().get(server.url, "/", {"authorization": "Bearer secret\r\nx-injected: 1"})
    assert failure.value.reason == "send failed: a header or the target is not sendable"
    assert "secret" not in repr(failure.value) and failure.value.__cause__ is None
    assert server.heads == []


def test_a_body_compressed_unasked_is_decoded_or_refused(serve: Serve, client: Client) -> None:
    data = b'{"items": []}'
    deflated = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = deflated.compress(data) + deflated.flush()
    server = serve(
        answering(
            ok(gzip.compress(data), "content-encoding: gzip"),
            ok(zlib.compress(data), "content-encoding: deflate"),
            ok(raw_deflate, "content-encoding: deflate"),
            ok(b"not gzip", "content-encoding: gzip"),
            ok(data, "content-encoding: br"),
        )
    )
    one = client()
    assert [one.get(server.url, "/", {}).body for _ in range(3)] == [data] * 3
    with pytest.raises(BadEncoding, match="gzip body does not decompress"):
        one.get(server.url, "/", {})
    with pytest.raises(BadEncoding, match="content encoding 'br', which was not asked for"):
        one.get(server.url, "/", {})


def test_threads_share_a_client_each_request_on_a_connection_of_its_own(
    serve: Serve, client: Client
) -> None:
    def slow(conn: socket.socket, head: bytes, n: int) -> bool:
        threading.Event().wait(0.01)
        conn.sendall(ok(head.split(b" ")[1]))
        return True

    server = serve(slow)
    shared = client(max_idle=2)
    results: dict[int, list[bytes]] = {}

    def ask(t: int) -> None:
        results[t] = [shared.get(server.url, f"/{t}/{k}", {}).body for k in range(20)]

    threads = [threading.Thread(target=ask, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {t: [f"/{t}/{k}".encode() for k in range(20)] for t in range(6)}
    assert 1 <= server.connections <= 6 * 20
    assert len(shared._idle[("http", "127.0.0.1", server.port)]) <= 2


def test_a_base_url_that_is_not_http_is_refused(client: Client) -> None:
    with pytest.raises(ValueError, match="not an http"):
        client().get("ftp://feed.example", "/", {})


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_is_verified_against_the_trust_store(
    serve: Serve, client: Client, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = serve(answering(ok(b"secure")), tls=tls)
    trusting = client(ssl_context=ssl.create_default_context(cafile=str(cert)))
    assert trusting.get(server.url, "/", {}).body == b"secure"
    with pytest.raises(NoAnswer) as failure:
        client().get(server.url, "/", {})  # the system's store: not trusted
    assert failure.value.reason == "connect failed: SSLCertVerificationError"
