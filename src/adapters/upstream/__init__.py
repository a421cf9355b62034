"""Record sources over HTTP: the feed service, the telemetry service and the WeighVision read
model, as the contract's "Upstream sources" describes them. One module a concern:

- :mod:`.config`: where the services are and how to ask them (:class:`UpstreamConfig`);
- :mod:`.client`: one long-lived ``httpx.Client`` per upstream origin, the per-host cap;
- :mod:`.transport`: the httpx transport over ``http.client`` that the clients use;
- :mod:`.wire`: the pages on the wire, and the values the parts hand each other;
- :mod:`.retry`: asking until an answer comes, and the contract's failure codes;
- :mod:`.pagers`: paging one endpoint over one time window;
- :mod:`.spools`: a window's answers on their way to the exporter, in memory or a file;
- :mod:`.window`: one window's bounds, where it stands, which records of a page it keeps;
- :mod:`.windows`: cutting a bounded range into windows fetched at once, split while they
  run, read in order;
- :mod:`.source`: :class:`HttpRecordSource`, the ``RecordSource`` port over all of that.

:mod:`.config` loads no HTTP library, and the parts that do are loaded when first named
here: the settings take the upstream defaults from :class:`UpstreamConfig`, and a process
that never fetches (``reportsvc token``, ``reportsvc migrate``) should not pay for httpx.
"""

from typing import TYPE_CHECKING

from .config import (
    FEED_INTAKE_PATH,
    FEED_PAGE_MAX,
    KPI_FEEDING_PATH,
    TELEMETRY_LIMIT_MAX,
    TELEMETRY_PATH,
    WEIGHVISION_PATH,
    UpstreamConfig,
)

if TYPE_CHECKING:
    from .retry import retry_after_seconds
    from .source import HttpRecordSource

__all__ = [
    "FEED_INTAKE_PATH",
    "FEED_PAGE_MAX",
    "KPI_FEEDING_PATH",
    "TELEMETRY_LIMIT_MAX",
    "TELEMETRY_PATH",
    "WEIGHVISION_PATH",
    "HttpRecordSource",
    "UpstreamConfig",
    "retry_after_seconds",
]


def __getattr__(name: str) -> object:
    if name == "HttpRecordSource":
        from .source import HttpRecordSource

        return HttpRecordSource
    if name == "retry_after_seconds":
        from .retry import retry_after_seconds

        return retry_after_seconds
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
