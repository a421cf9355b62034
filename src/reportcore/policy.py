"""The knobs of the lifecycle, with their defaults.

These defaults are the only place the values are written: the service's settings take their
own defaults from a ``Policy()``, so that the core used as a library and the configured
service behave the same when nothing is configured.
"""

from __future__ import annotations

import msgspec

from .webhooks import AllowedHost


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
    # queued + running jobs one tenant may have; a create beyond is TOO_MANY_JOBS; 0: no cap
    max_unfinished_jobs: int = 200

    @property
    def legacy_lease_sec(self) -> float:
        """How long a running job without a lease (a row of the old service, which kept none)
        may stay untouched before recovery takes it back: ten leases, at least ten minutes."""
        return max(self.lease_sec * 10, 600)
