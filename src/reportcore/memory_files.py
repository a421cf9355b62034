"""The in-memory file store of :mod:`reportcore.testing` (which re-exports it): files as bytes
in a dict, kept to the file store contract suite of tests/integration as the real stores are."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator

from .errors import StorageFailure


class _MemoryWriter:
    def __init__(self, store: InMemoryFileStore, location: str) -> None:
        self._store = store
        self._location = location
        self._parts: list[bytes] = []
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._store.fail_writes:
            raise StorageFailure("export file could not be written: no space left on device")
        self._parts.append(bytes(data))

    def commit(self) -> str:
        self._store.files[self._location] = b"".join(self._parts)
        self._done = True
        return self._location

    def abort(self) -> None:
        self._parts.clear()
        self._done = True


class InMemoryFileStore:
    """Files as bytes in a dict; a file appears only on commit."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail_writes = False

    @staticmethod
    def _location(tenant_id: str, job_id: str, extension: str) -> str:
        return f"mem://{tenant_id}/{job_id}/report.{extension}"

    def create(self, tenant_id: str, job_id: str, extension: str) -> _MemoryWriter:
        return _MemoryWriter(self, self._location(tenant_id, job_id, extension))

    def size(self, location: str) -> int | None:
        data = self.files.get(location)
        return None if data is None else len(data)

    def read(self, location: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        data = self.files.get(location)
        if data is None:  # at the call, as the port says: not at the first chunk
            raise FileNotFoundError(location)
        stop = len(data) if end is None else end + 1
        return iter((data[start:stop],))

    def delete(self, location: str) -> None:
        self.files.pop(location, None)

    def discard(self, tenant_id: str, job_id: str, extension: str) -> None:
        self.delete(self._location(tenant_id, job_id, extension))

    def download_url(
        self, location: str, expires_at: dt.datetime, file_name: str | None = None
    ) -> str | None:
        return None

    def sha256(self, location: str) -> str:
        return hashlib.sha256(self.files[location]).hexdigest()
