"""What the record sources are configured with: where each service is and how to ask it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import msgspec

from reportcore.jobtypes import Upstream

FEED_INTAKE_PATH = "/api/v1/feed/intake-records"
KPI_FEEDING_PATH = "/api/v1/kpi/feeding"
TELEMETRY_PATH = "/api/v1/telemetry/readings"
WEIGHVISION_PATH = "/api/v1/weighvision/weight-aggregates"

FEED_PAGE_MAX = 100  # the feed service caps ``limit`` here
TELEMETRY_LIMIT_MAX = 10_000  # the telemetry service caps ``limit`` here


class UpstreamConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where the upstream services are and how patiently (and how many at once) to ask them.

    ``concurrency``: time windows of one bounded feed intake or telemetry export fetched at
    once (1: one request after another). ``host_concurrency``: requests in flight to one
    upstream host across every export of the process. ``ca_bundle`` / ``client_cert`` /
    ``client_key``: PEM files for TLS to the upstreams (mTLS when a client cert is given).
    ``trust_env``: honour ``HTTP(S)_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE`` as httpx does.
    ``transport``: ``stdlib`` (the default: :mod:`adapters.upstream.transport`, an httpx
    transport over ``http.client``) or ``httpx`` (httpx's own); see docs/performance.md.
    ``slow_page_sec``: a page that took longer (retries and backoff included) is logged.
    ``page_deadline_sec``: the most one page may take, tries, backoff and the wait for a host
    slot included; past it the page fails ``UPSTREAM_UNAVAILABLE`` (a body dripped a byte at a
    time under the per-read timeout ends there). ``max_page_bytes``: the most one page may be,
    on the wire and inflated; ``max_page_items``: the most records one page may hold; beyond
    either the page is ``UPSTREAM_BAD_RESPONSE``. The defaults are several times the largest
    page a FarmIQ service sends (a telemetry page of 10,000 readings is ~4.5 MB).
    """

    feed_url: str | None = None
    telemetry_url: str | None = None
    weighvision_url: str | None = None
    token: str | None = None
    timeout_sec: float = 10.0
    retries: int = 4  # tries after the first one
    backoff_base_sec: float = 0.5
    backoff_max_sec: float = 8.0
    feed_page_limit: int = FEED_PAGE_MAX
    telemetry_limit: int = TELEMETRY_LIMIT_MAX
    concurrency: int = 8
    host_concurrency: int = 16
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    trust_env: bool = True
    transport: str = "stdlib"
    slow_page_sec: float = 5.0
    page_deadline_sec: float = 120.0
    max_page_bytes: int = 16 * 1024 * 1024
    max_page_items: int = 100_000


class BaseUrl(NamedTuple):
    """Where an upstream's base URL is set: ``attribute`` of :class:`UpstreamConfig`, and the
    service's environment ``variables`` (the main name, then the old Node service's names),
    which a job of an upstream not configured names."""

    attribute: str
    variables: tuple[str, ...]


# upstream -> where its base URL is set: the one map (the service's settings read it)
BASE_URLS: Mapping[Upstream, BaseUrl] = {
    Upstream.FEED: BaseUrl(
        "feed_url", ("CLOUD_FEED_SERVICE_URL", "FEED_SERVICE_URL", "FEED_BASE_URL")
    ),
    Upstream.TELEMETRY: BaseUrl(
        "telemetry_url", ("CLOUD_TELEMETRY_SERVICE_URL", "TELEMETRY_SERVICE_URL")
    ),
    Upstream.WEIGHVISION: BaseUrl(
        "weighvision_url", ("CLOUD_WEIGHVISION_READMODEL_URL", "WEIGHVISION_SERVICE_URL")
    ),
}
