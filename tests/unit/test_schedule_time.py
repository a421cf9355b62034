"""A schedule's time: its cron read in its zone (DST gaps run at the next minute that exists,
folds run once), the latest missed occurrence after downtime, and ranges of whole local days.

The property tests check the core against an independent model: a walk minute by minute
through the zone, with a small cron matcher of its own for the expressions they draw.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import cache

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adapters.cron import CronsimRules
from reportcore.errors import ValidationError
from reportcore.schedules import (
    LastDays,
    RangeKind,
    idempotency_key_for,
    latest_due,
    next_occurrence,
    range_of,
    resolve_range,
    validate_cron,
    validate_range,
)

RULES = CronsimRules()
UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: str, *parts: int, fold: int = 0) -> dt.datetime:
    wall = dt.datetime(*parts, tzinfo=zoneinfo.ZoneInfo(zone), fold=fold)  # type: ignore[misc]
    return wall.astimezone(UTC)


def occurrences(cron: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    found = []
    at: dt.datetime | None = start
    while True:
        assert at is not None
        at = next_occurrence(cron, zone, at, RULES)
        if at is None or at > end:
            return found
        found.append(at)


# --- examples a reader can check by hand ---


def test_a_wall_time_in_a_spring_gap_runs_at_the_next_minute_that_exists() -> None:
    # Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist
    runs = occurrences("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert runs == [
        local("Europe/Berlin", 2026, 3, 29, 3, 0),
        local("Europe/Berlin", 2026, 3, 30, 2, 30),
    ]


def test_several_wall_times_in_one_gap_run_once_at_its_end() -> None:
    runs = occurrences("*/15 2 * * *", "Europe/Berlin", utc(2026, 3, 29, 0), utc(2026, 3, 29, 3))
    assert runs == [local("Europe/Berlin", 2026, 3, 29, 3, 0)]


def test_a_half_hour_gap_runs_at_its_end() -> None:
    # Lord Howe Island moves by 30 minutes: 2026-10-04 02:00 becomes 02:30
    runs = occurrences(
        "10 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 0), utc(2026, 10, 4, 12)
    )
    assert runs == [local("Australia/Lord_Howe", 2026, 10, 4, 2, 30)]


def test_a_wall_time_in_an_autumn_fold_runs_once_at_its_first_pass() -> None:
    # New York 2026-11-01: 01:00..01:59 happens twice (EDT, then EST)
    runs = occurrences(
        "30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), utc(2026, 11, 1, 12)
    )
    assert runs == [local("America/New_York", 2026, 11, 1, 1, 30)]


def test_every_minute_through_a_fold_runs_each_wall_minute_once() -> None:
    start = local("America/New_York", 2026, 11, 1, 0, 59)
    end = local("America/New_York", 2026, 11, 1, 2, 0)  # two hours of real time later
    runs = occurrences("* * * * *", "America/New_York", start, end)
    assert len(runs) == 61  # 01:00..01:59 once, and 02:00
    assert runs[-1] == end


def test_after_downtime_only_the_latest_missed_occurrence_is_due() -> None:
    due = utc(2026, 1, 5, 6)
    assert latest_due("0 6 * * *", "UTC", due, utc(2026, 1, 9, 7), RULES) == utc(2026, 1, 9, 6)
    assert latest_due("0 6 * * *", "UTC", due, utc(2026, 1, 5, 6, 0, 1), RULES) == due
    # a week down, every minute: the minute before now, found without a week's walk
    every = latest_due("* * * * *", "UTC", due, utc(2026, 1, 12, 6, 0, 30), RULES)
    assert every == utc(2026, 1, 12, 6, 0)
    # a yearly schedule down for three years
    yearly = latest_due("0 0 1 1 *", "UTC", utc(2022, 1, 1), utc(2025, 6, 1), RULES)
    assert yearly == utc(2025, 1, 1)


def test_previous_week_on_monday_morning_in_bangkok_is_the_bangkok_week_before() -> None:
    occurrence = local("Asia/Bangkok", 2026, 1, 12, 6, 0)  # Monday 06:00, Sunday 23:00 UTC
    assert occurrence.weekday() == 6
    assert range_of(RangeKind.PREVIOUS_WEEK, occurrence, "Asia/Bangkok") == (
        dt.date(2026, 1, 5),
        dt.date(2026, 1, 11),
    )


def test_ranges_by_hand() -> None:
    day = dt.date(2026, 3, 1)  # a Sunday
    assert resolve_range(RangeKind.PREVIOUS_DAY, day) == (dt.date(2026, 2, 28),) * 2
    assert resolve_range(RangeKind.PREVIOUS_WEEK, day) == (
        dt.date(2026, 2, 16),
        dt.date(2026, 2, 22),
    )
    assert resolve_range(RangeKind.PREVIOUS_MONTH, day) == (
        dt.date(2026, 2, 1),
        dt.date(2026, 2, 28),
    )
    assert resolve_range(RangeKind.MONTH_TO_DATE, day) == (day, day)
    assert resolve_range(LastDays(7), day) == (dt.date(2026, 2, 22), dt.date(2026, 2, 28))


def test_the_key_of_an_occurrence_names_the_schedule_and_the_utc_minute() -> None:
    at = local("Asia/Bangkok", 2026, 1, 12, 6, 0)
    assert idempotency_key_for("s1", at) == "schedule:s1:2026-01-11T23:00:00Z"


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "* * * *",
        "* * * * * *",
        "61 * * * *",
        "* 24 * * *",
        "* * 32 * *",
        "0 0 30 2 *x",
        "a b c d e",
        "* * * * \x00",
    ],
)
def test_a_cron_expression_that_is_not_five_valid_fields_is_a_400(expr: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_cron(expr, RULES)
    assert caught.value.field == "cron"


def test_a_range_outside_the_words_and_1_to_366_days_is_a_400() -> None:
    for bad in (LastDays(0), LastDays(367), "yesterday", None):
        with pytest.raises(ValidationError):
            validate_range(bad)
    assert validate_range(LastDays(366)) == LastDays(366)


# --- the model: a walk minute by minute through the zone ---

FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


@st.composite
def cron_field(draw: st.DrawFn, index: int) -> str:
    lo, hi = FIELDS[index]
    kind = draw(st.sampled_from(["*", "step", "value", "range", "list", "range_step"]))
    if kind == "*":
        return "*"
    if kind == "step":
        return f"*/{draw(st.integers(1, hi - lo + 1))}"
    a = draw(st.integers(lo, hi))
    if kind == "value":
        return str(a)
    b = draw(st.integers(a, hi))
    if kind == "range":
        return f"{a}-{b}"
    if kind == "range_step" and a < hi:
        # a-b/n with b > a: cronsim reads a one-value range with a step, a-a/n, as a/n (a to
        # the field's end), as it reads a/n; the model does not know that spelling
        return f"{a}-{max(b, a + 1)}/{draw(st.integers(1, hi - lo + 1))}"
    values = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=4, unique=True))
    return ",".join(map(str, values))


@st.composite
def cron_expr(draw: st.DrawFn) -> str:
    # mostly every day and month, so that a two-day walk sees occurrences
    minute = draw(cron_field(0))
    hour = draw(cron_field(1))
    dom = draw(st.one_of(st.just("*"), cron_field(2)))
    month = draw(st.one_of(st.just("*"), cron_field(3)))
    dow = draw(st.one_of(st.just("*"), cron_field(4)))
    expr = f"{minute} {hour} {dom} {month} {dow}"
    # one a create refuses (the 30th of February: cronsim's "Bad day-of-month") never reaches
    # a schedule: not a case for the walk
    try:
        validate_cron(expr, RULES)
    except ValidationError:
        assume(False)
    return expr


def _values(text: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            a, b = lo, hi
        elif "-" in span:
            a, b = map(int, span.split("-"))
        else:
            a = b = int(span)
        out.update(range(a, b + 1, int(step) if step else 1))
    return out


@cache
def _parsed(expr: str) -> tuple[list[set[int]], bool]:
    fields = expr.split()
    sets = [_values(text, lo, hi) for text, (lo, hi) in zip(fields, FIELDS, strict=True)]
    return sets, fields[2].startswith("*") or fields[4].startswith("*")


def model_matches(expr: str, wall: dt.datetime) -> bool:
    """Vixie cron's reading: day-of-month OR day-of-week when both are restricted."""
    (minutes, hours, days, months, weekdays), both = _parsed(expr)
    if wall.minute not in minutes or wall.hour not in hours or wall.month not in months:
        return False
    day_ok = wall.day in days
    weekday_ok = (wall.isoweekday() % 7) in weekdays
    return (day_ok and weekday_ok) if both else (day_ok or weekday_ok)


