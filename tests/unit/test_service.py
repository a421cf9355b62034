"""The application object (reportcore.service.ReportService): what each method hands the use
cases it runs, pinned where a route or the worker could not tell the difference."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec
import pytest

from reportcore import (
    CreateRequest,
    Deps,
    Principal,
    ReportFormat,
    ReportService,
    RunContext,
    ValidationError,
)
from reportcore.jobs import Job
from reportcore.outbox import InMemoryOutbox
from reportcore.policy import Policy
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.webhooks import Notification, SendResult, WebhookRules, parse_allowed_hosts

TENANT = "tenant-a"
MANAGER = Principal(subject="u-1", roles=frozenset({"tenant_admin"}), tenant_id=TENANT)
START = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
HOOK = "https://hooks.example.com/reports"
RECORD = {
    "id": "r1",
    "tenantId": TENANT,
    "farmId": "f",
    "barnId": "b",
    "source": "MANUAL",
    "quantityKg": "1.5",
    "occurredAt": "2026-01-05T00:00:00Z",
    "createdAt": "2026-01-05T00:00:00Z",
}


class CountingOutbox(InMemoryOutbox):
    """The in-memory outbox, counting the questions about webhook states."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def notifications(self, job_ids: object) -> dict[str, Notification]:  # type: ignore[override]
        self.asked += 1
        return super().notifications(job_ids)  # type: ignore[arg-type]


class LeaseReadingSender:
    """Answers 200, and notes who held the lease of each delivery it was asked to send."""

    def __init__(self, outbox: InMemoryOutbox) -> None:
        self.outbox = outbox
        self.owners: list[str] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        self.owners += [owner for owner, _ in self.outbox._leases.values()]
        return SendResult(status=200)


def service(**knobs: object) -> tuple[ReportService, InMemoryJobRepository, InMemoryQueue]:
    jobs, queue = InMemoryJobRepository(), InMemoryQueue()
    outbox = jobs.outbox
    deps = Deps(
        jobs=jobs,
        queue=queue,
        store=InMemoryFileStore(),
        clock=FakeClock(START),
        source=StaticRecordSource({"FEED_INTAKE_EXPORT": [RECORD]}),
        outbox=outbox,
        sender=LeaseReadingSender(outbox),
        consumer=queue,
        policy=Policy(notify_hosts=parse_allowed_hosts("hooks.example.com"), retention_sec=60),
        webhook_rules=WebhookRules(
            secret=b"s" * 16, allowed_hosts=parse_allowed_hosts("hooks.example.com")
        ),
        download_secret=b"d" * 32,
    )
    return ReportService(msgspec.structs.replace(deps, **knobs)), jobs, queue


def feed(**fields: object) -> CreateRequest:
    return CreateRequest(job_type="FEED_INTAKE_EXPORT", format=ReportFormat.CSV, **fields)  # type: ignore[arg-type]


def run_all(reports: ReportService, queue: InMemoryQueue) -> None:
    while (message := queue.take()) is not None:
        assert reports.run(message, RunContext(owner="w1")).status == "succeeded"


def test_a_nul_in_the_tenant_a_create_names_is_a_400_before_the_tenant_is_checked() -> None:
    reports, _, queue = service()
    with pytest.raises(ValidationError) as refused:
        reports.create(feed(tenant_id="other\x00"), MANAGER)  # another tenant: else a 403
    assert refused.value.message == "tenant_id must not contain NUL characters"
    assert queue.take() is None


def test_a_create_says_whether_the_broker_confirmed_it() -> None:
    reports, _, queue = service()
    assert reports.create(feed(), MANAGER).enqueued is True
    queue.available = False
    down = reports.create(feed(), MANAGER)
    assert down.enqueued is False and not down.replayed


def test_a_new_job_asks_no_webhook_state_and_a_replay_shows_it() -> None:
    outbox = CountingOutbox()
    reports, _, queue = service(outbox=outbox)
    first = reports.create(feed(idempotency_key="k", notify_url=HOOK), MANAGER)
    assert (first.shown.notification, outbox.asked) == (None, 0)  # nothing to ask about yet
    run_all(reports, queue)
    again = reports.create(feed(idempotency_key="k", notify_url=HOOK), MANAGER)
    assert again.replayed and outbox.asked == 1


def test_deliveries_are_claimed_under_the_owner_named() -> None:
    reports, jobs, queue = service()
    reports.create(feed(notify_url=HOOK), MANAGER)
    run_all(reports, queue)
    sender = reports.deps.sender
    assert isinstance(sender, LeaseReadingSender)
    done = reports.deliver(lambda job: {"id": job.id}, "worker-7")
    assert done.delivered == 1 and sender.owners == ["worker-7"]
    (delivery,) = jobs.outbox.deliveries()
    assert delivery.state == "delivered"


def test_recovery_deletes_the_files_of_the_service_store_past_retention() -> None:
    reports, _, queue = service()
    created = reports.create(feed(), MANAGER)
    run_all(reports, queue)
    job: Job = reports.get(created.shown.job.id, TENANT).job
    assert job.file_path is not None
    store = reports.deps.store
    assert store.size(job.file_path) is not None
    clock = reports.deps.clock
    assert isinstance(clock, FakeClock)
    clock.advance(61)
    assert reports.recover().files_deleted == [job.id]
    assert store.size(job.file_path) is None
