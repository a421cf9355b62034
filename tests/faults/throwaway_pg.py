"""A throwaway PostgreSQL cluster for fault tests that stop the database.

The shared server (127.0.0.1:5432) serves every other test, so a test that stops a database
stops this one instead: a cluster made with ``initdb`` in a temporary folder, listening on a
free port of 127.0.0.1 and on a unix socket in that folder, trust authentication, superuser
``root``. ``initdb`` and the server refuse to run as root, so as root they run as the
``postgres`` user (``runuser``) in a folder it owns. The cluster is always stopped
(``pg_ctl stop -m immediate``, then SIGKILL of the postmaster) and its folder removed.

    with ThrowawayPostgres() as pg:
        url = pg.url()          # postgresql://root@127.0.0.1:<port>/postgres
        pg.stop()               # connections are cut, new ones refused
        pg.start()              # returns once it accepts connections
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

# Debian's layout, one folder per major version
BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "root"
CTL_TIMEOUT_SEC = 60


def _bin_dir() -> Path | None:
    """The server binaries: the newest Debian-packaged version, else those on PATH."""
    versions = sorted(
        Path("/").glob(BIN_GLOB.lstrip("/")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in versions:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _run_as() -> list[str]:
    """The prefix that runs a server binary as a user it accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no postgres user") from None
    return ["runuser", "-u", "postgres", "--"]


def available() -> bool:
    """Whether a PostgreSQL cluster can be made and started here."""
    if _bin_dir() is None:
        return False
    try:
        _run_as()
    except RuntimeError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ThrowawayPostgres:
    """One PostgreSQL cluster of our own; a context manager that always tears it down."""

    def __init__(self) -> None:
        folder = _bin_dir()
        if folder is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = folder
        self.prefix = _run_as()
        self.base = Path(tempfile.mkdtemp(prefix="reportsvc-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = _free_port()

    # --- life cycle ---

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_SEC,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed ({done.returncode}): {done.stderr}\n"
                + self.server_log()
            )
        return done

    def create(self) -> None:
        if self.prefix:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        done = subprocess.run(
            [
                *self.prefix,
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_SEC,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# throwaway cluster of the fault tests\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.base}'\n"
                "max_connections = 50\n"
                "shared_buffers = 16MB\n"
                # nothing here must survive a crash of the machine
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )

    def start(self) -> None:
        """Start the server; returns once it accepts connections."""
        self._ctl("start", "-w", "-t", str(CTL_TIMEOUT_SEC), "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` cuts every connection and shuts down cleanly,
        ``immediate`` is a crash (recovery runs at the next start)."""
        self._ctl("stop", "-w", "-m", mode, "-t", str(CTL_TIMEOUT_SEC))

    def running(self) -> bool:
        return self._ctl("status", check=False).returncode == 0

    def destroy(self) -> None:
        """Stop whatever runs and remove the folder; never raises."""
        try:
            if self.running():
                self._ctl("stop", "-w", "-m", "immediate", "-t", "20", check=False)
        except (OSError, subprocess.SubprocessError):
            pass
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises once it is gone
                time.sleep(0.05)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        try:
            self.create()
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # --- use ---

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def accepts_connections(self) -> bool:
        """A fresh TCP connection and ``SELECT 1`` succeed."""
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""
