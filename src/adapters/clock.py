"""The system's clock (tests pin time with :class:`reportcore.testing.FakeClock`)."""

from __future__ import annotations

import datetime as dt


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)
