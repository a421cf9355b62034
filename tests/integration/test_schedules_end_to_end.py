"""Issue 29's acceptance over real processes: two api and two worker processes on PostgreSQL and
RabbitMQ, a schedule every minute over five occurrences.

The processes' clock runs 20 times as fast from one shared instant on (the test-only
``REPORT_TEST_CLOCK_ANCHOR`` / ``REPORT_TEST_CLOCK_SPEED``, docs/operations.md), so a minute
passes every three seconds. Exactly one job is made per occurrence, each with its
``scheduled_for``, although both workers schedule and one of them is SIGKILLed on the way; a
schedule paused with PATCH makes no job until it is resumed; and a scheduled job's file is
byte for byte the file of the same request created by hand.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from adapters.demo_upstream import DEMO_FARM_ID

from .procs import (
    Proc,
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_demo_upstream,
    start_worker,
    user_token,
)

pytestmark = pytest.mark.integration

SPEED = 20.0  # one minute of the processes' clock every three real seconds
MINUTE_REAL_SEC = 60 / SPEED
JOBS = "/api/v1/reports/jobs"
SCHEDULES = "/api/v1/reports/schedules"
TENANT = "farmiq-demo"
TEMPLATE = {
    "job_type": "FEED_INTAKE_EXPORT",
    "format": "csv",
    "farm_id": DEMO_FARM_ID,
    "timezone": "Asia/Bangkok",
}


class Cluster:
    def __init__(
        self,
        procs: Procs,
        apis: list[str],
        workers: list[Proc],
        token: str,
        anchor: dt.datetime,
    ) -> None:
        self.anchor = anchor
        self.procs = procs
        self.apis = apis
        self.workers = workers
        self.headers = {"Authorization": f"Bearer {token}"}

    def client(self, n: int) -> httpx.Client:
        return httpx.Client(base_url=self.apis[n % len(self.apis)], headers=self.headers)

    def jobs_of(self, schedule_id: str, n: int = 0) -> list[dict[str, Any]]:
        with self.client(n) as http:
            answer = http.get(JOBS, params={"schedule_id": schedule_id, "limit": "100"})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def now(self) -> dt.datetime:
        """The processes' time: the real one, SPEED times as fast from the anchor on."""
        return self.anchor + (dt.datetime.now(dt.UTC) - self.anchor) * SPEED

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.procs.procs)


def wait_until(what: str, check: Callable[[], bool], timeout: float, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout}s\n{cluster.describe()}")
        time.sleep(0.1)


@pytest.fixture
def cluster(database_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Cluster]:
    with Procs(tmp_path / "logs") as procs:
        upstream = start_demo_upstream(procs)
        anchor = dt.datetime.now(dt.UTC)
        env = service_env(
            database_url,
            amqp_url,
            tmp_path / "exports",
            upstream,
            REPORT_TEST_CLOCK_ANCHOR=anchor.isoformat(),
            REPORT_TEST_CLOCK_SPEED=str(SPEED),
            REPORT_SCHEDULER_INTERVAL_SEC="0.2",
            # 100 s of the fast clock: a job of the killed worker is taken back in 5 s
            REPORT_LEASE_SEC="100",
        )
        done = run_reportsvc(env, "migrate")
        assert done.returncode == 0, done.stderr
        apis = [start_api(procs, env)[1] for _ in range(2)]
        workers = [start_worker(procs, env) for _ in range(2)]
        yield Cluster(procs, apis, workers, user_token(env, TENANT, "tenant_admin"), anchor)


def five_minutes_from(now: dt.datetime, zone: str) -> tuple[str, list[dt.datetime]]:
    """A cron expression whose next five occurrences are five consecutive minutes starting
    two minutes after ``now`` (in ``zone``), and the next after them an hour later; and the
    five instants."""
    start = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=2)
    minutes = [start + dt.timedelta(minutes=i) for i in range(5)]
    local = [m.astimezone(ZoneInfo(zone)) for m in minutes]
    listed = ",".join(str(m.minute) for m in local)
    hours = ",".join(sorted({str(m.hour) for m in local}, key=int))
    return f"{listed} {hours} * * *", minutes


