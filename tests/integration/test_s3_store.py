"""What only the S3 store can get wrong, against a real S3-compatible server over HTTP (moto's):
multipart uploads and their leftovers, locations outside the prefix, presigned redirects, an
unreachable store; and ``/file`` served from the bucket, streamed and redirected."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from adapters.s3 import S3Store, create_client
from reportcore.errors import ServiceUnavailable, StorageFailure
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat, message_for
from reportcore.ports import SourcePage, SourceRequest
from reportcore.testing import FakeClock, InMemoryJobRepository
from reportcore.usecases import Policy, recover
from tests.containers import replace
from tests.running import run_message

from ..unit.api_support import JOBS, ApiWorld, api_world
from .s3server import CREDENTIALS, Bucket

TENANT = "tenant-1"
PART = 5 * 1024 * 1024  # the smallest part S3 takes


def new_job() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def store(s3_bucket: Bucket) -> S3Store:
    return S3Store(s3_bucket.client, s3_bucket.name, "reports/", part_bytes=PART)


def test_a_large_file_goes_up_in_parts_and_appears_only_when_complete(
    store: S3Store, s3_bucket: Bucket
) -> None:
    job = new_job()
    key = f"reports/{TENANT}/{job}/report.csv"
    data = os.urandom(2 * PART + 12345)
    writer = store.create(TENANT, job, "csv")
    for start in range(0, len(data), 1 << 20):
        writer.write(data[start : start + (1 << 20)])
    assert s3_bucket.open_uploads() == [key], "parts go up while the export is written"
    assert s3_bucket.object_keys() == [], "no object before commit"
    location = writer.commit()
    assert location == f"s3://{s3_bucket.name}/{key}"
    assert (s3_bucket.object_keys(), s3_bucket.open_uploads()) == ([key], [])
    assert store.size(location) == len(data)
    got = b"".join(store.read(location))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert b"".join(store.read(location, PART - 3, PART + 2)) == data[PART - 3 : PART + 3]
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)
    assert head["ContentType"] == "text/csv; charset=utf-8"


def test_an_aborted_multipart_export_leaves_no_object_and_no_open_upload(
    store: S3Store, s3_bucket: Bucket
) -> None:
    writer = store.create(TENANT, new_job(), "json")
    writer.write(os.urandom(PART + 1))
    assert len(s3_bucket.open_uploads()) == 1
    writer.abort()
    writer.abort()
    assert (s3_bucket.object_keys(), s3_bucket.open_uploads()) == ([], [])


def test_a_commit_aborts_the_uploads_a_killed_worker_left_under_the_key(
    store: S3Store, s3_bucket: Bucket
) -> None:
    job = new_job()
    killed = store.create(TENANT, job, "csv")
    killed.write(os.urandom(PART))  # a part went up, then the process died: no abort ran
    assert len(s3_bucket.open_uploads()) == 1
    retry = store.create(TENANT, job, "csv")
    retry.write(b"whole\r\n")
    location = retry.commit()
    assert s3_bucket.open_uploads() == []
    assert b"".join(store.read(location)) == b"whole\r\n"


def test_delete_also_aborts_uploads_left_open_under_the_key(
    store: S3Store, s3_bucket: Bucket
) -> None:
    job = new_job()
    done = store.create(TENANT, job, "csv")
    done.write(b"x")
    location = done.commit()
    store.create(TENANT, job, "csv").write(os.urandom(PART))  # a later attempt, killed
    store.delete(location)
    assert (s3_bucket.object_keys(), s3_bucket.open_uploads()) == ([], [])


def test_locations_outside_the_bucket_or_prefix_are_never_read_or_deleted(
    store: S3Store, s3_bucket: Bucket
) -> None:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="secret.txt", Body=b"not an export")
    for location in (
        f"s3://{s3_bucket.name}/secret.txt",
        f"s3://{s3_bucket.name}/reports/../secret.txt",
        "s3://another-bucket/reports/t/j/report.csv",
        "/data/exports/t/j/report.csv",
    ):
        with pytest.raises(StorageFailure, match="refusing"):
            store.read(location)
        assert store.size(location) is None
        store.delete(location)
    assert s3_bucket.object_keys() == ["secret.txt"]


def test_hostile_ids_are_refused_before_anything_is_uploaded(
    store: S3Store, s3_bucket: Bucket
) -> None:
    for bad in ("..", "a/b", "", "x\x00y"):
        with pytest.raises(StorageFailure, match="refusing an unsafe"):
            store.create(bad, new_job(), "csv")
    assert s3_bucket.open_uploads() == []


def test_with_redirect_the_presigned_url_downloads_the_file_under_its_name(
    s3_bucket: Bucket,
) -> None:
    store = S3Store(s3_bucket.client, s3_bucket.name, "reports/", redirect=True)
    writer = store.create(TENANT, new_job(), "csv")
    writer.write(b"a,b\r\n1,2\r\n")
    location = writer.commit()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    url = store.download_url(location, until, "feed intake.csv")
    assert url is not None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] in (["119"], ["120"])
    got = httpx.get(url, timeout=10)
    assert got.status_code == 200 and got.content == b"a,b\r\n1,2\r\n"
    assert got.headers["content-disposition"] == 'attachment; filename="feed_intake.csv"'
    # not cacheable, as the api's own download: the URL is a credential, the file a tenant's
    assert got.headers["cache-control"] == "private, no-store"
    ranged = httpx.get(url, headers={"Range": "bytes=5-"}, timeout=10)
    assert (ranged.status_code, ranged.content) == (206, b"1,2\r\n")
    assert S3Store(s3_bucket.client, s3_bucket.name).download_url(location, until) is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_store_that_does_not_answer_fails_writes_storage_failed_and_reads_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    down = create_client(f"http://127.0.0.1:{_closed_port()}", "us-east-1", max_attempts=2)
    store = S3Store(down, "bucket")
    writer = store.create(TENANT, new_job(), "csv")
    writer.write(b"x")
    with pytest.raises(StorageFailure, match="could not be written to the object store"):
        writer.commit()
    with pytest.raises(ServiceUnavailable):
        store.size("s3://bucket/reports/t/j/report.csv")
    with pytest.raises(StorageFailure, match="not usable"):
        store.check()


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """A store that accepts connections and never answers a byte."""
    held: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0), backlog=50)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


def _service_store(command: str, endpoint: str, bucket: str = "bucket") -> S3Store:
    from entrypoints.containers import service_container
    from entrypoints.settings import load_settings

    env = {"FILE_STORE": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT_URL": endpoint}
    container = service_container(load_settings({**env, "S3_REGION": "us-east-1"}), None, command)
    built = container.store()
    assert isinstance(built, S3Store)
    return built


@pytest.mark.parametrize(("command", "calls"), [("api", ["size", "read"]), ("all", ["read"])])
def test_a_hung_store_holds_a_download_request_seconds_not_minutes(
    command: str, calls: list[str], hung_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's client (six calls of 30 s reads, and backoff) held each /file request of
    the api ~3 minutes before its 503: ~40 of them froze every sync route. ``all`` serves
    with the same store as its worker: its reads get the api's client."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    store = _service_store(command, hung_endpoint)
    for call in calls:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="the object store did not answer"):
            getattr(store, call)("s3://bucket/reports/t/j/report.csv")
        assert time.monotonic() - started < 15, call


@pytest.mark.parametrize("command", ["api", "all"])
def test_a_cancels_cleanup_on_a_hung_store_holds_its_request_seconds_not_minutes(
    command: str, hung_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel discards what a dead attempt left (delete, list and abort uploads): under
    ``all`` that went through the worker's patient client, minutes of a request thread."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    store = _service_store(command, hung_endpoint)
    started = time.monotonic()
    with pytest.raises(StorageFailure, match="could not be deleted"):
        store.discard(TENANT, "0b0c", "csv")
    assert time.monotonic() - started < 15


def test_the_worker_keeps_its_patient_client_and_the_api_reads_what_it_wrote(
    s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    worker = _service_store("worker", s3_bucket.endpoint, s3_bucket.name)
    config = worker._client.meta.config
    # five retries: six calls, as botocore counts its max_attempts
    assert (config.retries or {}).get("total_max_attempts") == 6, "uploads ride out a slow store"
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    writer = worker.create(TENANT, new_job(), "csv")
    data = os.urandom(3 * 1024 * 1024)
    writer.write(data)
    location = writer.commit()
    api = _service_store("api", s3_bucket.endpoint, s3_bucket.name)
    assert api.size(location) == len(data)
    assert b"".join(api.read(location)) == data  # a read timeout bounds each socket read only


def _said_to_clients(store: S3Store, job: str) -> list[str]:
    """The messages a failing store gives a job's error_message (so its webhook) and a 503."""
    said = []
    writer = store.create(TENANT, job, "csv")
    writer.write(b"a,b\r\n")
    with pytest.raises(StorageFailure) as failed:
        writer.commit()
    said.append(failed.value.message)
    location = f"s3://{store.bucket}/reports/{TENANT}/{job}/report.csv"
    for call in (store.size, store.read):
        with pytest.raises(ServiceUnavailable) as unavailable:
            call(location)
        said.append(unavailable.value.message)
    return said


