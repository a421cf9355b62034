"""The use cases over the in-memory adapters: every edge the contract names, one test each."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reportcore import tokens
from reportcore.errors import (
    ExportFailure,
    Forbidden,
    IdempotencyKeyReused,
    JobNotCancellable,
    NotFound,
    ReportExpired,
    ReportNotReady,
    ServiceUnavailable,
    StorageFailure,
    Unauthorized,
    UpstreamBadResponse,
    UpstreamRejected,
    UpstreamUnavailable,
    ValidationError,
)
from reportcore.fairness import TenantSlots, default_share
from reportcore.finishing import through_outage
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat, Scope, message_for
from reportcore.ports import Disposition, SourcePage, SourceRequest, StoredFile
from reportcore.requests import (
    CreateRequest,
    Cursor,
    ListQuery,
    ListRequest,
    validate_create,
    validate_list,
)
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.tokens import InvalidDownloadToken
from reportcore.usecases import (
    Created,
    DownloadGrant,
    Policy,
    Recovery,
    RunOutcome,
    cancel_job,
    create_job,
    get_job,
    issue_download,
    list_jobs,
    open_file,
    recover,
)
from tests.running import run_message

TENANT = "t1"
SECRET = b"download-secret"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def feed_record(i: int) -> dict[str, Any]:
    return {
        "id": f"rec-{i}",
        "tenantId": TENANT,
        "farmId": "f1",
        "barnId": "b1",
        "source": "SILO_AUTO" if i % 3 == 0 else "MANUAL",
        "quantityKg": f"{i}.5",
        "occurredAt": f"2026-01-{10 - i:02d}T12:00:00Z",  # newest first, as the feed service
        "createdAt": "2026-01-01T00:00:00Z",
        "notes": 'a "quoted", multi\nline note' if i == 2 else None,
    }


RECORDS: Mapping[str, list[dict[str, Any]]] = {
    JobType.FEED_INTAKE_EXPORT.value: [feed_record(i) for i in range(7)]
}
FEED_BODY: dict[str, Any] = {
    "job_type": "FEED_INTAKE_EXPORT",
    "format": "csv",
    "start_date": "2026-01-01",
    "end_date": "2026-01-10",
}


class HookedSource:
    """Pages of an inner source, with a hook run once the exporter is done with page ``n``
    (the hook of the last page runs after every page was written, before the file is kept)."""

    def __init__(self, inner: Any, hooks: Mapping[int, Callable[[], None]]) -> None:
        self.inner = inner
        self.hooks = hooks

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        for n, page in enumerate(self.inner.pages(request)):
            yield page
            hook = self.hooks.get(n)
            if hook is not None:
                hook()


class World:
    """The in-memory adapters, a fake clock and a policy, with helpers that read as steps."""

    def __init__(self, policy: Policy | None = None, page_size: int = 2) -> None:
        self.jobs = InMemoryJobRepository()
        self.queue = InMemoryQueue()
        self.store = InMemoryFileStore()
        self.clock = FakeClock(START)
        self.policy = policy or Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3)
        self.source: Any = StaticRecordSource(RECORDS, page_size=page_size)

    def create(
        self, body: Mapping[str, Any] = FEED_BODY, *, tenant: str = TENANT, key: str | None = None
    ) -> Created:
        request = msgspec.convert(dict(body), CreateRequest)
        return create_job(
            validate_create(request, header_key=key),
            tenant_id=tenant,
            requested_by="u1",
            jobs=self.jobs,
            queue=self.queue,
            clock=self.clock,
        )

    def run(
        self,
        body: bytes | None = None,
        *,
        owner: str = "w1",
        source: Any = None,
        stopping: Callable[[], bool] = lambda: False,
        shares: TenantSlots | None = None,
    ) -> RunOutcome:
        message = body if body is not None else self.queue.take()
        assert message is not None, "no message on the queue"
        outcome = run_message(
            message,
            owner=owner,
            jobs=self.jobs,
            source=source or self.source,
            store=self.store,
            clock=self.clock,
            policy=self.policy,
            stopping=stopping,
            shares=shares,
            queue=self.queue,
            pause=self.clock.advance,  # a try again after an outage waits on the fake clock
        )
        self.queue.settle(message, outcome.disposition)
        return outcome

    def recover(self) -> Recovery:
        """One pass, going on where the last one left retention, as a worker does."""
        done = recover(
            jobs=self.jobs,
            queue=self.queue,
            store=self.store,
            clock=self.clock,
            policy=self.policy,
            files_after=getattr(self, "files_after", None),
        )
        self.files_after = done.files_next
        return done

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        assert job is not None
        return job

    def all_jobs(self, tenant: str = TENANT) -> list[Job]:
        return self.jobs.find(tenant, ListQuery(limit=10_000))

    def link(self, job_id: str, tenant: str = TENANT) -> DownloadGrant:
        return issue_download(
            job_id,
            tenant_id=tenant,
            jobs=self.jobs,
            store=self.store,
            clock=self.clock,
            secret=SECRET,
            policy=self.policy,
        )

    def download(self, job_id: str, tenant: str = TENANT) -> str:
        return self.link(job_id, tenant).token

    def open(self, job_id: str, token: str | None) -> Any:
        return open_file(
            job_id, token, jobs=self.jobs, store=self.store, clock=self.clock, secret=SECRET
        )

    def assert_no_file(self, job: Job) -> None:
        prefix = f"mem://{job.tenant_id}/{job.id}/"
        assert [loc for loc in self.store.files if loc.startswith(prefix)] == []

    def assert_file_matches(self, job: Job) -> bytes:
        assert job.file_path is not None
        data = self.store.files[job.file_path]
        assert (job.size_bytes, job.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        return data


def message(job_id: str) -> bytes:
    return msgspec.json.encode({"job_id": job_id})


# --- create ---


def test_a_new_job_is_stored_queued_and_published() -> None:
    world = World()
    created = world.create(key="k1")
    job = created.job
    assert (created.replayed, created.enqueued) == (False, True)
    assert (job.status, job.progress_pct, job.attempts) == (JobStatus.QUEUED, 0, 0)
    assert (job.tenant_id, job.requested_by, job.idempotency_key) == (TENANT, "u1", "k1")
    assert job.created_at == job.updated_at == START
    assert world.get(job.id).enqueued_at == START
    body = world.queue.take()
    assert body is not None and msgspec.json.decode(body)["job_id"] == job.id
    assert world.queue.take() is None


def test_the_same_request_with_the_same_key_is_a_replay_of_the_first_job() -> None:
    world = World()
    first = world.create(key="k1").job
    world.clock.advance(5)
    again = world.create(key="k1")
    assert again.replayed and again.job.id == first.id
    assert again.enqueued is True, "the first create published it (or recovery will)"
    assert [j.id for j in world.all_jobs()] == [first.id]
    assert world.queue.pending() == 1, "a replay published a second message"


OPTIONS_BODY = {
    **FEED_BODY,
    "compression": "gzip",
    "csv": {"delimiter": ";", "bom": True, "line_ending": "lf"},
    "columns": ["id", "quantity_kg"],
    "timezone": "Asia/Bangkok",
}


def test_the_same_request_with_export_options_and_key_is_a_replay() -> None:
    world = World()
    first = world.create(OPTIONS_BODY, key="k1").job
    again = world.create(OPTIONS_BODY, key="k1")
    assert again.replayed and again.job.id == first.id


@pytest.mark.parametrize(
    "change",
    [
        {"compression": "none"},
        {"csv": {"delimiter": ",", "bom": True, "line_ending": "lf"}},
        {"columns": ["id"]},
        {"timezone": "UTC"},
    ],
    ids=["compression", "csv", "columns", "timezone"],
)
def test_the_same_key_with_other_export_options_is_refused(change: dict[str, Any]) -> None:
    world = World()
    world.create(OPTIONS_BODY, key="k1")
    with pytest.raises(IdempotencyKeyReused):
        world.create({**OPTIONS_BODY, **change}, key="k1")


def test_the_same_key_with_a_different_request_is_refused_and_stores_nothing() -> None:
    world = World()
    world.create(key="k1")
    with pytest.raises(IdempotencyKeyReused):
        world.create({**FEED_BODY, "format": "json"}, key="k1")
    assert len(world.all_jobs()) == 1


@pytest.mark.parametrize("later", ["a day later", "a narrower knob"])
def test_a_replay_gets_its_job_when_today_or_the_knobs_would_refuse_the_request_now(
    later: str,
) -> None:
    """The contract: the same tenant, key and request answer the job, always; the range and
    host checks (which depend on today and on the service's knobs) apply to new jobs only."""
    world = World()
    body = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv", "start_date": "2025-01-01"}
    policy = Policy(max_range_days={"FEED_INTAKE_EXPORT": 366})

    def create(key: str) -> Created:
        return create_job(
            validate_create(msgspec.convert(body, CreateRequest), header_key=key),
            tenant_id=TENANT,
            requested_by="u1",
            jobs=world.jobs,
            queue=world.queue,
            clock=world.clock,
            policy=policy,
        )

    first = create("monthly-1").job  # 2025-01-01..today (2026-01-01): 366 days
    if later == "a day later":
        world.clock.advance(86_400)
    else:
        policy = Policy(max_range_days={"FEED_INTAKE_EXPORT": 30})
    again = create("monthly-1")
    assert again.replayed and again.job.id == first.id
    with pytest.raises(ValidationError, match="may span at most"):
        create("monthly-2")  # a new job is checked as ever
    assert [j.id for j in world.all_jobs()] == [first.id]


def test_keys_are_per_tenant_and_creates_without_a_key_are_never_replays() -> None:
    world = World()
    a = world.create(key="k1").job
    b = world.create(key="k1", tenant="t2").job
    assert a.id != b.id
    c, d = world.create().job, world.create().job
    assert len({a.id, c.id, d.id}) == 3
    assert len(world.all_jobs()) == 3


def test_a_create_while_the_queue_is_down_succeeds_and_recovery_publishes_it() -> None:
    world = World()
    world.queue.available = False
    created = world.create()
    assert (created.replayed, created.enqueued) == (False, False)
    assert world.get(created.job.id).enqueued_at is None
    world.queue.available = True
    assert world.recover().published == [], "published before the create could have done it"
    world.clock.advance(world.policy.republish_after_sec + 1)
    assert world.recover().published == [created.job.id]
    assert world.get(created.job.id).enqueued_at == world.clock.now()
    assert world.recover().published == []
    assert world.run().status == "succeeded"


def test_a_create_fails_with_service_unavailable_when_jobs_cannot_be_stored() -> None:
    world = World()
    world.jobs.available = False
    with pytest.raises(ServiceUnavailable):
        world.create()
    assert world.queue.pending() == 0


# --- read ---


@pytest.mark.parametrize("spelling", [str.upper, lambda s: s.replace("-", ""), str])
def test_a_job_is_found_by_any_spelling_of_its_id(spelling: Callable[[str], str]) -> None:
    world = World()
    job = world.create().job
    assert get_job(spelling(job.id), tenant_id=TENANT, jobs=world.jobs).id == job.id


@pytest.mark.parametrize("job_id", ["not-a-uuid", "", str(uuid.UUID(int=7))])
def test_a_missing_job_or_a_bad_id_is_not_found(job_id: str) -> None:
    world = World()
    world.create()
    with pytest.raises(NotFound, match=r"^report job not found$"):
        get_job(job_id, tenant_id=TENANT, jobs=world.jobs)


@pytest.mark.parametrize("job_id", ["not-a-uuid", "", "1" * 300])
def test_a_malformed_id_is_not_found_without_asking_the_job_store(job_id: str) -> None:
    asked: list[object] = []

    class Watched(InMemoryJobRepository):
        def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
            asked.append(job_id)
            return super().get(job_id, tenant_id)

    with pytest.raises(NotFound, match=r"^report job not found$"):
        get_job(job_id, tenant_id=TENANT, jobs=Watched())
    assert asked == [], "a store whose ids are UUIDs would choke on it"


def test_another_tenants_job_is_indistinguishable_from_a_missing_one() -> None:
    world = World()
    job = world.create(tenant="t2").job
    with pytest.raises(NotFound) as other:
        get_job(job.id, tenant_id=TENANT, jobs=world.jobs)
    with pytest.raises(NotFound) as missing:
        get_job(str(uuid.uuid4()), tenant_id=TENANT, jobs=world.jobs)
    assert other.value.message == missing.value.message
    for act in (
        lambda: cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock),
        lambda: world.download(job.id),
    ):
        with pytest.raises(NotFound):
            act()


