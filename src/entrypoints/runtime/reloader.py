"""Run a ``reportsvc`` command again whenever its source changes (``reportsvc all --reload``).

For development only (the image's ``development`` target): the command runs in a child
process; a change to a ``.py`` or ``.sql`` file under the watched folders stops it as SIGTERM
would (in-flight requests finish, running jobs go back to the queue) and starts it anew. A
child that exits on its own (a syntax error, a refused setting) is started again only after
the next change, so a broken edit is not a restart loop. SIGTERM or SIGINT to this process
stops the child and ends with its exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger("reportsvc.reload")

POLL_SEC = 1.0
WATCHED_SUFFIXES = (".py", ".sql")
# a stopping child finishes in-flight requests first (serving.GRACEFUL_SHUTDOWN_SEC) and a
# little more; past this it is killed
CHILD_STOP_SEC = 40.0


def snapshot(folders: Iterable[Path]) -> dict[Path, int]:
    """The modification times of the watched files under ``folders``."""
    seen: dict[Path, int] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.suffix in WATCHED_SUFFIXES:
                try:
                    seen[path] = path.stat().st_mtime_ns
                except OSError:  # removed between listing and stat: the next pass sees it
                    continue
    return seen


def _stop(child: subprocess.Popen[bytes]) -> int:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(CHILD_STOP_SEC)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait()


def run_reloading(
    argv: Sequence[str],
    folders: Sequence[Path],
    env: Mapping[str, str],
    *,
    stop: threading.Event | None = None,
    poll_sec: float = POLL_SEC,
) -> int:
    """Run ``reportsvc *argv`` in a child, again after each change under ``folders``, until
    ``stop`` is set (by SIGTERM or SIGINT when not given); returns the last child's exit code."""
    if stop is None:
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    command = [sys.executable, "-m", "entrypoints.cli", *argv]
    watched = snapshot(folders)
    log.info(
        "reloading on changes", extra={"folders": [str(f) for f in folders], "files": len(watched)}
    )
    code = 0
    while not stop.is_set():
        child = subprocess.Popen(command, env=dict(env))
        log.info("started", extra={"pid": child.pid, "argv": list(argv)})
        while not stop.wait(poll_sec):
            now = snapshot(folders)
            if now != watched:
                changed = sorted(
                    str(p) for p in now.keys() | watched.keys() if now.get(p) != watched.get(p)
                )
                watched = now
                log.info("source changed: restarting", extra={"changed": changed[:5]})
                break
            if child.poll() is not None:
                log.warning(
                    "the command exited: waiting for a change to start it again",
                    extra={"exit_code": child.returncode},
                )
                while not stop.wait(poll_sec) and snapshot(folders) == watched:
                    pass
                watched = snapshot(folders)
                break
        code = _stop(child)
    return code


def source_folders() -> list[Path]:
    """The folders the installed service runs from (``src/`` of an editable install)."""
    import adapters
    import entrypoints
    import reportcore

    packages = (reportcore, adapters, entrypoints)
    return sorted({Path(m.__path__[0]).resolve().parent for m in packages})


def main_reloading(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> int:
    """``reportsvc <argv> --reload``: :func:`run_reloading` over the service's own source."""
    return run_reloading(argv, source_folders(), env)
