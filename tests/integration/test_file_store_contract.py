"""One contract suite of the FileStore port, run over the in-memory store, the filesystem
store and the S3 store (against a real S3-compatible server over HTTP), then what only the
filesystem store can get wrong: hostile ids, temporaries, fsync, and file systems that refuse
writes. What only the S3 store can get wrong is in test_s3_store.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from adapters.filesystem import READ_CHUNK, FilesystemStore, FilesystemWriter, _failure
from adapters.s3 import S3Store, S3Writer
from reportcore.errors import StorageFailure
from reportcore.jobs import Job, JobStatus, JobType, ReportFormat, message_for
from reportcore.ports import FileStore
from reportcore.testing import (
    FakeClock,
    InMemoryFileStore,
    InMemoryJobRepository,
    StaticRecordSource,
)
from reportcore.usecases import Policy
from tests.running import run_message

from .s3server import Bucket

TENANT = "tenant-1"
DATA = b"id,value\r\n" + b"".join(f"{n},{n * n}\r\n".encode() for n in range(500))


class Subject(msgspec.Struct, kw_only=True):
    """A store under test, where it puts a job's file, and what it holds anywhere."""

    store: FileStore
    location_of: Callable[[str, str, str], str]
    everything: Callable[[], list[str]]  # every stored thing, temporaries included


def memory_subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    store = InMemoryFileStore()
    return Subject(
        store=store,
        location_of=lambda t, j, ext: f"mem://{t}/{j}/report.{ext}",
        everything=lambda: sorted(store.files),
    )


def filesystem_subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    root = tmp_path / "exports"
    return Subject(
        store=FilesystemStore(root),
        location_of=lambda t, j, ext: str(root / t / j / f"report.{ext}"),
        everything=lambda: sorted(str(p) for p in root.rglob("*") if p.is_file()),
    )


def s3_subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    bucket: Bucket = request.getfixturevalue("s3_bucket")
    head = f"s3://{bucket.name}/"

    def everything() -> list[str]:
        # objects, and uploads never completed nor aborted (they hold parts, and cost)
        objects = [head + key for key in bucket.object_keys()]
        return sorted(objects + [f"upload:{key}" for key in bucket.open_uploads()])

    return Subject(
        store=S3Store(bucket.client, bucket.name, "reports/"),
        location_of=lambda t, j, ext: f"{head}reports/{t}/{j}/report.{ext}",
        everything=everything,
    )


@pytest.fixture(
    params=[memory_subject, filesystem_subject, s3_subject], ids=["memory", "filesystem", "s3"]
)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    make: Callable[[pytest.FixtureRequest, Path], Subject] = request.param
    return make(request, tmp_path)


def new_job() -> str:
    return str(uuid.uuid4())


def stored(subject: Subject, data: bytes = DATA, ext: str = "csv") -> str:
    writer = subject.store.create(TENANT, new_job(), ext)
    writer.write(data)
    return writer.commit()


