"""Real processes for integration and fault tests: ``reportsvc`` commands and the demo upstream.

Each process gets its own environment (nothing of ours is inherited from the developer's
shell), writes stdout and stderr to files under the test's folder, and is stopped (SIGTERM,
then SIGKILL after a deadline) when its :class:`Procs` group closes. Services listen on port 0
and the bound URL is read from their output, so tests never race for a port.

    with Procs(tmp_path) as procs:
        upstream = start_demo_upstream(procs)
        env = service_env(database_url, amqp_url, tmp_path / "exports", upstream)
        assert run_reportsvc(env, "migrate").returncode == 0
        api = start_api(procs, env)
        worker = start_worker(procs, env)
        ...
        assert worker.stop() == 0
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from entrypoints.settings import DECLARED

# every variable the settings read (aliases too), and the AWS chain's: never inherited from
# the developer's environment, so that a test runs the same everywhere
CONFIG_VARIABLES = frozenset(
    {
        *(name for declared in DECLARED.values() for name in declared.names),
        # the AWS credential chain: a developer's own keys must never reach a test's service
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
    }
)

JWT_SECRET = "integration-jwt-secret-0123456789abcdef"
DOWNLOAD_SECRET = "integration-download-secret-0123456789"
START_TIMEOUT_SEC = 30.0
STOP_TIMEOUT_SEC = 30.0

# REPORTSVC_PYTHON runs the service under another interpreter, for example a venv built from
# requirements.lock alone (what the image installs), to measure the product without the dev tools
REPORTSVC: tuple[str, ...] = (
    os.environ.get("REPORTSVC_PYTHON") or sys.executable,
    "-m",
    "entrypoints.cli",
)
"""How to run ``reportsvc``: the same module the console script calls, in this interpreter."""


def base_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any configuration variable, plus ``overrides``.
    ``OTEL_*`` are left out too: tracing is on only in the tests that turn it on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in CONFIG_VARIABLES and not k.startswith("OTEL_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def service_env(
    database_url: str,
    amqp_url: str,
    export_root: Path,
    upstream_url: str,
    **overrides: str,
) -> dict[str, str]:
    """Everything ``api``, ``worker`` and ``migrate`` need, with every upstream at one URL;
    ``overrides`` win over these defaults."""
    defaults = {
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": amqp_url,
        "EXPORT_ROOT": str(export_root),
        "REPORT_DOWNLOAD_SECRET": DOWNLOAD_SECRET,
        "JWT_SECRET": JWT_SECRET,
        "CLOUD_FEED_SERVICE_URL": upstream_url,
        "CLOUD_TELEMETRY_SERVICE_URL": upstream_url,
        "CLOUD_WEIGHVISION_READMODEL_URL": upstream_url,
        "HOST": "127.0.0.1",
        "APP_PORT": "0",
        "REPORT_RECOVERY_INTERVAL_SEC": "1",
        "LOG_LEVEL": "INFO",
        # the worker's /metrics port is off unless a test asks for it: workers of one test
        # (and of tests running at once) would otherwise all want 9129
        "WORKER_HTTP_HOST": "127.0.0.1",
        "WORKER_HTTP_PORT": "0",
    }
    return base_env(**(defaults | overrides))


class ProcessFailed(AssertionError):
    """A process exited (or never became ready) when a test needed it; carries its output."""


class Proc:
    """One child process with its output captured to files."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        self._out: IO[bytes] = self.stdout_path.open("wb")
        self._err: IO[bytes] = self.stderr_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            # its own process group: a signal meant for it never reaches pytest
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """stdout and stderr, for matching and for failure reports."""
        return self.stdout() + self.stderr()

    def returncode(self) -> int | None:
        return self.popen.poll()

    def describe(self) -> str:
        code = self.returncode()
        state = "running" if code is None else f"exited with {code}"
        return (
            f"--- {self.name} ({state}): {' '.join(self.argv)}\n"
            f"--- stdout:\n{self.stdout()}--- stderr:\n{self.stderr()}"
        )

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT_SEC) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fails if the process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.output())
            if found:
                return found
            if self.returncode() is not None:
                found = regex.search(self.output())  # written just before exiting
                if found:
                    return found
                raise ProcessFailed(
                    f"{self.name} exited before printing {pattern!r}\n" + self.describe()
                )
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{self.name} did not print {pattern!r} in {timeout}s\n" + self.describe()
                )
            time.sleep(0.05)

    def wait_http(self, url: str, timeout: float = START_TIMEOUT_SEC) -> None:
        """Poll ``url`` until it answers 200; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            if self.returncode() is not None:
                raise ProcessFailed(
                    f"{self.name} exited while waiting for {url}\n" + self.describe()
                )
            try:
                last = httpx.get(url, timeout=2.0)
                if last.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{url} not ready in {timeout}s (last: {last!r})\n" + self.describe()
                )
            time.sleep(0.1)

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (not to its children)."""
        if self.returncode() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT_SEC) -> int:
        """Wait for the exit code; fails (leaving the process to the group) on timeout."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessFailed(
                f"{self.name} still running after {timeout}s\n" + self.describe()
            ) from None

    def stop(self, timeout: float = STOP_TIMEOUT_SEC) -> int:
        """SIGTERM and wait: the graceful shutdown. Returns the exit code."""
        self.send(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        """SIGKILL the whole process group and reap it: a crash, nothing runs cleanup."""
        if self.returncode() is None:
            # the group may be gone between the check and the kill
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.wait(STOP_TIMEOUT_SEC)

    def close(self) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL) and close its files."""
        if self.returncode() is None:
            self.send(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()
        self._err.close()


class Procs:
    """A group of processes started by one test; closing it stops them, newest first.

    If the test failed, the output of every process is printed, so that pytest shows it.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> Proc:
        taken = {p.name for p in self.procs}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        proc = Proc(unique, argv, env, self.log_dir)
        self.procs.append(proc)
        return proc

    def reportsvc(self, name: str, env: Mapping[str, str], *args: str) -> Proc:
        """Start ``reportsvc <args>``."""
        return self.start(name, [*REPORTSVC, *args], env)

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in reversed(self.procs):
            proc.close()
        if exc_type is not None:
            for proc in self.procs:
                print(proc.describe())


# --- the usual processes ---

_LISTENING = r"msg=listening .*?url=(http://\S+)"


def start_api(procs: Procs, env: Mapping[str, str]) -> tuple[Proc, str]:
    """``reportsvc api`` on a free port, once ``/api/health`` answers; returns its base URL."""
    proc = procs.reportsvc("api", env, "api")
    url = proc.wait_for(_LISTENING).group(1)
    proc.wait_http(url + "/api/health")
    return proc, url


def start_worker(procs: Procs, env: Mapping[str, str]) -> Proc:
    """``reportsvc worker``, once it consumes."""
    proc = procs.reportsvc("worker", env, "worker")
    proc.wait_for(r"msg=\"worker started\"")
    return proc


def start_demo_upstream(procs: Procs) -> str:
    """The demo upstream (all four upstream APIs) in its own process; returns its base URL."""
    proc = procs.start(
        "demo-upstream",
        [sys.executable, "-m", "adapters.demo_upstream", "--port", "0"],
        base_env(),
    )
    return proc.wait_for(r"(http://[\w.-]+:\d+)").group(1)


def run_reportsvc(
    env: Mapping[str, str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run a ``reportsvc`` command to its end (``migrate``, ``token``, ``export``)."""
    return subprocess.run(
        [*REPORTSVC, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def user_token(env: Mapping[str, str], tenant: str, *roles: str, sub: str = "it-user") -> str:
    """A JWT from ``reportsvc token`` for ``tenant`` with ``roles``."""
    argv = ["token", "--tenant", tenant, "--sub", sub]
    for role in roles or ("tenant_admin",):
        argv += ["--role", role]
    done = run_reportsvc(env, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_fake_feed(procs: Procs, records: int) -> str:
    """bench/fake_feed.py (a fast feed service of ``records`` intake records) in its own
    process; returns its base URL. Its records span ``fake_feed.oldest(records)`` to
    ``fake_feed.NEWEST``."""
    script = Path(__file__).resolve().parents[2] / "bench" / "fake_feed.py"
    argv = [sys.executable, str(script), "--records", str(records), "--port", "0"]
    proc = procs.start("fake-feed", argv, base_env())
    return proc.wait_for(r"(http://[\w.-]+:\d+)").group(1)