@given(
    before=st.integers(min_value=0, max_value=12),
    during=st.lists(st.integers(min_value=0, max_value=3), max_size=6),
    limit=st.integers(min_value=1, max_value=5),
    same_instant=st.booleans(),
)
def test_paging_with_next_cursor_yields_every_job_once_while_new_jobs_arrive(
    before: int, during: list[int], limit: int, same_instant: bool
) -> None:
    world = World()
    expected: set[str] = set()
    for _ in range(before):
        expected.add(world.create().job.id)
        if not same_instant:
            world.clock.advance(1)
    world.create(tenant="t2")
    seen: list[str] = []
    after: Cursor | None = None
    for arriving in [*during, *[0] * 100]:
        page = list_jobs(
            validate_list(ListRequest(after=after, limit=limit)), tenant_id=TENANT, jobs=world.jobs
        )
        assert len(page.items) <= limit
        keys = [(j.created_at, j.id) for j in page.items]
        assert keys == sorted(keys, reverse=True), "not newest first"
        seen += [j.id for j in page.items]
        for _ in range(arriving):
            world.create()  # newer than everything paged so far
        after = page.after
        if after is None:
            break
    assert len(seen) == len(set(seen)), "a job was listed twice"
    assert expected <= set(seen), "a job was skipped"
    assert set(seen) <= {j.id for j in world.all_jobs()}


def test_listing_filters_by_status_type_and_creation_time() -> None:
    world = World()
    old = world.create().job
    world.clock.advance(86_400)
    new = world.create({"job_type": "TELEMETRY_EXPORT", "format": "json"}).job
    cancel_job(new.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)

    def ids(**values: Any) -> list[str]:
        page = list_jobs(validate_list(ListRequest(**values)), tenant_id=TENANT, jobs=world.jobs)
        return [j.id for j in page.items]

    assert ids() == [new.id, old.id]
    assert ids(status="cancelled") == [new.id]
    assert ids(job_type="FEED_INTAKE_EXPORT") == [old.id]
    assert ids(created_from="2026-01-02") == [new.id]
    assert ids(created_to="2026-01-01") == [old.id]
    page = list_jobs(validate_list(ListRequest(limit=1)), tenant_id=TENANT, jobs=world.jobs)
    assert page.after is not None
    rest = list_jobs(
        validate_list(ListRequest(limit=1, after=page.after)), tenant_id=TENANT, jobs=world.jobs
    )
    assert [j.id for j in rest.items] == [old.id] and rest.after is None


# --- cancel ---


def test_a_queued_job_is_cancelled_at_once_and_never_runs() -> None:
    world = World()
    job = world.create().job
    world.clock.advance(3)
    cancelled = cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at == world.clock.now()
    outcome = world.run()
    assert (outcome.disposition, outcome.status) == (Disposition.ACK, "cancelled")
    world.assert_no_file(cancelled)


def test_a_running_job_is_cancelled() -> None:
    world = World()
    job = world.create().job
    assert world.jobs.claim(job.id, "w9", START, START + dt.timedelta(seconds=30))
    cancelled = cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    assert (cancelled.status, cancelled.lease_owner) == (JobStatus.CANCELLED, None)


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
def test_a_finished_job_is_not_cancellable(ending: str) -> None:
    world = World()
    job = world.create().job
    if ending == "succeeded":
        world.run()
    elif ending == "failed":
        world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamRejected("feed 400")))
    else:
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    before = world.get(job.id)
    assert before.status.value == ending
    with pytest.raises(JobNotCancellable) as raised:
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    assert raised.value.message == f"job is {ending} and can no longer be cancelled"
    assert world.get(job.id) == before


class FinishingFirstJobs(InMemoryJobRepository):
    """A store where the worker finishes the job just before the cancel reaches it."""

    def cancel(self, job_id: str, tenant_id: str, now: dt.datetime) -> Job | None:
        claimed = self.claim(job_id, "w", now, now)
        assert claimed is not None
        file = StoredFile(location="mem://x", size_bytes=0, sha256="0" * 64)
        self.succeed(job_id, "w", now, file, None)
        return super().cancel(job_id, tenant_id, now)


def test_a_cancel_that_loses_the_race_to_the_finish_says_the_job_finished() -> None:
    world = World()
    world.jobs = FinishingFirstJobs()
    job = world.create().job
    with pytest.raises(
        JobNotCancellable, match=r"^job is succeeded and can no longer be cancelled$"
    ):
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)


# --- download and file ---


def succeeded(world: World, body: Mapping[str, Any] = FEED_BODY) -> Job:
    job = world.create(body).job
    assert world.run().status == "succeeded"
    return world.get(job.id)


@pytest.mark.parametrize("state", ["queued", "running", "failed", "cancelled"])
def test_a_download_of_an_unfinished_or_unsuccessful_job_is_not_ready(state: str) -> None:
    world = World()
    job = world.create().job
    if state == "running":
        world.jobs.claim(job.id, "w", START, START + dt.timedelta(seconds=30))
    elif state == "failed":
        world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamUnavailable("feed down")))
    elif state == "cancelled":
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    with pytest.raises(ReportNotReady) as raised:
        world.download(job.id)
    assert raised.value.message == f"report is {state}, not succeeded"


def test_a_download_link_is_signed_for_the_job_and_its_tenant() -> None:
    world = World(Policy(download_ttl_sec=60))
    job = succeeded(world)
    link = world.link(job.id)
    assert link.job_id == job.id
    assert link.expires_at == world.clock.now() + dt.timedelta(seconds=60)
    claims = tokens.verify(SECRET, link.token, now=START.timestamp())
    assert (claims.tenant_id, claims.job_id) == (TENANT, job.id)
    assert claims.exp == int(link.expires_at.timestamp())


class DirectStore(InMemoryFileStore):
    """A store that hands out direct URLs (a presigned object-store URL, say)."""

    def download_url(
        self, location: str, expires_at: dt.datetime, file_name: str | None = None
    ) -> str | None:
        return (
            f"https://bucket.example/{location}?until={int(expires_at.timestamp())}&as={file_name}"
        )