def model_walk(expr: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Occurrences in (start, end]: each UTC minute whose wall time matches and is seen for the
    first time; a forward jump of wall time runs, at the first minute after it, whatever it
    skipped that matched."""
    tz = zoneinfo.ZoneInfo(zone)
    found = []
    seen_up_to: dt.datetime | None = None  # the latest wall minute passed so far
    at = start.replace(second=0, microsecond=0) - dt.timedelta(hours=6)
    while at <= end:
        wall = at.astimezone(tz).replace(tzinfo=None)
        fires = False
        if seen_up_to is None or wall > seen_up_to:
            fires = model_matches(expr, wall)
            if seen_up_to is not None:
                skipped = seen_up_to + MINUTE
                while skipped < wall and not fires:
                    fires = model_matches(expr, skipped)
                    skipped += MINUTE
            seen_up_to = wall
        if fires and at > start:
            found.append(at)
        at += MINUTE
    return found


@cache
def zones() -> list[str]:
    # whole-minute offsets only: before 1972 a few zones kept offsets in seconds
    return sorted(zoneinfo.available_timezones())


@cache
def transitions(zone: str, year: int) -> list[dt.datetime]:
    tz = zoneinfo.ZoneInfo(zone)
    found = []
    at = dt.datetime(year, 1, 1, tzinfo=UTC)
    offset = at.astimezone(tz).utcoffset()
    while at.year == year:
        at += dt.timedelta(hours=6)
        now = at.astimezone(tz).utcoffset()
        if now != offset:
            found.append(at)
            offset = now
    return found


@st.composite
def window(draw: st.DrawFn) -> tuple[str, dt.datetime]:
    zone = draw(st.sampled_from(zones()))
    year = draw(st.integers(1980, 2060))
    changes = transitions(zone, year)
    if changes and draw(st.booleans()):
        start = draw(st.sampled_from(changes)) - dt.timedelta(hours=draw(st.integers(4, 30)))
    else:
        start = dt.datetime(year, 1, 1, tzinfo=UTC) + dt.timedelta(
            minutes=draw(st.integers(0, 525_000))
        )
    return zone, start + dt.timedelta(seconds=draw(st.integers(0, 59)))


@settings(max_examples=60)
@given(expr=cron_expr(), where=window())
def test_occurrences_match_a_minute_by_minute_walk_through_the_zone(
    expr: str, where: tuple[str, dt.datetime]
) -> None:
    zone, start = where
    end = start + dt.timedelta(hours=26)
    assert occurrences(expr, zone, start, end) == model_walk(expr, zone, start, end)


@settings(max_examples=40)
@given(expr=cron_expr(), where=window(), down=st.integers(1, 26 * 60))
def test_after_downtime_the_latest_occurrence_up_to_now_is_the_one_due(
    expr: str, where: tuple[str, dt.datetime], down: int
) -> None:
    zone, start = where
    first = next_occurrence(expr, zone, start, RULES)
    if first is None:
        return
    now = first + dt.timedelta(minutes=down, seconds=30)
    walked = [first, *occurrences(expr, zone, first, now)]
    assert latest_due(expr, zone, first, now, RULES) == walked[-1]


RANGES = st.one_of(st.sampled_from(list(RangeKind)), st.builds(LastDays, st.integers(1, 366)))


@given(
    rng=RANGES,
    zone=st.sampled_from(zones()),
    occurrence=st.datetimes(
        dt.datetime(1980, 1, 1), dt.datetime(2060, 1, 1), timezones=st.just(UTC)
    ),
)
def test_ranges_resolve_to_whole_local_days_before_or_up_to_the_occurrence(
    rng: RangeKind | LastDays, zone: str, occurrence: dt.datetime
) -> None:
    start, end = range_of(rng, occurrence, zone)
    today = occurrence.astimezone(zoneinfo.ZoneInfo(zone)).date()
    assert start <= end
    if rng is RangeKind.MONTH_TO_DATE:
        assert (start.day, start.month, start.year, end) == (1, today.month, today.year, today)
        return
    # every other range ends with the whole local day before the occurrence's, or earlier
    assert end < today
    if rng is RangeKind.PREVIOUS_DAY:
        assert start == end == today - dt.timedelta(days=1)
    elif rng is RangeKind.PREVIOUS_WEEK:
        assert (start.isoweekday(), end.isoweekday(), (end - start).days) == (1, 7, 6)
        assert 1 <= (today - end).days <= 7
    elif rng is RangeKind.PREVIOUS_MONTH:
        assert start.day == 1 and end.month == start.month
        assert (end + dt.timedelta(days=1)) == today.replace(day=1)
    else:
        assert isinstance(rng, LastDays)
        assert (end - start).days + 1 == rng.last_days
        assert end == today - dt.timedelta(days=1)
