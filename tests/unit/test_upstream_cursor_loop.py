"""The feed's repeated-cursor check in bounded memory: a short circle is caught at the first
repeat, a circle longer than the cursors it keeps within about twice its length, and a feed
that never repeats is never stopped."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from adapters.upstream.pagers import CursorLoop


def steps_until_caught(cursors: Iterable[str], loop: CursorLoop, cap: int) -> int:
    for n, cursor in enumerate(cursors, start=1):
        if loop.repeats(cursor):
            return n
        assert n < cap, "the circle was never found"
    raise AssertionError("unreachable")


def test_a_short_circle_is_caught_at_its_first_repeat() -> None:
    loop = CursorLoop(recent=8)
    assert steps_until_caught(itertools.cycle(["c1", "c2"]), loop, 10) == 3


@pytest.mark.parametrize("length", [9, 50, 333, 1000])
def test_a_circle_longer_than_the_kept_cursors_is_caught_within_about_twice_its_length(
    length: int,
) -> None:
    loop = CursorLoop(recent=8)
    lead_in = [f"lead-{n}" for n in range(37)]
    cursors = itertools.chain(lead_in, itertools.cycle([f"c{n}" for n in range(length)]))
    steps = steps_until_caught(cursors, loop, cap=10 * length + 100)
    assert steps <= 37 + 3 * length + 8


def test_cursors_that_never_repeat_are_never_taken_for_a_circle_and_memory_stays_bounded() -> None:
    loop = CursorLoop(recent=16)
    assert not any(loop.repeats(str(n)) for n in range(100_000))
    assert len(loop._recent) == len(loop._recent_set) == 16