def test_five_occurrences_make_five_jobs_whatever_dies_and_a_pause_makes_none(
    cluster: Cluster,
) -> None:
    cron, minutes = five_minutes_from(cluster.now(), "Asia/Bangkok")
    body = {
        "cron": cron,
        "timezone": "Asia/Bangkok",
        "range": {"last_days": 2},
        "job": TEMPLATE,
        "name": "five minutes",
    }
    with cluster.client(0) as http:
        made = http.post(SCHEDULES, json=body)
    assert made.status_code == 201, made.text
    schedule = made.json()
    sid = schedule["id"]
    assert dt.datetime.fromisoformat(schedule["next_run_at"]) == minutes[0]

    # both workers schedule; one is killed once two occurrences made their jobs
    wait_until("two jobs", lambda: len(cluster.jobs_of(sid)) >= 2, 8 * MINUTE_REAL_SEC, cluster)
    assert cluster.workers[0].kill() == -9
    wait_until("five jobs", lambda: len(cluster.jobs_of(sid, 1)) >= 5, 6 * MINUTE_REAL_SEC, cluster)
    time.sleep(MINUTE_REAL_SEC)  # a sixth would come now, if one could
    jobs = cluster.jobs_of(sid)

    # one job per occurrence: the five minutes, each its own key
    assert sorted(dt.datetime.fromisoformat(j["scheduled_for"]) for j in jobs) == minutes
    assert {j["idempotency_key"] for j in jobs} == {
        f"schedule:{sid}:{j['scheduled_for']}" for j in jobs
    }
    assert all(j["schedule_id"] == sid for j in jobs)

    # paused, then every minute: three minutes make no job
    with cluster.client(1) as http:
        paused = http.patch(f"{SCHEDULES}/{sid}", json={"active": False})
        assert paused.status_code == 200, paused.text
        assert (paused.json()["active"], paused.json()["next_run_at"]) == (False, None)
        every = http.patch(f"{SCHEDULES}/{sid}", json={"cron": "* * * * *"})
        assert every.status_code == 200 and every.json()["next_run_at"] is None, every.text
    time.sleep(3 * MINUTE_REAL_SEC)
    assert len(cluster.jobs_of(sid, 1)) == 5
    with cluster.client(0) as http:
        resumed = http.patch(f"{SCHEDULES}/{sid}", json={"active": True})
    assert resumed.status_code == 200, resumed.text
    restart = dt.datetime.fromisoformat(resumed.json()["next_run_at"])
    assert restart > minutes[-1] + dt.timedelta(minutes=3)  # no catching up
    wait_until(
        "the sixth job", lambda: len(cluster.jobs_of(sid)) >= 6, 3 * MINUTE_REAL_SEC, cluster
    )
    sixth = max(dt.datetime.fromisoformat(j["scheduled_for"]) for j in cluster.jobs_of(sid))
    assert sixth == restart
    with cluster.client(1) as http:
        assert http.patch(f"{SCHEDULES}/{sid}", json={"active": False}).status_code == 200

    # every job runs to success on the surviving worker; the first one's bytes are those of
    # the same request made by hand
    wait_until(
        "every job succeeded",
        lambda: all(j["status"] == "succeeded" for j in cluster.jobs_of(sid)),
        30.0,
        cluster,
    )
    scheduled = min(cluster.jobs_of(sid), key=lambda j: j["scheduled_for"])
    with cluster.client(1) as http:
        by_hand = http.post(
            JOBS,
            json={
                **TEMPLATE,
                "start_date": scheduled["start_date"],
                "end_date": scheduled["end_date"],
            },
        )
        assert by_hand.status_code == 201, by_hand.text
        hand_id = by_hand.json()["id"]
        wait_until(
            "the job by hand succeeded",
            lambda: http.get(f"{JOBS}/{hand_id}").json()["status"] == "succeeded",
            30.0,
            cluster,
        )
        files = []
        for job_id in (scheduled["id"], hand_id):
            link = http.get(f"{JOBS}/{job_id}/download")
            assert link.status_code == 200, link.text
            files.append(http.get(link.json()["download_url"]).content)
    assert files[0] == files[1] and files[0].count(b"\r\n") > 1
    shown = cluster.jobs_of(sid)
    with cluster.client(0) as http:
        last = http.get(f"{SCHEDULES}/{sid}").json()
    assert last["last_job_id"] in {j["id"] for j in shown}
    assert last["last_run_at"] == max(j["scheduled_for"] for j in shown)
