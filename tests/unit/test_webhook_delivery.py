"""Webhooks as use cases: jobs created with a notify_url are announced when they end, through
the in-memory outbox, with the clock moved by hand (never today's date)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from reportcore.errors import UpstreamRejected, ValidationError
from reportcore.jobs import Job
from reportcore.notifying import DeliveryPass, deliver_due, notifications_of
from reportcore.policy import Policy
from reportcore.requests import CreateRequest, ListQuery, validate_create
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    RecordingWebhookSender,
    StaticRecordSource,
)
from reportcore.usecases import cancel_job, create_job
from reportcore.webhooks import (
    DeliveryState,
    Notification,
    SendResult,
    WebhookRules,
    after_attempt,
    parse_allowed_hosts,
    verify_signature,
)
from tests.running import run_message

from ..clock import pinned_now
from .test_usecases import FEED_BODY, RECORDS, TENANT

# the tests read the tests' clock: test_any_day.py runs them again on awkward days
pytestmark = pytest.mark.clock

URL = "https://hooks.example.com/reports"
HOSTS = parse_allowed_hosts("hooks.example.com")
SECRET = b"webhook-secret-0123456789"


def render(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status.value, "notify_url": job.notify_url}


class World:
    """In-memory adapters, a fake clock at the tests' now, and a sender answering a script."""

    def __init__(self, answers: list[int | str] | None = None, max_attempts: int = 8) -> None:
        self.jobs = InMemoryJobRepository()
        self.queue = InMemoryQueue()
        self.store = InMemoryFileStore()
        self.clock = FakeClock(pinned_now())
        self.policy = Policy(notify_hosts=HOSTS)
        self.sender = RecordingWebhookSender(answers or [])
        self.rules = WebhookRules(
            secret=SECRET, allowed_hosts=HOSTS, retry_base_sec=10.0, max_attempts=max_attempts
        )

    def create(self, notify_url: str | None = URL) -> Job:
        body = dict(FEED_BODY)
        today = self.clock.now().date()
        body |= {"start_date": str(today - dt.timedelta(days=3)), "end_date": str(today)}
        if notify_url is not None:
            body["notify_url"] = notify_url
        created = create_job(
            validate_create(msgspec.convert(body, CreateRequest)),
            tenant_id=TENANT,
            requested_by="u1",
            jobs=self.jobs,
            queue=self.queue,
            clock=self.clock,
            policy=self.policy,
        )
        return created.job

    def run(self, source: Any = None) -> None:
        message = self.queue.take()
        assert message is not None
        run_message(
            message,
            owner="w1",
            jobs=self.jobs,
            source=source or StaticRecordSource(RECORDS, page_size=2),
            store=self.store,
            clock=self.clock,
            policy=self.policy,
        )

    def deliver(self, owner: str = "sender-1") -> DeliveryPass:
        return deliver_due(
            outbox=self.jobs.outbox,
            jobs=self.jobs,
            sender=self.sender,
            clock=self.clock,
            rules=self.rules,
            render=render,
            owner=owner,
        )

    def notification(self, job: Job) -> Notification | None:
        return notifications_of([job], self.jobs.outbox).get(job.id)


def test_a_job_that_succeeds_is_announced_once_signed_with_its_job_json() -> None:
    world = World()
    job = world.create()
    assert world.notification(job) is None, "nothing to announce while it runs"
    world.run()
    assert world.notification(job) == Notification(state=DeliveryState.PENDING, attempts=0)
    assert world.deliver().delivered == 1
    [sent] = world.sender.sent
    assert sent.url == URL
    assert msgspec.json.decode(sent.body) == {
        "type": "report_job.succeeded",
        "job": {"id": job.id, "status": "succeeded", "notify_url": URL},
    }
    now = world.clock.now().timestamp()
    assert verify_signature(SECRET, sent.headers["X-FarmIQ-Signature"], sent.body, now=now)
    assert sent.headers["X-FarmIQ-Delivery"] == sent.headers["Idempotency-Key"]
    assert sent.headers["X-FarmIQ-Event"] == "report_job.succeeded"
    assert world.notification(job) == Notification(state=DeliveryState.DELIVERED, attempts=1)
    world.clock.advance(86_400)
    assert world.deliver().attempted == 0 and len(world.sender.sent) == 1


