"""The knobs of the lifecycle, with their defaults.

These defaults are the only place the values are written: the service's settings take their
own defaults from a ``Policy()``, so that the core used as a library and the configured
service behave the same when nothing is configured.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .errors import ExportLimitExceeded
from .webhooks import AllowedHost


class ExportLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The most one export may do, whatever its upstream sends: upstream pages fetched, rows
    and bytes written, and seconds from its claim. Each default is far beyond any real FarmIQ
    export (a feed intake export of 50 million records is ~15 GB of CSV), so that only a
    misbehaving upstream (a cursor that never ends, a service paging back in time forever)
    meets one; past one the export fails ``EXPORT_LIMIT_EXCEEDED``."""

    max_pages: int = 1_000_000
    max_rows: int = 50_000_000
    max_bytes: int = 16 * 1024**3
    max_sec: float = 21_600.0


LIMIT_VARIABLES: Mapping[str, str] = {
    "max_pages": "REPORT_MAX_EXPORT_PAGES",
    "max_rows": "REPORT_MAX_EXPORT_ROWS",
    "max_bytes": "REPORT_MAX_EXPORT_BYTES",
    "max_sec": "REPORT_MAX_EXPORT_SEC",
}
"""Each limit's variable in the service (entrypoints.settings reads them), named by the
failure so that an operator knows what to raise."""

_LIMIT_WHAT = {
    "max_pages": "upstream pages",
    "max_rows": "rows",
    "max_bytes": "bytes written",
    "max_sec": "seconds",
}


def limit_exceeded(limits: ExportLimits, name: str, what: str = "") -> ExportLimitExceeded:
    """The failure of an export past ``limits``' ``name`` (``max_rows``...); ``what`` names
    what was counted when it is not the limit's own (bytes fetched rather than written)."""
    value = getattr(limits, name)
    shown = f"{value:g}" if isinstance(value, float) else f"{value:,}"
    return ExportLimitExceeded(
        f"the export went past its limit of {shown} {what or _LIMIT_WHAT[name]} "
        f"({LIMIT_VARIABLES[name]}); an upstream that never ends its answers meets it, "
        f"a genuine export this big needs the limit raised"
    )


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """The knobs of the lifecycle: how long links and files live, leases, retries, batches."""

    download_ttl_sec: int = 900
    retention_sec: int = 604_800  # 0 keeps files forever
    lease_sec: float = 30.0
    heartbeat_sec: float = 1.0  # progress/lease writes at most this often
    max_attempts: int = 3
    republish_after_sec: float = 10.0  # an unconfirmed queued job is published again after this
    batch: int = 100
    # per job type, the widest date range a job may name; a type not listed keeps its spec's
    max_range_days: dict[str, int] = msgspec.field(default_factory=dict)
    # the hosts a notify_url may name (reportcore.webhooks); none: webhooks are off
    notify_hosts: tuple[AllowedHost, ...] = ()
    # what one export may do at most (pages, rows, bytes, seconds)
    limits: ExportLimits = msgspec.field(default_factory=ExportLimits)
    # queued + running jobs one tenant may have; a create beyond is TOO_MANY_JOBS; 0: no cap
    max_unfinished_jobs: int = 200

    @property
    def legacy_lease_sec(self) -> float:
        """How long a running job without a lease (a row of the old service, which kept none)
        may stay untouched before recovery takes it back: ten leases, at least ten minutes."""
        return max(self.lease_sec * 10, 600)