class RecordingDirectStore(DirectStore):
    """A :class:`DirectStore` that keeps the ``expires_at`` of each URL it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[dt.datetime] = []

    def download_url(
        self, location: str, expires_at: dt.datetime, file_name: str | None = None
    ) -> str | None:
        self.asked.append(expires_at)
        return super().download_url(location, expires_at, file_name)


def test_a_download_url_works_until_the_instant_its_expires_at_shows_and_not_after() -> None:
    """exp is whole seconds: with expires_at at .75 s the URL stopped 0.75 s before it."""
    world = World(Policy(download_ttl_sec=60))
    job = succeeded(world)
    world.clock.advance(0.75)
    link = world.link(job.id)
    shown = link.expires_at
    assert shown == (world.clock.now() + dt.timedelta(seconds=60)).replace(microsecond=0)
    just_before = (shown - dt.timedelta(microseconds=1)).timestamp()
    assert tokens.verify(SECRET, link.token, now=just_before).exp == shown.timestamp()
    with pytest.raises(InvalidDownloadToken):
        tokens.verify(SECRET, link.token, now=shown.timestamp())


def test_a_store_with_direct_urls_still_gets_a_token_url_and_redirects_after_the_check() -> None:
    world = World(Policy(download_ttl_sec=60))
    world.store = DirectStore()
    job = succeeded(world)
    link = world.link(job.id)
    assert link.job_id == job.id  # the API's own file route: the store's URL comes after it
    token = link.token
    world.clock.advance(20)
    served = world.open(job.id, token)
    until = int(link.expires_at.timestamp())  # the token's end, not a fresh TTL
    assert served.direct_url == (
        f"https://bucket.example/{job.file_path}?until={until}&as=feed_intake_export.csv"
    )
    with pytest.raises(Forbidden):
        world.open(str(uuid.uuid4()), token)


def test_a_direct_url_is_asked_until_the_tokens_end_as_an_aware_utc_instant() -> None:
    world = World(Policy(download_ttl_sec=60))
    world.store = store = RecordingDirectStore()
    job = succeeded(world)
    world.open(job.id, world.download(job.id))
    # a naive instant would be read as local time by a store that signs URLs with it
    assert store.asked == [dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)]
    assert store.asked[0].utcoffset() == dt.timedelta(0)


def test_a_file_is_served_with_what_its_headers_need() -> None:
    world = World()
    job = succeeded(world)
    served = world.open(job.id, world.download(job.id))
    data = world.assert_file_matches(job)
    assert (served.location, served.size_bytes, served.sha256) == (
        job.file_path,
        len(data),
        job.sha256,
    )
    assert (served.file_name, served.mime_type) == (
        "feed_intake_export.csv",
        "text/csv; charset=utf-8",
    )
    assert b"".join(world.store.read(served.location, 3, 9)) == data[3:10]


def test_a_legacy_row_without_file_name_and_type_is_served_under_the_default_ones() -> None:
    world = World()
    done = succeeded(world, {**FEED_BODY, "format": "json"})
    job = msgspec.structs.replace(done, id=str(uuid.uuid4()), file_name=None, mime_type=None)
    world.jobs.add(job)  # a row the old service wrote, pointing at a file that exists
    served = world.open(job.id, world.download(job.id))
    assert (served.file_name, served.mime_type) == (
        "feed_intake_export.json",
        "application/x-ndjson",
    )


@pytest.mark.parametrize(
    ("filters", "named"),
    [({"farmId": "f1"}, "unknown filter 'farmId'"), ({"source": 1}, "filter 'source' must be")],
    ids=["unknown key", "not a string"],
)
def test_a_job_the_old_api_queued_with_filters_it_never_checked_fails_saying_which(
    filters: dict[str, Any], named: str
) -> None:
    """The old api took any filters object (its worker ignored it): such a job failed as a
    bug ("failed unexpectedly (KeyError)", a traceback in the log). It fails naming the
    filter, as the api would have refused it, and nothing is fetched for it."""
    world = World()
    queued = world.create().job
    old = msgspec.structs.replace(
        queued, id=str(uuid.uuid4()), idempotency_key=None, filters=filters
    )
    world.jobs.add(old)
    outcome = world.run(msgspec.json.encode(message_for(old)))
    assert (outcome.job_id, outcome.status) == (old.id, "failed")
    failed = world.get(old.id)
    assert failed.error_code == "EXPORT_FAILED"
    assert failed.error_message is not None and named in failed.error_message
    assert failed.error_message.startswith("the job's filters cannot be applied: ")
    assert not outcome.crash, "no traceback: not a bug"


def test_a_gzip_row_without_file_name_and_type_is_served_under_the_gzip_defaults() -> None:
    world = World()
    done = succeeded(world, {**FEED_BODY, "compression": "gzip"})
    job = msgspec.structs.replace(done, id=str(uuid.uuid4()), file_name=None, mime_type=None)
    world.jobs.add(job)
    served = world.open(job.id, world.download(job.id))
    assert (served.file_name, served.mime_type) == ("feed_intake_export.csv.gz", "application/gzip")


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b", "x" * 10_000])
def test_a_file_without_a_genuine_token_is_unauthorized(token: str | None) -> None:
    world = World()
    job = succeeded(world)
    with pytest.raises(InvalidDownloadToken) as raised:
        world.open(job.id, token)
    assert raised.value.code == Unauthorized.code


def test_a_forged_token_is_unauthorized() -> None:
    world = World()
    job = succeeded(world)
    forged = tokens.sign(b"not-the-secret", tokens.DownloadClaims(TENANT, job.id, 2**31))
    with pytest.raises(InvalidDownloadToken):
        world.open(job.id, forged)


@pytest.mark.parametrize("path_id", ["other", "not-a-uuid"])
def test_a_token_for_another_job_is_forbidden(path_id: str) -> None:
    world = World()
    job = succeeded(world)
    other = succeeded(world).id if path_id == "other" else path_id
    with pytest.raises(Forbidden, match=r"^download token is for another job$"):
        world.open(other, world.download(job.id))


def test_a_token_for_a_job_that_is_not_there_or_not_succeeded_finds_no_file() -> None:
    world = World()
    queued = world.create().job
    exp = int(START.timestamp()) + 60
    for tenant, job_id in [(TENANT, queued.id), (TENANT, str(uuid.uuid4())), ("t2", queued.id)]:
        token = tokens.sign(SECRET, tokens.DownloadClaims(tenant, job_id, exp))
        with pytest.raises(NotFound):
            world.open(job_id, token)


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RUNNING])
def test_only_a_succeeded_job_is_served_even_if_its_row_names_a_file(status: JobStatus) -> None:
    world = World()
    done = succeeded(world)
    token = world.download(done.id)
    # a row that names a stored file but did not succeed (damaged, or written by hand)
    odd = msgspec.structs.replace(done, id=str(uuid.uuid4()), status=status)
    world.jobs.add(odd)
    with pytest.raises(ReportNotReady):
        world.download(odd.id)
    exp = int(START.timestamp()) + 60
    odd_token = tokens.sign(SECRET, tokens.DownloadClaims(TENANT, odd.id, exp))
    with pytest.raises(NotFound, match=r"^report file not found$"):
        world.open(odd.id, odd_token)
    assert world.open(done.id, token).location == done.file_path


def test_a_succeeded_row_without_a_file_gets_no_download_link() -> None:
    world = World()
    done = succeeded(world)
    odd = msgspec.structs.replace(done, id=str(uuid.uuid4()), file_path=None)
    world.jobs.add(odd)
    with pytest.raises(ReportNotReady):
        world.download(odd.id)


def test_a_file_missing_from_the_store_is_not_found() -> None:
    world = World()
    job = succeeded(world)
    token = world.download(job.id)
    assert job.file_path is not None
    world.store.delete(job.file_path)
    with pytest.raises(NotFound, match=r"^report file not found$"):
        world.open(job.id, token)


def test_a_file_past_retention_is_gone_even_before_recovery_deletes_it() -> None:
    world = World(Policy(retention_sec=3600, download_ttl_sec=7200))
    job = succeeded(world)
    assert job.expires_at == job.finished_at + dt.timedelta(seconds=3600)  # type: ignore[operator]
    token = world.download(job.id)
    world.clock.advance(3600)
    with pytest.raises(ReportExpired, match=r"^report file has expired$"):
        world.download(job.id)
    with pytest.raises(ReportExpired, match=r"^report file has expired$"):
        world.open(job.id, token)
    assert world.recover().files_deleted == [job.id]
    gone = world.get(job.id)
    assert gone.status is JobStatus.SUCCEEDED, "expiry changed the status"
    assert gone.file_deleted_at == world.clock.now()
    world.assert_no_file(gone)
    with pytest.raises(ReportExpired):
        world.download(job.id)


def test_a_retention_of_one_second_still_expires_the_file() -> None:
    world = World(Policy(retention_sec=1))
    job = succeeded(world)
    assert job.expires_at == job.finished_at + dt.timedelta(seconds=1)  # type: ignore[operator]


def test_a_file_deleted_by_retention_is_gone_whatever_its_expiry_says() -> None:
    world = World(Policy(retention_sec=0))
    job = succeeded(world)
    assert job.expires_at is None, "retention 0 keeps files forever"
    world.clock.advance(10**8)
    assert world.recover().files_deleted == []
    token = world.download(job.id)
    world.jobs.mark_file_deleted(job.id, world.clock.now())
    with pytest.raises(ReportExpired):
        world.download(job.id)
    with pytest.raises(ReportExpired):
        world.open(job.id, token)


# --- running a message ---


# plain ids: mutmut selects tests by id in a second pytest run of its own process, where the
# repr of b"\xff\xfe" was "not found" (exit 4) though a fresh process finds it
@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"job_id": 5}',
        b"[]",
        b'"x"',
        b"\xff\xfe",
        b'{"job_id":"\xff"}',
        # msgspec raises RecursionError on JSON nested ~1,000 deep: once read as an outage,
        # the message was handed back at the head of the queue, forever
        b'{"job_id":"6a1f2c9e-0d4b-4f7a-9c1e-2b3d4e5f6a7b","scope":{"filters":'
        + b"[" * 5_000
        + b"]" * 5_000
        + b"}}",
    ],
    ids=[
        "not json",
        "no job_id",
        "number job_id",
        "array",
        "string",
        "not utf-8",
        "bad utf-8",
        "nested deep",
    ],
)
def test_an_unparsable_message_is_dead_lettered(body: bytes) -> None:
    world = World()
    outcome = world.run(body)
    assert (outcome.disposition, outcome.job_id, outcome.status) == (
        Disposition.DEAD_LETTER,
        None,
        "unparsable",
    )
    assert outcome.detail
    assert world.queue.dead_letters == [body]


@pytest.mark.parametrize(
    "extra", [{"requested_by": 42}, {"scope": "x"}, {"tenant_id": ["t"]}, {"format": 5}]
)
def test_a_message_is_run_by_its_job_id_whatever_else_it_carries(extra: dict[str, Any]) -> None:
    """Only job_id is read (the row is the truth): a field of another type, from another
    publisher, dead-lettered a job that could run and left it queued for good."""
    world = World()
    job = world.create().job
    world.queue.take()
    body = msgspec.json.encode({"job_id": job.id, **extra})
    assert world.run(body).status == "succeeded"


def test_a_dead_lettered_message_says_why_it_could_not_be_read() -> None:
    outcome = World().run(b"{}")
    assert outcome.detail == "Object missing required field `job_id`"  # msgspec's own words


@pytest.mark.parametrize("job_id", [str(uuid.UUID(int=9)), "not-a-uuid", ""])
def test_a_message_for_an_unknown_job_is_dead_lettered(job_id: str) -> None:
    world = World()
    world.create()
    outcome = world.run(message(job_id))
    assert (outcome.disposition, outcome.job_id, outcome.status) == (
        Disposition.DEAD_LETTER,
        job_id,
        "unknown job",
    )


@pytest.mark.parametrize("job_id", ["not-a-uuid", ""])
def test_a_message_with_a_malformed_id_is_dead_lettered_without_asking_the_job_store(
    job_id: str,
) -> None:
    asked: list[object] = []

    class Watched(InMemoryJobRepository):
        def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
            asked.append(job_id)
            return super().get(job_id, tenant_id)

    world = World()
    world.jobs = Watched()
    assert world.run(message(job_id)).status == "unknown job"
    assert asked == []


def test_an_old_service_message_with_its_full_scope_runs() -> None:
    world = World()
    job = world.create().job
    world.queue.take()
    old = (
        b'{"job_id":"' + job.id.upper().encode() + b'","tenant_id":"t1","job_type":'
        b'"FEED_INTAKE_EXPORT","format":"csv","scope":{"farm_id":null,"barn_id":null,'
        b'"batch_id":null,"start_date":"2026-01-01","end_date":"2026-01-10","filters":{}},'
        b'"requested_by":"u1","extra":true}'
    )
    assert world.run(old).status == "succeeded"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_job_runs_to_a_complete_file_whose_size_and_sha256_it_records(fmt: str) -> None:
    world = World(Policy(retention_sec=100))
    job = world.create({**FEED_BODY, "format": fmt}).job
    outcome = world.run(owner="w7")
    assert (outcome.disposition, outcome.job_id, outcome.status) == (
        Disposition.ACK,
        job.id,
        "succeeded",
    )
    assert outcome.detail.startswith("7 rows, ")
    done = world.get(job.id)
    data = world.assert_file_matches(done)
    assert (done.progress_pct, done.attempts, done.lease_owner) == (100, 1, None)
    assert done.file_path == f"mem://{TENANT}/{job.id}/report.{fmt}"
    assert done.started_at == done.finished_at == START
    assert done.expires_at == START + dt.timedelta(seconds=100)
    if fmt == "json":
        lines = data.removesuffix(b"\n").split(b"\n")  # NDJSON: a record a line, LF-terminated
        assert [msgspec.json.decode(line) for line in lines] == RECORDS["FEED_INTAKE_EXPORT"]
    else:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        assert len(rows) == 8  # header and 7 rows, one of them with a line break in a cell
        assert b',"a ""quoted"", multi\nline note",' in data


def test_a_stream_filter_keeps_only_its_records_in_ndjson_too() -> None:
    world = World()
    job = world.create({**FEED_BODY, "format": "json", "filters": {"source": "SILO_AUTO"}}).job
    assert world.run().detail.startswith("3 rows")
    data = world.assert_file_matches(world.get(job.id))
    assert [msgspec.json.decode(line)["id"] for line in data.splitlines()] == [
        "rec-0",
        "rec-3",
        "rec-6",
    ]


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled", "running"])
def test_a_late_or_duplicate_message_is_acknowledged_and_changes_nothing(status: str) -> None:
    world = World()
    job = world.create().job
    body = world.queue.take()
    assert body is not None
    if status == "succeeded":
        world.run(body)
    elif status == "failed":
        world.run(body, source=StaticRecordSource(RECORDS, fail_with=UpstreamRejected("400")))
    elif status == "cancelled":
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    else:
        world.jobs.claim(job.id, "w-other", START, START + dt.timedelta(seconds=30))
    before = world.get(job.id)
    world.clock.advance(5)
    outcome = world.run(body, owner="w-late")
    assert (outcome.disposition, outcome.job_id, outcome.status) == (
        Disposition.ACK,
        job.id,
        status,
    )
    assert world.get(job.id) == before


class ClaimedElsewhereJobs(InMemoryJobRepository):
    """A store where another worker claims every job between our read and our claim."""

    def claim(
        self, job_id: str, owner: str, now: dt.datetime, lease_until: dt.datetime
    ) -> Job | None:
        super().claim(job_id, "w-other", now, lease_until)
        return super().claim(job_id, owner, now, lease_until)


def test_a_job_claimed_by_another_worker_first_is_left_to_it() -> None:
    world = World()
    world.jobs = ClaimedElsewhereJobs()
    job = world.create().job
    outcome = world.run()
    assert (outcome.disposition, outcome.status) == (Disposition.ACK, "claimed elsewhere")
    assert outcome.job_id == job.id
    assert world.get(job.id).lease_owner == "w-other"


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamUnavailable("feed service: 503 after 4 tries"),
        UpstreamRejected("feed service answered 400"),
        UpstreamBadResponse("feed service sent no items"),
    ],
    ids=lambda e: e.code,
)
def test_an_upstream_failure_fails_the_job_with_its_code_and_leaves_no_file(
    failure: ExportFailure,
) -> None:
    world = World()
    job = world.create().job
    outcome = world.run(source=StaticRecordSource(RECORDS, fail_with=failure))
    assert (outcome.disposition, outcome.status, outcome.detail) == (
        Disposition.ACK,
        "failed",
        failure.code,
    )
    failed = world.get(job.id)
    assert (failed.error_code, failed.error_message) == (failure.code, failure.message)
    assert failed.finished_at == START and failed.progress_pct < 100
    world.assert_no_file(failed)


def test_a_long_error_message_is_cut_to_2000_characters() -> None:
    world = World()
    job = world.create().job
    world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamRejected("x" * 5000)))
    assert world.get(job.id).error_message == "x" * 2000


def test_a_storage_failure_fails_the_job_as_storage_failed_with_no_file() -> None:
    world = World()
    world.store.fail_writes = True
    job = world.create().job
    assert world.run().status == "failed"
    failed = world.get(job.id)
    assert failed.error_code == "STORAGE_FAILED"
    assert "no space left" in (failed.error_message or "")
    world.assert_no_file(failed)


class BrokenWriter:
    def __init__(self, error: OSError, on: str) -> None:
        self.error, self.on, self.aborted = error, on, False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.on == "write":
            raise self.error

    def commit(self) -> str:
        raise self.error

    def abort(self) -> None:
        self.aborted = True


class BrokenStore(InMemoryFileStore):
    """A store whose writes (or whose folder creation) fail as a full or read-only disk does."""

    def __init__(self, error: OSError, on: str) -> None:
        super().__init__()
        self.error, self.on = error, on
        self.writers: list[BrokenWriter] = []

    def create(self, tenant_id: str, job_id: str, extension: str) -> Any:
        if self.on == "create":
            raise self.error
        self.writers.append(BrokenWriter(self.error, self.on))
        return self.writers[-1]


class UnabortableWriter(BrokenWriter):
    """A writer whose clean-up fails (its volume went away)."""

    def abort(self) -> None:
        super().abort()
        raise OSError(5, "Input/output error")


class UnabortableStore(InMemoryFileStore):
    def __init__(self) -> None:
        super().__init__()
        self.writers: list[UnabortableWriter] = []

    def create(self, tenant_id: str, job_id: str, extension: str) -> Any:
        self.writers.append(UnabortableWriter(OSError(28, "unused"), on="nothing"))
        return self.writers[-1]


def test_a_clean_up_that_fails_does_not_replace_why_the_export_failed() -> None:
    """The upstream's outage is the job's failure, not the STORAGE_FAILED of the file's
    clean-up that failed after it."""
    world = World()
    world.store = UnabortableStore()
    writers = world.store.writers
    job = world.create().job
    outcome = world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamUnavailable("down")))
    assert (outcome.status, outcome.detail) == ("failed", "UPSTREAM_UNAVAILABLE")
    assert world.get(job.id).error_code == "UPSTREAM_UNAVAILABLE"
    assert all(w.aborted for w in writers)


@pytest.mark.parametrize("on", ["create", "write", "commit"])
def test_an_os_error_of_the_store_fails_the_job_as_storage_failed(on: str) -> None:
    world = World()
    world.store = BrokenStore(OSError(28, "No space left on device"), on)
    job = world.create().job
    outcome = world.run()
    assert (outcome.disposition, outcome.status, outcome.detail) == (
        Disposition.ACK,
        "failed",
        "STORAGE_FAILED",
    )
    failed = world.get(job.id)
    assert failed.error_code == "STORAGE_FAILED"
    assert failed.error_message == "export file could not be written: No space left on device"
    assert all(w.aborted for w in world.store.writers)


def test_an_os_error_without_a_reason_is_named_by_its_text() -> None:
    world = World()
    world.store = BrokenStore(OSError("the export volume went away"), "write")
    job = world.create().job
    world.run()
    assert world.get(job.id).error_message == (
        "export file could not be written: the export volume went away"
    )


def test_a_failure_recorded_by_nobody_because_the_job_moved_on_is_reported_lost() -> None:
    world = World()
    world.jobs = LosingRaceJobs()  # its fail() finds the job no longer this worker's
    world.create()
    outcome = world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamRejected("no")))
    assert (outcome.status, outcome.detail) == ("lost", "UPSTREAM_REJECTED")


def test_a_store_that_cannot_create_the_file_fails_the_job_as_storage_failed() -> None:
    world = World()
    world.store = BrokenStore(OSError(13, "Permission denied"), "create")
    world.store.error = StorageFailure("export folder is not writable")  # type: ignore[assignment]
    job = world.create().job
    assert world.run().detail == "STORAGE_FAILED"
    assert world.get(job.id).error_message == "export folder is not writable"


@pytest.mark.parametrize("when", ["before the first page", "after a page"])
def test_on_shutdown_the_job_is_handed_back_queued_with_no_file(when: str) -> None:
    world = World()
    job = world.create().job
    pages_seen = []
    source = HookedSource(world.source, {0: lambda: pages_seen.append(1)})

    def stopping() -> bool:
        return when == "before the first page" or bool(pages_seen)

    outcome = world.run(source=source, stopping=stopping)
    assert (outcome.disposition, outcome.status) == (Disposition.REQUEUE, "handed back")
    assert outcome.job_id == job.id
    back = world.get(job.id)
    assert (back.status, back.lease_owner, back.lease_expires_at) == (JobStatus.QUEUED, None, None)
    world.assert_no_file(back)
    assert world.queue.pending() == 1, "the message was not handed back"
    assert world.run(owner="w2").status == "succeeded"


def test_a_long_export_shows_progress_and_keeps_its_lease() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1), page_size=1)
    job = world.create().job
    seen: list[tuple[int, dt.datetime | None]] = []

    def tick() -> None:
        world.clock.advance(2)
        current = world.get(job.id)
        seen.append((current.progress_pct, current.lease_expires_at))

    source = HookedSource(world.source, dict.fromkeys(range(7), tick))
    assert world.run(source=source).status == "succeeded"
    progress = [p for p, _ in seen]
    assert progress == sorted(progress) and 0 < progress[-1] < 100
    assert len(set(progress)) > 3, "progress did not move visibly"
    leases = [lease for _, lease in seen]
    assert all(
        lease is not None and lease > START + dt.timedelta(seconds=30) for lease in leases[1:]
    )


@pytest.mark.parametrize("notice", ["at a heartbeat", "only at the end"])
def test_a_job_cancelled_while_running_ends_cancelled_with_no_file(notice: str) -> None:
    world = World()
    job = world.create().job

    def cancel() -> None:
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
        if notice == "at a heartbeat":
            world.clock.advance(world.policy.heartbeat_sec)

    hooks = {0: cancel} if notice == "at a heartbeat" else {3: cancel}
    outcome = world.run(source=HookedSource(world.source, hooks))
    assert (outcome.disposition, outcome.status) == (Disposition.ACK, "cancelled")
    cancelled = world.get(job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.progress_pct < 100
    world.assert_no_file(cancelled)


class OnCommitStore(InMemoryFileStore):
    """A store that runs ``hook`` once, just after the first file is kept (the narrowest race)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = None

    def create(self, tenant_id: str, job_id: str, extension: str) -> Any:
        writer = super().create(tenant_id, job_id, extension)
        commit = writer.commit

        def commit_then_hook() -> str:
            location = commit()
            hook, self.hook = self.hook, None
            if hook is not None:
                hook()
            return location

        writer.commit = commit_then_hook  # type: ignore[method-assign]
        return writer


