"""The worker's webhook pool (issue 26, row 13): a slow receiver holds one slot, never the
others' deliveries, and a sender claims no more deliveries than it can attempt at once."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import msgspec
import pytest

from entrypoints.webhook_pool import WebhookPool
from reportcore.deps import Deps
from reportcore.jobs import Job
from reportcore.policy import Policy
from reportcore.requests import CreateRequest, validate_create
from reportcore.service import ReportService
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.usecases import cancel_job, create_job
from reportcore.webhooks import DeliveryState, SendResult, WebhookRules, parse_allowed_hosts

from ..clock import pinned_now
from .test_usecases import FEED_BODY, TENANT
from .test_worker import wait_until

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

HOSTS = parse_allowed_hosts("slow.example.com,fast.example.com")
SLOW = "https://slow.example.com/hooks"
FAST = "https://fast.example.com/hooks"


class HeldSender:
    """Answers 200 at once, except to ``SLOW``: that attempt waits until released (a receiver
    that takes its time), then fails."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.slow_started = 0
        self.fast_sent = 0

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        if url == SLOW:
            with self.lock:
                self.slow_started += 1
            self.release.wait(30)
            return SendResult(error="timeout")
        with self.lock:
            self.fast_sent += 1
        return SendResult(status=200)


class World:
    def __init__(self, concurrency: int) -> None:
        self.jobs = InMemoryJobRepository()
        self.clock = FakeClock(pinned_now())
        self.sender = HeldSender()
        rules = WebhookRules(secret=b"webhook-secret-0123456789", allowed_hosts=HOSTS)
        self.reports = ReportService(
            Deps(
                jobs=self.jobs,
                queue=InMemoryQueue(),
                store=InMemoryFileStore(),
                clock=self.clock,
                source=StaticRecordSource({}),
                outbox=self.jobs.outbox,
                sender=self.sender,
                policy=Policy(notify_hosts=HOSTS),
                webhook_rules=msgspec.structs.replace(rules, concurrency=concurrency),
            )
        )

    def ended_job(self, notify_url: str) -> Job:
        """A job with ``notify_url`` that was cancelled: its delivery is due now."""
        body = {**FEED_BODY, "notify_url": notify_url}
        created = create_job(
            validate_create(msgspec.convert(body, CreateRequest)),
            tenant_id=TENANT,
            requested_by="u1",
            jobs=self.jobs,
            queue=self.reports.deps.queue,
            clock=self.clock,
            policy=self.reports.deps.policy,
        )
        return cancel_job(created.job.id, tenant_id=TENANT, jobs=self.jobs, clock=self.clock)

    def state(self, job: Job) -> DeliveryState | None:
        shown = self.jobs.outbox.notifications([job.id]).get(job.id)
        return shown.state if shown is not None else None


@contextmanager
def running(pool: WebhookPool, world: World) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=pool.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        world.sender.release.set()
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def test_a_slow_receiver_delays_no_other_delivery() -> None:
    world = World(concurrency=4)
    slow = world.ended_job(SLOW)  # the older one: first in line
    fast = [world.ended_job(FAST) for _ in range(3)]
    pool = WebhookPool(world.reports, "worker-1", poll_sec=0.05, outage_pause_sec=0.1)
    with running(pool, world):
        # the four are claimed at once; on a loaded machine the slow one's thread may start
        # after the others ended: each is waited for, not raced
        wait_until(
            lambda: all(world.state(job) is DeliveryState.DELIVERED for job in fast),
            "the other receivers' deliveries",
        )
        wait_until(lambda: world.sender.slow_started == 1, "the slow receiver's attempt")
        # ... while the slow receiver's attempt is in flight, held (a fast attempt's state is
        # recorded a moment before its thread frees the slot: waited for, not raced)
        assert not world.sender.release.is_set()
        wait_until(lambda: pool.in_flight() == 1, "the fast attempts' slots freed")
        assert world.sender.slow_started == 1 and not world.sender.release.is_set()
        assert world.state(slow) is DeliveryState.PENDING
    # released: the slow attempt ended as a failed one, retried after the backoff
    shown = world.jobs.outbox.notifications([slow.id])[slow.id]
    assert (shown.state, shown.attempts, shown.last_error) == (DeliveryState.PENDING, 1, "timeout")


def test_a_sender_claims_no_more_deliveries_than_it_can_attempt_at_once() -> None:
    world = World(concurrency=2)
    slow = [world.ended_job(SLOW) for _ in range(5)]
    pool = WebhookPool(world.reports, "worker-1", poll_sec=0.05, outage_pause_sec=0.1)
    with running(pool, world):
        wait_until(lambda: world.sender.slow_started == 2, "two attempts in flight")
        assert pool.in_flight() == 2
        # the three it could not start are not leased to it: another worker takes them now
        now = world.clock.now()
        others = world.jobs.outbox.claim_due(now, "worker-2", now + dt.timedelta(minutes=1), 10)
        assert len(others) == 3
        assert {d.job_id for d in others} < {job.id for job in slow}
        assert world.sender.slow_started == 2, "never more than its concurrency at once"
