"""The upstreams through the proxy the environment names (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, less ``NO_PROXY``), as the service's clients are made: httpx applies those only
to a transport it makes itself, so an origin the environment sends through a proxy is asked
on httpx's own transport, and any other on the default one. A real forward proxy for http://
and a CONNECT tunnel to a TLS upstream for https://."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.upstream.client import Clients
from adapters.upstream.config import UpstreamConfig
from adapters.upstream.transport import StdlibTransport

from .upstream_support import Authority, TcpServer, read_request_head

_NAMES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _upstream(conn: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set() and read_request_head(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ndirect")


class _Proxy:
    """A proxy that records each request's line: an absolute-form GET is answered itself
    (``proxied``), a CONNECT is tunnelled to the host it names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._tcp = TcpServer(self._one)
        self.url = self._tcp.url.removesuffix("/page")

    def _one(self, conn: socket.socket, stop: threading.Event) -> None:
        head = read_request_head(conn)
        if not head:
            return
        line = head.split(b"\r\n", 1)[0].decode()
        self.lines.append(line)
        method, target, _ = line.split(" ")
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\n")
            conn.sendall(b"proxied")
            return
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as far:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            threading.Thread(target=_relay, args=(far, conn), daemon=True).start()
            _relay(conn, far)

    def close(self) -> None:
        self._tcp.close()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    for name in _NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    server = _Proxy()
    yield server
    server.close()


@pytest.fixture
def upstream() -> Iterator[TcpServer]:
    server = TcpServer(_upstream)
    yield server
    server.close()


def _ask(url: str, **config: object) -> tuple[bytes, bool]:
    """The answer through the service's client of ``url``'s origin, and whether that client
    runs on the default transport."""
    clients = Clients(UpstreamConfig(**config))  # type: ignore[arg-type]
    try:
        client = clients.client(url)
        default = isinstance(client._transport, StdlibTransport)
        return client.get(url).content, default
    finally:
        clients.close()


@pytest.mark.parametrize("transport", ["stdlib", "httpx"])
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_an_upstream_the_environment_sends_through_a_proxy_is_asked_through_it(
    variable: str,
    transport: str,
    proxy: _Proxy,
    upstream: TcpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, proxy.url.removeprefix("http://"))  # no scheme: http://
    assert _ask(upstream.url, transport=transport) == (b"proxied", False)
    assert proxy.lines == [f"GET {upstream.url} HTTP/1.1"]


def test_an_https_upstream_is_reached_through_the_proxys_tunnel_with_its_certificate_checked(
    proxy: _Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    authority = Authority(tmp_path)
    server = TcpServer(_upstream, authority.server())
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        assert _ask(server.url, ca_bundle=authority.bundle) == (b"direct", False)
        host_port = server.url.removeprefix("https://").removesuffix("/page")
        assert proxy.lines == [f"CONNECT {host_port} HTTP/1.1"]
        with pytest.raises(httpx.ConnectError):  # the tunnel does not skip the check
            _ask(server.url, ca_bundle=Authority(tmp_path / "other", "another CA").bundle)
    finally:
        server.close()


@pytest.mark.parametrize("transport", ["stdlib", "httpx"])
@pytest.mark.parametrize(
    "setting",
    [
        "NO_PROXY=127.0.0.1",
        "no_proxy=*",
        "NO_PROXY=.localhost",  # urllib's reading: the domain itself too (httpx's: not)
        "HTTPS_PROXY only",
        "trust_env=false",
    ],
)
def test_an_upstream_no_proxy_is_for_is_asked_directly_on_the_configured_transport(
    setting: str,
    transport: str,
    proxy: _Proxy,
    upstream: TcpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One rule whichever transport: httpx applied its own reading of NO_PROXY to its
    transport, which differed from the default transport's for a domain with a leading dot."""
    config: dict[str, object] = {"transport": transport}
    url = upstream.url
    if setting == "NO_PROXY=.localhost":
        url = url.replace("127.0.0.1", "localhost")
    if setting == "HTTPS_PROXY only":  # the upstream is http://
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    else:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
    if setting == "trust_env=false":
        config["trust_env"] = False
    elif "=" in setting and setting.split("=")[0].lower() == "no_proxy":
        name, value = setting.split("=")
        monkeypatch.setenv(name, value)
    assert _ask(url, **config) == (b"direct", transport == "stdlib")
    assert proxy.lines == []