def test_a_cancel_landing_as_the_file_is_kept_removes_the_file_again() -> None:
    world = World()
    world.store = store = OnCommitStore()
    job = world.create().job

    def cancel() -> None:
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)

    store.hook = cancel
    assert world.run().status == "cancelled"
    world.assert_no_file(world.get(job.id))


def test_a_cancel_landing_as_the_file_is_kept_with_a_store_that_will_not_delete_it() -> None:
    """The store's refusal escaped the run: the message went back to the queue, and its next
    delivery found the job cancelled and acked it, so the retry helped nothing and the file
    stayed unsaid. The message is acked now, and the outcome names the file left."""

    class Refusing(OnCommitStore):
        def delete(self, location: str) -> None:
            raise StorageFailure("export file could not be deleted: permission denied")

    world = World()
    world.store = store = Refusing()
    job = world.create().job
    store.hook = lambda: cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    outcome = world.run()
    assert (outcome.disposition, outcome.status) == (Disposition.ACK, "cancelled")
    assert outcome.detail.startswith("file left at ")
    assert "permission denied" in outcome.detail


@pytest.mark.parametrize("holder", ["queued again", "running elsewhere"])
def test_a_worker_whose_lease_ran_out_leaves_the_jobs_file_to_its_next_holder(
    holder: str,
) -> None:
    """A worker paused past its lease (recovery handed the job on) finishes its file after all:
    it used to delete the job's file at its refused finish, the same location the next holder
    writes; had that holder already committed (and not yet recorded) it, the job would then
    succeed naming no file. The holder overwrites or removes the file; the late one leaves it."""
    world = World()
    world.store = store = OnCommitStore()
    job = world.create().job

    def handed_on() -> None:
        world.clock.advance(world.policy.lease_sec + 1)
        assert world.recover().requeued == [job.id]
        if holder == "running elsewhere":
            now = world.clock.now()
            assert world.jobs.claim(job.id, "w2", now, now + dt.timedelta(seconds=30))

    store.hook = handed_on
    outcome = world.run()
    assert outcome.status == ("queued" if holder == "queued again" else "running")
    (location,) = store.files
    assert outcome.detail == f"file at {location} left to the job's next attempt"
    if holder == "queued again":  # the next attempt writes it again
        assert world.run().status == "succeeded"
        world.assert_file_matches(world.get(job.id))