def test_an_unreachable_store_is_named_by_its_kind_never_by_endpoint_bucket_or_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """botocore's message ("Could not connect to the endpoint URL: "http://host:port/bucket/
    key"") went as is into the 503 and the job's error_message, so into its webhook."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    port = _closed_port()
    store = S3Store(create_client(f"http://127.0.0.1:{port}", None, serving=True), "farm-reports")
    job = new_job()
    with caplog.at_level(logging.WARNING, logger="adapters.s3"):
        said = _said_to_clients(store, job)
    assert said == [
        "export file could not be written to the object store: EndpointConnectionError",
        "the object store did not answer: EndpointConnectionError",
        "the object store did not answer: EndpointConnectionError",
    ]
    for message in said:
        for hidden in (str(port), "farm-reports", TENANT, job, "report.csv"):
            assert hidden not in message
    # operators get the whole reason
    assert f"http://127.0.0.1:{port}/farm-reports/reports/{TENANT}/{job}/report.csv" in caplog.text


def test_a_refusal_is_named_by_its_s3_code_never_by_the_principal_or_the_resource(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from botocore.stub import Stubber

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    client = create_client("http://127.0.0.1:9", None, serving=True)
    store = S3Store(client, "farm-reports")
    job = new_job()
    resource = f"arn:aws:s3:::farm-reports/reports/{TENANT}/{job}/report.csv"
    denied = (
        "User: arn:aws:iam::123456789012:user/reports is not authorized to perform: "
        f'"s3:GetObject" on resource: "{resource}" because no identity-based policy allows it'
    )
    with Stubber(client) as stub, caplog.at_level(logging.WARNING, logger="adapters.s3"):
        for operation in ("list_multipart_uploads", "put_object", "head_object", "get_object"):
            stub.add_client_error(operation, "AccessDenied", denied, http_status_code=403)
        said = _said_to_clients(store, job)
        stub.assert_no_pending_responses()
    assert said == [
        "export file could not be written to the object store: AccessDenied",
        "the object store refused: AccessDenied",
        "the object store refused: AccessDenied",
    ]
    assert denied in caplog.text


def test_the_start_check_names_a_missing_bucket(s3_bucket: Bucket) -> None:
    S3Store(s3_bucket.client, s3_bucket.name).check()
    with pytest.raises(StorageFailure, match="'no-such-bucket' is not usable"):
        S3Store(s3_bucket.client, "no-such-bucket").check()


@pytest.mark.parametrize("command", ["api", "worker", "all"])
def test_every_serving_command_stops_at_start_on_a_bucket_it_cannot_use(
    command: str, s3_endpoint: str, database_url: str, amqp_url: str, tmp_path: Any
) -> None:
    """``all`` (the image's default command) started without the check ``api`` and
    ``worker`` make, answered 200 on /api/health, and failed every job later."""
    from .procs import run_reportsvc, service_env

    env = service_env(
        database_url,
        amqp_url,
        tmp_path / "exports",
        "http://127.0.0.1:9",
        FILE_STORE="s3",
        S3_BUCKET="no-such-bucket",
        S3_ENDPOINT_URL=s3_endpoint,
        S3_REGION="us-east-1",
        **CREDENTIALS,
    )
    done = run_reportsvc(env, command, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the object store bucket 'no-such-bucket' is not usable" in done.stderr


# --- the worker's side: a cancelled export ---


class CancellingSource:
    """Pages of KPI days; after ``cancel_after`` pages the user cancels the job."""

    def __init__(self, jobs: InMemoryJobRepository, clock: FakeClock, cancel_after: int) -> None:
        self.jobs, self.clock, self.cancel_after = jobs, clock, cancel_after

    def pages(self, request: SourceRequest) -> Iterator[SourcePage]:
        from reportcore.jobtypes import JOB_TYPES

        record_type = JOB_TYPES[JobType.KPI_FEEDING_EXPORT].record_type
        day = {"recordDate": "2026-01-01", "fcr": "1." + "5" * 2000}
        page = msgspec.json.decode(msgspec.json.encode([day] * 500), type=list[record_type])
        for n in range(1000):
            if n == self.cancel_after:
                self.jobs.cancel(request.job_id, request.tenant_id, self.clock.now())
            yield SourcePage(records=page)


def test_a_cancelled_export_leaves_no_object_and_no_open_upload(
    store: S3Store, s3_bucket: Bucket
) -> None:
    jobs = InMemoryJobRepository()
    clock = FakeClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    job = Job(
        id=new_job(),
        tenant_id=TENANT,
        requested_by=None,
        job_type=JobType.KPI_FEEDING_EXPORT,
        format=ReportFormat.CSV,
        created_at=clock.now(),
        updated_at=clock.now(),
    )
    jobs.add(job)
    outcome = run_message(
        msgspec.json.encode(message_for(job)),
        owner="w",
        jobs=jobs,
        # ~1 MB a page: 12 pages put two parts up before the cancel
        source=CancellingSource(jobs, clock, cancel_after=12),
        store=store,
        clock=clock,
        policy=Policy(heartbeat_sec=0),
    )
    assert outcome.status == "cancelled"
    assert (s3_bucket.object_keys(), s3_bucket.open_uploads()) == ([], [])


def test_size_and_sha256_of_a_run_are_those_of_the_object(
    store: S3Store, s3_bucket: Bucket
) -> None:
    from .test_file_store_contract import run_kpi_job

    days = [{"recordDate": f"2026-01-{d:02d}", "fcr": f"1.{d}"} for d in range(1, 29)]
    done = run_kpi_job(store, ReportFormat.JSON, days, page_size=5)
    assert done.status is JobStatus.SUCCEEDED and done.file_path is not None
    key = done.file_path.removeprefix(f"s3://{s3_bucket.name}/")
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
    assert body.count(b"\n") == 28
    assert (done.size_bytes, done.sha256) == (len(body), hashlib.sha256(body).hexdigest())


# --- /file from the bucket ---


@pytest.fixture
def s3_world(s3_bucket: Bucket) -> Iterator[ApiWorld]:
    with api_world() as world:
        replace(world.container, "store", S3Store(s3_bucket.client, s3_bucket.name, "reports/"))
        world.store = world.container.store()
        yield world


def _succeeded(world: ApiWorld, rows: int = 40) -> tuple[dict[str, Any], str]:
    job = world.succeeded_job(rows)
    return job, world.download_url(job["id"])


def test_file_streams_from_the_bucket_with_the_filesystem_stores_headers(
    s3_world: ApiWorld, s3_bucket: Bucket
) -> None:
    job, url = _succeeded(s3_world)
    assert job["file_path"] == f"{job['tenant_id']}/{job['id']}/report.csv"
    whole = s3_world.client.get(url)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == job["sha256"]
    assert whole.headers["etag"] == f'"{job["sha256"]}"'
    assert whole.headers["content-length"] == str(job["size_bytes"])
    assert whole.headers["content-disposition"] == 'attachment; filename="feed_intake_export.csv"'
    part = s3_world.client.get(url, headers={"Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, whole.content[10:20])
    assert part.headers["content-range"] == f"bytes 10-19/{job['size_bytes']}"
    tail = s3_world.client.get(url, headers={"Range": "bytes=-7"})
    assert (tail.status_code, tail.content) == (206, whole.content[-7:])
    beyond = s3_world.client.get(url, headers={"Range": f"bytes={job['size_bytes']}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{job['size_bytes']}"
    same = s3_world.client.get(url, headers={"If-None-Match": whole.headers["etag"]})
    assert same.status_code == 304
    head = s3_world.client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(job["size_bytes"])


def test_file_answers_410_once_retention_deleted_the_object(
    s3_world: ApiWorld, s3_bucket: Bucket
) -> None:
    job, _ = _succeeded(s3_world)
    assert len(s3_bucket.object_keys()) == 1
    s3_world.clock.advance(s3_world.policy.retention_sec + 1)
    done = recover(
        jobs=s3_world.jobs,
        queue=s3_world.queue,
        store=s3_world.store,
        clock=s3_world.clock,
        policy=s3_world.policy,
    )
    assert done.files_deleted == [job["id"]]
    assert s3_bucket.object_keys() == []
    answer = s3_world.client.get(f"{JOBS}/{job['id']}/download", headers=s3_world.headers())
    assert (answer.status_code, answer.json()["error"]["code"]) == (410, "REPORT_EXPIRED")


@pytest.fixture
def redirect_world(s3_bucket: Bucket) -> Iterator[ApiWorld]:
    with api_world() as world:
        store = S3Store(s3_bucket.client, s3_bucket.name, "reports/", redirect=True)
        replace(world.container, "store", store)
        world.store = store
        # presigned URLs expire by the real clock: the world's clock must be near it
        world.clock.set(dt.datetime.now(dt.UTC))
        yield world


def test_with_redirect_file_answers_302_to_the_object_after_checking_the_token(
    redirect_world: ApiWorld,
) -> None:
    world = redirect_world
    job, url = _succeeded(world)
    assert url.startswith(f"{JOBS}/{job['id']}/file?token=")  # still the api's own URL
    moved = world.client.get(url, follow_redirects=False)
    assert moved.status_code == 302
    target = moved.headers["location"]
    expires = int(urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)["X-Amz-Expires"][0])
    assert world.policy.download_ttl_sec - 5 <= expires <= world.policy.download_ttl_sec
    got = httpx.get(target, timeout=10)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == job["sha256"]
    assert got.headers["content-disposition"] == 'attachment; filename="feed_intake_export.csv"'
    # HEAD answers the headers itself: a URL presigned for GET is refused to a HEAD by S3
    head = world.client.head(url, follow_redirects=False)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["etag"] == f'"{job["sha256"]}"'
    etag = f'"{job["sha256"]}"'
    assert world.client.get(url, headers={"If-None-Match": etag}).status_code == 304
    # the token's verdicts are unchanged
    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    assert world.client.get(forged, follow_redirects=False).status_code == 401
    other = world.succeeded_job(3)["id"]
    wrong_job = url.replace(job["id"], other, 1)
    assert world.client.get(wrong_job, follow_redirects=False).status_code == 403
    world.clock.advance(world.policy.download_ttl_sec + 1)
    assert world.client.get(url, follow_redirects=False).status_code == 401
