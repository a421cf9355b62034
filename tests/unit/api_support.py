"""Helpers of the HTTP API tests: mint user tokens, build an app over a fresh in-memory world,
and drive its jobs the way a worker would."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jwt
from dependency_injector import providers
from litestar.testing import TestClient

from entrypoints.api import create_app
from entrypoints.containers import row_formats
from entrypoints.settings import Settings
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    InMemoryQueue,
    StaticRecordSource,
)
from reportcore.usecases import Policy, RunOutcome
from tests.clock import pinned_now
from tests.containers import in_memory_container
from tests.running import run_message

# pyjwt warns about HMAC keys shorter than the hash (64 bytes for HS512): keep them longer
JWT_SECRET = "unit-test-jwt-secret-" + "0123456789abcdef" * 4
DOWNLOAD_SECRET = "unit-test-download-secret-0123456789abcdef"
ISSUER = "farmiq"
AUDIENCE = "farmiq-api"
TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
JOBS = "/api/v1/reports/jobs"
FEED_BODY: dict[str, Any] = {"job_type": "FEED_INTAKE_EXPORT", "format": "csv"}


def feed_record(i: int, tenant: str = TENANT) -> dict[str, Any]:
    """One upstream feed intake record, as the feed service sends it."""
    return {
        "id": f"rec-{i:05d}",
        "tenantId": tenant,
        "farmId": "farm-1",
        "barnId": "barn-1",
        "source": "MANUAL",
        "quantityKg": f"{i}.5",
        "occurredAt": f"2026-01-01T00:{i % 60:02d}:00Z",
        "createdAt": "2026-01-01T00:00:00Z",
    }


def mint(
    claims: Mapping[str, Any] | None = None,
    *,
    omit: Sequence[str] = (),
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    ttl_sec: int = 600,
    now: dt.datetime | None = None,
) -> str:
    """A user JWT: a tenant_admin of TENANT unless ``claims`` say otherwise, issued at ``now``
    (the real time unless given: pass the world's clock once a test moves it)."""
    now_ts = int((now or pinned_now()).timestamp())
    body: dict[str, Any] = {
        "sub": "user-1",
        "roles": ["tenant_admin"],
        "tenant_id": TENANT,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now_ts,
        "exp": now_ts + ttl_sec,
    }
    body.update(claims or {})
    for name in omit:
        body.pop(name, None)
    return jwt.encode(body, secret, algorithm=algorithm)


def unsigned(claims: Mapping[str, Any], header: Mapping[str, Any]) -> str:
    """A JWT with any header, signed with ``JWT_SECRET`` as HS256 whatever the header says
    (an empty signature for ``alg: none``): what a forger would send."""

    def part(value: Mapping[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(claims)}"
    if header.get("alg") == "none":
        return signing_input + "."
    mac = hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def valid_claims(**changes: Any) -> dict[str, Any]:
    """The claims ``mint`` would sign, for tokens built by hand."""
    now = int(pinned_now().timestamp())
    claims: dict[str, Any] = {
        "sub": "user-1",
        "roles": ["tenant_admin"],
        "tenant_id": TENANT,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 600,
    }
    claims.update(changes)
    return claims


def auth(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


def as_role(role: str, tenant: str | None = TENANT) -> dict[str, str]:
    """The Authorization header of a caller with one role (of ``tenant``, if given)."""
    claims: dict[str, Any] = {"roles": [role]}
    omit = () if tenant else ("tenant_id",)
    if tenant:
        claims["tenant_id"] = tenant
    return auth(mint(claims, omit=omit))


class ApiWorld:
    """An app over fresh in-memory adapters, a client of it and the adapters themselves."""

    def __init__(self, client: TestClient[Any], container: Any) -> None:
        self.client = client
        self.container = container
        self.jobs: InMemoryJobRepository = container.jobs()
        self.queue: InMemoryQueue = container.queue()
        self.store: InMemoryFileStore = container.store()
        self.clock: FakeClock = container.clock()
        self.policy: Policy = container.policy()

    def headers(self, claims: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The Authorization header of a token fresh by this world's clock."""
        return auth(mint(claims, now=self.clock.now()))

    def create(
        self,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a job as a tenant_admin of TENANT and return its JSON (asserting 201)."""
        answer = self.client.post(
            JOBS, json=dict(body or FEED_BODY), headers=headers or self.headers()
        )
        assert answer.status_code == 201, answer.text
        job: dict[str, Any] = answer.json()
        return job

    def run_queued(self, records: Sequence[Mapping[str, Any]] = ()) -> list[RunOutcome]:
        """Run every queued message as a worker would, over ``records`` of the feed service."""
        source = StaticRecordSource({"FEED_INTAKE_EXPORT": list(records)}, page_size=7)
        outcomes = []
        while (body := self.queue.take()) is not None:
            outcome = run_message(
                body,
                owner="test-worker",
                jobs=self.jobs,
                source=source,
                store=self.store,
                clock=self.clock,
                policy=self.policy,
                formats=row_formats(),
            )
            # a message handed back (its job waits for its tenant's turn) is taken again
            self.queue.settle(body, outcome.disposition)
            outcomes.append(outcome)
        return outcomes

    def succeeded_job(self, rows: int = 25) -> dict[str, Any]:
        """A job of TENANT that ran to success over ``rows`` records; its JSON."""
        job = self.create()
        self.run_queued([feed_record(i) for i in range(rows)])
        answer = self.client.get(f"{JOBS}/{job['id']}", headers=self.headers())
        assert answer.json()["status"] == "succeeded", answer.text
        return dict(answer.json())

    def download_url(self, job_id: str, headers: Mapping[str, str] | None = None) -> str:
        """The file URL ``GET .../download`` hands out."""
        answer = self.client.get(f"{JOBS}/{job_id}/download", headers=headers or self.headers())
        assert answer.status_code == 200, answer.text
        url: str = answer.json()["download_url"]
        return url


def api_settings(**changes: Any) -> Settings:
    """Settings of an API under test."""
    values: dict[str, Any] = {"jwt_secret": JWT_SECRET, "download_secret": DOWNLOAD_SECRET}
    values.update(changes)
    return Settings(**values)


@contextlib.contextmanager
def api_world(**settings: Any) -> Iterator[ApiWorld]:
    """A fresh container (in-memory adapters, a fake clock at the tests' now) and a client."""
    container = in_memory_container(api_settings(**settings))
    container.clock.override(providers.Object(FakeClock(pinned_now())))
    app = create_app(container)
    with TestClient(app) as client:
        yield ApiWorld(client, container)


def new_id() -> str:
    """A job id nobody has."""
    return str(uuid.uuid4())