class VanishingJobs(InMemoryJobRepository):
    """A job store whose row of the running job is deleted (by hand) at ``when``."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.when, self.gone = when, False

    def claim(self, *args: Any, **kwargs: Any) -> Job | None:
        claimed = super().claim(*args, **kwargs)
        self.gone = self.when == "while it runs"
        return claimed

    def succeed(self, *args: Any, **kwargs: Any) -> Job | None:
        self.gone = True
        return None

    def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        return None if self.gone else super().get(job_id, tenant_id)

    def heartbeat(self, *args: Any, **kwargs: Any) -> Job | None:
        return None if self.gone else super().heartbeat(*args, **kwargs)


@pytest.mark.parametrize("when", ["while it runs", "as it succeeds"])
def test_a_job_whose_row_is_deleted_mid_export_is_acknowledged_as_gone(when: str) -> None:
    world = World()
    world.jobs = VanishingJobs(when)
    job = world.create().job
    outcome = world.run()
    assert (outcome.disposition, outcome.job_id, outcome.status) == (
        Disposition.ACK,
        job.id,
        "gone",
    )
    world.assert_no_file(job)


def test_the_job_is_held_with_a_fresh_lease_and_its_progress_while_its_file_is_kept() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1))
    world.store = store = OnCommitStore()
    job = world.create().job
    at_commit: list[Job] = []
    store.hook = lambda: at_commit.append(world.get(job.id))
    assert world.run().status == "succeeded"
    [held] = at_commit
    now = world.clock.now()
    assert (held.status, held.lease_owner) == (JobStatus.RUNNING, "w1")
    assert held.lease_expires_at == now + dt.timedelta(seconds=30)
    assert held.updated_at == now
    # no heartbeat was due (the clock stood still): the last check before the commit wrote it
    assert held.progress_pct > 0


def test_a_lease_lost_as_the_file_is_kept_leaves_the_new_holders_file_alone() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1))
    world.store = store = OnCommitStore()
    job = world.create().job
    first = world.queue.take()
    assert first is not None

    def another_worker_takes_over_and_finishes() -> None:
        world.clock.advance(31)
        assert world.recover().requeued == [job.id]
        assert world.run(owner="w2").status == "succeeded"

    store.hook = another_worker_takes_over_and_finishes
    assert world.run(first, owner="w1").status == "succeeded"
    world.assert_file_matches(world.get(job.id))


def test_a_worker_that_lost_its_lease_neither_replaces_nor_removes_the_new_holders_file() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1))
    job = world.create().job
    first = world.queue.take()
    assert first is not None

    def stall_until_another_worker_finished() -> None:
        world.clock.advance(31)
        assert world.recover().requeued == [job.id]
        # upstream got one more record meanwhile, so the two workers' files differ
        grown = {"FEED_INTAKE_EXPORT": [*RECORDS["FEED_INTAKE_EXPORT"], feed_record(8)]}
        assert world.run(owner="w2", source=StaticRecordSource(grown)).status == "succeeded"

    last_page = 3  # 7 records in pages of 2
    source = HookedSource(world.source, {last_page: stall_until_another_worker_finished})
    outcome = world.run(first, owner="w1", source=source)
    assert outcome.disposition is Disposition.ACK
    done = world.get(job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2)
    data = world.assert_file_matches(done)
    # counted as a client reads it: a note holds a line break
    assert len(list(csv.reader(io.StringIO(data.decode(), newline="")))) == 1 + 8


class FlakyEndJobs(InMemoryJobRepository):
    """A job store whose ``write`` (``succeed`` or ``fail``) raises ServiceUnavailable on its
    first ``outages`` tries, as a database blip does; with ``lands``, the first of those tries
    is written before it raises (the connection dropped after the commit)."""

    def __init__(self, write: str, outages: int, *, lands: bool = False) -> None:
        super().__init__()
        self.write, self.outages, self.lands = write, outages, lands
        self.tries = 0

    def _flaky(self, write: str, call: Callable[[], Job | None]) -> Job | None:
        if write != self.write:
            return call()
        self.tries += 1
        if self.tries > self.outages:
            return call()
        if self.lands and self.tries == 1:
            call()
        raise ServiceUnavailable("job database is not available")

    def succeed(self, *args: Any, **kwargs: Any) -> Job | None:
        return self._flaky("succeed", lambda: InMemoryJobRepository.succeed(self, *args, **kwargs))

    def fail(self, *args: Any, **kwargs: Any) -> Job | None:
        return self._flaky("fail", lambda: InMemoryJobRepository.fail(self, *args, **kwargs))


class CountingRuns:
    """An inner source that counts the exports that asked it for pages."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.runs = inner, 0

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        self.runs += 1
        yield from self.inner.pages(request)


@pytest.mark.parametrize("lands", [False, True], ids=["refused twice", "landed, then lost"])
def test_a_finished_export_is_recorded_through_a_database_blip_without_running_again(
    lands: bool,
) -> None:
    """The file was committed when ``succeed`` raised: the error handed the message back, its
    redelivery was acked (the job still ``running``), and the job waited for its lease to run
    out, to be exported again from the start, or failed WORKER_LOST with its file discarded.
    The finish is tried again while the lease runs; a first try that landed after all (its
    answer lost) makes the next one refused, and the job read back is the one it wrote."""
    world = World()
    world.jobs = jobs = FlakyEndJobs("succeed", 2 if not lands else 1, lands=lands)
    source = CountingRuns(world.source)
    job = world.create().job
    outcome = world.run(source=source)
    assert (outcome.disposition, outcome.status) == (Disposition.ACK, "succeeded")
    done = world.get(job.id)
    assert (done.status, done.attempts, source.runs) == (JobStatus.SUCCEEDED, 1, 1)
    assert outcome.job == done and outcome.rows == 7  # counted as this run's success
    world.assert_file_matches(done)
    # each try waited on the clock: 0.5 s, then 1 s, well within the 30 s lease
    assert jobs.tries == (3 if not lands else 2)
    assert world.clock.now() == START + dt.timedelta(seconds=1.5 if not lands else 0.5)
    world.clock.advance(world.policy.lease_sec + 1)
    assert world.recover() == Recovery(requeued=[], failed=[], published=[], files_deleted=[])
    assert world.queue.pending() == 0


@pytest.mark.parametrize("lands", [False, True], ids=["refused twice", "landed, then lost"])
def test_an_export_failure_is_recorded_through_a_database_blip(lands: bool) -> None:
    world = World()
    world.jobs = FlakyEndJobs("fail", 2 if not lands else 1, lands=lands)
    source = CountingRuns(StaticRecordSource(RECORDS, fail_with=UpstreamRejected("no")))
    job = world.create().job
    outcome = world.run(source=source)
    assert (outcome.disposition, outcome.status, outcome.detail) == (
        Disposition.ACK,
        "failed",
        "UPSTREAM_REJECTED",
    )
    failed = world.get(job.id)
    assert (failed.status, failed.error_code, failed.attempts) == (
        JobStatus.FAILED,
        "UPSTREAM_REJECTED",
        1,
    )
    assert source.runs == 1
    world.assert_no_file(failed)


@pytest.mark.parametrize("renewed_after_sec", [0, 20])
def test_a_finish_the_database_refuses_past_the_lease_is_left_to_recovery(
    renewed_after_sec: float,
) -> None:
    """Tried again only while the lease the worker last renewed runs (the lease keeper has
    stopped with the export; recovery takes the job back once the lease ends): then the outage
    goes to the worker, which hands the message back, as before."""
    world = World()
    world.jobs = jobs = FlakyEndJobs("succeed", 1_000)
    job = world.create().job
    source = HookedSource(world.source, {1: lambda: world.clock.advance(renewed_after_sec)})
    with pytest.raises(ServiceUnavailable):
        world.run(source=source)
    lease_end = START + dt.timedelta(seconds=renewed_after_sec + world.policy.lease_sec)
    held = world.get(job.id)
    assert (held.status, held.lease_owner, held.lease_expires_at) == (
        JobStatus.RUNNING,
        "w1",
        lease_end,
    )
    assert world.clock.now() == lease_end  # the last try at the lease's end, none after
    assert 2 < jobs.tries < 15  # backing off: 0.5 s doubling to 5 s
    world.clock.advance(1)
    assert world.recover().requeued == [job.id]


def test_tries_again_end_by_the_pauses_count_also_on_a_clock_that_stands_still() -> None:
    clock, waits = FakeClock(START), []

    def down() -> None:
        raise ServiceUnavailable("job database is not available")

    with pytest.raises(ServiceUnavailable):
        through_outage(
            down, clock=clock, until=START + dt.timedelta(seconds=12), pause=waits.append
        )
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.5]  # doubling, the last cut at the lease's end


# --- recovery ---


def crash_while_running(world: World, owner: str = "w-dead") -> RunOutcome | None:
    """Take the next message and die in the middle of its export (as with SIGKILL)."""

    class Killed(BaseException):
        pass

    def die() -> None:
        raise Killed

    try:
        return world.run(owner=owner, source=HookedSource(world.source, {0: die}))
    except Killed:
        return None


def test_a_job_whose_worker_died_is_requeued_after_its_lease_and_runs_again() -> None:
    world = World()
    job = world.create().job
    crash_while_running(world)
    held = world.get(job.id)
    assert (held.status, held.lease_owner, held.attempts) == (JobStatus.RUNNING, "w-dead", 1)
    world.clock.advance(world.policy.lease_sec - 1)
    assert world.recover().requeued == []
    world.clock.advance(2)
    recovery = world.recover()
    assert (recovery.requeued, recovery.published) == ([job.id], [job.id])
    back = world.get(job.id)
    assert (back.status, back.lease_owner) == (JobStatus.QUEUED, None)
    assert world.run(owner="w2").status == "succeeded"
    assert world.get(job.id).attempts == 2


