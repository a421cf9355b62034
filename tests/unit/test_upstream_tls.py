"""The upstreams over TLS, as the service's clients are made (:class:`Clients` from an
:class:`UpstreamConfig`) on either transport: the server's certificate is checked against the
configured CA bundle and the host asked, and a client certificate is shown when one is
configured (mTLS); a failure says which (the stdlib transport once called a refused
certificate "a header or the target is not sendable": ``ssl.SSLCertVerificationError`` is a
``ValueError`` too). Real TLS on a real socket, with an authority made for each test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.upstream.client import Clients, TlsFilesError
from adapters.upstream.config import UpstreamConfig
from reportcore.errors import UpstreamUnavailable

from .upstream_support import Authority, TcpServer, read_request_head

TRANSPORTS = ["stdlib", "httpx"]


def _answer(conn: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set() and read_request_head(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


@pytest.fixture
def serve() -> Iterator[list[TcpServer]]:
    servers: list[TcpServer] = []
    yield servers
    for server in servers:
        server.close()


def _get(config: UpstreamConfig, url: str) -> httpx.Response:
    clients = Clients(config)
    try:
        return clients.client(url).get(url)
    finally:
        clients.close()


def _config(transport: str, **kwargs: str) -> UpstreamConfig:
    # trust_env off: SSL_CERT_FILE or a proxy on the machine running the tests must not
    # decide them
    return UpstreamConfig(transport=transport, trust_env=False, **kwargs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_upstream_whose_certificate_the_ca_bundle_signs_is_asked(
    transport: str, authority: Authority, serve: list[TcpServer]
) -> None:
    server = TcpServer(_answer, authority.server())
    serve.append(server)
    response = _get(_config(transport, ca_bundle=authority.bundle), server.url)
    assert (response.status_code, response.content) == (200, b"ok")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_a_ca_bundle_the_environments_ssl_cert_file_is_trusted(
    transport: str, authority: Authority, serve: list[TcpServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = TcpServer(_answer, authority.server())
    serve.append(server)
    monkeypatch.setenv("SSL_CERT_FILE", authority.bundle)
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    response = _get(UpstreamConfig(transport=transport, trust_env=True), server.url)
    assert (response.status_code, response.content) == (200, b"ok")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("trusted", ["another CA's bundle", "the default trust store"])
def test_an_upstream_whose_certificate_nobody_trusted_signs_is_refused(
    transport: str, trusted: str, authority: Authority, tmp_path: Path, serve: list[TcpServer]
) -> None:
    server = TcpServer(_answer, authority.server())
    serve.append(server)
    other = Authority(tmp_path / "other", "another CA") if "another" in trusted else None
    config = _config(transport, **({"ca_bundle": other.bundle} if other else {}))
    with pytest.raises(httpx.ConnectError, match="unable to get local issuer certificate"):
        _get(config, server.url)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_certificate_for_another_host_is_refused(
    transport: str, authority: Authority, serve: list[TcpServer]
) -> None:
    server = TcpServer(_answer, authority.server(hosts=("feed.other.example",)))
    serve.append(server)
    with pytest.raises(httpx.ConnectError, match="mismatch, certificate is not valid for"):
        _get(_config(transport, ca_bundle=authority.bundle), server.url)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_upstream_that_asks_for_a_client_certificate_gets_the_one_configured(
    transport: str, authority: Authority, serve: list[TcpServer]
) -> None:
    server = TcpServer(_answer, authority.server(clients=True))
    serve.append(server)
    cert, key = authority.issue("reportsvc", client=True)
    config = _config(transport, ca_bundle=authority.bundle, client_cert=cert, client_key=key)
    response = _get(config, server.url)
    assert (response.status_code, response.content) == (200, b"ok")
    # without one the server ends the connection, its alert read by the client (TLS 1.3: at
    # its first read), or not if the close came first
    ended = r"(?i)certificate.required|ended the TLS connection|EOF occurred"
    with pytest.raises(httpx.TransportError, match=ended):
        _get(_config(transport, ca_bundle=authority.bundle), server.url)


def test_a_ca_bundle_that_cannot_be_loaded_fails_the_export_upstream_unavailable_naming_it(
    authority: Authority, serve: list[TcpServer], tmp_path: Path
) -> None:
    """Should the bundle go missing after the start (checked there, reportsvc's exit 2), an
    export fails as its upstream cannot be reached, saying why: never STORAGE_FAILED (a
    missing file is an OSError, as the export file's own failures are); and once the file is
    back, the next export loads it."""
    server = TcpServer(_answer, authority.server())
    serve.append(server)
    bundle = tmp_path / "moved.pem"
    clients = Clients(_config("stdlib", ca_bundle=str(bundle)))
    try:
        with pytest.raises(TlsFilesError) as failed:
            clients.client(server.url)
        assert isinstance(failed.value, UpstreamUnavailable)
        assert failed.value.code == "UPSTREAM_UNAVAILABLE"
        assert failed.value.message == (
            f"the upstreams' TLS CA bundle {bundle} cannot be loaded: No such file or directory"
        )
        bundle.write_bytes(Path(authority.bundle).read_bytes())
        assert clients.client(server.url).get(server.url).content == b"ok"
    finally:
        clients.close()
