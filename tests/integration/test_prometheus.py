"""Issue 15 acceptance: a real Prometheus scrapes a real api and a real worker.

``reportsvc api`` and ``reportsvc worker`` run over PostgreSQL, RabbitMQ and the demo
upstream; Debian's ``prometheus`` binary runs with a temporary config (1 s scrapes, the
service's alert rules loaded) and its own storage in the test's folder. After a few jobs, its
HTTP API answers the jobs created and finished; the worker's probes answer; the alert rules
evaluate without error against the real series, and once the worker stops ReportWorkerAbsent
is pending.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from reportcore.jobs import JobType

from .procs import (
    Proc,
    Procs,
    run_reportsvc,
    service_env,
    start_api,
    start_demo_upstream,
    user_token,
)
from .test_end_to_end import demo_scope

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DEADLINE_SEC = 60.0


# the worker's probes cannot take a port of their own choosing (WORKER_HTTP_PORT=0 turns them
# off), so the test picks a free port and lets go of it: another process may take it before
# the worker binds it. A lost race is retried with another port, not a red run.
WORKER_START_ATTEMPTS = 5
_WORKER_LISTENING = r"msg=\"worker http listening\" .*?url=(?P<url>http://\S+)"
# check_ports at the start finds it taken (exit 1), or the probe server a moment later (the
# worker then runs without its port, and says so)
_WORKER_PORT_LOST = r"(?P<lost>port \d+ is in use \(WORKER_HTTP_PORT\)|worker http not started on)"
# Prometheus binds port 0 itself and logs the address it got (Debian 12's 2.42 does)
_PROMETHEUS_LISTENING = r"msg=\"Listening on\" address=127\.0\.0\.1:(?P<port>[1-9]\d*)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_worker_with_probes(procs: Procs, env: dict[str, str]) -> tuple[Proc, str]:
    """``reportsvc worker`` with its probe port on; returns it and the probes' URL."""
    for _ in range(WORKER_START_ATTEMPTS):
        worker_env = env | {"WORKER_HTTP_PORT": str(free_port())}
        worker = procs.reportsvc("worker", worker_env, "worker")
        found = worker.wait_for(f"{_WORKER_LISTENING}|{_WORKER_PORT_LOST}")
        if found["lost"] is None:
            worker.wait_for(r"msg=\"worker started\"")
            return worker, found["url"]
        worker.stop()  # no job was created yet: nothing for this worker to finish
    pytest.fail(f"the worker lost its probe port {WORKER_START_ATTEMPTS} times in a row")


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        from tests.conftest import REQUIRE_SERVICES

        if REQUIRE_SERVICES:
            pytest.fail("REQUIRE_SERVICES=1 but prometheus is not installed", pytrace=False)
        pytest.skip("SKIPPED INTEGRATION: prometheus is not installed (apt-get install prometheus)")
    return found


@dataclass
class Observed:
    api_url: str
    worker_url: str
    prometheus_url: str
    token: str
    worker: Proc

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float) -> None:
        deadline = time.monotonic() + DEADLINE_SEC
        while (seen := self.scalar(expr)) != expected:
            if time.monotonic() > deadline:
                pytest.fail(f"{expr} is {seen}, not {expected}, after {DEADLINE_SEC}s")
            time.sleep(0.5)


@pytest.fixture
def observed(database_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Observed]:
    from adapters.demo_upstream import DEMO_TENANT

    binary = prometheus_binary()
    with Procs(tmp_path / "logs") as procs:
        upstream = start_demo_upstream(procs)
        env = service_env(database_url, amqp_url, tmp_path / "exports", upstream)
        migrated = run_reportsvc(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        _, api_url = start_api(procs, env)
        worker, worker_url = start_worker_with_probes(procs, env)
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            f"rule_files: ['{ALERTS}']\n"
            "scrape_configs:\n"
            "  - job_name: reportsvc-api\n"
            f"    static_configs: [{{targets: ['{api_url.removeprefix('http://')}']}}]\n"
            "  - job_name: reportsvc-worker\n"
            f"    static_configs: [{{targets: ['{worker_url.removeprefix('http://')}']}}]\n"
        )
        prometheus = procs.start(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                "--web.listen-address=127.0.0.1:0",
            ],
            {"PATH": "/usr/bin:/bin"},
        )
        prom_port = prometheus.wait_for(_PROMETHEUS_LISTENING)["port"]
        prometheus_url = f"http://127.0.0.1:{prom_port}"
        prometheus.wait_http(prometheus_url + "/-/ready")
        yield Observed(
            api_url=api_url,
            worker_url=worker_url,
            prometheus_url=prometheus_url,
            token=user_token(env, DEMO_TENANT, "tenant_admin"),
            worker=worker,
        )