def test_a_job_whose_worker_dies_on_every_attempt_fails_as_worker_lost() -> None:
    world = World(Policy(lease_sec=30, max_attempts=3))
    job = world.create().job
    for attempt in range(1, 4):
        crash_while_running(world, owner=f"w{attempt}")
        assert world.get(job.id).attempts == attempt
        world.clock.advance(31)
        recovery = world.recover()
        if attempt < 3:
            assert recovery.requeued == [job.id]
    assert (recovery.requeued, recovery.failed) == ([], [job.id])
    lost = world.get(job.id)
    assert (lost.status, lost.error_code) == (JobStatus.FAILED, "WORKER_LOST")
    assert lost.error_message == "worker stopped responding on each of 3 attempts"
    world.assert_no_file(lost)
    assert world.queue.pending() == 0


class DiscardingStore(InMemoryFileStore):
    """Records what it is asked to discard; with ``refuse``, refuses as a locked store would."""

    def __init__(self, refuse: bool = False) -> None:
        super().__init__()
        self.discarded: list[tuple[str, str, str]] = []
        self.refuse = refuse

    def discard(self, tenant_id: str, job_id: str, extension: str) -> None:
        self.discarded.append((tenant_id, job_id, extension))
        if self.refuse:
            raise StorageFailure("export file could not be deleted: permission denied")
        super().discard(tenant_id, job_id, extension)


@pytest.mark.parametrize("refuse", [False, True], ids=["discarded", "refused"])
def test_a_job_failed_worker_lost_has_what_its_dead_attempts_wrote_discarded(
    refuse: bool,
) -> None:
    """A SIGKILLed attempt leaves a temporary (an open upload, or a file committed but not
    recorded): retention only looks at files kept, so nothing else would ever remove it."""
    world = World(Policy(lease_sec=30, max_attempts=2))
    world.store = store = DiscardingStore(refuse)
    job = world.create({**FEED_BODY, "compression": "gzip"}).job
    for attempt in (1, 2):
        crash_while_running(world, owner=f"w{attempt}")
        world.clock.advance(31)
        recovery = world.recover()
    assert recovery.failed == [job.id]
    assert store.discarded == [(TENANT, job.id, "csv.gz")]
    assert recovery.files_kept == ([job.id] if refuse else [])


@pytest.mark.parametrize("worker", ["dead", "alive"])
def test_cancelling_a_job_whose_worker_is_dead_discards_what_it_wrote(worker: str) -> None:
    """A running job's worker aborts its own file when it sees the cancel; one whose lease
    had run out is dead, and its temporary (an open upload) stayed forever. A live worker's
    file is its own to abort: the cancel leaves it alone."""
    world = World(Policy(lease_sec=30, max_attempts=3))
    world.store = store = DiscardingStore()
    job = world.create().job
    crash_while_running(world)
    world.clock.advance(31 if worker == "dead" else 5)
    cancelled = cancel_job(
        job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock, store=world.store
    )
    assert cancelled.status is JobStatus.CANCELLED
    assert store.discarded == ([(TENANT, job.id, "csv")] if worker == "dead" else [])


@pytest.mark.parametrize("when", ["queued again", "running again"])
def test_cancelling_a_job_after_its_worker_died_discards_what_the_dead_attempt_wrote(
    when: str,
) -> None:
    """Recovery puts a dead worker's job back in the queue; cancelled there, or while its next
    attempt runs (which aborts only its own file), the dead attempt's temporary stayed forever:
    the job is ended, and neither recovery nor retention looks at it again."""
    world = World(Policy(lease_sec=30, max_attempts=3))
    world.store = store = DiscardingStore()
    job = world.create().job
    crash_while_running(world)
    world.clock.advance(31)
    assert world.recover().requeued == [job.id]

    def cancel() -> None:
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock, store=store)

    if when == "queued again":
        cancel()
    else:

        def cancel_seen_at_a_heartbeat() -> None:
            cancel()  # a live worker's job: the cancel leaves its file to it
            world.clock.advance(world.policy.heartbeat_sec)

        outcome = world.run(source=HookedSource(world.source, {0: cancel_seen_at_a_heartbeat}))
        assert outcome.status == "cancelled"
    assert world.get(job.id).status is JobStatus.CANCELLED
    assert store.discarded == [(TENANT, job.id, "csv")]


def test_a_cancel_before_any_attempt_discards_nothing() -> None:
    world = World()
    world.store = store = DiscardingStore()
    job = world.create().job
    cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock, store=store)
    assert store.discarded == []


def cancel_after_a_crash(world: World, *, after_sec: float) -> Job:
    """A worker dies mid-export (its lease held for ``lease_sec`` from now); ``after_sec``
    later, while the lease may still look held, the user sees progress freeze and cancels."""
    job = world.create().job
    crash_while_running(world)
    world.clock.advance(after_sec)
    cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock, store=world.store)
    return world.get(job.id)


def test_cancelled_while_a_dead_workers_lease_runs_its_leftovers_go_once_the_lease_ends() -> None:
    """The cancel cannot tell a dead worker from a live one before the lease ends, so it
    leaves the files alone; nothing looked at a cancelled job again, and what the dead worker
    wrote (a temporary, a file kept but never recorded, an open upload) stayed forever."""
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3))
    world.store = store = DiscardingStore()
    job = cancel_after_a_crash(world, after_sec=5)
    assert job.status is JobStatus.CANCELLED
    assert store.discarded == [], "a live worker's file is its own until its lease ends"
    leftover = f"mem://{TENANT}/{job.id}/report.csv"
    store.files[leftover] = b"id,quantity_kg\r\nrec-0,0.5\r\n"  # kept, never recorded
    world.clock.advance(25)  # the lease's last instant: the worker may still be alive
    assert (world.recover(), store.discarded) == (Recovery(**EMPTY_PASS), [])
    world.clock.advance(0.001)
    recovery = world.recover()
    assert store.discarded == [(TENANT, job.id, "csv")]
    assert (recovery.leftovers_discarded, recovery.files_kept) == ([job.id], [])
    world.assert_no_file(job)
    # once: a later pass leaves the job alone, and the job itself is as the cancel left it
    world.clock.advance(3600)
    assert world.recover() == Recovery(**EMPTY_PASS)
    assert len(store.discarded) == 1
    after = world.get(job.id)
    assert (after.status, after.finished_at, after.updated_at) == (
        JobStatus.CANCELLED,
        job.finished_at,
        job.updated_at,
    )


EMPTY_PASS: dict[str, Any] = {
    "requeued": [],
    "failed": [],
    "published": [],
    "files_deleted": [],
}


def test_a_job_cancelled_after_its_lease_ran_out_has_its_leftovers_discarded_at_once() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3))
    world.store = store = DiscardingStore()
    job = cancel_after_a_crash(world, after_sec=31)
    assert store.discarded == [(TENANT, job.id, "csv")], "the cancel discards them itself"
    # and records it: no recovery pass discards them again
    world.clock.advance(3600)
    assert world.recover() == Recovery(**EMPTY_PASS)
    assert len(store.discarded) == 1


def test_recovery_leaves_a_job_whose_worker_renewed_after_the_pass_read_it() -> None:
    """The pass reads the job stale; its worker, on a host whose clock is a moment behind,
    renews before the pass writes: the job stays with it (it was requeued, and after
    max_attempts failed WORKER_LOST, every worker alive)."""
    lease = dt.timedelta(seconds=30)

    class Renewing(InMemoryJobRepository):
        armed = False

        def stale(self, now: dt.datetime, legacy_before: dt.datetime, limit: int) -> list[Job]:
            found = super().stale(now, legacy_before, limit)
            behind = now - dt.timedelta(seconds=0.002)
            for j in found if self.armed else []:  # renewed between the read and the write
                assert self.heartbeat(j.id, "w-alive", behind, now + lease, None)
            return found

    for attempts in (1, 3):  # failed WORKER_LOST, or requeued
        world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=attempts))
        world.jobs = repo = Renewing()
        job = world.create().job
        crash_while_running(world, owner="w-alive")
        now = world.clock.advance(30.001)
        repo.armed = True
        assert world.recover() == Recovery(**EMPTY_PASS)
        kept = world.get(job.id)
        assert (kept.status, kept.lease_owner) == (JobStatus.RUNNING, "w-alive")
        assert kept.lease_expires_at == now + lease


def test_a_requeued_job_cancelled_where_the_api_cannot_discard_is_cleaned_by_recovery() -> None:
    """Recovery put the job back after its worker died; the cancel's own discard failed (the
    api's read-only mount of the files): a worker's recovery pass discards what is left."""
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3))
    world.store = store = DiscardingStore(refuse=True)
    job = world.create().job
    crash_while_running(world)
    world.clock.advance(31)
    assert world.recover().requeued == [job.id]
    assert world.get(job.id).status is JobStatus.QUEUED
    cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock, store=store)
    assert store.discarded == [(TENANT, job.id, "csv")], "the api tried, and was refused"
    store.refuse = False
    world.clock.advance(1)
    recovery = world.recover()
    assert (recovery.leftovers_discarded, recovery.files_kept) == ([job.id], [])
    assert world.recover() == Recovery(**EMPTY_PASS)
    assert len(store.discarded) == 2


def test_leftovers_of_a_cancelled_job_the_store_will_not_discard_are_tried_again() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3))
    world.store = store = DiscardingStore(refuse=True)
    job = cancel_after_a_crash(world, after_sec=5)
    world.clock.advance(26)
    for _ in range(2):
        recovery = world.recover()
        assert (recovery.leftovers_discarded, recovery.files_kept) == ([], [job.id])
        world.clock.advance(5)
    store.refuse = False
    recovery = world.recover()
    assert (recovery.leftovers_discarded, recovery.files_kept) == ([job.id], [])
    assert world.recover() == Recovery(**EMPTY_PASS)
    assert len(store.discarded) == 3


def test_a_live_worker_cleans_up_after_a_cancel_and_recovery_finds_nothing_left() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3))
    world.store = store = DiscardingStore()
    job = world.create().job

    def cancel_seen_at_a_heartbeat() -> None:
        cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock, store=store)
        world.clock.advance(world.policy.heartbeat_sec)

    outcome = world.run(source=HookedSource(world.source, {0: cancel_seen_at_a_heartbeat}))
    assert outcome.status == "cancelled"
    assert store.discarded == [], "the worker aborted its own file"
    world.clock.advance(30)
    assert world.recover().leftovers_discarded == [job.id]
    world.assert_no_file(world.get(job.id))


def test_recovery_discards_the_leftovers_of_at_most_a_batch_of_cancelled_jobs_a_pass() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3, batch=2))
    world.store = store = DiscardingStore()
    ids = [cancel_after_a_crash(world, after_sec=1).id for _ in range(3)]
    world.clock.advance(30)
    first = world.recover().leftovers_discarded
    assert len(first) == 2
    assert sorted(first + world.recover().leftovers_discarded) == sorted(ids)
    assert sorted(job_id for _, job_id, _ in store.discarded) == sorted(ids)