def test_a_receiver_failing_three_times_gets_the_fourth_after_doubling_waits() -> None:
    world = World(answers=[503, "timeout (ReadTimeout)", 500, 204])
    job = world.create()
    world.run()
    world.deliver()
    for wait, error in ((10, "HTTP 503"), (20, "timeout (ReadTimeout)"), (40, "HTTP 500")):
        shown = world.notification(job)
        assert shown is not None and shown.last_error == error
        world.clock.advance(wait - 0.001)
        assert world.deliver().attempted == 0, f"not before its {wait} s"
        world.clock.advance(0.001)
        assert world.deliver().attempted == 1
    assert world.notification(job) == Notification(state=DeliveryState.DELIVERED, attempts=4)
    sent = world.sender.sent
    assert len(sent) == 4
    assert len({s.body for s in sent}) == 1, "retries send the same body"
    assert len({s.headers["X-FarmIQ-Delivery"] for s in sent}) == 1
    assert len({s.headers["X-FarmIQ-Signature"] for s in sent}) == 4, "a fresh t each time"


def test_a_delivery_fails_for_good_after_the_last_attempt() -> None:
    world = World(answers=[500] * 10, max_attempts=3)
    job = world.create()
    world.run()
    for wait in (0, 10, 20):
        world.clock.advance(wait)
        assert world.deliver().attempted == 1
    assert world.notification(job) == Notification(
        state=DeliveryState.FAILED, attempts=3, last_error="HTTP 500"
    )
    world.clock.advance(86_400)
    assert world.deliver().attempted == 0 and len(world.sender.sent) == 3


def test_a_cancelled_job_is_announced_as_cancelled() -> None:
    world = World()
    job = world.create()
    cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    world.deliver()
    [sent] = world.sender.sent
    assert msgspec.json.decode(sent.body)["type"] == "report_job.cancelled"


def test_a_failed_job_is_announced_as_failed() -> None:
    world = World()
    job = world.create()
    world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamRejected("feed 400")))
    failed = world.jobs.get(job.id)
    assert failed is not None and failed.status.value == "failed"
    world.deliver()
    [sent] = world.sender.sent
    assert msgspec.json.decode(sent.body)["type"] == "report_job.failed"


def test_a_job_without_notify_url_is_announced_nowhere() -> None:
    world = World()
    job = world.create(notify_url=None)
    world.run()
    assert world.jobs.outbox.deliveries() == []
    assert world.notification(job) is None
    assert world.deliver().attempted == 0 and world.sender.sent == []


def test_a_sender_that_dies_mid_send_leaves_the_delivery_to_another_after_its_lease() -> None:
    world = World()
    job = world.create()
    world.run()
    now = world.clock.now()
    lease = dt.timedelta(seconds=world.rules.lease_sec)
    [taken] = world.jobs.outbox.claim_due(now, "dead-sender", now + lease, 10)  # never records
    assert world.deliver("sender-2").attempted == 0, "leased to the dead sender"
    world.clock.advance(world.rules.lease_sec + 1)
    assert world.deliver("sender-2").delivered == 1
    [sent] = world.sender.sent
    assert sent.headers["X-FarmIQ-Delivery"] == taken.id
    assert world.notification(job) == Notification(state=DeliveryState.DELIVERED, attempts=1)


def test_a_host_taken_off_the_list_is_sent_nothing_more() -> None:
    world = World()
    job = world.create()
    world.run()
    world.rules = msgspec.structs.replace(world.rules, allowed_hosts=())
    assert world.deliver().failed == 1
    assert world.sender.sent == []
    shown = world.notification(job)
    assert shown is not None and shown.state is DeliveryState.FAILED
    assert shown.last_error is not None and "webhooks are off" in shown.last_error


def test_a_notify_url_is_refused_at_create_when_webhooks_are_off_or_the_host_is_not_listed() -> (
    None
):
    world = World()
    world.policy = Policy()
    with pytest.raises(ValidationError, match="webhooks are off") as off:
        world.create()
    assert off.value.field == "notify_url"
    world.policy = Policy(notify_hosts=HOSTS)
    with pytest.raises(ValidationError, match="not in REPORT_WEBHOOK_ALLOWED_HOSTS"):
        world.create("https://evil.example/x")
    with pytest.raises(ValidationError, match="private or loopback"):
        world.create("https://127.0.0.1/x")
    assert world.jobs.find(TENANT, ListQuery()) == [], "no job was stored"


