"""The worker: consumes job messages, runs exports, and keeps nothing stuck.

One :class:`Worker` per process, over the application (:class:`reportcore.service.ReportService`).
Its consumer delivers messages ``WORKER_CONCURRENCY`` at a time to ``reports.run``; beside it a
webhook thread sends due deliveries several at once (:class:`.webhook_pool.WebhookPool`, when
webhooks are on), a scheduler thread creates the jobs of due schedules
(``entrypoints.scheduler``), and a recovery thread runs ``reports.recover`` every
``REPORT_RECOVERY_INTERVAL_SEC`` (jobs of dead workers back to the queue, unconfirmed jobs
published again, expired files deleted). Setting the stop event (SIGTERM, SIGINT) stops
consuming; a running export hands its job back at its next page, so that no job is left
``running`` by a worker that exits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from adapters import metrics, xlsx
from adapters.metering import record_export, running_gauge
from reportcore.fairness import TenantSlots, default_share
from reportcore.jobtypes import JOB_TYPES
from reportcore.notifying import DeliveryPass
from reportcore.ports import Disposition, JobConsumer
from reportcore.running import RunContext
from reportcore.service import ReportService
from reportcore.usecases import DEFERRED, Recovery

from .runtime import tracing
from .runtime.probes import Heartbeat
from .scheduler import Scheduler
from .schemas import job_out
from .settings import SETTING_TO_VARIABLE, UPSTREAM_URLS, Settings
from .webhook_pool import WebhookPool

log = logging.getLogger("reportsvc.worker")

# After a handler or the consumer itself failed (database or broker down), wait this long
# before the next try, so that an outage is not a busy loop of redeliveries and log lines.
OUTAGE_PAUSE_SEC = 2.0
# After deferring a job whose tenant holds its share, wait this long before taking the next
# message: a lone tenant's backlog then cycles through the queue slowly, not in a busy loop.
DEFER_PAUSE_SEC = 0.2
# How often the webhook sender looks for due deliveries (at most; see Worker._delivery_loop).
WEBHOOK_POLL_SEC = 1.0


def new_owner_id() -> str:
    """``hostname:pid:random``: unique per process, readable in ``lease_owner``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Worker:
    """Runs the jobs its application's consumer delivers until the stop event is set."""

    def __init__(
        self,
        reports: ReportService,
        settings: Settings,
        owner_id: str | None = None,
        *,
        outage_pause_sec: float = OUTAGE_PAUSE_SEC,
    ) -> None:
        if reports.deps.consumer is None:
            raise ValueError("a worker needs an application with a consumer")
        self.reports = reports
        self.consumer: JobConsumer = reports.deps.consumer
        self.settings = settings
        self.owner_id = owner_id or new_owner_id()
        # each claim holds its lease as owner_id/<n>: the process's handler threads are owners
        # of their own, so a job reclaimed from one (its lease ran out in a pause) and taken
        # by another thread of the same process refuses the first at its next write
        self._claims = itertools.count(1)
        self._files_after: tuple[dt.datetime, str] | None = None  # retention's place
        self._outage_pause = outage_pause_sec
        self.shares = TenantSlots(
            settings.worker_tenant_concurrency or default_share(settings.worker_concurrency)
        )
        self.heartbeat = Heartbeat()  # the consume loop's, for the liveness probe (/healthz)
        # the failures and upstream answers the alerts take a rate() of, at 0 before the first
        metrics.start_worker_series()

    def handle(self, body: bytes, stop: threading.Event) -> Disposition:
        """Run one message's job; the consumer settles the message as the result says."""
        if stop.is_set():
            # delivered after stop: back untouched, without claiming (and counting) an attempt
            return Disposition.REQUEUE
        began = time.monotonic()
        try:
            # the liveness probe fails when a running export writes no page for too long
            with self.heartbeat.export() as progressed:
                run = RunContext(
                    owner=f"{self.owner_id}/{next(self._claims)}",
                    stopping=stop.is_set,
                    keep_lease=running_gauge(
                        self._lease_keeper(self.reports.deps.policy.heartbeat_sec)
                    ),
                    shares=self.shares,
                    progressed=progressed,
                )
                outcome = self.reports.run(body, run)
        except Exception as exc:
            # Storage (or a bug) failed outside the export's own error handling. The message
            # goes back; a job claimed meanwhile is reclaimed by recovery once its lease ends.
            log.warning(
                "job not handled: %s",
                exc,
                exc_info=True,
                extra={"duration_ms": _ms_since(began)},
            )
            stop.wait(self._outage_pause)
            return Disposition.REQUEUE
        if outcome.crash:
            # one record with the whole traceback: the job failed on a bug, not an outage
            log.error(
                "job failed on an unexpected error",
                extra={"job_id": outcome.job_id, "traceback": outcome.crash},
            )
        record_export(outcome, time.monotonic() - began)
        deferred = outcome.status == DEFERRED
        if deferred:
            stop.wait(DEFER_PAUSE_SEC)
        log.log(
            logging.DEBUG if deferred else logging.INFO,  # a backlog cycles: not a line each time
            "job %s",
            outcome.status,
            extra={
                "job_id": outcome.job_id,
                "status": outcome.status,
                "detail": outcome.detail,
                "disposition": outcome.disposition.value,
                "duration_ms": _ms_since(began),
            },
        )
        return outcome.disposition

    @staticmethod
    def _lease_keeper(
        every_sec: float,
    ) -> Callable[[Callable[[], bool]], contextlib.AbstractContextManager[None]]:
        """Renew a running job's lease every ``every_sec`` from a thread of its own, so that a
        page the upstream is slow to give (a hang, timeouts and backoff) cannot outlive the
        lease and have recovery hand the job to a second worker."""

        @contextlib.contextmanager
        def keeping(renew: Callable[[], bool]) -> Iterator[None]:
            done = threading.Event()

            def loop() -> None:
                while not done.wait(every_sec):
                    try:
                        # a renewal a second: no span (and no trace) of its own
                        with tracing.untraced():
                            if not renew():
                                return  # cancelled or reclaimed: the export stops at its next page
                    except Exception as exc:
                        # storage down: the lease may run out, and recovery then retries the job
                        log.warning("lease not renewed: %s: %s", type(exc).__name__, exc)

            keeper = threading.Thread(target=loop, name="lease-keeper", daemon=True)
            keeper.start()
            try:
                yield
            finally:
                done.set()
                keeper.join()

        return keeping

    def recover_once(self) -> Recovery | None:
        """One recovery pass; ``None`` (and a warning) if storage or broker failed it."""
        try:
            done = self.reports.recover(self._files_after)
        except Exception as exc:
            # one line per pass while storage or broker is down; the next pass tries again
            log.warning("recovery pass failed: %s: %s", type(exc).__name__, exc)
            return None
        self._files_after = done.files_next
        if done.files_kept:
            log.warning(
                "recovery pass: files the store would not delete (past retention, or left "
                "by a job cancelled while running: tried again next pass; left by the dead "
                "attempts of a job failed WORKER_LOST)",
                extra={"job_ids": done.files_kept},
            )
        if (
            done.requeued
            or done.failed
            or done.published
            or done.files_deleted
            or done.leftovers_discarded
        ):
            log.info(
                "recovery pass",
                extra={
                    "requeued": done.requeued,
                    "failed": done.failed,
                    "published": done.published,
                    "files_deleted": done.files_deleted,
                    "leftovers_discarded": done.leftovers_discarded,
                },
            )
        return done

    def _recovery_loop(self, stop: threading.Event) -> None:
        interval = self.settings.recovery_interval_sec
        while True:
            # a pass every few seconds: its SQL makes no trace (a job it publishes does)
            with tracing.untraced():
                self.recover_once()
            if stop.wait(interval):
                return

    def deliver_once(self) -> DeliveryPass | None:
        """One pass over the webhook outbox; ``None`` (and a warning) if storage failed it."""
        try:
            done = self.reports.deliver(job_out, self.owner_id)
        except Exception as exc:
            log.warning("webhook pass failed: %s: %s", type(exc).__name__, exc)
            return None
        if done.attempted:
            log.info(
                "webhook pass",
                extra={
                    "delivered": done.delivered,
                    "retrying": done.retrying,
                    "failed": done.failed,
                },
            )
        return done

    def _delivery_loop(self, stop: threading.Event) -> None:
        rules = self.reports.deps.webhook_rules
        # a due delivery waits at most this long; a short retry base (tests) polls more often
        poll = min(WEBHOOK_POLL_SEC, max(0.05, rules.retry_base_sec / 4))
        pool = WebhookPool(
            self.reports, self.owner_id, poll_sec=poll, outage_pause_sec=self._outage_pause
        )
        pool.run(stop)

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; returns once in-flight jobs finished or went back."""
        settings = self.settings
        concurrency = settings.worker_concurrency
        abandoned = xlsx.remove_abandoned()  # before this process builds a workbook of its own
        if abandoned:
            log.info(
                "removed the workbooks of dead workers from TMPDIR", extra={"folders": abandoned}
            )
        recovery = threading.Thread(
            target=self._recovery_loop, args=(stop,), name="recovery", daemon=True
        )
        recovery.start()
        # webhooks are off without allowed hosts (and then have no secret to sign with)
        delivery = threading.Thread(
            target=self._delivery_loop, args=(stop,), name="webhooks", daemon=True
        )
        if settings.webhook_allowed_hosts:
            delivery.start()
        # every worker schedules: each occurrence's claim is one conditional write
        scheduling = Scheduler(self.reports, settings.scheduler_interval_sec)
        scheduler = threading.Thread(
            target=scheduling.run, args=(stop,), name="scheduler", daemon=True
        )
        scheduler.start()
        log.info(
            "worker started",
            extra={"owner": self.owner_id, "concurrency": concurrency},
        )
        try:
            while not stop.is_set():
                try:
                    self.consumer.run(
                        lambda body: self.handle(body, stop),
                        concurrency,
                        self.heartbeat.watching(stop.is_set),
                    )
                except Exception as exc:
                    log.warning("consumer failed: %s; starting it again", exc, exc_info=True)
                else:
                    if stop.is_set():
                        break
                    log.warning("consumer returned before stop; starting it again")
                stop.wait(self._outage_pause)
        finally:
            stop.set()
            recovery.join()
            scheduler.join()
            if delivery.is_alive():
                delivery.join()
            log.info("worker stopped", extra={"owner": self.owner_id})


def warn_unconfigured_upstreams(settings: Settings) -> None:
    """One warning per upstream URL not set: the jobs of its types will fail."""
    for upstream, setting in UPSTREAM_URLS.items():
        if getattr(settings, setting) is None:
            types = sorted(str(t) for t, spec in JOB_TYPES.items() if spec.upstream is upstream)
            log.warning(
                "%s is not set: %s jobs will fail UPSTREAM_UNAVAILABLE",
                SETTING_TO_VARIABLE[setting],
                ", ".join(types),
            )


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a second one too: shutdown is already graceful)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # only the event: logging from a signal handler could interleave with a record
        # being written by the interrupted code
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _ms_since(began: float) -> int:
    return int((time.monotonic() - began) * 1000)
