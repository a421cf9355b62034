"""A real S3-compatible server for the tests: moto's server in its own process, over HTTP.

One server per test session (it starts in about a second); every test gets a bucket of its own.
The server holds objects in its own memory, never in the tests' process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# moto accepts any credentials; the service reads these through the standard AWS chain
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _command() -> list[str]:
    beside = Path(sys.executable).with_name("moto_server")
    exe = str(beside) if beside.exists() else shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("moto_server is not installed (make venv installs moto[server])")
    return [exe, "-H", "127.0.0.1", "-p", "0"]


@contextlib.contextmanager
def moto_server(log: Path, **env: str) -> Iterator[str]:
    """``moto_server`` on a free port of 127.0.0.1 until the block ends; yields its URL."""
    with moto_process(log, **env) as (_, url):
        yield url


@contextlib.contextmanager
def moto_process(log: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``moto_server`` as :func:`moto_server`, yielding its process too (a fault test stops it);
    ``env`` adds to its environment (``INITIAL_NO_AUTH_ACTION_COUNT=0``: check credentials)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, **env},
        )
        try:
            url = _wait_listening(proc, log)
            yield proc, url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_listening(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if found:
            url = found.group(1)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/moto-api/", timeout=2).status_code < 500:
                    return url
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited: {log.read_text(errors='replace')}")
        time.sleep(0.1)
    raise RuntimeError(f"moto_server did not start in 30 s: {log.read_text(errors='replace')}")


def client(endpoint: str) -> Any:
    """A boto3 client of the test server, with the tests' credentials."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 2}, signature_version="s3v4"
        ),
    )


@dataclass
class Bucket:
    """A fresh bucket of the test server, and a client to look into it."""

    endpoint: str
    name: str
    client: Any

    def object_keys(self) -> list[str]:
        """Every object key in the bucket."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def open_uploads(self) -> list[str]:
        """The keys of every multipart upload not completed or aborted."""
        listed = self.client.list_multipart_uploads(Bucket=self.name)
        return sorted(u["Key"] for u in listed.get("Uploads", []))

    def env(self, prefix: str = "reports/") -> dict[str, str]:
        """The service's variables for this bucket (FILE_STORE=s3)."""
        return {
            "FILE_STORE": "s3",
            "S3_BUCKET": self.name,
            "S3_PREFIX": prefix,
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_REGION": CREDENTIALS["AWS_DEFAULT_REGION"],
            **CREDENTIALS,
        }


def new_bucket(endpoint: str) -> Bucket:
    s3 = client(endpoint)
    name = f"rt-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    return Bucket(endpoint=endpoint, name=name, client=s3)