def test_cancelled_jobs_the_store_refuses_never_fill_every_batch() -> None:
    """A refused job goes to the back: the others behind a full batch of them still come."""

    class RefusingSome(DiscardingStore):
        def __init__(self, stuck: set[str]) -> None:
            super().__init__()
            self.stuck = stuck

        def discard(self, tenant_id: str, job_id: str, extension: str) -> None:
            self.refuse = job_id in self.stuck
            super().discard(tenant_id, job_id, extension)

    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3, batch=2))
    world.store = store = RefusingSome(set())
    ids = [cancel_after_a_crash(world, after_sec=1).id for _ in range(4)]
    store.stuck = set(ids[:2])  # the two whose leases end first
    world.clock.advance(30)
    done: list[str] = []
    for _ in range(3):
        done += world.recover().leftovers_discarded
        world.clock.advance(5)
    assert sorted(done) == sorted(ids[2:])


def test_a_failure_after_a_dead_attempt_discards_what_that_attempt_left() -> None:
    world = World()
    world.store = store = DiscardingStore()
    first = world.create(key="first").job
    world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamUnavailable("down")))
    assert store.discarded == [], "a first attempt aborted its own file: nothing else is there"
    job = world.create(key="second").job
    crash_while_running(world)
    world.clock.advance(31)
    assert world.recover().requeued == [job.id]
    outcome = world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamUnavailable("down")))
    assert (outcome.job_id, outcome.status) == (job.id, "failed")
    assert store.discarded == [(TENANT, job.id, "csv")]
    assert first.id != job.id


def test_a_job_requeued_while_the_queue_is_down_is_published_by_a_later_pass() -> None:
    world = World()
    job = world.create().job
    crash_while_running(world)
    world.clock.advance(31)
    world.queue.available = False
    recovery = world.recover()
    assert (recovery.requeued, recovery.published) == ([job.id], [])
    world.queue.available = True
    world.clock.advance(world.policy.republish_after_sec + 1)
    assert world.recover().published == [job.id]


def test_a_running_row_of_the_old_service_without_a_lease_is_requeued_once_it_is_quiet() -> None:
    world = World(Policy(lease_sec=30))
    job = world.create().job
    world.queue.take()
    # the old service set status running and nothing else: no lease, no attempts
    legacy = msgspec.structs.replace(job, id=str(uuid.uuid4()), status=JobStatus.RUNNING)
    world.jobs.add(legacy)
    cancel_job(job.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    job = legacy
    world.clock.advance(599)
    assert world.recover().requeued == []
    world.clock.advance(2)
    assert world.recover().requeued == [job.id]
    assert world.run().status == "succeeded"


class LosingRaceJobs(InMemoryJobRepository):
    """A store where another recovery pass wins every conditional write on stale jobs."""

    def fail(
        self,
        job_id: str,
        owner: str | None,
        now: dt.datetime,
        code: str,
        message: str,
        *,
        lapsed: bool = False,
    ) -> Job | None:
        return None

    def retry(
        self, job_id: str, owner: str | None, now: dt.datetime, *, lapsed: bool = False
    ) -> Job | None:
        return None


@pytest.mark.parametrize("attempts", [1, 3])
def test_recovery_reports_only_the_changes_it_made(attempts: int) -> None:
    world = World(Policy(lease_sec=30, max_attempts=3))
    world.jobs = LosingRaceJobs()
    queued = world.create().job
    world.queue.take()
    job = msgspec.structs.replace(queued, id=str(uuid.uuid4()), attempts=attempts - 1)
    world.jobs.add(job)
    cancel_job(queued.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    world.jobs.claim(job.id, "w-dead", START, START + dt.timedelta(seconds=30))
    assert world.get(job.id).attempts == attempts
    world.clock.advance(31)
    assert world.recover() == Recovery(requeued=[], failed=[], published=[], files_deleted=[])


SECOND = dt.timedelta(seconds=1)


def succeeded_job(**fields: Any) -> Job:
    """A succeeded feed intake job created at START (``fields``: its file, its expiry)."""
    return Job(
        id=str(uuid.uuid4()),
        tenant_id=TENANT,
        requested_by=None,
        job_type=JobType.FEED_INTAKE_EXPORT,
        format=ReportFormat.CSV,
        status=JobStatus.SUCCEEDED,
        created_at=START,
        updated_at=START,
        **fields,
    )


def test_recovery_marks_an_expired_row_without_a_file_as_deleted() -> None:
    world = World()
    job = succeeded_job(expires_at=START)
    world.jobs.add(job)
    assert world.recover().files_deleted == [job.id]
    assert world.get(job.id).file_deleted_at == START


class StubbornStore(InMemoryFileStore):
    """A store that will not delete the files named ``stuck`` (a permission, an object lock)."""

    def __init__(self, stuck: set[str], error: Exception) -> None:
        super().__init__()
        self.stuck, self.error = stuck, error

    def delete(self, location: str) -> None:
        if location in self.stuck:
            raise self.error
        super().delete(location)


@pytest.mark.parametrize(
    "error",
    [PermissionError(13, "Permission denied"), StorageFailure("AccessDenied")],
    ids=["filesystem", "object store"],
)
def test_a_file_the_store_will_not_delete_does_not_stop_retention_of_the_others(
    error: Exception,
) -> None:
    """Expired files come oldest first on every pass: one that cannot be deleted aborted the
    pass there, so no later file was ever deleted. It is kept (and named), the others go."""
    world = World()
    expired = []
    for n in range(3):
        job = succeeded_job(file_path=f"/exports/{n}.csv", expires_at=START + n * SECOND)
        world.jobs.add(job)
        expired.append(job)
    world.store = StubbornStore({"/exports/0.csv"}, error)
    world.clock.advance(10)
    done = world.recover()
    assert done.files_kept == [expired[0].id]
    assert done.files_deleted == [expired[1].id, expired[2].id]
    assert world.get(expired[0].id).file_deleted_at is None  # tried again on the next pass
    assert world.recover().files_kept == [expired[0].id]


def test_a_whole_batch_of_files_the_store_will_not_delete_does_not_hide_the_others() -> None:
    """They are the oldest, so they came first and filled every batch: nothing after them was
    ever deleted, and the disk filled. The passes go on after them, and back to them once
    the end is reached."""
    world = World(Policy(batch=2))
    expired = []
    for n in range(5):
        job = succeeded_job(file_path=f"/exports/{n}.csv", expires_at=START + n * SECOND)
        world.jobs.add(job)
        expired.append(job)
    world.store = StubbornStore({"/exports/0.csv", "/exports/1.csv", "/exports/2.csv"}, OSError())
    world.clock.advance(10)
    passes = [world.recover() for _ in range(4)]
    assert [(p.files_kept, p.files_deleted) for p in passes] == [
        ([expired[0].id, expired[1].id], []),
        ([expired[2].id], [expired[3].id]),
        ([], [expired[4].id]),
        ([expired[0].id, expired[1].id], []),  # the end was reached: the stuck ones again
    ]


class CrashingSource:
    """A source whose second page hits a bug (what ``end_date: 9999-12-31`` once did)."""

    def __init__(self, inner: Any, error: Exception) -> None:
        self.inner, self.error = inner, error

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        for n, page in enumerate(self.inner.pages(request)):
            if n == 1:
                raise self.error
            yield page


def test_a_bug_during_an_export_fails_the_job_at_once_with_no_file_and_its_traceback() -> None:
    world = World()
    job = world.create().job
    error = OverflowError("date value out of range")
    outcome = world.run(source=CrashingSource(world.source, error))
    assert (outcome.disposition, outcome.status, outcome.detail) == (
        Disposition.ACK,
        "failed",
        "EXPORT_FAILED",
    )
    lines = outcome.crash.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith('  File "'), "the traceback's lines as Python prints them"
    assert lines[-1] == "OverflowError: date value out of range"
    failed = world.get(job.id)
    assert failed.error_code == "EXPORT_FAILED"
    # the type only: an exception's text may carry paths or data that no client should see
    assert failed.error_message == "the export failed unexpectedly (OverflowError)"
    assert failed.finished_at == START and failed.attempts == 1
    world.assert_no_file(failed)
    assert world.recover().requeued == []  # nothing left running for recovery to retry


def test_an_outage_of_the_job_store_during_an_export_is_not_taken_for_a_bug() -> None:
    world = World()
    world.create()
    outage = ServiceUnavailable("job database is not available")
    with pytest.raises(ServiceUnavailable):
        world.run(source=CrashingSource(world.source, outage))


def test_a_job_whose_tenant_holds_its_share_goes_to_the_back_of_the_queue_unclaimed() -> None:
    world = World()
    first, second = world.create().job, world.create().job
    other = world.create(tenant="tenant-other").job
    shares = TenantSlots(1)
    assert shares.take(TENANT)  # one export of the tenant is running already

    def run(message: bytes) -> RunOutcome:
        return world.run(message, shares=shares)

    for job in (first, second):
        message = world.queue.take()
        assert message is not None
        outcome = run(message)
        assert (outcome.disposition, outcome.status) == (Disposition.ACK, "deferred")
        assert world.get(job.id).status is JobStatus.QUEUED
        assert world.get(job.id).attempts == 0, "a deferral is not an attempt"
    message = world.queue.take()
    assert message is not None
    assert run(message).status == "succeeded"  # the other tenant's job ran first
    assert world.get(other.id).status is JobStatus.SUCCEEDED
    shares.give_back(TENANT)  # the running export finished
    while (message := world.queue.take()) is not None:  # the deferred two, at the back
        assert run(message).status == "succeeded"
    assert {world.get(j.id).status for j in (first, second)} == {JobStatus.SUCCEEDED}
    assert shares.running(TENANT) == 0 and shares.running("tenant-other") == 0


def test_a_deferral_the_broker_refuses_hands_the_message_back() -> None:
    world = World()
    job = world.create().job
    shares = TenantSlots(1)
    shares.take(TENANT)
    world.queue.available = False
    outcome = world.run(shares=shares)
    assert (outcome.disposition, outcome.status) == (Disposition.REQUEUE, "deferred")
    assert outcome.job_id == job.id
    assert world.get(job.id).status is JobStatus.QUEUED


def test_a_tenants_share_is_at_least_one_slot_and_leaves_one_for_the_others() -> None:
    assert [default_share(n) for n in (1, 2, 3, 8)] == [1, 1, 2, 7]
    with pytest.raises(ValueError):
        TenantSlots(0)


# --- promises pinned by the mutation run (docs/mutation.md) ---

FARM = "0f8fad5b-d9cb-469f-a165-70867728950e"
BARN = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
BATCH = "16fd2706-8baf-433b-82eb-8c7fada847da"


def test_a_create_keeps_every_scope_id_it_was_given() -> None:
    world = World()
    body = {**FEED_BODY, "farm_id": FARM, "barn_id": BARN, "batch_id": BATCH}
    stored = world.get(world.create(body).job.id)
    assert (stored.farm_id, stored.barn_id, stored.batch_id) == (FARM, BARN, BATCH)
    assert (stored.start_date, stored.end_date) == (dt.date(2026, 1, 1), dt.date(2026, 1, 10))


def test_the_worker_asks_the_upstream_for_the_jobs_tenant_and_whole_scope() -> None:
    world = World()
    source = StaticRecordSource(RECORDS, page_size=2)
    body = {
        **FEED_BODY,
        "farm_id": FARM,
        "barn_id": BARN,
        "batch_id": BATCH,
        "filters": {"source": "MANUAL"},
    }
    job = world.create(body, tenant="tenant-7").job
    told: list[int] = []
    progressed = lambda: told.append(1)  # noqa: E731  (the worker's liveness heartbeat)
    outcome = run_message(
        world.queue.take() or b"",
        owner="w1",
        jobs=world.jobs,
        source=source,
        store=world.store,
        clock=world.clock,
        policy=world.policy,
        progressed=progressed,
    )
    assert outcome.status == "succeeded"
    (asked,) = source.requests
    assert asked.checkpoint is not None  # the export's: the source asks it while it waits
    assert asked.max_pages == Policy().limits.max_pages
    assert asked.max_bytes == Policy().limits.max_bytes
    assert asked.fetched is progressed  # the run's own: each page that arrives is told
    unbounded = msgspec.structs.replace(
        asked, checkpoint=None, fetched=None, max_pages=None, max_bytes=None
    )
    assert [unbounded] == [
        SourceRequest(
            job_id=job.id,
            tenant_id="tenant-7",
            job_type=JobType.FEED_INTAKE_EXPORT,
            scope=Scope(
                farm_id=FARM,
                barn_id=BARN,
                batch_id=BATCH,
                start_date=dt.date(2026, 1, 1),
                end_date=dt.date(2026, 1, 10),
                filters={"source": "MANUAL"},
            ),
            upstream_filters={},  # every feed filter is applied to the stream, not upstream
            typed=True,
            raw=False,
        )
    ]


def test_an_ndjson_job_asks_for_the_raw_records_only_unless_it_filters_the_stream() -> None:
    world = World()
    source = StaticRecordSource(RECORDS, page_size=2)
    world.create({**FEED_BODY, "format": "json"})
    world.create({**FEED_BODY, "format": "json", "filters": {"source": "MANUAL"}})
    world.run(source=source)
    world.run(source=source)
    assert [(r.typed, r.raw) for r in source.requests] == [(False, True), (True, True)]


def test_a_job_failed_as_worker_lost_records_when_it_finished() -> None:
    world = World(Policy(lease_sec=30, max_attempts=3))
    job = world.create().job
    for attempt in range(1, 4):
        crash_while_running(world, owner=f"w{attempt}")
        world.clock.advance(31)
        world.recover()
    lost = world.get(job.id)
    assert lost.status is JobStatus.FAILED
    finished = dt.datetime(2026, 1, 1, 0, 1, 33, tzinfo=dt.UTC)  # three leases of 30 s, +1 s each
    assert (lost.finished_at, lost.updated_at) == (finished, finished)
    # its dead attempts' leftovers discarded at the failure, and recorded so (no pass again)
    assert (lost.lease_owner, lost.lease_expires_at) == (None, None)
    world.clock.advance(3600)
    assert world.recover() == Recovery(**EMPTY_PASS)


def test_a_failed_jobs_leftovers_the_store_refused_once_are_discarded_by_a_later_pass() -> None:
    """WORKER_LOST discarded the dead attempts' files once; a store that refused it then (a
    permission, a lock, an outage) left them for good: nothing looked at a failed job again."""
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=1))
    world.store = store = DiscardingStore(refuse=True)
    job = world.create().job
    crash_while_running(world)
    world.clock.advance(31)
    recovery = world.recover()
    assert (recovery.failed, recovery.files_kept) == ([job.id], [job.id])
    world.clock.advance(5)
    assert world.recover().files_kept == [job.id]  # refused again: tried again later
    store.refuse = False
    world.clock.advance(5)
    recovery = world.recover()
    assert (recovery.leftovers_discarded, recovery.files_kept) == ([job.id], [])
    assert world.recover() == Recovery(**EMPTY_PASS)
    assert len(store.discarded) == 3  # at the failure, then once a pass until it went
    failed = world.get(job.id)
    assert (failed.status, failed.error_code) == (JobStatus.FAILED, "WORKER_LOST")