def run_jobs(observed: Observed, kinds: list[tuple[JobType, str]]) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {observed.token}"}
    with httpx.Client(base_url=observed.api_url, headers=headers, timeout=10.0) as http:
        ids = []
        for job_type, fmt in kinds:
            answer = http.post(
                "/api/v1/reports/jobs",
                json={"job_type": job_type.value, "format": fmt, **demo_scope(job_type)},
            )
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
        deadline = time.monotonic() + DEADLINE_SEC
        done: list[dict[str, Any]] = []
        for job_id in ids:
            while (job := http.get(f"/api/v1/reports/jobs/{job_id}").json())["status"] in (
                "queued",
                "running",
            ):
                assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
                time.sleep(0.2)
            done.append(job)
        return done


def test_prometheus_scrapes_jobs_created_and_finished_from_the_api_and_the_worker(
    observed: Observed,
) -> None:
    # both targets up before the jobs run: the counters' rise is seen from a scrape at 0
    observed.wait_for('sum(up{job=~"reportsvc-.*"})', 2)
    jobs = run_jobs(
        observed,
        [
            (JobType.FEED_INTAKE_EXPORT, "csv"),
            (JobType.FEED_INTAKE_EXPORT, "csv"),
            (JobType.KPI_FEEDING_EXPORT, "json"),
        ],
    )
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs

    observed.wait_for("sum(reportsvc_jobs_created_total)", 3)
    observed.wait_for(
        'sum(reportsvc_jobs_created_total{type="FEED_INTAKE_EXPORT",format="csv"})', 2
    )
    observed.wait_for('sum(reportsvc_jobs_finished_total{status="succeeded"})', 3)
    observed.wait_for('sum(reportsvc_export_duration_seconds_count{type="KPI_FEEDING_EXPORT"})', 1)
    rows = observed.scalar("sum(reportsvc_export_rows_total)")
    assert rows is not None and rows > 0
    ok = observed.scalar('sum(reportsvc_upstream_requests_total{status_class="2xx"})')
    assert ok is not None and ok >= 3
    # the creates were counted by the api, the finishes by the worker, each on its own port
    created_by = observed.query("sum by (job) (reportsvc_jobs_created_total)")
    assert {r["metric"]["job"] for r in created_by} == {"reportsvc-api"}
    # the api is scraped on its own clock: its last scrape may predate the polls, so wait for them
    gets = 'reportsvc_http_requests_total{route="/api/v1/reports/jobs/{jobId}",method="GET"}'
    observed.wait_for(f"sum({gets}) >= bool {len(jobs)}", 1)
    route = observed.query('reportsvc_http_requests_total{route="/api/v1/reports/jobs/{jobId}"}')
    assert route and all(r["metric"]["method"] == "GET" for r in route)
    for series in observed.query("reportsvc_http_requests_total"):
        assert not any(j["id"] in series["metric"]["route"] for j in jobs)
    # the worker's scrape-time gauges are there, and all is quiet
    observed.wait_for("max(reportsvc_publish_backlog_jobs)", 0)
    observed.wait_for("max(reportsvc_jobs_lease_expired)", 0)
    observed.wait_for('max(reportsvc_queue_messages{queue="report.jobs.dlq"})', 0)

    assert httpx.get(observed.worker_url + "/healthz").status_code == 200
    ready = httpx.get(observed.worker_url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "queue": "ok"}

    # the alert rules evaluate against the real series without error, and none fires
    deadline = time.monotonic() + DEADLINE_SEC
    while True:
        groups = httpx.get(observed.prometheus_url + "/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if len(rules) == 7 and all(r.get("lastEvaluation", "").startswith("2") for r in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    assert {r["health"] for r in rules} == {"ok"}, rules
    assert [r["name"] for r in rules if r["state"] != "inactive"] == []

    # the worker gone, its series go stale at the next scrape: ReportWorkerAbsent is pending
    # (it fires after its `for`; tests/prometheus/alerts_test.yml shows when)
    assert observed.worker.stop() == 0
    deadline = time.monotonic() + DEADLINE_SEC
    while True:
        groups = httpx.get(observed.prometheus_url + "/api/v1/rules").json()["data"]["groups"]
        states = {rule["name"]: rule["state"] for group in groups for rule in group["rules"]}
        if states["ReportWorkerAbsent"] == "pending":
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
    firing = {name for name, state in states.items() if state != "inactive"}
    assert firing == {"ReportWorkerAbsent"}
