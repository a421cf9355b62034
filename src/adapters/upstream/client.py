"""The httpx clients of the upstream services: one long-lived ``httpx.Client`` per origin,
shared by every export of the process, and a cap on requests in flight to each host.

Every client has the configured timeout, connection limits of the host cap, ``trust_env``
(proxies and ``SSL_CERT_FILE`` from the environment, as httpx reads them: an origin the
environment sends through a proxy is asked through httpx's own transport, since httpx applies
the environment's proxies only to the transports it makes itself), an optional CA
bundle and client certificate (mTLS), a ``User-Agent`` naming the service and its version,
``Accept-Encoding: gzip``, and event hooks that log and count every retry (the retry loop
marks a request's attempt in its extensions; see :mod:`adapters.upstream.retry`) and
count every request and its time to an answer in the Prometheus metrics (:mod:`adapters.metrics`).

The clients keep no cookies (:class:`StatelessClient`): one client serves every tenant's
exports, so a ``Set-Cookie`` answered during one tenant's export must never ride along on
another's requests; the upstream APIs authenticate by bearer token and set none.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx

from adapters import metrics
from reportcore.errors import UpstreamUnavailable
from reportsvc import DISTRIBUTION, __version__

from .config import UpstreamConfig
from .slots import FairSlots
from .transport import StdlibTransport

log = logging.getLogger("reportsvc.upstream")

ATTEMPT = "farmiq.attempt"  # request extension: 0 for a first try, n for the n-th retry
UPSTREAM = "farmiq.upstream"  # request extension: the upstream's name, the metrics' label
_SENT = "farmiq.sent"  # request extension: perf_counter() when the request hook saw it


def user_agent() -> str:
    """``farmiq-reportsvc/<version>``: what upstream logs name us by (the service's one
    version, :data:`reportsvc.__version__`)."""
    return f"{DISTRIBUTION}/{__version__}"


class TlsFilesError(UpstreamUnavailable):
    """The CA bundle, or the client certificate and its key, cannot be loaded (``field``:
    ``ca_bundle``, ``client_cert``, or ``None`` for the environment's ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``). An export fails ``UPSTREAM_UNAVAILABLE`` saying so: a missing file is
    an ``OSError``, which would otherwise read as the export file's own failure."""

    def __init__(self, field: str | None, what: str, exc: BaseException) -> None:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        super().__init__(f"the upstreams' TLS {what} cannot be loaded: {reason}")
        self.field = field


def ssl_context(config: UpstreamConfig) -> ssl.SSLContext:
    """Trust the CA bundle when one is given, else what httpx trusts (``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` under ``trust_env``, else certifi); present the client cert if given.
    A file that cannot be loaded raises :class:`TlsFilesError`."""
    try:
        if config.ca_bundle:
            context = ssl.create_default_context(cafile=config.ca_bundle)
        else:
            context = httpx.create_ssl_context(trust_env=config.trust_env)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        field, what = (
            ("ca_bundle", f"CA bundle {config.ca_bundle}")
            if config.ca_bundle
            else (None, "CA certificates named by SSL_CERT_FILE / SSL_CERT_DIR")
        )
        raise TlsFilesError(field, what, exc) from exc
    if config.client_cert:
        try:
            context.load_cert_chain(config.client_cert, config.client_key)
        except (OSError, ValueError) as exc:
            key = f" with key {config.client_key}" if config.client_key else ""
            what = f"client certificate {config.client_cert}{key}"
            raise TlsFilesError("client_cert", what, exc) from exc
    return context


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing an answer sets (and so never sends one)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class StatelessClient(httpx.Client):
    """An ``httpx.Client`` that ignores ``Set-Cookie``: httpx has no switch for it, and storing
    an upstream's cookie would share it between tenants (and the standard library's cookie jar
    parses each answer's URL again: CPU, docs/performance.md has the figure)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise TypeError("the upstream clients keep no cookies")


class Clients:
    """``httpx.Client`` per origin (scheme, host, port), made on first use; ``transport``
    replaces the network for every origin (tests pass ``httpx.MockTransport``); ``on_client``
    is shown each new client (with tracing on it instruments it: a span per request)."""

    def __init__(
        self,
        config: UpstreamConfig,
        transport: httpx.BaseTransport | None = None,
        on_client: Callable[[httpx.Client], None] | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._on_client = on_client
        self._clients: dict[str, httpx.Client] = {}
        self._slots: dict[str, FairSlots] = {}
        self._lock = threading.Lock()
        self._retries: Counter[str] = Counter()
        self._ssl: ssl.SSLContext | None = None

    def client(self, base_url: str) -> httpx.Client:
        origin = _origin(base_url)
        client = self._clients.get(origin)
        if client is None:
            with self._lock:
                client = self._clients.get(origin)
                if client is None:
                    client = self._clients[origin] = self._make(base_url)
        return client

    def host(self, base_url: str) -> Host:
        """The client of ``base_url``'s origin and that host's in-flight slots, looked up once
        for an export rather than for each of its requests: each call a new claimant of the
        slots, so call it once an export."""
        origin = _origin(base_url)
        slots = self._slots.get(origin)
        if slots is None:
            with self._lock:
                slots = self._slots.setdefault(
                    origin, FairSlots(max(1, self._config.host_concurrency))
                )
        return Host(self.client(base_url), slots)

    def retries(self) -> dict[str, int]:
        """Retries sent so far, by upstream host (what the request hook counted)."""
        with self._lock:
            return dict(self._retries)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def _make(self, base_url: str) -> httpx.Client:
        config = self._config
        if self._ssl is None:
            self._ssl = ssl_context(config)
        cap = max(1, config.host_concurrency)
        limits = httpx.Limits(max_connections=cap, max_keepalive_connections=cap)
        transport = self._transport
        proxy = _proxy_for(base_url) if config.trust_env else None
        # the transport is always ours to choose: httpx applies the environment's proxies
        # only to one it makes itself, so the rule is one (_proxy_for) whichever transport
        if transport is None and proxy is not None:  # httpx's, which routes through it
            log.info("upstream through a proxy", extra={"host": urlsplit(base_url).hostname})
            transport = httpx.HTTPTransport(proxy=proxy, verify=self._ssl, limits=limits)
        elif transport is None and config.transport == "stdlib":
            transport = StdlibTransport(
                timeout=config.timeout_sec, ssl_context=self._ssl, max_idle=cap
            )
        elif transport is None:
            transport = httpx.HTTPTransport(verify=self._ssl, limits=limits)
        client = StatelessClient(
            transport=transport,
            verify=self._ssl,
            trust_env=config.trust_env,
            timeout=httpx.Timeout(config.timeout_sec),
            limits=limits,
            headers={
                "user-agent": user_agent(),
                "accept": "application/json",
                "accept-encoding": "gzip",
            },
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )
        if self._on_client is not None:
            self._on_client(client)
        return client

    def _on_request(self, request: httpx.Request) -> None:
        request.extensions[_SENT] = time.perf_counter()
        attempt = request.extensions.get(ATTEMPT, 0)
        if attempt:
            host = request.url.host
            with self._lock:
                self._retries[host] += 1
            metrics.UPSTREAM_RETRIES.labels(_upstream_of(request)).inc()
            log.info(
                "upstream retry",
                extra={
                    "host": host,
                    "path": request.url.path,
                    "attempt": attempt,
                    "trace_id": request.headers.get("x-trace-id"),
                },
            )

    @staticmethod
    def _on_response(response: httpx.Response) -> None:
        _count(response.request, f"{response.status_code // 100}xx")

    @staticmethod
    def failed(request: httpx.Request) -> None:
        """Count ``request`` as sent and never answered (connect error, timeout): the
        response hook never sees it."""
        _count(request, "error")


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url``, if any: ``HTTP_PROXY`` / ``HTTPS_PROXY``
    by its scheme, else ``ALL_PROXY`` (either case, read as httpx reads them:
    ``urllib.request.getproxies``; a value without a scheme is an ``http://`` proxy's
    address), unless ``NO_PROXY`` names its host (``urllib.request.proxy_bypass``)."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _upstream_of(request: httpx.Request) -> str:
    return metrics.bounded(request.extensions.get(UPSTREAM), metrics.UPSTREAMS)


def _count(request: httpx.Request, status_class: str) -> None:
    upstream = _upstream_of(request)
    metrics.UPSTREAM_REQUESTS.labels(upstream, status_class).inc()
    sent = request.extensions.get(_SENT)
    if sent is not None:
        metrics.UPSTREAM_DURATION.labels(upstream).observe(time.perf_counter() - sent)


class Host:
    """One upstream origin as an export uses it: its client and the cap on requests in flight
    to it across every export of the process, made for each export (:meth:`Clients.host`)."""

    def __init__(self, client: httpx.Client, slots: FairSlots) -> None:
        self.client = client
        self._slots = slots

    def acquire(
        self,
        stop: threading.Event,
        abort: Callable[[], bool] | None = None,
        until: float | None = None,
    ) -> bool:
        """A slot of the host before each request, the export's turn among the others
        (:class:`FairSlots`: this host is the export's claim); back by :meth:`release`."""
        return self._slots.acquire(stop, abort, until, self)

    def release(self) -> None:
        self._slots.release(self)


def _origin(base_url: str) -> str:
    """The origin of ``base_url`` as the clients and the host slots key it: scheme, host
    and port, the default port spelled out and no user info, so that ``http://feed`` and
    ``http://feed:80/`` share one client and one cap, as the cap's documentation says."""
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