def read_all(store: FileStore, location: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(store.read(location, start, end))


# --- the contract ---


def test_a_committed_file_is_at_its_location_whole_and_sized(subject: Subject) -> None:
    job = new_job()
    writer = subject.store.create(TENANT, job, "csv")
    for part in (DATA[:10], bytearray(DATA[10:1000]), memoryview(DATA)[1000:]):
        writer.write(part)
    location = writer.commit()
    assert location == subject.location_of(TENANT, job, "csv")
    assert subject.store.size(location) == len(DATA)
    assert read_all(subject.store, location) == DATA
    assert subject.everything() == [location]


def test_a_file_is_invisible_under_its_name_until_commit(subject: Subject) -> None:
    job = new_job()
    location = subject.location_of(TENANT, job, "json")
    writer = subject.store.create(TENANT, job, "json")
    writer.write(b'{"a":1}\n')
    assert subject.store.size(location) is None
    writer.commit()
    assert subject.store.size(location) == 8


def test_a_rewrite_of_the_same_job_replaces_the_file_only_on_commit(subject: Subject) -> None:
    job = new_job()
    first = subject.store.create(TENANT, job, "csv")
    first.write(b"old\r\n")
    location = first.commit()
    second = subject.store.create(TENANT, job, "csv")
    second.write(b"new, and longer\r\n")
    assert read_all(subject.store, location) == b"old\r\n"
    assert second.commit() == location
    assert read_all(subject.store, location) == b"new, and longer\r\n"
    assert subject.everything() == [location]


def test_a_late_commit_leaves_the_next_attempts_writer_whole(subject: Subject) -> None:
    """A worker paused past its lease commits while the job's next attempt still writes: its
    commit took that attempt's temporary (or aborted its open upload) as a dead attempt's
    leftover, and the attempt holding the job then failed STORAGE_FAILED at its own commit."""
    job = new_job()
    data = os.urandom(5 * 1024 * 1024 + 1)  # past one S3 part: each writer has an open upload
    late = subject.store.create(TENANT, job, "csv")
    late.write(data)
    holder = subject.store.create(TENANT, job, "csv")
    holder.write(data[::-1])
    location = late.commit()
    assert holder.commit() == location
    assert read_all(subject.store, location) == data[::-1]
    assert subject.everything() == [location]


def test_an_aborted_file_leaves_nothing_behind(subject: Subject) -> None:
    job = new_job()
    writer = subject.store.create(TENANT, job, "csv")
    writer.write(DATA)
    writer.abort()
    writer.abort()  # twice is fine
    assert subject.store.size(subject.location_of(TENANT, job, "csv")) is None
    assert subject.everything() == []


def test_an_abort_of_a_rewrite_keeps_the_committed_file(subject: Subject) -> None:
    job = new_job()
    first = subject.store.create(TENANT, job, "csv")
    first.write(b"kept\r\n")
    location = first.commit()
    second = subject.store.create(TENANT, job, "csv")
    second.write(b"dropped\r\n")
    second.abort()
    assert read_all(subject.store, location) == b"kept\r\n"
    assert subject.everything() == [location]


def test_abort_after_commit_changes_nothing(subject: Subject) -> None:
    writer = subject.store.create(TENANT, new_job(), "csv")
    writer.write(DATA)
    location = writer.commit()
    writer.abort()
    assert read_all(subject.store, location) == DATA


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 0),
        (5, 9),
        (len(DATA) - 1, None),
        (len(DATA) - 1, len(DATA) - 1),
        (100, len(DATA) - 1),
        (7, len(DATA) + 50),  # an end past the file is clipped to it
    ],
)
def test_read_gives_exactly_the_inclusive_byte_range(
    subject: Subject, start: int, end: int | None
) -> None:
    location = stored(subject)
    want = DATA[start : None if end is None else end + 1]
    assert read_all(subject.store, location, start, end) == want


def test_an_empty_file_is_a_file_of_size_zero(subject: Subject) -> None:
    location = stored(subject, b"")
    assert subject.store.size(location) == 0
    assert read_all(subject.store, location) == b""


def test_delete_removes_the_file_and_is_idempotent(subject: Subject) -> None:
    location = stored(subject)
    other = stored(subject, b"other")
    subject.store.delete(location)
    assert subject.store.size(location) is None
    subject.store.delete(location)
    assert subject.everything() == [other]
    assert read_all(subject.store, other) == b"other"


@pytest.mark.parametrize("committed", [True, False], ids=["a file committed", "none"])
def test_discard_removes_what_killed_writers_left_of_a_job_and_nothing_else(
    subject: Subject, committed: bool
) -> None:
    """A job failed WORKER_LOST: its attempts were killed mid-write (a temporary, an open
    upload: what a SIGKILL leaves, never aborted) or after the commit, before it was
    recorded. Discard takes all of it; another job's file stays."""
    other = stored(subject, b"other")
    job = new_job()
    if committed:
        writer = subject.store.create(TENANT, job, "csv")
        writer.write(DATA)
        writer.commit()
    for _ in range(2):  # two attempts killed while writing
        killed = subject.store.create(TENANT, job, "csv")
        killed.write(DATA * 3)
        if isinstance(killed, S3Writer):  # killed after a part went up: an open upload
            killed._upload_part(DATA)
        if isinstance(killed, FilesystemWriter):  # its process gone: the file closed, kept
            killed._file.close()
    subject.store.discard(TENANT, job, "csv")
    assert subject.everything() == [other]
    subject.store.discard(TENANT, job, "csv")  # nothing left: fine
    subject.store.discard(TENANT, new_job(), "csv.gz")
    assert subject.everything() == [other]


