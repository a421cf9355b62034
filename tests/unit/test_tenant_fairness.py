"""Fairness between tenants (issue 26, row 14): a per-tenant cap of unfinished jobs, and jobs
taken in turns across tenants, so that one tenant's backlog delays another's job by at most
the job a worker slot is running."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from reportcore.fairness import next_in_turn
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat
from reportcore.policy import Policy
from reportcore.ports import Disposition
from reportcore.requests import CreateRequest, ListQuery, validate_create
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.usecases import create_job
from tests.running import run_message

from .api_support import JOBS, OTHER_TENANT, TENANT, ApiWorld, api_world, feed_record
from .test_api_errors import assert_envelope

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

FEED = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world(max_unfinished_jobs=3) as w:
        yield w


def post(world: ApiWorld, tenant: str = TENANT, **body: Any) -> Any:
    headers = world.headers({"tenant_id": tenant})
    return world.client.post(JOBS, json={**FEED, **body}, headers=headers)


# --- the cap ---


def test_a_create_beyond_the_tenants_cap_is_a_429_with_retry_after(world: ApiWorld) -> None:
    for _ in range(3):
        assert post(world).status_code == 201
    answer = post(world)
    error = assert_envelope(answer, 429, "TOO_MANY_JOBS")
    assert answer.headers["retry-after"] == "30"
    assert error["message"] == (
        "the tenant has 3 queued or running jobs, the most it may have "
        "(REPORT_MAX_UNFINISHED_JOBS); create more once some have finished"
    )
    assert len(world.jobs.find(TENANT, ListQuery(limit=100))) == 3, "nothing was stored"


def test_at_the_cap_a_replay_still_answers_200_and_another_key_429(world: ApiWorld) -> None:
    first = post(world, idempotency_key="weekly")
    assert first.status_code == 201
    post(world)
    post(world)
    replay = post(world, idempotency_key="weekly")
    assert replay.status_code == 200, replay.text
    assert replay.headers["x-idempotent-replay"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert post(world, idempotency_key="monthly").status_code == 429


def test_the_cap_is_per_tenant_and_finished_jobs_free_their_place(world: ApiWorld) -> None:
    created = [post(world).json() for _ in range(3)]
    assert post(world, OTHER_TENANT).status_code == 201, "another tenant is not affected"
    world.run_queued([feed_record(0)])  # every queued job runs to its end
    assert {world.jobs.get(job["id"]).status for job in created} == {JobStatus.SUCCEEDED}  # type: ignore[union-attr]
    assert post(world).status_code == 201


def test_a_cap_of_zero_is_no_cap() -> None:
    with api_world(max_unfinished_jobs=0) as world:
        for _ in range(Policy().max_unfinished_jobs + 1):
            assert post(world).status_code == 201


def test_the_default_cap_is_generous_and_finite() -> None:
    assert Policy().max_unfinished_jobs == 200


# --- turns ---


class Worker:
    """One worker slot (WORKER_CONCURRENCY=1): takes the queue's messages in order, one at a
    time, and records which job each run finished."""

    def __init__(self) -> None:
        self.jobs = InMemoryJobRepository()
        self.queue = InMemoryQueue()
        self.clock = FakeClock()
        self.finished: list[str] = []

    def add(self, tenant: str, count: int = 1) -> list[str]:
        ids = []
        for _ in range(count):
            created = create_job(
                validate_create(msgspec.convert(FEED, CreateRequest)),
                tenant_id=tenant,
                requested_by="u1",
                jobs=self.jobs,
                queue=self.queue,
                clock=self.clock,
            )
            ids.append(created.job.id)
            self.clock.advance(0.001)
        return ids

    def run_next(self) -> Any:
        body = self.queue.take()
        assert body is not None
        outcome = run_message(
            body,
            owner="w1",
            jobs=self.jobs,
            source=StaticRecordSource({"FEED_INTAKE_EXPORT": [feed_record(0)]}),
            store=InMemoryFileStore(),
            clock=self.clock,
            policy=Policy(),
            queue=self.queue,
        )
        self.queue.settle(body, outcome.disposition)
        if outcome.job is not None:  # an export ran to its end (not a no-op message)
            self.finished.append(outcome.job.id)
        self.clock.advance(1)  # each export takes a second
        return outcome

    def drain(self) -> None:
        while self.queue.pending():
            self.run_next()


def test_another_tenants_job_waits_for_one_job_not_for_the_backlog_ahead_of_it() -> None:
    worker = Worker()
    backlog = worker.add("busy", 30)
    worker.run_next()  # the first of the backlog is running when the other tenant asks
    [lone] = worker.add("quiet")
    outcome = worker.run_next()  # the message is the backlog's second job's
    assert outcome.job_id == lone and outcome.status == "succeeded"
    assert outcome.disposition is Disposition.REQUEUE, "the backlog's message goes back"
    assert re.fullmatch(
        r"1 rows, \d+ bytes; run in its tenant's turn; the message's own job waits for its "
        r"tenant's",
        outcome.detail,
    ), outcome.detail
    worker.drain()
    assert worker.finished[:2] == [backlog[0], lone]
    assert sorted(worker.finished[2:]) == sorted(backlog[1:]), "each once, none lost"
    assert all(worker.jobs.get(j).status is JobStatus.SUCCEEDED for j in backlog)  # type: ignore[union-attr]
    assert worker.queue.pending() == 0


def test_tenants_with_backlogs_take_turns_job_by_job() -> None:
    worker = Worker()
    a = worker.add("a", 4)
    b = worker.add("b", 4)
    c = worker.add("c", 2)
    worker.drain()
    tenant_of = {**dict.fromkeys(a, "a"), **dict.fromkeys(b, "b"), **dict.fromkeys(c, "c")}
    assert [tenant_of[j] for j in worker.finished] == [*"abcabcabab"]
    assert sorted(worker.finished) == sorted([*a, *b, *c])


def test_a_worker_stopping_during_another_tenants_turn_hands_both_jobs_back() -> None:
    worker = Worker()
    [first, mine] = worker.add("a", 2)
    [theirs] = worker.add("b")
    worker.run_next()  # a's first
    body = worker.queue.take()
    assert body is not None
    outcome = run_message(
        body,
        owner="w1",
        jobs=worker.jobs,
        source=StaticRecordSource({"FEED_INTAKE_EXPORT": [feed_record(0)]}),
        store=InMemoryFileStore(),
        clock=worker.clock,
        policy=Policy(),
        queue=worker.queue,
        stopping=lambda: True,
    )
    assert (outcome.job_id, outcome.status) == (theirs, "handed back")
    assert outcome.disposition is Disposition.REQUEUE
    assert outcome.detail == (
        "run in its tenant's turn; the message's own job waits for its tenant's"
    )
    assert {worker.jobs.get(j).status for j in (mine, theirs)} == {JobStatus.QUEUED}  # type: ignore[union-attr]
    assert worker.finished == [first]


def test_a_message_whose_job_ran_in_another_ones_turn_changes_nothing() -> None:
    worker = Worker()
    [first] = worker.add("a")
    [second] = worker.add("a")
    [theirs] = worker.add("b")
    worker.run_next()  # a's first
    handed_back = worker.run_next()  # a's second message: b's turn
    assert (handed_back.job_id, handed_back.disposition) == (theirs, Disposition.REQUEUE)
    # the queue holds b's own message, then a's second again (back at the end, in memory)
    outcome = worker.run_next()
    assert (outcome.job_id, outcome.status, outcome.job) == (theirs, "succeeded", None)
    assert outcome.disposition is Disposition.ACK
    outcome = worker.run_next()
    assert (outcome.job_id, outcome.disposition) == (second, Disposition.ACK)
    assert worker.finished == [first, theirs, second]
    assert worker.queue.pending() == 0


# --- the rule, on its own (reportcore.fairness.next_in_turn) ---

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def job(tenant: str, status: str, created_min: int, started_min: int | None = None) -> Job:
    created = T0 + dt.timedelta(minutes=created_min)
    started = None if started_min is None else T0 + dt.timedelta(minutes=started_min)
    return Job(
        id=f"{tenant}-{status}-{created_min}",
        tenant_id=tenant,
        requested_by="u1",
        job_type=JobType.FEED_INTAKE_EXPORT,
        format=ReportFormat.CSV,
        status=JobStatus(status),
        created_at=created,
        updated_at=created,
        started_at=started,
    )


def test_nothing_queued_is_no_ones_turn() -> None:
    assert next_in_turn([]) is None
    assert next_in_turn([job("a", "running", 0, 0), job("b", "succeeded", 0, 0)]) is None


def test_among_tenants_that_never_ran_the_one_waiting_longest_goes_first() -> None:
    # "zeta" sorts after "alpha" but has waited longer: waiting decides, not the name
    jobs = [job("alpha", "queued", 5), job("zeta", "queued", 3), job("zeta", "queued", 1)]
    assert next_in_turn(jobs) == jobs[2], "zeta's oldest queued job"


def test_the_tenant_running_fewer_jobs_goes_first_whatever_it_waited() -> None:
    jobs = [
        job("a", "running", 0, 1),
        job("a", "queued", 2),
        job("b", "running", 0, 1),
        job("b", "running", 0, 2),
        job("b", "queued", 0),
    ]
    assert next_in_turn(jobs) == jobs[1]


def test_among_tenants_running_as_few_the_least_recently_started_goes_first() -> None:
    jobs = [
        job("a", "succeeded", 0, 9),  # a started last at minute 9
        job("a", "queued", 1),
        job("b", "failed", 0, 4),  # b at minute 4: its turn, though a waited as long
        job("b", "queued", 2),
        job("b", "queued", 1),
    ]
    assert next_in_turn(jobs) == jobs[4]
    never = job("c", "queued", 8)
    assert next_in_turn([*jobs, never]) == never, "a tenant that never started comes first"
