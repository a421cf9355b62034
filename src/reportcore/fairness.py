"""Fair shares of a worker: how many of its export slots one tenant may hold at once."""

from __future__ import annotations

import threading
from collections import Counter


class TenantSlots:
    """Counts the exports each tenant runs in one worker process, up to ``per_tenant``.

    A tenant at its share has its next job deferred (sent to the back of the queue), so that a
    tenant with a long backlog cannot hold every slot while another tenant's job waits.
    Thread-safe: the worker's handler threads share one.
    """

    def __init__(self, per_tenant: int) -> None:
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        self.per_tenant = per_tenant
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, tenant_id: str) -> bool:
        """Take a slot for ``tenant_id``; ``False`` when it already holds its share."""
        with self._lock:
            if self._running[tenant_id] >= self.per_tenant:
                return False
            self._running[tenant_id] += 1
            return True

    def give_back(self, tenant_id: str) -> None:
        """Return a slot :meth:`take` gave."""
        with self._lock:
            self._running[tenant_id] -= 1
            if self._running[tenant_id] <= 0:
                del self._running[tenant_id]

    def running(self, tenant_id: str) -> int:
        """How many slots ``tenant_id`` holds now."""
        with self._lock:
            return self._running[tenant_id]


def default_share(concurrency: int) -> int:
    """One slot fewer than the worker has (at least one): another tenant always finds one."""
    return max(1, concurrency - 1)
