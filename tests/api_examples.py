"""The examples of docs/api.md, from a real run: starts ``reportsvc dev`` on a fresh data
folder, sends the requests the document shows and prints each answer as ``curl -i`` shows it
(status line, headers in the order sent, body), so that the document is pasted from a run,
never typed. tests/unit/test_docs.py checks what a pasted example must agree with.

    .venv/bin/python -m tests.api_examples > /tmp/examples.txt
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx

# the documented run's demo "now" (its data, dated requests aside, follows it)
DEMO_NOW = "2026-11-29T04:32:00Z"
FARM = "5b0f8a3e-4c1d-4e59-9a6b-2f1c7d3e9a01"
CREATE = {
    "job_type": "FEED_INTAKE_EXPORT",
    "format": "csv",
    "farm_id": FARM,
    "start_date": "2026-01-05",
    "end_date": "2026-01-18",
}


def shown(answer: httpx.Response, *, body: bool = True, pretty: bool = False) -> str:
    """``answer`` as ``curl -i`` prints it; a JSON body pretty-printed when ``pretty``."""
    lines = [f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}"]
    lines += [f"{k.decode()}: {v.decode()}" for k, v in answer.headers.raw]
    text = "\n".join(lines)
    if not body:
        return text
    if pretty:
        return text + "\n```\n```json\n" + json.dumps(answer.json(), indent=4, ensure_ascii=False)
    return f"{text}\n\n{answer.text}"


def started(data_dir: str) -> Iterator[tuple[str, str]]:
    env = {**os.environ, "DEMO_NOW": DEMO_NOW, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "reportsvc", "dev", "--data-dir", data_dir, "--port", "0"]
    dev = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert dev.stdout is not None
    url = token = None
    try:
        for line in dev.stdout:
            if found := re.match(r"export BASE=(\S+)", line):
                url = found.group(1)
            if found := re.match(r"export TOKEN=(\S+)", line):
                token = found.group(1)
            if url and token:
                break
        assert url and token, "reportsvc dev printed no URL and token"
        yield url, token
    finally:
        dev.terminate()
        dev.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        for base, token in started(data_dir):
            auth = {"Authorization": f"Bearer {token}"}
            http = httpx.Client(base_url=base, headers=auth, timeout=30)
            print("## health\n" + shown(http.get("/api/health")))
            print("## ready\n" + shown(http.get("/api/ready")))
            key = {"Idempotency-Key": "feed-2026-w2"}
            created = http.post("/api/v1/reports/jobs", json=CREATE, headers=key)
            print("## create\n" + shown(created, pretty=True))
            job = created.json()["id"]
            while http.get(f"/api/v1/reports/jobs/{job}").json()["status"] != "succeeded":
                time.sleep(0.2)
            replay = http.post("/api/v1/reports/jobs", json=CREATE, headers=key)
            print("## replay\n" + shown(replay))
            reused = http.post(
                "/api/v1/reports/jobs", json=CREATE | {"format": "json"}, headers=key
            )
            print("## reused\n" + shown(reused))
            one = {"x-request-id": "docs-example-1"}
            print(
                "## get\n"
                + shown(http.get(f"/api/v1/reports/jobs/{job}", headers=one), pretty=True)
            )
            ids = {"x-request-id": "req-42", "x-trace-id": "trace-42"}
            listed = http.get("/api/v1/reports/jobs?limit=1", headers=ids)
            print("## list ids\n" + shown(listed, body=False))
            download = http.get(f"/api/v1/reports/jobs/{job}/download")
            print("## download\n" + shown(download))
            url = download.json()["download_url"]
            plain = httpx.Client(base_url=base, timeout=30)
            print("## file\n" + shown(plain.get(url), body=False))
            print("## range\n" + shown(plain.get(url, headers={"Range": "bytes=0-99"})))
            print("## past end\n" + shown(plain.get(url, headers={"Range": "bytes=999999-"})))
            print("## head\n" + shown(plain.head(url, headers={"Range": "bytes=0-99"}), body=False))
            long = {
                "job_type": "TELEMETRY_EXPORT",
                "format": "csv",
                "farm_id": FARM,
                "start_date": "2025-10-01",
                "end_date": "2025-12-31",
            }
            running = http.post("/api/v1/reports/jobs", json=long).json()["id"]
            time.sleep(0.5)
            cancelled = http.post(f"/api/v1/reports/jobs/{running}/cancel")
            print("## cancel\n" + shown(cancelled, pretty=True))
            document = plain.get("/api-docs/openapi.json")
            print("## openapi\n" + shown(document, body=False) + "\n\n" + document.text[:110])


if __name__ == "__main__":
    main()
