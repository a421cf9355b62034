"""The contract of the WebhookOutbox port (and of the JobRepository's part in it), run against
the in-memory, PostgreSQL and SQLite adapters: a job that ends with a ``notify_url`` gets one
delivery in the same change, and senders claim due deliveries under a lease."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reportcore.ports import JobRepository, WebhookOutbox
from reportcore.testing import FakeClock, InMemoryJobRepository
from reportcore.webhooks import (
    AttemptOutcome,
    DeliveryState,
    Notification,
    SendResult,
    WebhookRules,
    after_attempt,
)

from .test_job_repository_contract import (
    FILE,
    LEASE,
    TENANT,
    WORKER,
    added,
    clock,  # noqa: F401  (a fixture)
    repo,  # noqa: F401  (a fixture)
    running,
)

URL = "https://hooks.example.com/reports"
SENDER_LEASE = dt.timedelta(seconds=60)


@pytest.fixture
def outbox(repo: JobRepository) -> WebhookOutbox:  # noqa: F811
    if isinstance(repo, InMemoryJobRepository):
        found: WebhookOutbox = repo.outbox
    else:
        from adapters.sql_jobs import SqlJobRepository
        from adapters.sql_webhooks import SqlWebhookOutbox

        assert isinstance(repo, SqlJobRepository)
        found = SqlWebhookOutbox(repo)
    assert isinstance(found, WebhookOutbox)
    return found


def claim(outbox: WebhookOutbox, clock: FakeClock, owner: str = "sender-1") -> list[str]:  # noqa: F811
    now = clock.now()
    return [d.job_id for d in outbox.claim_due(now, owner, now + SENDER_LEASE, 10)]


def test_a_job_ending_with_a_notify_url_gets_one_delivery_of_its_event(
    repo: JobRepository,  # noqa: F811
    outbox: WebhookOutbox,
    clock: FakeClock,  # noqa: F811
) -> None:
    succeeded = running(repo, clock, notify_url=URL)
    failed = running(repo, clock, notify_url=URL)
    cancelled = added(repo, clock, notify_url=URL)
    quiet = running(repo, clock)
    still_running = running(repo, clock, notify_url=URL)
    assert repo.succeed(succeeded.id, WORKER, clock.now(), FILE, None) is not None
    assert repo.fail(failed.id, WORKER, clock.now(), "UPSTREAM_REJECTED", "no") is not None
    assert repo.cancel(cancelled.id, TENANT, clock.now()) is not None
    assert repo.succeed(quiet.id, WORKER, clock.now(), FILE, None) is not None

    now = clock.now()
    due = {d.job_id: d for d in outbox.claim_due(now, "sender-1", now + SENDER_LEASE, 10)}
    assert {job_id: d.event for job_id, d in due.items()} == {
        succeeded.id: "report_job.succeeded",
        failed.id: "report_job.failed",
        cancelled.id: "report_job.cancelled",
    }
    assert {d.url for d in due.values()} == {URL}
    assert {d.attempts for d in due.values()} == {0}
    ids = [succeeded.id, failed.id, cancelled.id, quiet.id, still_running.id]
    assert outbox.notifications(ids) == {
        job_id: Notification(state=DeliveryState.PENDING, attempts=0) for job_id in due
    }
    assert outbox.notifications([]) == {}


def test_a_claimed_delivery_is_leased_to_its_sender_until_the_lease_ends(
    repo: JobRepository,  # noqa: F811
    outbox: WebhookOutbox,
    clock: FakeClock,  # noqa: F811
) -> None:
    job = running(repo, clock, notify_url=URL)
    repo.succeed(job.id, WORKER, clock.now(), FILE, None)
    assert claim(outbox, clock, "sender-1") == [job.id]
    assert claim(outbox, clock, "sender-2") == [], "leased to sender-1"
    clock.advance(SENDER_LEASE.total_seconds() + 1)  # sender-1 died mid-send
    assert claim(outbox, clock, "sender-2") == [job.id], "a delivery never vanishes"


def test_an_attempt_is_recorded_only_by_the_lease_holder_and_keeps_the_first_body(
    repo: JobRepository,  # noqa: F811
    outbox: WebhookOutbox,
    clock: FakeClock,  # noqa: F811
) -> None:
    rules = WebhookRules(retry_base_sec=10.0, max_attempts=3)
    job = running(repo, clock, notify_url=URL)
    repo.succeed(job.id, WORKER, clock.now(), FILE, None)
    now = clock.now()
    [delivery] = outbox.claim_due(now, "sender-1", now + SENDER_LEASE, 10)
    failed = after_attempt(delivery, SendResult(status=503), b'{"first":1}', now, rules)
    assert not outbox.record(delivery.id, "sender-2", failed)
    assert outbox.record(delivery.id, "sender-1", failed)
    assert outbox.notifications([job.id])[job.id] == Notification(
        state=DeliveryState.PENDING, attempts=1, last_error="HTTP 503"
    )
    assert claim(outbox, clock) == [], "not due before its backoff"
    clock.advance(10)
    now = clock.now()
    [again] = outbox.claim_due(now, "sender-1", now + SENDER_LEASE, 10)
    assert again.id == delivery.id and again.attempts == 1
    assert again.body == b'{"first":1}'
    done = AttemptOutcome(
        state=DeliveryState.DELIVERED,
        attempts=2,
        next_attempt_at=None,
        last_error=None,
        body=b'{"second":2}',
        at=now,
    )
    assert outbox.record(again.id, "sender-1", done)
    assert outbox.notifications([job.id])[job.id] == Notification(
        state=DeliveryState.DELIVERED, attempts=2
    )
    clock.advance(3600)
    assert claim(outbox, clock) == [], "a delivered one is never sent again"


def test_a_retried_job_gets_no_delivery_until_it_ends(
    repo: JobRepository,  # noqa: F811
    outbox: WebhookOutbox,
    clock: FakeClock,  # noqa: F811
) -> None:
    job = running(repo, clock, notify_url=URL)
    assert repo.retry(job.id, WORKER, clock.now()) is not None
    assert outbox.notifications([job.id]) == {}
    now = clock.now()
    assert repo.claim(job.id, WORKER, now, now + LEASE) is not None
    assert repo.succeed(job.id, WORKER, now, FILE, None) is not None
    assert claim(outbox, clock) == [job.id]


def test_senders_claiming_at_once_never_take_the_same_delivery(
    repo: JobRepository,  # noqa: F811
    outbox: WebhookOutbox,
    clock: FakeClock,  # noqa: F811
) -> None:
    ended = []
    for _ in range(12):
        job = running(repo, clock, notify_url=URL)
        assert repo.succeed(job.id, WORKER, clock.now(), FILE, None) is not None
        ended.append(job.id)
    now = clock.now()
    start = threading.Barrier(4)

    def sender(n: int) -> list[str]:
        start.wait()
        taken = outbox.claim_due(now, f"sender-{n}", now + SENDER_LEASE, 5)
        return [d.job_id for d in taken]

    with ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(sender, range(4)))
    taken = [job_id for claim in claims for job_id in claim]
    assert len(taken) == len(set(taken)), claims
    assert set(taken) <= set(ended)
    # whatever a busy moment left unclaimed is claimed by the next pass
    assert sorted(taken + claim(outbox, clock, "sender-late")) == sorted(ended)
