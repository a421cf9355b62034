"""No test's outcome depends on the day it runs: the tests that read the tests' clock
(``tests/clock.py``, marked ``clock``) are run again with it moved to awkward days."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters.demo_upstream import DEMO_TENANT, DemoData
from adapters.demo_upstream.draws import NOTES as _NOTES
from adapters.demo_upstream.draws import Query as _Query
from reportcore.testing import FakeClock
from tests.clock import VARIABLE

ROOT = Path(__file__).resolve().parents[2]

AWKWARD_DAYS = {
    "a leap day, a minute before midnight": "2028-02-29T23:59:00+00:00",
    "31 December, late": "2026-12-31T23:30:00+00:00",
    "the night Europe moves its clocks forward": "2026-03-29T01:30:00+00:00",
    "the night the US moves its clocks back": "2026-11-01T06:30:00+00:00",
    "a week of demo data holding every awkward note": "2026-11-30T12:00:00+00:00",
}


def _demo_week_notes(now: dt.datetime) -> set[str]:
    data = DemoData(clock=FakeClock(now))
    notes: set[str] = set()
    cursor: str | None = None
    while True:
        query = {"tenantId": [DEMO_TENANT], "limit": ["100"]}
        if cursor:
            query["cursor"] = [cursor]
        page = data.feed_intake(_Query(query))
        notes.update(r["notes"] for r in page["items"] if "notes" in r)
        cursor = page["nextCursor"]
        if cursor is None:
            return notes


def test_the_awkward_demo_week_holds_every_note_a_csv_must_quote() -> None:
    now = dt.datetime.fromisoformat(AWKWARD_DAYS["a week of demo data holding every awkward note"])
    notes = _demo_week_notes(now)
    assert notes == set(_NOTES)
    assert any("\n" in n for n in notes) and any('"' in n for n in notes)
    assert any("," in n for n in notes) and any(not n.isascii() for n in notes)


# runs side by side: two (a core each), not all five at once: beside the rest of the suite a
# machine of two cores then ran ~7 pytest processes, and the moved modules' timing tests (a
# probe's bound, a held webhook attempt) were starved into failing, on no day in particular
AT_ONCE = 2


def _moved_run(instant: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "clock",
            "tests/unit",
        ],
        cwd=ROOT,
        # the day is what these runs vary: the pinned day's run has the thorough profile
        env={**os.environ, VARIABLE: instant, "HYPOTHESIS_PROFILE": "days"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def moved_runs() -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """The clock-reading tests, once for each awkward day (each a pytest of its own), started
    :data:`AT_ONCE` at a time."""
    with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
        yield {instant: pool.submit(_moved_run, instant) for instant in AWKWARD_DAYS.values()}


@pytest.mark.parametrize("instant", AWKWARD_DAYS.values(), ids=list(AWKWARD_DAYS))
def test_the_clock_reading_tests_pass_with_the_clock_moved_to(
    instant: str, moved_runs: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    run = moved_runs[instant].result(timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


def test_every_module_reading_the_tests_clock_is_marked_to_be_moved() -> None:
    """A test module that reads the tests' clock (directly, or through ``api_support``'s
    tokens) carries the ``clock`` mark, or its tests never run on the awkward days: 16
    modules had gone unmarked."""
    unmarked = [
        path.name
        for path in sorted((ROOT / "tests" / "unit").glob("test_*.py"))
        if path.name != Path(__file__).name
        and any(name in (text := path.read_text()) for name in ("pinned_now", "api_support"))
        and "pytest.mark.clock" not in text
    ]
    assert not unmarked
