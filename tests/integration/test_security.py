"""Issue 6 item 10: security through real ``reportsvc api`` and ``worker`` processes.

Real PostgreSQL, RabbitMQ and the demo upstream; two tenants with finished jobs and files on
disk. What a client can reach is checked from the outside only:

- tenant isolation on every route that takes a job id: another tenant's job is a 404 exactly
  like a missing one, and its file opens with no download token but its own (not one of another
  job or tenant, not one with a changed expiry or signature, not one signed for the wrong tenant);
- the role matrix, a few checks through the real process (the unit tests hold the whole table);
- ``alg: none``, other algorithms, forged, expired and foreign-issuer tokens: 401 everywhere;
- path traversal in job ids (``..``, percent-encoded, absolute, NUL, backslashes) on every
  route with an id: a 4xx in the envelope, and no byte from outside the tenant's own files;
- secrets never in logs: api and worker at ``LOG_LEVEL=DEBUG``, in both log formats, with a
  database password, an upstream service token and requests carrying JWTs and download tokens.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import hmac
import io
import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from .procs import (
    DOWNLOAD_SECRET,
    JWT_SECRET,
    Proc,
    Procs,
    base_env,
    run_reportsvc,
    service_env,
    start_api,
    start_worker,
)

JOBS = "/api/v1/reports/jobs"
OTHER_TENANT = "tenant-b"
JOB_DEADLINE_SEC = 60.0
INTERNAL_TOKEN = "upstream-service-token-5f0c2a9e7d41b8c3"
DB_PASSWORD = "pg-password-8c1d7e0b94a2"


# --- the deployment ---


def _jwt(
    tenant: str | None = None,
    *roles: str,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    ttl_sec: int = 600,
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": "security-test",
        "roles": list(roles or ("tenant_admin",)),
        "iss": "farmiq",
        "aud": "farmiq-api",
        "iat": now,
        "exp": now + ttl_sec,
    }
    if tenant is not None:
        body["tenant_id"] = tenant
    body.update(claims)
    return jwt.encode(body, secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Stack:
    """api + worker + demo upstream over a fresh database, vhost and export folder."""

    api: Proc
    worker: Proc
    base_url: str
    export_root: Path
    tenant: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = _bearer(token) if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10.0)

    def finished_job(self, token: str, fmt: str = "csv") -> dict[str, Any]:
        """Create a small feed intake export with ``token`` and wait for it to succeed."""
        from adapters.demo_upstream import DEMO_START

        # one day of every farm of the tenant: a few dozen rows, which name the tenant
        body = {
            "job_type": "FEED_INTAKE_EXPORT",
            "format": fmt,
            "start_date": DEMO_START,
            "end_date": DEMO_START,
        }
        with self.client(token) as http:
            created = http.post(JOBS, json=body)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + JOB_DEADLINE_SEC
            while True:
                job: dict[str, Any] = http.get(f"{JOBS}/{job_id}").json()
                if job["status"] not in ("queued", "running"):
                    assert job["status"] == "succeeded", job
                    return job
                assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
                time.sleep(0.1)

    def download_token(self, token: str, job_id: str) -> str:
        with self.client(token) as http:
            link = http.get(f"{JOBS}/{job_id}/download")
        assert link.status_code == 200, link.text
        url: str = link.json()["download_url"]
        assert url.startswith(f"{JOBS}/{job_id}/file?token=")
        return url.split("token=", 1)[1]

    def file(self, job_id: str, token: str | None, method: str = "GET") -> httpx.Response:
        params = {} if token is None else {"token": token}
        with self.client() as anonymous:
            return anonymous.request(method, f"{JOBS}/{job_id}/file", params=params)


def _start_upstream(procs: Procs, token: str | None) -> str:
    argv = [sys.executable, "-m", "adapters.demo_upstream", "--port", "0"]
    if token is not None:
        argv += ["--token", token]
    proc = procs.start("demo-upstream", argv, base_env())
    return proc.wait_for(r"(http://[\w.-]+:\d+)").group(1)


def _with_password(database_url: str, password: str) -> str:
    # trust authentication ignores the password, but the processes still hold and could log it
    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


@contextlib.contextmanager
def running_stack(
    database_url: str, amqp_url: str, tmp_path: Path, **overrides: str
) -> Iterator[Stack]:
    from adapters.demo_upstream import DEMO_TENANT

    token = overrides.get("INTERNAL_SERVICE_TOKEN")
    with Procs(tmp_path / "logs") as procs:
        upstream = _start_upstream(procs, token)
        export_root = tmp_path / "exports"
        env = {**service_env(database_url, amqp_url, export_root, upstream), **overrides}
        migrated = run_reportsvc(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        if env.get("LOG_FORMAT") == "json":
            # procs' start_api and start_worker wait for the text format's lines
            api = procs.reportsvc("api", env, "api")
            base_url = api.wait_for(r'"msg":"listening".*?"url":"(http://[^"]+)"').group(1)
            api.wait_http(base_url + "/api/health")
            worker = procs.reportsvc("worker", env, "worker")
            worker.wait_for(r'"msg":"worker started"')
        else:
            api, base_url = start_api(procs, env)
            worker = start_worker(procs, env)
        yield Stack(api, worker, base_url, export_root, DEMO_TENANT)


@pytest.fixture
def stack(database_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(database_url, amqp_url, tmp_path) as running:
        yield running
        assert "Traceback" not in running.api.output(), running.api.describe()


def _assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text)
    envelope = answer.json()
    assert envelope["error"]["code"] == code, envelope
    assert envelope["error"]["traceId"] == answer.headers["x-trace-id"]


# --- tenant isolation ---


def test_another_tenants_job_is_a_404_like_a_missing_one_on_every_route(stack: Stack) -> None:
    ours = _jwt(stack.tenant)
    theirs_token = _jwt(OTHER_TENANT)
    theirs = stack.finished_job(theirs_token)
    missing = "0f8fad5b-d9cb-469f-a165-70867728950e"
    with stack.client(ours) as http:
        for job_id in (theirs["id"], missing):
            _assert_error(http.get(f"{JOBS}/{job_id}"), 404, "NOT_FOUND")
            _assert_error(http.get(f"{JOBS}/{job_id}/download"), 404, "NOT_FOUND")
            _assert_error(http.post(f"{JOBS}/{job_id}/cancel"), 404, "NOT_FOUND")
        # the same words for both: nothing tells "exists elsewhere" from "does not exist"
        messages = {
            http.get(f"{JOBS}/{job_id}").json()["error"]["message"].replace(job_id, "<id>")
            for job_id in (theirs["id"], missing)
        }
        assert len(messages) == 1, messages
        assert all(j["id"] != theirs["id"] for j in http.get(JOBS).json()["items"])
        # naming the other tenant is refused, not obeyed
        _assert_error(
            http.get(f"{JOBS}/{theirs['id']}", params={"tenantId": OTHER_TENANT}), 403, "FORBIDDEN"
        )
    # the other tenant still sees its job, unharmed by the attempts (the cancel did nothing)
    with stack.client(theirs_token) as http:
        assert http.get(f"{JOBS}/{theirs['id']}").json()["status"] == "succeeded"


def test_a_file_opens_with_its_own_download_token_and_no_other(stack: Stack) -> None:
    ours, theirs = _jwt(stack.tenant), _jwt(OTHER_TENANT)
    our_job, our_ndjson = stack.finished_job(ours), stack.finished_job(ours, "json")
    their_job = stack.finished_job(theirs)
    our_token = stack.download_token(ours, our_job["id"])
    their_token = stack.download_token(theirs, their_job["id"])
    their_file = stack.export_root / OTHER_TENANT / their_job["id"] / "report.csv"
    assert their_file.is_file()

    # its own token opens it (no bearer token needed); HEAD too, in both formats
    own = stack.file(their_job["id"], their_token)
    assert own.status_code == 200 and own.content == their_file.read_bytes()
    for job, tokens_of in ((our_job, ours), (our_ndjson, ours)):
        head = stack.file(job["id"], stack.download_token(tokens_of, job["id"]), "HEAD")
        assert head.status_code == 200, head.text
        assert head.headers["content-length"] == str(job["size_bytes"])

    # a token of another job, of another tenant, on its path: refused as for another job
    _assert_error(stack.file(their_job["id"], our_token), 403, "FORBIDDEN")
    _assert_error(stack.file(our_job["id"], their_token), 403, "FORBIDDEN")
    _assert_error(stack.file(our_ndjson["id"], our_token), 403, "FORBIDDEN")

    # its own token with the expiry moved or the signature changed: refused as not genuine
    payload, signature = their_token.split(".")
    claims = json.loads(_unb64(payload))
    for exp in (claims["exp"] + 3600, claims["exp"] * 1000, 2**62):
        moved = _b64(json.dumps({**claims, "exp": exp}).encode())
        _assert_error(stack.file(their_job["id"], f"{moved}.{signature}"), 401, "UNAUTHORIZED")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for forged in (f"{payload}.{flipped}", f"{payload}.", payload, f"{payload}.{signature}="):
        _assert_error(stack.file(their_job["id"], forged), 401, "UNAUTHORIZED")
    for tenant in (stack.tenant, OTHER_TENANT):
        forged = _b64(json.dumps({**claims, "tenant_id": tenant, "exp": 2**40}).encode())
        _assert_error(stack.file(their_job["id"], f"{forged}.{signature}"), 401, "UNAUTHORIZED")

    # even a genuinely signed token that names their job under our tenant opens nothing: the
    # job is looked up in the tenant the token names (only the key holder could make this one)
    payload = _b64(
        json.dumps(
            {"tenant_id": stack.tenant, "job_id": their_job["id"], "exp": claims["exp"]}
        ).encode()
    )
    mac = hmac.new(DOWNLOAD_SECRET.encode(), payload.encode(), hashlib.sha256).digest()
    _assert_error(stack.file(their_job["id"], f"{payload}.{_b64(mac)}"), 404, "NOT_FOUND")
    _assert_error(stack.file(their_job["id"], None), 401, "UNAUTHORIZED")


# --- roles and bearer tokens ---


def test_roles_are_enforced_by_the_real_process(stack: Stack) -> None:
    tenant = stack.tenant
    job = stack.finished_job(_jwt(tenant, "farm_manager"))
    body = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}
    with stack.client(_jwt(tenant, "viewer")) as viewer:
        assert viewer.get(f"{JOBS}/{job['id']}").status_code == 200
        assert viewer.get(f"{JOBS}/{job['id']}/download").status_code == 200
        _assert_error(viewer.post(JOBS, json=body), 403, "FORBIDDEN")
        _assert_error(viewer.post(f"{JOBS}/{job['id']}/cancel"), 403, "FORBIDDEN")
    with stack.client(_jwt(tenant, "house_operator")) as operator:
        assert operator.get(JOBS).status_code == 200
        _assert_error(operator.post(JOBS, json=body), 403, "FORBIDDEN")
    with stack.client(_jwt(tenant, "auditor")) as stranger:
        _assert_error(stranger.get(JOBS), 403, "FORBIDDEN")
    with stack.client(_jwt(None, "tenant_admin")) as tenantless:
        _assert_error(tenantless.get(f"{JOBS}/{job['id']}"), 403, "FORBIDDEN")
    with stack.client(_jwt(None, "platform_admin")) as platform:
        _assert_error(platform.get(f"{JOBS}/{job['id']}"), 400, "VALIDATION_ERROR")
        named = platform.get(f"{JOBS}/{job['id']}", params={"tenantId": tenant})
        assert named.status_code == 200 and named.json()["id"] == job["id"]
        elsewhere = platform.get(f"{JOBS}/{job['id']}", params={"tenantId": OTHER_TENANT})
        _assert_error(elsewhere, 404, "NOT_FOUND")


def _alg_none(tenant: str) -> str:
    now = int(time.time())
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = {
        "sub": "x",
        "roles": ["platform_admin", "tenant_admin"],
        "tenant_id": tenant,
        "iss": "farmiq",
        "aud": "farmiq-api",
        "exp": now + 600,
    }
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _resigned_as(token: str, alg: str) -> str:
    """``token`` with another ``alg`` in its header, MACed with the real key over the new input:
    algorithm confusion is refused on the header alone, whatever signature comes with it."""
    _, claims, _ = token.split(".")
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    mac = hmac.new(JWT_SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(mac)}"


def test_unsigned_forged_and_stale_tokens_are_401_on_every_jwt_route(stack: Stack) -> None:
    tenant = stack.tenant
    job = stack.finished_job(_jwt(tenant))
    genuine = _jwt(tenant)
    refused = {
        "alg none": _alg_none(tenant),
        "alg None": _alg_none(tenant).replace(
            _b64(b'{"alg": "none", "typ": "JWT"}'), _b64(b'{"alg": "None", "typ": "JWT"}')
        ),
        "alg none, signature kept": _alg_none(tenant)[:-1] + "." + genuine.split(".")[2],
        "HS512 header": _resigned_as(genuine, "HS512"),
        "RS256 header": _resigned_as(genuine, "RS256"),
        "forged key": _jwt(tenant, secret="a-guessed-secret-" + "x" * 32),
        "expired": _jwt(tenant, ttl_sec=-3600),
        "other issuer": _jwt(tenant, iss="someone-else"),
        "other audience": _jwt(tenant, aud="another-api"),
        "no exp": jwt.encode(
            {
                "sub": "x",
                "roles": ["tenant_admin"],
                "tenant_id": tenant,
                "iss": "farmiq",
                "aud": "farmiq-api",
            },
            JWT_SECRET,
            algorithm="HS256",
        ),
        "padded": genuine + "=",
    }
    routes = [
        ("GET", JOBS),
        ("POST", JOBS),
        ("GET", f"{JOBS}/{job['id']}"),
        ("GET", f"{JOBS}/{job['id']}/download"),
        ("POST", f"{JOBS}/{job['id']}/cancel"),
    ]
    with stack.client() as http:
        for name, token in refused.items():
            for method, path in routes:
                body = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}
                answer = http.request(
                    method, path, headers=_bearer(token), json=body if method == "POST" else None
                )
                assert answer.status_code == 401, (name, method, path, answer.text)
                _assert_error(answer, 401, "UNAUTHORIZED")
        # and the genuine one works, so the refusals above are about the tokens
        assert http.get(f"{JOBS}/{job['id']}", headers=_bearer(genuine)).status_code == 200
    # nothing was cancelled or created by any of them
    with stack.client(genuine) as http:
        assert http.get(f"{JOBS}/{job['id']}").json()["status"] == "succeeded"
        assert [j["id"] for j in http.get(JOBS).json()["items"]] == [job["id"]]


# --- path traversal ---

TRAVERSALS = [
    "..",
    "%2e%2e",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..%5C..%5Cwindows",
    "%2Fetc%2Fpasswd",
    "%2F%2Fetc%2Fpasswd",
    "etc%00",
    "%00",
    "x%00..%2F..",
    "%252e%252e%252f",
    "..%2F{other}%2F{their_id}",
    "{their_id}%2F..%2F..%2F{other}%2F{their_id}",
    "%2E%2E%2F%2E%2E%2F%2E%2E%2Foutside%2Fsecret.txt",
    "~%2F.ssh",
    ".",
    "{their_id}%00",
]


def _raw_request(base_url: str, method: str, target: str, headers: dict[str, str]) -> bytes:
    """Send exactly ``target`` as the request target: an HTTP client would normalise it."""
    parts = urlsplit(base_url)
    assert parts.hostname and parts.port
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if method == "POST":
        lines.append("Content-Length: 0")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_path_traversal_in_job_ids_never_leaves_the_tenants_files(
    stack: Stack, tmp_path: Path
) -> None:
    ours, theirs = _jwt(stack.tenant), _jwt(OTHER_TENANT)
    our_job = stack.finished_job(ours)
    their_job = stack.finished_job(theirs)
    our_token = stack.download_token(ours, our_job["id"])
    their_file = (stack.export_root / OTHER_TENANT / their_job["id"] / "report.csv").read_bytes()
    their_rows = list(csv.reader(io.StringIO(their_file.decode("utf-8"), newline="")))
    assert len(their_rows) > 2, "the other tenant's file has no rows to recognise"
    # their first data row as the file spells it (RFC 4180: minimal quoting, CRLF-terminated)
    record = io.StringIO(newline="")
    csv.writer(record, lineterminator="\r\n").writerow(their_rows[1])
    their_line = record.getvalue().encode("utf-8")
    assert their_line in their_file
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE-EXPORT-ROOT-MARKER\n")
    # bytes that only a file outside our tenant's own could have brought into an answer
    secrets = [b"OUTSIDE-EXPORT-ROOT-MARKER", b"root:x:0:0", their_line.rstrip(b"\r\n")]

    checked = 0
    for pattern in TRAVERSALS:
        job_id = pattern.format(other=OTHER_TENANT, their_id=their_job["id"])
        for method, suffix, headers in (
            ("GET", "", _bearer(ours)),
            ("GET", "/download", _bearer(ours)),
            ("POST", "/cancel", _bearer(ours)),
            ("GET", f"/file?token={our_token}", {}),
            ("HEAD", f"/file?token={our_token}", {}),
            ("GET", "", _bearer(_jwt(None, "platform_admin"))),
        ):
            raw = _raw_request(stack.base_url, method, f"{JOBS}/{job_id}{suffix}", headers)
            head, _, body = raw.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            where = (method, job_id, suffix, head[:200])
            assert 400 <= status < 500, where
            assert not any(s in raw for s in secrets), where
            if method != "HEAD":
                envelope = json.loads(body)
                assert envelope["error"]["code"] in (
                    "NOT_FOUND",
                    "FORBIDDEN",
                    "VALIDATION_ERROR",
                    "UNAUTHORIZED",
                ), where
            checked += 1
    assert checked == len(TRAVERSALS) * 6
    # the probes changed nothing: our job and file are intact, theirs too
    assert stack.file(our_job["id"], our_token).status_code == 200
    with stack.client(theirs) as http:
        assert http.get(f"{JOBS}/{their_job['id']}").json()["status"] == "succeeded"


# --- secrets and logs ---


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_secret_is_ever_written_to_the_logs(
    database_url: str, amqp_url: str, tmp_path: Path, log_format: str
) -> None:
    user_jwt = _jwt(None, "tenant_admin", tenant_id="farmiq-demo")
    overrides = {
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": log_format,
        "INTERNAL_SERVICE_TOKEN": INTERNAL_TOKEN,
        "DATABASE_URL": _with_password(database_url, DB_PASSWORD),
    }
    with running_stack(database_url, amqp_url, tmp_path, **overrides) as stack:
        # the job can only succeed if the worker sent the internal token to the upstream,
        # which the demo upstream requires here
        job = stack.finished_job(user_jwt)
        token = stack.download_token(user_jwt, job["id"])
        assert stack.file(job["id"], token).status_code == 200
        assert stack.file(job["id"], token, "HEAD").status_code == 200
        with stack.client() as http:
            # secrets in every place a request can carry them, also where they do not belong
            http.get(f"{JOBS}/{job['id']}", headers={"Authorization": f"bearer {user_jwt}"})
            http.get(JOBS, headers=_bearer(_jwt(None, secret="wrong-secret-" + "y" * 40)))
            http.get(JOBS, headers=_bearer(user_jwt + "x"))
            http.get(f"{JOBS}/{job['id']}/file", params={"token": token + "x"})
            http.get(f"{JOBS}/{job['id']}/file", params={"access_token": token, "token": token})
            http.get(JOBS, headers={**_bearer(user_jwt), "x-trace-id": INTERNAL_TOKEN})
            http.post(JOBS, headers=_bearer(user_jwt), content=f'{{"x": "{user_jwt}"')
        # control characters in a path must not reach the log raw (NUL, ESC, CR)
        forged_line = "/%00%1b%5b31mFORGED%0d%0aLEVEL=ERROR"
        _raw_request(stack.base_url, "GET", f"{JOBS}{forged_line}", _bearer(user_jwt))
        assert stack.api.stop() == 0
        assert stack.worker.stop() == 0
        logs = {"api": stack.api.output(), "worker": stack.worker.output()}

    secrets = {
        "JWT_SECRET": JWT_SECRET,
        "REPORT_DOWNLOAD_SECRET": DOWNLOAD_SECRET,
        "INTERNAL_SERVICE_TOKEN": INTERNAL_TOKEN,
        "database password": DB_PASSWORD,
        "user JWT": user_jwt,
        "user JWT signature": user_jwt.rsplit(".", 1)[1],
        "download token": token,
        "download token signature": token.split(".")[1],
    }
    for process, text in logs.items():
        leaked = [name for name, value in secrets.items() if value in text]
        assert leaked == [], f"{process} logged {leaked}:\n{text}"
    # the logs are there and at DEBUG: this checked real output, not silence
    debug = '"level":"DEBUG"' if log_format == "json" else "level=DEBUG"
    assert debug in logs["api"] + logs["worker"]
    assert f"{JOBS}/{job['id']}/file" in logs["api"]
    assert "[REDACTED]" in logs["api"]  # lines that carried secrets were written, cleaned
    assert "job succeeded" in logs["worker"]
    for process, text in logs.items():
        controls = sorted({c for c in text if not c.isprintable() and c != "\n"})
        assert controls == [], f"{process} wrote control characters {controls!r}"
        assert "FORGED" not in text or "\nLEVEL=ERROR" not in text
    if log_format == "json":
        for line in logs["api"].splitlines():
            json.loads(line)  # one JSON object a line, also for uvicorn's and litestar's records
