"""Cron expressions read by cronsim (:class:`reportcore.schedules.CronRules`).

cronsim is asked only about naive wall-clock time: given no zone it does no DST handling of
its own (its zone-aware mode copies Debian cron's, where a job with a wildcard hour runs twice
in a fold), so that the zone rules stay the core's (``reportcore.schedules``). Only the five
standard fields are taken: cronsim also reads a sixth (seconds) field, which the contract has
not.
"""

from __future__ import annotations

import datetime as dt

from cronsim import CronSim, CronSimError

# any start will do to check an expression: parsing happens in the constructor
_ANY_START = dt.datetime(2000, 1, 1)


class CronsimRules:
    """Five-field cron expressions, matched on naive wall-clock minutes."""

    def check(self, expr: str) -> None:
        if len(expr.split()) != 5:
            raise ValueError("wrong number of fields (five are needed)")
        try:
            CronSim(expr, _ANY_START)
        except CronSimError as exc:
            raise ValueError(str(exc)) from None

    def next_match(self, expr: str, after: dt.datetime) -> dt.datetime | None:
        # cronsim starts from the next second: from the minute's last second, the next match
        # is strictly after the minute ``after`` is in
        start = after.replace(second=59, microsecond=0, tzinfo=None)
        try:
            return next(CronSim(expr, start))
        except StopIteration:  # no match for 50 years
            return None