def test_a_create_without_notify_url_makes_the_same_job_as_before() -> None:
    world = World()
    job = world.create(notify_url=None)
    assert job.notify_url is None
    assert world.create().notify_url == URL


def test_a_delivery_whose_job_is_gone_is_given_up_without_sending() -> None:
    world = World()
    job = world.create()
    world.run()
    ended = world.jobs.get(job.id)
    assert ended is not None
    # the same delivery in an outbox whose repository never had the job (a row deleted by hand)
    orphaned = InMemoryJobRepository()
    assert orphaned.outbox.enqueue(ended, world.clock.now()) is not None
    assert orphaned.outbox.enqueue(ended, world.clock.now()) is not None, "once per job"
    assert len(orphaned.outbox.deliveries()) == 1
    world.jobs = orphaned
    assert world.deliver().failed == 1
    assert world.sender.sent == []
    shown = world.notification(job)
    assert shown == Notification(state=DeliveryState.FAILED, attempts=8, last_error="job not found")


def test_a_sender_whose_lease_was_taken_over_does_not_overwrite_the_new_holders_record() -> None:
    world = World(answers=[503])

    class SlowSender(RecordingWebhookSender):
        """Takes longer than the lease: another sender claims the delivery meanwhile."""

        def send(self, url: str, body: bytes, headers: Any) -> Any:
            world.clock.advance(world.rules.lease_sec + 1)
            now = world.clock.now()
            world.jobs.outbox.claim_due(now, "sender-2", now + dt.timedelta(seconds=60), 10)
            return super().send(url, body, headers)

    world.sender = SlowSender([503])
    job = world.create()
    world.run()
    done = world.deliver("sender-1")
    assert done.attempted == 0, "its record did not count"
    assert world.notification(job) == Notification(state=DeliveryState.PENDING, attempts=0)


def test_one_pass_counts_each_delivery_by_how_it_ended() -> None:
    world = World(answers=[204, 200, 503, "timeout (ReadTimeout)"])
    for _ in range(4):
        world.create()
        world.run()
    done = world.deliver()
    assert (done.delivered, done.retrying, done.failed, done.attempted) == (2, 2, 0, 4)
    world.rules = msgspec.structs.replace(world.rules, max_attempts=2)
    world.sender = RecordingWebhookSender([500, 502])
    world.clock.advance(10)
    assert world.deliver() == DeliveryPass(delivered=0, retrying=0, failed=2)


def test_a_pass_attempts_at_most_a_batch_and_leaves_the_rest_for_the_next() -> None:
    world = World()
    for _ in range(3):
        world.create()
        world.run()
    world.rules = msgspec.structs.replace(world.rules, batch=2)
    assert world.deliver().delivered == 2
    assert world.deliver().delivered == 1
    assert world.deliver().attempted == 0


def test_a_claimed_delivery_is_leased_for_the_rules_lease_and_no_longer() -> None:
    world = World(answers=[503])
    world.rules = msgspec.structs.replace(world.rules, lease_sec=45.0, retry_base_sec=1.0)

    class Watcher(RecordingWebhookSender):
        """Checks, while the POST is in flight, who else could claim the delivery when."""

        def send(self, url: str, body: bytes, headers: Any) -> Any:
            now = world.clock.now()
            outbox = world.jobs.outbox
            assert outbox.claim_due(now + dt.timedelta(seconds=45), "x", now, 10) == []
            assert len(outbox.claim_due(now + dt.timedelta(seconds=46), "x", now, 10)) == 1
            return super().send(url, body, headers)

    world.sender = Watcher([503])
    world.create()
    world.run()
    assert world.deliver().attempted == 0, "the watcher took the lease over: its record counts"
    assert len(world.sender.sent) == 1


