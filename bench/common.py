"""Helpers shared by the benchmarks: printing figures, ``--smoke``, peak RSS of a process.

Every benchmark prints one figure a line, ``name value unit``, so that runs can be compared
with ``diff`` or grepped. ``--smoke`` asks a benchmark for a tiny run of about ten seconds
(bench/smoke.sh runs every script that way; make test runs it) whose figures are not judged,
only its exit status.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent


def figure(name: str, value: float, unit: str = "") -> None:
    """One figure a line: ``name value unit`` (3 significant digits below 100)."""
    shown = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    print(f"{name} {shown} {unit}".rstrip(), flush=True)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose description is the first line of ``doc``, with ``--smoke``."""
    first = (doc or "").strip().splitlines()[0] if doc else ""
    p = argparse.ArgumentParser(description=first)
    p.add_argument(
        "--smoke", action="store_true", help="a tiny run of about ten seconds (figures unjudged)"
    )
    return p


def status_kb(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field (``VmHWM``, ``VmRSS``) in KiB, or ``None``."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident set size (VmHWM) of ``pid`` (default: this process) in MB (10^6 bytes).

    Falls back to ``ru_maxrss`` of this process where /proc is not there.
    """
    kb = status_kb(pid if pid is not None else os.getpid(), "VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024 / 1e6


def children_peak_rss_mb() -> float:
    """The largest peak RSS of any waited-for child of this process, in MB (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds ``pid`` has used so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (from /proc/<pid>/stat)."""
    return sum(cpu_times(pid))


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the wall time in seconds."""
    box: list[float] = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def on_path() -> None:
    """Make the repository root importable (``tests.integration.procs``, ``bench.*``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


class Feed(NamedTuple):
    """The running fake feed: its base URL and process id (whose CPU is measured too)."""

    url: str
    pid: int


@contextmanager
def fake_feed(
    records: int, latency_ms: float = 0.0, distribution: str | None = None
) -> Iterator[Feed]:
    """bench/fake_feed.py in its own process; ``distribution`` places the records over its
    default range (issue 27's table), else one every 7 seconds back from its newest."""
    feed = [sys.executable, str(ROOT / "bench" / "fake_feed.py"), "--records", str(records)]
    feed += ["--port", "0", "--latency-ms", str(latency_ms)]
    if distribution is not None:
        feed += ["--distribution", distribution]
    proc = subprocess.Popen(feed, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"fake feed did not start: {url!r}")
        yield Feed(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
