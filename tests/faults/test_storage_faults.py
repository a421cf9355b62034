"""Issue 6 item 6: the export volume refuses writes for real, under a running worker process.

- Full: EXPORT_ROOT is a 256 KiB tmpfs and the export is larger: the kernel answers ENOSPC.
- Read-only: the same tmpfs remounted ``ro``: EROFS (root, which CI runs as, ignores permission
  bits, but not a read-only mount).
- A file where the job's folder should be: ENOTDIR.

Each time the job fails with ``STORAGE_FAILED`` and a message that says which, no file and no
temporary is left, and the same worker process then runs the next job that fits.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.demo_upstream import DEMO_TENANT

from ..conftest import REQUIRE_SERVICES
from .job_stack import Stack, feed_job, running_stack

TMPFS_SIZE = 256 * 1024


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def small_volume(path: Path) -> Iterator[Path]:
    """A tmpfs of 256 KiB mounted at ``path`` (unmounted on exit)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = _mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path))
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs (root needed): {mounted.stderr.strip()}"
        if REQUIRE_SERVICES or os.geteuid() == 0:
            pytest.fail(reason, pytrace=False)
        pytest.skip(f"SKIPPED FAULTS: {reason}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=30)


def remount(path: Path, mode: str) -> None:
    done = _mount("-o", f"remount,{mode}", str(path))
    assert done.returncode == 0, done.stderr


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def assert_failed_cleanly(stack: Stack, job_id: str, reason: str) -> None:
    job = stack.wait_status(job_id)
    assert job["status"] == "failed", job
    assert job["error_code"] == "STORAGE_FAILED", job
    assert reason in job["error_message"], job["error_message"]
    assert job["file_path"] is None and job["attempts"] == 1, job
    assert stack.worker is not None
    assert stack.worker.returncode() is None, stack.worker.describe()


def assert_runs_a_job_that_fits(stack: Stack, day: str) -> Path:
    """The same worker process exports the next job (one day, well under the volume)."""
    assert stack.worker is not None
    job = stack.wait_status(stack.create(feed_job(day, day)))
    assert job["status"] == "succeeded", job
    path = Path(job["file_path"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == job["sha256"]
    assert stack.wait_worker_lines(stack.worker, job["id"]), "another process ran it"
    return path


def test_a_full_export_volume_fails_the_job_storage_failed_and_the_worker_goes_on(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with (
        small_volume(tmp_path / "exports") as root,
        running_stack(
            database_url, amqp_url, tmp_path, export_root=root, upstream={"per_day": 100}
        ) as stack,
    ):
        empty = free_bytes(root)
        # two weeks of 100 records a day: about 0.5 MB of CSV, twice the volume
        big = stack.create(feed_job("2026-01-05", "2026-01-18"))
        assert_failed_cleanly(stack, big, "no space left on the export volume")
        assert stack.files() == [], "a partial file or a temporary was left"
        assert free_bytes(root) == empty, "the space of the partial file was not given back"

        path = assert_runs_a_job_that_fits(stack, "2026-01-05")
        assert path.stat().st_size > 20_000
        assert stack.files() == [path]


def test_a_read_only_or_blocked_export_folder_fails_the_job_and_the_worker_goes_on(
    database_url: str, amqp_url: str, tmp_path: Path
) -> None:
    with (
        small_volume(tmp_path / "exports") as root,
        running_stack(database_url, amqp_url, tmp_path, export_root=root) as stack,
    ):
        remount(root, "ro")
        try:
            refused = stack.create(feed_job("2026-01-05", "2026-01-05"))
            assert_failed_cleanly(stack, refused, "read-only file system")
        finally:
            remount(root, "rw")
        assert stack.files() == []
        first = assert_runs_a_job_that_fits(stack, "2026-01-06")

        # a file where the tenant's folder must be: the job's folder cannot be made
        blocker = root / DEMO_TENANT
        moved = root / "moved-aside"
        blocker.rename(moved)
        blocker.write_bytes(b"not a folder")
        blocked = stack.create(feed_job("2026-01-07", "2026-01-07"))
        assert_failed_cleanly(stack, blocked, "could not be created")
        assert sorted(p.name for p in root.iterdir()) == sorted([DEMO_TENANT, "moved-aside"])
        blocker.unlink()
        moved.rename(blocker)

        second = assert_runs_a_job_that_fits(stack, "2026-01-08")
        assert stack.files() == sorted([first, second])
