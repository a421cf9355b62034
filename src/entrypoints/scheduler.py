"""The scheduler: each worker process (and ``reportsvc all`` / ``dev``, which run a worker)
runs one, as a thread beside the consumer.

Every ``REPORT_SCHEDULER_INTERVAL_SEC`` it runs one pass of ``reports.run_schedules``: due
occurrences are claimed and their jobs created (reportcore.scheduling says why any number of
schedulers make one job each), and the metrics are updated. Time is the application's clock, so
the test-only ``REPORT_TEST_CLOCK_*`` settings move it too.
"""

from __future__ import annotations

import logging
import threading
import time

from adapters.metrics import SCHEDULE_LAG, SCHEDULE_OCCURRENCES, SCHEDULES
from reportcore.scheduling import SchedulerPass
from reportcore.service import ReportService

from .runtime import tracing

log = logging.getLogger("reportsvc.scheduler")


# The schedules gauge is counted at most this often: counting reads every schedule (300,000:
# ~45 ms on PostgreSQL), a pass every few seconds in each worker; a gauge a minute old is
# plenty for the alert over it (30 minutes)
COUNTS_EVERY_SEC = 60.0


class Scheduler:
    """Runs the application's scheduler pass every ``interval_sec`` until stopped."""

    def __init__(self, reports: ReportService, interval_sec: float) -> None:
        self.reports = reports
        self.interval_sec = interval_sec
        self._counted_at: float | None = None  # time.monotonic() of the last count

    def run_once(self) -> SchedulerPass | None:
        """One pass; ``None`` (and a warning) if storage failed it: the next pass retries, and
        an occurrence claimed meanwhile is finished by whichever scheduler comes next."""
        try:
            done = self.reports.run_schedules()
            counts = None
            now = time.monotonic()
            stale = self._counted_at is None or now - self._counted_at >= COUNTS_EVERY_SEC
            if stale and self.reports.deps.schedules is not None:
                counts = self.reports.deps.schedules.counts()
                self._counted_at = now
        except Exception as exc:
            log.warning("scheduler pass failed: %s: %s", type(exc).__name__, exc)
            return None
        if counts is not None:
            SCHEDULES.labels(state="active").set(counts.active)
            SCHEDULES.labels(state="paused").set(counts.paused)
            SCHEDULES.labels(state="skipping").set(counts.skipping)
        SCHEDULE_OCCURRENCES.labels(outcome="created").inc(done.created)
        SCHEDULE_OCCURRENCES.labels(outcome="skipped").inc(done.skipped)
        for lag in done.lags:
            SCHEDULE_LAG.observe(lag)
        if done.created or done.skipped:
            log.info(
                "scheduler pass",
                extra={"jobs_created": done.created, "occurrences_skipped": done.skipped},
            )
        return done

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set; the next one at once after a pass that took a
        whole batch (at 06:00 thousands of schedules may be due, 50 at a time)."""
        while True:
            # a pass every few seconds: its SQL makes no trace (a job it creates does)
            with tracing.untraced():
                done = self.run_once()
            # (one that did nothing with its batch waits as ever: no busy loop over it)
            at_once = done is not None and done.full and done.created + done.skipped > 0
            if stop.wait(0 if at_once else self.interval_sec):
                return
