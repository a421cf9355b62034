"""No test's outcome depends on the day it runs: the tests that read the tests' clock
(``tests/clock.py``, marked ``clock``) are run again with it moved to awkward days."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
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


@pytest.mark.parametrize("instant", AWKWARD_DAYS.values(), ids=list(AWKWARD_DAYS))
def test_the_clock_reading_tests_pass_with_the_clock_moved_to(instant: str) -> None:
    done = subprocess.run(
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
        env={**os.environ, VARIABLE: instant},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
