"""The tests' clock: the one "now" of every test whose outcome could depend on the day.

``REPORTSVC_TESTS_NOW`` (an ISO 8601 instant with its offset) moves it;
``tests/unit/test_any_day.py`` runs the tests that read it on awkward days (a leap day,
31 December, DST changes, a week whose demo data holds every awkward value). Without it the
tests run at one fixed instant, so that no outcome depends on the day the suite runs.
"""

from __future__ import annotations

import datetime as dt
import os

VARIABLE = "REPORTSVC_TESTS_NOW"
DEFAULT = dt.datetime(2026, 1, 19, 9, 30, tzinfo=dt.UTC)


def pinned_now() -> dt.datetime:
    """The instant the tests take as now (aware, UTC)."""
    raw = os.environ.get(VARIABLE)
    if not raw:
        return DEFAULT
    instant = dt.datetime.fromisoformat(raw)
    if instant.tzinfo is None:
        raise ValueError(f"{VARIABLE} must name its UTC offset, got {raw!r}")
    return instant.astimezone(dt.UTC)