def test_a_refused_url_fails_at_once_with_the_reason_and_no_retry() -> None:
    world = World()
    job = world.create()
    world.run()
    world.rules = msgspec.structs.replace(
        world.rules, allowed_hosts=parse_allowed_hosts("x.example")
    )
    assert world.deliver() == DeliveryPass(failed=1)
    assert world.notification(job) == Notification(
        state=DeliveryState.FAILED,
        attempts=8,
        last_error="not sent: notify_url host 'hooks.example.com' is not in "
        "REPORT_WEBHOOK_ALLOWED_HOSTS",
    )
    world.clock.advance(86_400)
    assert world.deliver().attempted == 0 and world.sender.sent == []


def test_the_signature_of_an_attempt_is_stamped_with_the_clocks_second() -> None:
    world = World()
    world.create()
    world.run()
    world.clock.advance(0.75)
    world.deliver()
    [sent] = world.sender.sent
    stamp = int(world.clock.now().timestamp())
    assert sent.headers["X-FarmIQ-Signature"].startswith(f"t={stamp},v1=")
    assert verify_signature(
        SECRET, sent.headers["X-FarmIQ-Signature"], sent.body, now=stamp, tolerance_sec=0
    )


def test_a_delivery_after_its_first_attempt_sends_the_stored_body_not_the_job_as_it_is_now() -> (
    None
):
    world = World(answers=[503, 204])
    job = world.create()
    world.run()
    world.deliver()
    first = world.sender.sent[0].body
    world.clock.advance(10)
    deliver_due(  # the job JSON would differ now (another render): the retry sends the first bytes
        outbox=world.jobs.outbox,
        jobs=world.jobs,
        sender=world.sender,
        clock=world.clock,
        rules=world.rules,
        render=lambda job: {"id": job.id, "status": "changed"},
        owner="sender-1",
    )
    assert world.sender.sent[1].body == first
    assert world.notification(job) == Notification(state=DeliveryState.DELIVERED, attempts=2)


def test_notifications_are_asked_only_for_jobs_with_a_notify_url() -> None:
    world = World()
    quiet = world.create(notify_url=None)
    loud = world.create()
    asked: list[list[str]] = []

    class Outbox:
        def notifications(self, job_ids: list[str]) -> dict[str, Notification]:
            asked.append(list(job_ids))
            return {}

    assert notifications_of([quiet], Outbox()) == {}  # type: ignore[arg-type]
    assert asked == [], "a listing without webhooks costs no query"
    notifications_of([quiet, loud], Outbox())  # type: ignore[arg-type]
    assert asked == [[loud.id]]


def test_a_delivery_given_up_before_sending_stores_an_empty_body() -> None:
    world = World()
    job = world.create()
    world.run()
    ended = world.jobs.get(job.id)
    assert ended is not None
    orphaned = InMemoryJobRepository()
    orphaned.outbox.enqueue(ended, world.clock.now())
    world.jobs = orphaned
    assert world.deliver().failed == 1
    [given_up] = orphaned.outbox.deliveries()
    assert given_up.body == b"", "no job, so no body: nothing was ever sent"


def test_a_lease_lost_on_one_delivery_does_not_stop_the_pass_for_the_others() -> None:
    world = World()
    first = world.create()
    world.run()
    world.clock.advance(1)
    second = world.create()
    world.run()

    class SlowOnce(RecordingWebhookSender):
        """The first POST outlives its lease and another sender claims that delivery."""

        def send(self, url: str, body: bytes, headers: Any) -> Any:
            if not self.sent:
                world.clock.advance(world.rules.lease_sec + 1)
                now = world.clock.now()
                world.jobs.outbox.claim_due(now, "sender-2", now + dt.timedelta(seconds=60), 1)
                world.jobs.outbox.record(
                    headers["X-FarmIQ-Delivery"],
                    "sender-2",
                    after_attempt(
                        world.jobs.outbox.deliveries()[0],
                        SendResult(status=204),
                        body,
                        now,
                        world.rules,
                    ),
                )
            return super().send(url, body, headers)

    world.sender = SlowOnce()
    done = world.deliver("sender-1")
    assert done == DeliveryPass(delivered=1), "the second delivery was still sent and counted"
    assert len(world.sender.sent) == 2
    assert world.notification(first) == Notification(state=DeliveryState.DELIVERED, attempts=1)
    assert world.notification(second) == Notification(state=DeliveryState.DELIVERED, attempts=1)