def test_a_job_failed_after_an_attempt_that_died_has_that_attempts_leftovers_discarded() -> None:
    """The worker of the second attempt fails the export (an upstream error): the first
    attempt, killed, may have left a temporary; the worker's one discard was refused."""
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3))
    world.store = store = DiscardingStore(refuse=True)
    job = world.create().job
    crash_while_running(world)
    world.clock.advance(31)
    assert world.recover().requeued == [job.id]
    outcome = world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamUnavailable("down")))
    assert outcome.status == "failed" and store.discarded == [(TENANT, job.id, "csv")]
    store.refuse = False
    world.clock.advance(1)
    assert world.recover().leftovers_discarded == [job.id]
    assert world.recover() == Recovery(**EMPTY_PASS)


def test_a_job_failed_on_its_first_attempt_leaves_nothing_to_discard() -> None:
    world = World(Policy(lease_sec=30, heartbeat_sec=1, max_attempts=3))
    world.store = store = DiscardingStore()
    job = world.create().job
    outcome = world.run(source=StaticRecordSource(RECORDS, fail_with=UpstreamUnavailable("down")))
    assert outcome.status == "failed"
    assert world.get(job.id).lease_expires_at is None
    world.clock.advance(3600)
    assert world.recover() == Recovery(**EMPTY_PASS)
    assert store.discarded == []


def legacy_running_job(world: World) -> Job:
    """A running row as the old service left it: no lease, no attempts."""
    queued = world.create().job
    world.queue.take()
    legacy = msgspec.structs.replace(queued, id=str(uuid.uuid4()), status=JobStatus.RUNNING)
    world.jobs.add(legacy)
    cancel_job(queued.id, tenant_id=TENANT, jobs=world.jobs, clock=world.clock)
    return legacy


@pytest.mark.parametrize(
    ("lease_sec", "quiet_sec"),
    [(30, 600), (59, 600), (60, 600), (61, 610), (120, 1200)],
)
def test_a_leaseless_running_row_is_requeued_after_ten_leases_and_never_under_ten_minutes(
    lease_sec: float, quiet_sec: int
) -> None:
    world = World(Policy(lease_sec=lease_sec))
    job = legacy_running_job(world)
    world.clock.advance(quiet_sec)
    assert world.recover().requeued == []
    world.clock.advance(0.001)
    assert world.recover().requeued == [job.id]


def test_recovery_requeues_at_most_a_batch_of_dead_workers_jobs_a_pass() -> None:
    world = World(Policy(lease_sec=30, batch=2))
    ids = [world.create().job.id for _ in range(3)]
    for _ in ids:
        crash_while_running(world)
    world.clock.advance(31)
    first = world.recover()
    assert len(first.requeued) == 2 and len(first.published) == 2
    second = world.recover()
    assert len(second.requeued) == 1
    assert sorted(first.requeued + second.requeued) == sorted(ids)


def test_recovery_publishes_at_most_a_batch_of_unconfirmed_jobs_a_pass() -> None:
    world = World(Policy(batch=2, republish_after_sec=10))
    world.queue.available = False
    ids = [world.create().job.id for _ in range(3)]
    world.queue.available = True
    world.clock.advance(11)
    first = world.recover().published
    assert len(first) == 2
    assert sorted(first + world.recover().published) == sorted(ids)


def test_an_unconfirmed_job_is_published_again_only_after_republish_after_sec() -> None:
    world = World(Policy(republish_after_sec=10))
    world.queue.available = False
    job = world.create().job
    world.queue.available = True
    world.clock.advance(10)
    assert world.recover().published == []
    world.clock.advance(0.001)
    assert world.recover().published == [job.id]


def test_recovery_deletes_at_most_a_batch_of_expired_files_a_pass() -> None:
    world = World(Policy(batch=2, retention_sec=60))
    ids = []
    for _ in range(3):
        ids.append(world.create().job.id)
        assert world.run().status == "succeeded"
    world.clock.advance(60)
    first = world.recover().files_deleted
    assert len(first) == 2
    assert sorted(first + world.recover().files_deleted) == sorted(ids)
    assert world.store.files == {}


class AskedLimits(InMemoryJobRepository):
    """Records the limit each listing asked the store for."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []

    def find(self, tenant_id: str, query: ListQuery) -> list[Job]:
        self.limits.append(query.limit)
        return super().find(tenant_id, query)


def test_a_listing_reads_one_row_more_than_its_page_and_no_more() -> None:
    world = World()
    world.jobs = AskedLimits()
    for _ in range(30):
        world.create()
    page = list_jobs(validate_list(ListRequest()), tenant_id=TENANT, jobs=world.jobs)
    assert len(page.items) == 25 and page.after is not None
    assert world.jobs.limits == [26]  # the 26th row only says whether a next page exists


def test_a_tenant_holds_one_slot_less_for_each_export_that_ends() -> None:
    shares = TenantSlots(3)
    assert shares.take(TENANT) and shares.take(TENANT) and shares.take(TENANT)
    assert not shares.take(TENANT)
    shares.give_back(TENANT)
    assert shares.running(TENANT) == 2
    assert shares.take(TENANT)
    left = []
    for _ in range(3):
        shares.give_back(TENANT)
        left.append(shares.running(TENANT))
    assert left == [2, 1, 0]
    with pytest.raises(ValueError, match=r"^per_tenant must be at least 1$"):
        TenantSlots(0)


def test_a_deferral_names_its_job_and_why_it_was_deferred() -> None:
    world = World()
    job = world.create().job
    shares = TenantSlots(1)
    shares.take(TENANT)
    message = world.queue.take()
    assert message is not None
    outcome = world.run(message, shares=shares)
    assert outcome == RunOutcome(
        disposition=Disposition.ACK,
        job_id=job.id,
        status="deferred",
        detail="its tenant holds its share of the worker's slots",
    )
    assert world.queue.take() == message, "the job went to the back of the queue"


def test_a_direct_url_ends_when_the_file_expires_if_that_comes_before_the_token() -> None:
    """A token of 2 h for a file kept 1 h: the store's URL was signed for the token's 2 h,
    so it served the file for up to an hour past its expires_at (until retention ran)."""
    world = World(Policy(retention_sec=3600, download_ttl_sec=7200))
    world.store = store = RecordingDirectStore()
    job = succeeded(world)
    world.clock.advance(1800)
    world.open(job.id, world.download(job.id))
    assert store.asked == [job.expires_at]
    assert store.asked[0].utcoffset() == dt.timedelta(0)
