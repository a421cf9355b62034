"""The system's clock (tests pin time with :class:`reportcore.testing.FakeClock`)."""

from __future__ import annotations

import datetime as dt


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ScaledClock:
    """A test-only clock that runs ``speed`` times as fast as the real one from ``anchor`` on
    (``REPORT_TEST_CLOCK_ANCHOR``, ``REPORT_TEST_CLOCK_SPEED``): processes given the same two
    values agree on the time, so an integration test sees minutes of schedules pass in seconds.
    """

    def __init__(self, anchor: dt.datetime, speed: float) -> None:
        self._anchor = anchor
        self._speed = speed

    def now(self) -> dt.datetime:
        real = dt.datetime.now(dt.UTC)
        return self._anchor + (real - self._anchor) * self._speed
