"""Hypothesis profiles of the unit suite.

``dev`` (the default) keeps a local run quick; ``ci`` (chosen when ``CI`` or
``REQUIRE_SERVICES`` is set, or with ``HYPOTHESIS_PROFILE=ci``) tries many more examples and
drops the per-example deadline, whose timing noise on shared CI machines would turn a slow
example into a false failure. ``days`` is for the reruns on awkward days (few examples: the
pinned day's run is the thorough one).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
# the clock-reading tests moved to awkward days (test_any_day.py): the day is what varies
settings.register_profile("days", max_examples=20, deadline=None)
settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _profile() -> str:
    chosen = os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI") or os.environ.get("REQUIRE_SERVICES") else "dev"


settings.load_profile(_profile())
