"""Export files in a folder: ``<root>/<tenant_id>/<job_id>/report.<ext>``.

A file is written under a hidden temporary name in its final folder, flushed and fsynced, and
renamed into place only on ``commit()`` (then the folder is fsynced, so that the rename itself
survives a power cut). A reader therefore sees a complete file or none; a crash leaves at most
a hidden temporary, which the job's next attempt removes at its commit, or ``delete``
(retention) and ``discard`` (a job failed ``WORKER_LOST``, or failing after a dead attempt)
with its folder.

The location is the file's absolute path, as the old service stored in ``file_path``. No path
outside the root is ever written, read or deleted: ids are checked as path segments, and the
resolved path (symlinks followed) must stay under the resolved root.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from reportcore.errors import StorageFailure

READ_CHUNK = 256 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# "csv", "json", "xlsx", or a compressed one: "csv.gz", "ndjson.gz"
_EXTENSION = re.compile(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,4})?")
_TEMP_SUFFIX = ".tmp"

log = logging.getLogger(__name__)


def _failure(action: str, exc: OSError) -> StorageFailure:
    """The failure a client may see (a job's ``error_message``, so its webhook): the OS's
    reason or the error's type, never ``str(exc)``, which may name the path (then logged)."""
    reason = exc.strerror
    if not reason:
        reason = type(exc).__name__
        log.warning("export file could not be %s: %s", action, exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the export volume"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied on the export folder"
    elif exc.errno == errno.EROFS:
        reason = "the export folder is on a read-only file system"
    return StorageFailure(f"export file could not be {action}: {reason}")


def check_names(tenant_id: str, job_id: str, extension: str) -> None:
    """Refuse ids and extensions that could name anything but ``<tenant>/<job>/report.<ext>``
    (a folder path here, an object key in the S3 store)."""
    for name, value in (("tenant id", tenant_id), ("job id", job_id)):
        if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
            raise StorageFailure(f"refusing an unsafe {name} as a folder name: {value!r}")
    if not isinstance(extension, str) or not _EXTENSION.fullmatch(extension):
        raise StorageFailure(f"refusing an unsafe file extension: {extension!r}")


def _temp_prefix(final_name: str) -> str:
    """Temporaries of ``report.csv`` are ``.report.csv.<random>.tmp``: hidden, and never
    mistaken for the file itself."""
    return f".{final_name}."


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemWriter:
    """One export file being written; invisible under its final name until :meth:`commit`.

    ``owns_folder``: the folder is the store's (a job's): made when missing, and removed when
    an abort leaves it empty. ``reportsvc export`` writes into a folder the user named, which
    must exist and is never removed.
    """

    def __init__(self, final: Path, *, owns_folder: bool = True) -> None:
        self.final = final
        self.temp = final.with_name(f"{_temp_prefix(final.name)}{uuid.uuid4().hex}{_TEMP_SUFFIX}")
        self._owns_folder = owns_folder
        # the temporaries earlier attempts left (see commit); not those of attempts after this
        self._earlier = _temporaries(final)
        try:
            if owns_folder:
                final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _failure("created", exc) from exc
        self._file = os.fdopen(fd, "wb")
        self._state = "open"  # -> committed | aborted

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageFailure(f"export file was already {self._state}")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; a full disk or a lost folder is a :class:`StorageFailure`."""
        self._check_open()
        try:
            self._file.write(data)
        except OSError as exc:
            raise _failure("written", exc) from exc

    def commit(self) -> str:
        """Flush, fsync, rename into place, fsync the folder; returns the absolute path.

        On failure nothing is left under either name.
        """
        self._check_open()
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.final)
        except OSError as exc:
            self.abort()
            raise _failure("written", exc) from exc
        try:
            _fsync_dir(self.final.parent)
        except OSError as exc:
            # the rename may not survive a crash: the file must not count as written
            self.final.unlink(missing_ok=True)
            self._state = "aborted"
            raise _failure("written", exc) from exc
        self._state = "committed"
        # Temporaries of earlier attempts at this job whose worker died (SIGKILL, a lost
        # machine) ran nothing to remove them; the file is whole now, so they are garbage.
        # Only those there when this writer began: a later one is the job's next attempt,
        # writing while this writer's worker (paused past its lease) finishes late.
        _remove(self._earlier)
        return str(self.final)

    def abort(self) -> None:
        """Remove the temporary file (and the job's folder if that leaves it empty).

        Safe to call more than once, after a failure, or after :meth:`commit` (then a no-op).
        """
        if self._state == "committed":
            return
        self._state = "aborted"
        try:
            self._file.close()
        except OSError:
            # a failed flush of bytes we are throwing away anyway
            log.debug("closing an aborted export file failed", exc_info=True)
        self.temp.unlink(missing_ok=True)
        if self._owns_folder:
            _remove_empty(self.final.parent)


def _temporaries(final: Path) -> list[Path]:
    """The temporaries of ``final`` in its folder (none if it cannot be listed: logged)."""
    try:
        return [
            p
            for p in final.parent.iterdir()
            if p.name.startswith(_temp_prefix(final.name)) and p.name.endswith(_TEMP_SUFFIX)
        ]
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("could not list %s for leftover temporaries: %s", final.parent, exc)
        return []


def _remove_temporaries(final: Path) -> None:
    """Remove every temporary of ``final`` left in its folder."""
    _remove(_temporaries(final))


def _remove(leftovers: list[Path]) -> None:
    """Best effort: a leftover that cannot be removed is logged, never fails the caller (whose
    file is already whole, or already gone)."""
    for temp in leftovers:
        try:
            temp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the leftover temporary %s: %s", temp, exc)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError as exc:
        # not empty (another file, or a concurrent writer of the same job) or already gone
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            log.warning("could not remove the empty export folder %s: %s", folder, exc)


class FilesystemStore:
    """:class:`reportcore.ports.FileStore` over a local (or mounted) folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    def _resolved_root(self) -> Path:
        return self.root.resolve()

    def _path_of(self, tenant_id: str, job_id: str, extension: str) -> Path:
        check_names(tenant_id, job_id, extension)
        path = self.root / tenant_id / job_id / f"report.{extension}"
        self._inside(path)
        return path

    def _inside(self, location: str | Path) -> Path:
        """``location`` as a path under the root, or :class:`StorageFailure`."""
        if isinstance(location, str) and "\x00" in location:
            raise StorageFailure("refusing a file location with a NUL byte")
        path = Path(location)
        if not path.is_absolute():
            raise StorageFailure(f"refusing a relative file location: {str(location)!r}")
        root = self._resolved_root()
        resolved = path.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise StorageFailure(f"refusing a file location outside {root}: {str(location)!r}")
        return resolved

    # --- the port ---

    def create(self, tenant_id: str, job_id: str, extension: str) -> FilesystemWriter:
        """A writer of ``<root>/<tenant_id>/<job_id>/report.<extension>``."""
        return FilesystemWriter(self._path_of(tenant_id, job_id, extension))

    def size(self, location: str) -> int | None:
        """The file's size; ``None`` if it is gone (or not one of ours)."""
        try:
            path = self._inside(location)
            return path.stat().st_size if path.is_file() else None
        except StorageFailure:
            log.warning("size of a location outside the export root: %r", location)
            return None
        except FileNotFoundError:
            return None

    def read(self, location: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` .. ``end`` (inclusive) in chunks of 256 KiB.

        A missing file raises ``FileNotFoundError`` here, before the first chunk: the file is
        opened here, so retention deleting it once the answer started cannot cut it short
        (an open file outlives its name).
        """
        path = self._inside(location)
        fh = path.open("rb")  # FileNotFoundError now, not halfway through a response
        try:
            size = os.fstat(fh.fileno()).st_size
        except BaseException:
            fh.close()
            raise
        stop = size if end is None else min(end + 1, size)
        return self._chunks(fh, max(0, start), stop)

    @staticmethod
    def _chunks(fh: io.BufferedReader, start: int, stop: int) -> Iterator[bytes]:
        with fh:
            fh.seek(start)
            left = stop - start
            while left > 0:
                chunk = fh.read(min(READ_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def delete(self, location: str) -> None:
        """Remove the file, leftover temporaries of its job, and the job's folder if empty."""
        try:
            path = self._inside(location)
        except StorageFailure as exc:
            # a legacy row pointing elsewhere: never delete outside the root, but let
            # retention move on rather than retry it forever
            log.warning("not deleting %r: %s", location, exc)
            return
        path.unlink(missing_ok=True)
        folder = path.parent
        if folder == self._resolved_root():
            return
        _remove_temporaries(path)
        _remove_empty(folder)

    def discard(self, tenant_id: str, job_id: str, extension: str) -> None:
        """The job's file and the temporaries of crashed attempts, and its folder if empty."""
        self.delete(str(self._path_of(tenant_id, job_id, extension)))

    def check(self, *, writes: bool = True) -> None:
        """Raise :class:`StorageFailure` naming the cause unless the root is a folder this
        process can read (and, with ``writes``, write: the workers; an api may have it read
        only), made if missing: run once at start, so that a bad ``EXPORT_ROOT`` (a volume not
        mounted, owned by another uid) is one clear line, not every job failed
        ``STORAGE_FAILED`` behind a ready probe."""
        root = self.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            os.listdir(root)
            if writes:
                probe = root / f".reportsvc-check-{uuid.uuid4().hex}{_TEMP_SUFFIX}"
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as exc:
            raise StorageFailure(
                f"the export folder {str(root)!r} (EXPORT_ROOT) is not usable: "
                f"{exc.strerror or exc}"
            ) from exc

    def download_url(
        self, location: str, expires_at: dt.datetime, file_name: str | None = None
    ) -> str | None:
        """Always ``None``: the API streams files from this folder itself."""
        return None
