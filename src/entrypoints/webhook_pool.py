"""The worker's webhook sender: due deliveries attempted concurrently, a bounded number at once.

One thread claims deliveries from the outbox, never more than there are free slots, and hands
each to a slot of a thread pool; a slot is free again once its attempt ended, which the
sender's deadline (``REPORT_WEBHOOK_TIMEOUT_SEC``) bounds. So a receiver that answers slowly
(or drips its answer) holds one slot for at most one deadline, and every other due delivery
goes out meanwhile; and since nothing is claimed before a slot can take it, no claimed delivery
waits behind another one while its lease runs.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from reportcore.service import ReportService
from reportcore.webhooks import Delivery, DeliveryState

from .runtime import tracing
from .schemas import job_out

log = logging.getLogger("reportsvc.webhooks")


class WebhookPool:
    """Sends ``reports``' due webhooks as ``owner``, ``reports.deps.webhook_rules.concurrency``
    at a time, until the stop event is set (then waits for the attempts in flight)."""

    def __init__(
        self, reports: ReportService, owner: str, *, poll_sec: float, outage_pause_sec: float
    ) -> None:
        self.reports = reports
        self.owner = owner
        self.size = reports.deps.webhook_rules.concurrency
        self._poll = poll_sec
        self._outage_pause = outage_pause_sec
        self._lock = threading.Lock()
        self._in_flight = 0
        self._freed = threading.Event()  # an attempt ended: a slot is free

    def in_flight(self) -> int:
        """Attempts running now."""
        with self._lock:
            return self._in_flight

    def _attempt(self, delivery: Delivery) -> None:
        try:
            with tracing.untraced():
                state = self.reports.attempt_delivery(delivery, job_out, self.owner)
        except Exception as exc:
            # storage failed the record: the lease runs out and the delivery is tried again
            log.warning("webhook attempt not recorded: %s: %s", type(exc).__name__, exc)
        else:
            self._log(delivery, state)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._freed.set()

    @staticmethod
    def _log(delivery: Delivery, state: DeliveryState | None) -> None:
        extra = {
            "job_id": delivery.job_id,
            "delivery_id": delivery.id,
            "attempt": delivery.attempts + 1,
            "state": state.value if state is not None else "taken over",
        }
        level = logging.INFO if state is DeliveryState.DELIVERED else logging.WARNING
        log.log(level, "webhook attempt", extra=extra)

    def _claim(self, free: int) -> list[Delivery] | None:
        try:
            with tracing.untraced():
                return self.reports.claim_deliveries(self.owner, free)
        except Exception as exc:
            log.warning("webhook pass failed: %s: %s", type(exc).__name__, exc)
            return None

    def run(self, stop: threading.Event) -> None:
        """Claim and attempt until ``stop`` is set; returns once the attempts in flight ended
        (each within its deadline)."""
        with ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="webhook") as pool:
            while not stop.is_set():
                with self._lock:
                    free = self.size - self._in_flight
                    self._freed.clear()
                claimed = self._claim(free) if free else []
                if claimed is None:
                    stop.wait(self._outage_pause)
                    continue
                for delivery in claimed:
                    with self._lock:
                        self._in_flight += 1
                    pool.submit(self._attempt, delivery)
                if free and len(claimed) == free:
                    continue  # every free slot took one: more may be due once a slot frees
                # nothing more is due now, or no slot is free: wait for an attempt to end or
                # for the next poll (stop is seen within a poll)
                self._freed.wait(self._poll)
