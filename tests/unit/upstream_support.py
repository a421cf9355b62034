"""HTTP for the record source's unit tests: a handler plays the upstream service behind
``httpx.MockTransport``, under the same ``httpx.Client`` (hooks, headers) the service uses.

Handlers take an ``httpx.Request`` and return an ``httpx.Response``; one that raises
``httpx.ConnectError`` or ``httpx.ReadTimeout`` plays a request that got no answer.

The transport's own tests need a real socket instead: :class:`TcpServer`, over TLS too, with
certificates of an :class:`Authority` made for the test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Handler = Callable[[httpx.Request], httpx.Response]


def transport(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


class TcpServer:
    """A TCP server on 127.0.0.1 that hands each connection to ``handle(conn, stop)`` on a
    thread of its own (``stop`` is set by :meth:`close`) and counts the connections; with
    ``tls``, each connection's TLS handshake is made first (one that fails ends it)."""

    def __init__(
        self,
        handle: Callable[[socket.socket, threading.Event], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._handle = handle
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}/page"
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                conn, _ = self._listener.accept()
                self.connections += 1  # one accepting thread: no lock needed
                threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # ssl.SSLError is one
            if self._tls is not None:
                conn.settimeout(5)  # a client that never finishes its handshake
                conn = self._tls.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
            with conn:
                self._handle(conn, self._stop)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def read_request_head(conn: socket.socket) -> bytes:
    """Read a request's head and return it (and what came with it); ``b""`` (false) if the
    client left before it was whole."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return b""
        head += chunk
    return head


def resolving(monkeypatch: pytest.MonkeyPatch, name: str, port: int, count: int = 1) -> None:
    """``name`` resolves (for this test) to 127.0.0.1:``port``, ``count`` times over."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == name:
            return real("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM) * count
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@contextlib.contextmanager
def unanswered_addresses(
    count: int, monkeypatch: pytest.MonkeyPatch, name: str = "unanswered.test"
) -> Iterator[str]:
    """``http://<name>:<port>``, a name resolving to ``count`` addresses whose connects hang:
    a listener that never accepts, its backlog full, so the kernel drops the next handshakes
    without a word."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    filling = []
    for _ in range(8):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        filling.append(sock)
    time.sleep(0.1)
    resolving(monkeypatch, name, port, count)
    try:
        yield f"http://{name}:{port}"
    finally:
        for sock in filling:
            sock.close()
        listener.close()


class Authority:
    """A certificate authority made for one test (an EC key, valid from an hour ago for a
    day: whatever the day the test runs), and the certificates it issues, as PEM files in
    ``folder``."""

    def __init__(self, folder: Path, name: str = "test upstream CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self._valid = (now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
        public = self._key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._valid[0])
            .not_valid_after(self._valid[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.bundle = self._write(f"{name}.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, name: str, hosts: tuple[str, ...] = (), client: bool = False
    ) -> tuple[str, str]:
        """A certificate for ``hosts`` (IP addresses or names) or, ``client``, for a client;
        the paths of its PEM file and of its key's."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        purpose = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._valid[0])
            .not_valid_after(self._valid[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return (
            self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(f"{name}.key", key_pem),
        )

    def server(
        self, hosts: tuple[str, ...] = ("127.0.0.1",), clients: bool = False
    ) -> ssl.SSLContext:
        """A server's TLS context with a certificate of this authority for ``hosts``; with
        ``clients``, one that asks each client for a certificate of this authority too."""
        cert, key = self.issue("server-" + "-".join(hosts), hosts)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if clients:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.bundle)
        return context

    def _write(self, name: str, data: bytes) -> str:
        path = self.folder / name.replace(" ", "-")
        path.write_bytes(data)
        return str(path)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