def test_the_size_of_a_missing_file_is_none(subject: Subject) -> None:
    assert subject.store.size(subject.location_of(TENANT, new_job(), "csv")) is None


def test_reading_a_missing_file_fails_at_the_call_before_the_first_chunk(subject: Subject) -> None:
    """The API sends its headers between the call and the first chunk: the service turns the
    error into a 404 only if it comes at the call."""
    location = stored(subject)
    subject.store.delete(location)  # retention, between the API's size() and its read()
    with pytest.raises(FileNotFoundError):
        subject.store.read(location)


def test_a_file_deleted_once_its_read_began_is_still_read_whole(subject: Subject) -> None:
    """The API has sent its 200 and Content-Length once read() returned: retention deleting
    the file then must not cut the answer short (the filesystem store opened the file only
    at the first chunk, so the stream died after the headers)."""
    location = stored(subject)
    chunks = subject.store.read(location)
    subject.store.delete(location)
    assert b"".join(chunks) == DATA


def test_the_file_is_served_by_the_api_not_by_a_direct_url(subject: Subject) -> None:
    location = stored(subject)
    assert subject.store.download_url(location, dt.datetime(2030, 1, 1, tzinfo=dt.UTC)) is None


# --- the filesystem store only ---


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "exports"


def test_files_are_at_root_tenant_job_report_ext_as_absolute_paths(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = FilesystemStore("exports")  # a relative root still gives absolute locations
    job = new_job()
    writer = store.create(TENANT, job, "json")
    writer.write(b"{}\n")
    location = writer.commit()
    assert location == str(root / TENANT / job / "report.json")
    assert Path(location).is_absolute()


HOSTILE = ["..", ".", "../x", "a/b", "/etc", "x\x00y", "", ".hidden", "a\\b", "~", " x", "x" * 200]


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
def test_hostile_tenant_or_job_ids_are_refused_and_nothing_is_written(
    root: Path, tmp_path: Path, bad: str
) -> None:
    store = FilesystemStore(root)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(StorageFailure, match="refusing an unsafe"):
        store.create(bad, new_job(), "csv")
    with pytest.raises(StorageFailure, match="refusing an unsafe"):
        store.create(TENANT, bad, "csv")
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "bad", ["", "csv/../x", "../csv", "CSV\x00", "c.s.v", "csv.", ".gz", "csv.gz.gz"], ids=repr
)
def test_a_hostile_extension_is_refused(root: Path, bad: str) -> None:
    with pytest.raises(StorageFailure, match="extension"):
        FilesystemStore(root).create(TENANT, new_job(), bad)


@pytest.mark.parametrize("extension", ["csv.gz", "ndjson.gz", "xlsx"])
def test_the_export_options_extensions_are_files_of_their_own(root: Path, extension: str) -> None:
    writer = FilesystemStore(root).create(TENANT, new_job(), extension)
    writer.write(b"x")
    assert writer.commit().endswith(f"/report.{extension}")


def test_a_tenant_folder_that_links_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "evil").symlink_to(outside, target_is_directory=True)
    store = FilesystemStore(root)
    with pytest.raises(StorageFailure, match="outside"):
        store.create("evil", new_job(), "csv")
    assert list(outside.iterdir()) == []


