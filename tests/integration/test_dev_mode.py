"""Issue 8 acceptance: ``reportsvc dev`` alone gets a newcomer from nothing to a file.

The test reads what ``reportsvc dev`` prints (URL, token, the create body of the curl line),
runs that flow over HTTP, then restarts ``reportsvc dev`` on the same data folder and checks
that the job and its file are still there and downloadable with the same token.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reportcore.jobs import JobType
from reportcore.jobtypes import JOB_TYPES

from .procs import Proc, Procs, base_env

JOB_DEADLINE_SEC = 60.0


class Printed:
    """What ``reportsvc dev`` printed once ready."""

    def __init__(self, proc: Proc) -> None:
        proc.wait_for(r"Stop with Ctrl\+C")
        text = proc.stdout()
        self.base_url = _one(r"^export BASE=(\S+)$", text)
        self.token = _one(r"^export TOKEN=(\S+)$", text)
        create_line = _one(r"^(JOB=\$\(curl .*)$", text)
        # the -d argument of the printed curl line, unquoted as the shell would
        words = shlex.split(create_line.split("|")[0])
        self.create_body: dict[str, Any] = json.loads(words[words.index("-d") + 1])
        self.text = text

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )


def _one(pattern: str, text: str) -> str:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    assert len(found) == 1, f"expected one line matching {pattern!r} in:\n{text}"
    return str(found[0])


def start_dev(procs: Procs, data_dir: Path) -> tuple[Proc, Printed]:
    env = base_env(LOG_LEVEL="INFO", REPORT_RECOVERY_INTERVAL_SEC="1")
    proc = procs.reportsvc("dev", env, "dev", "--data-dir", str(data_dir), "--port", "0")
    printed = Printed(proc)
    proc.wait_http(printed.base_url + "/api/health")
    return proc, printed


def wait_succeeded(printed: Printed, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_DEADLINE_SEC
    with printed.http() as http:
        while True:
            job: dict[str, Any] = http.get(f"/api/v1/reports/jobs/{job_id}").json()
            if job["status"] != "queued" and job["status"] != "running":
                assert job["status"] == "succeeded", job
                return job
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job['status']} after {JOB_DEADLINE_SEC}s")
            time.sleep(0.2)


def fetch_file(printed: Printed, job_id: str) -> bytes:
    with printed.http() as http:
        link = http.get(f"/api/v1/reports/jobs/{job_id}/download")
        assert link.status_code == 200, link.text
        url = link.json()["download_url"]
    with httpx.Client(base_url=printed.base_url, timeout=10.0) as anonymous:
        answer = anonymous.get(url)
    assert answer.status_code == 200, answer.text
    return answer.content


def test_the_printed_flow_downloads_a_csv_of_demo_data_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "dev-data"
    with Procs(tmp_path / "logs") as procs:
        first, printed = start_dev(procs, data_dir)
        assert printed.create_body["format"] == "csv"
        assert "/api-docs" in printed.text
        assert "curl -s -o report.csv" in printed.text

        with printed.http() as http:
            created = http.post("/api/v1/reports/jobs", json=printed.create_body)
        assert created.status_code == 201, created.text
        job = wait_succeeded(printed, created.json()["id"])
        content = fetch_file(printed, job["id"])
        assert hashlib.sha256(content).hexdigest() == job["sha256"]
        assert len(content) == job["size_bytes"]
        rows = list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))
        job_type = JobType(printed.create_body["job_type"])
        assert tuple(rows[0]) == JOB_TYPES[job_type].header
        assert len(rows) > 1, "the demo export has no rows"
        assert first.stop() == 0

        # the same data folder: same secrets, same jobs, same files
        second, again = start_dev(procs, data_dir)
        with again.http() as http:
            listed = http.get("/api/v1/reports/jobs").json()["items"]
            # the token printed by the first run is still accepted
            old = http.get(
                f"/api/v1/reports/jobs/{job['id']}",
                headers={"Authorization": f"Bearer {printed.token}"},
            )
        assert [j["id"] for j in listed] == [job["id"]]
        assert old.status_code == 200
        assert old.json()["status"] == "succeeded"
        assert old.json()["sha256"] == job["sha256"]
        assert fetch_file(again, job["id"]) == content
        assert second.stop() == 0


def test_dev_keeps_its_generated_secrets_in_the_data_folder_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "dev-data"
    with Procs(tmp_path / "logs") as procs:
        proc, _ = start_dev(procs, data_dir)
        assert proc.stop() == 0
        output = proc.output()
    secrets_file = data_dir / "secrets.json"
    assert secrets_file.stat().st_mode & 0o077 == 0
    kept = json.loads(secrets_file.read_text())
    assert len(kept["jwt_secret"]) >= 32 and len(kept["download_secret"]) >= 32
    assert kept["jwt_secret"] != kept["download_secret"]
    assert kept["jwt_secret"] not in output
    assert kept["download_secret"] not in output
