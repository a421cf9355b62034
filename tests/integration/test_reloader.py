"""``reportsvc all --reload`` (the image's development target): the command runs again after
each edit of the source, a broken edit is no restart loop, and SIGTERM ends it cleanly."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from entrypoints.runtime.reloader import run_reloading

pytestmark = pytest.mark.integration

DEADLINE_SEC = 60.0


def _wait(check: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE_SEC
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Reloading:
    def __init__(self, argv: list[str], folder: Path, caplog: pytest.LogCaptureFixture) -> None:
        self.stop = threading.Event()
        self.code: int | None = None
        self._caplog = caplog
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

        def run() -> None:
            self.code = run_reloading(argv, [folder], env, stop=self.stop, poll_sec=0.1)

        self.thread = threading.Thread(target=run)

    def pids(self) -> list[int]:
        return [r.pid for r in self._caplog.records if r.getMessage() == "started"]  # type: ignore[attr-defined]

    def waiting(self) -> int:
        return sum("waiting for a change" in r.getMessage() for r in self._caplog.records)


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "module.py").write_text("X = 1\n")
    return folder


@pytest.fixture
def reloading(
    watched: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[[list[str]], Reloading]]:
    caplog.set_level(logging.INFO, logger="reportsvc.reload")
    started: list[Reloading] = []

    def start(argv: list[str]) -> Reloading:
        r = Reloading(argv, watched, caplog)
        r.thread.start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop.set()
        r.thread.join(DEADLINE_SEC)


def _edit(folder: Path, text: str) -> None:
    path = folder / "module.py"
    path.write_text(text)
    stamp = time.time_ns() + 1_000_000_000  # a coarse file system still sees a new mtime
    os.utime(path, ns=(stamp, stamp))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_edit_stops_the_running_command_and_starts_it_again(
    reloading: Callable[[list[str]], Reloading], watched: Path, tmp_path: Path
) -> None:
    port = _free_port()
    health = f"http://127.0.0.1:{port}/api/health"
    r = reloading(["dev", "--port", str(port), "--data-dir", str(tmp_path / "data")])
    _wait(lambda: _answers(health), "the first start to serve")
    first = r.pids()[0]
    time.sleep(0.3)  # polls with nothing changed: no restart without an edit
    assert len(r.pids()) == 1
    _edit(watched, "X = 2\n")
    _wait(lambda: len(r.pids()) == 2, "the start after the edit")
    assert not _alive(first), "the old command is stopped before the new one starts"
    _wait(lambda: _answers(health), "the new start to serve")
    r.stop.set()
    r.thread.join(DEADLINE_SEC)
    assert r.code == 0, "stopped as SIGTERM stops it: exit 0"
    assert not _alive(r.pids()[1])


def test_a_command_that_exits_waits_for_the_next_edit_instead_of_looping(
    reloading: Callable[[list[str]], Reloading], watched: Path
) -> None:
    r = reloading(["token", "--tenant", "t1"])  # no JWT_SECRET: exits 2 at once
    _wait(lambda: r.waiting() == 1, "the exit to be noticed")
    time.sleep(0.5)
    assert len(r.pids()) == 1, "no restart without an edit"
    _edit(watched, "X = 3\n")
    _wait(lambda: r.waiting() == 2, "the second start to exit too")
    assert len(r.pids()) == 2
    r.stop.set()
    r.thread.join(DEADLINE_SEC)
    assert r.code == 2