def test_locations_outside_the_root_are_never_read_or_deleted(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not an export")
    store = FilesystemStore(root)
    root.mkdir()
    for location in (str(secret), str(root / ".." / "secret.txt"), "secret.txt", str(root)):
        with pytest.raises(StorageFailure, match="refusing"):
            read_all(store, location)
        assert store.size(location) is None
        store.delete(location)
    with pytest.raises(StorageFailure, match="NUL"):
        read_all(store, str(root / "a\x00b"))
    assert secret.read_bytes() == b"not an export"


def test_while_writing_only_a_hidden_temporary_exists_beside_the_final_name(root: Path) -> None:
    store = FilesystemStore(root)
    job = new_job()
    writer = store.create(TENANT, job, "csv")
    writer.write(DATA)
    folder = root / TENANT / job
    [temp] = list(folder.iterdir())
    assert temp.name.startswith(".report.csv.") and temp.name.endswith(".tmp")
    writer.commit()
    assert [p.name for p in folder.iterdir()] == ["report.csv"]


def test_commit_fsyncs_the_file_before_the_rename_and_the_folder_after(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((path, os.path.exists(final)))
        real_fsync(fd)

    store = FilesystemStore(root)
    job = new_job()
    final = str(root / TENANT / job / "report.csv")
    writer = store.create(TENANT, job, "csv")
    writer.write(DATA)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    writer.commit()
    [(file_path, file_was_final), (folder_path, folder_after_rename)] = synced
    assert Path(file_path).name.startswith(".report.csv.") and not file_was_final
    assert folder_path == str(root / TENANT / job) and folder_after_rename


def test_reads_come_in_chunks_of_at_most_256_kib(root: Path) -> None:
    store = FilesystemStore(root)
    big = os.urandom(3 * READ_CHUNK + 123)
    writer = store.create(TENANT, new_job(), "json")
    writer.write(big)
    location = writer.commit()
    chunks = list(store.read(location, 10))
    assert max(map(len, chunks)) <= 256 * 1024
    assert len(chunks) == 4
    assert b"".join(chunks) == big[10:]


def test_delete_also_removes_crash_leftovers_and_the_empty_job_folder(root: Path) -> None:
    store = FilesystemStore(root)
    job = new_job()
    writer = store.create(TENANT, job, "csv")
    writer.write(DATA)
    location = writer.commit()
    folder = root / TENANT / job
    (folder / ".report.csv.0123abcd.tmp").write_bytes(b"half a file from a killed worker")
    store.delete(location)
    assert not folder.exists()
    assert (root / TENANT).is_dir(), "the tenant folder is shared by its jobs"


def test_an_export_root_that_cannot_be_a_folder_is_a_storage_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    store = FilesystemStore(blocker / "exports")
    with pytest.raises(StorageFailure, match="export file could not be created"):
        store.create(TENANT, new_job(), "csv")


@pytest.mark.parametrize("writes", [True, False])
def test_the_start_check_names_an_export_root_that_cannot_be_a_folder(
    tmp_path: Path, writes: bool
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    for unusable in (blocker / "exports", Path("/proc/no-such-folder/exports")):
        with pytest.raises(StorageFailure, match=r"\(EXPORT_ROOT\) is not usable: "):
            FilesystemStore(unusable).check(writes=writes)
    made = tmp_path / "not-yet" / "exports"
    FilesystemStore(made).check(writes=writes)  # a folder to be is made, and left empty
    assert made.is_dir() and list(made.iterdir()) == []


@pytest.mark.parametrize("command", ["api", "worker", "all"])
def test_every_serving_command_stops_at_start_on_an_export_root_it_cannot_use(
    command: str, database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    """An EXPORT_ROOT that cannot be a folder (a volume not mounted): the processes started,
    answered ready, and every job failed STORAGE_FAILED for good."""
    from .procs import run_reportsvc, service_env

    env = service_env(database_url, amqp_url, Path("/proc/no-such"), "http://127.0.0.1:9")
    assert run_reportsvc(env, "migrate").returncode == 0
    done = run_reportsvc(env, command, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the export folder '/proc/no-such' (EXPORT_ROOT) is not usable" in done.stderr


def test_an_unwritable_export_root_is_a_storage_failure(root: Path) -> None:
    root.mkdir()
    if os.geteuid() != 0:
        root.chmod(0o500)
        try:
            with pytest.raises(StorageFailure, match="permission denied"):
                FilesystemStore(root).create(TENANT, new_job(), "csv")
        finally:
            root.chmod(0o700)
        return
    # root ignores permission bits (CI runs as root), but not a read-only file system
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(root)]
    mounted = subprocess.run(mount, capture_output=True, text=True, timeout=30, check=False)
    assert mounted.returncode == 0, f"cannot mount a read-only tmpfs: {mounted.stderr}"
    try:
        with pytest.raises(StorageFailure, match="read-only file system"):
            FilesystemStore(root).create(TENANT, new_job(), "csv")
        assert list(root.iterdir()) == []
    finally:
        subprocess.run(["umount", str(root)], check=True, timeout=30)


def test_a_write_the_file_system_refuses_fails_the_writer_and_leaves_nothing(
    root: Path,
) -> None:
    # a real refusal by the kernel: the process may not grow a file past 64 KiB
    script = textwrap.dedent(
        f"""
        import resource, sys
        from adapters.filesystem import FilesystemStore
        from reportcore.errors import StorageFailure
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        writer = FilesystemStore({str(root)!r}).create("t", "j", "csv")
        try:
            for _ in range(64):
                writer.write(b"x" * 8192)
            writer.commit()
        except StorageFailure as exc:
            writer.abort()
            print(exc.code, exc.message)
            sys.exit(0)
        sys.exit("the oversized write was not refused")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("STORAGE_FAILED export file could not be written: ")
    assert list(root.rglob("*")) == [root / "t"], "a temporary or a job folder was left"


def run_kpi_job(
    store: FileStore, fmt: ReportFormat, days: list[dict[str, str]], page_size: int = 100
) -> Job:
    """A feeding-KPI job of ``days`` run through ``run_job`` into ``store``; the job after."""
    jobs = InMemoryJobRepository()
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    job = Job(
        id=new_job(),
        tenant_id=TENANT,
        requested_by=None,
        job_type=JobType.KPI_FEEDING_EXPORT,
        format=fmt,
        created_at=now,
        updated_at=now,
    )
    jobs.add(job)
    run_message(
        msgspec.json.encode(message_for(job)),
        owner="w",
        jobs=jobs,
        source=StaticRecordSource({JobType.KPI_FEEDING_EXPORT.value: days}, page_size=page_size),
        store=store,
        clock=FakeClock(now),
        policy=Policy(),
    )
    done = jobs.get(job.id)
    assert done is not None
    return done


def test_a_job_whose_export_folder_cannot_be_created_fails_with_storage_failed(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    failed = run_kpi_job(FilesystemStore(blocker / "exports"), ReportFormat.CSV, [])
    assert failed.status is JobStatus.FAILED
    assert failed.error_code == "STORAGE_FAILED"
    # the job's error_message (so its webhook) names the failure, never a machine path
    assert failed.error_message == "export file could not be created: Not a directory"


def test_a_failure_without_an_os_reason_is_named_by_its_type_not_its_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="adapters.filesystem"):
        failure = _failure("written", OSError("cannot write /data/exports/t/j/report.csv"))
    assert failure.message == "export file could not be written: OSError"
    assert "/data/exports/t/j/report.csv" in caplog.text


def test_size_and_sha256_of_a_run_are_those_of_the_bytes_on_disk(root: Path) -> None:
    days = [{"recordDate": f"2026-01-{d:02d}", "fcr": f"1.{d}"} for d in range(1, 29)]
    done = run_kpi_job(FilesystemStore(root), ReportFormat.JSON, days, page_size=5)
    assert done.file_path is not None
    on_disk = Path(done.file_path).read_bytes()
    assert on_disk.count(b"\n") == 28
    assert (done.size_bytes, done.sha256) == (len(on_disk), hashlib.sha256(on_disk).hexdigest())
