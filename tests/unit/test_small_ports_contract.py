"""The contract suites of the two one-method ports, run over every adapter of each: ``Clock``
(the system's, the scaled one of the integration tests, the core's fake) and ``IdSource``
(random ids, the core's sequence). The ports with state have theirs in tests/integration
(``test_*_contract.py``); these need no service.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from adapters.clock import ScaledClock, SystemClock
from reportcore.ids import RandomIds
from reportcore.ports import Clock, IdSource
from reportcore.testing import FakeClock, SequentialIds

ANCHOR = dt.datetime(2026, 3, 29, 0, 59, tzinfo=dt.UTC)

CLOCKS: dict[str, Callable[[], Clock]] = {
    "system": SystemClock,
    "scaled": lambda: ScaledClock(ANCHOR, 60.0),
    "fake": FakeClock,
    "fake, set in another zone": lambda: FakeClock(
        dt.datetime(2026, 3, 29, 7, 59, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    ),
}
ID_SOURCES: dict[str, Callable[[], IdSource]] = {
    "random": RandomIds,
    "sequential": SequentialIds,
}


@pytest.fixture(params=sorted(CLOCKS))
def clock(request: pytest.FixtureRequest) -> Clock:
    return CLOCKS[request.param]()


@pytest.fixture(params=sorted(ID_SOURCES))
def ids(request: pytest.FixtureRequest) -> IdSource:
    return ID_SOURCES[request.param]()


def test_a_clock_is_the_port(clock: Clock) -> None:
    assert isinstance(clock, Clock)


def test_a_clock_tells_an_aware_instant_with_no_offset_from_utc(clock: Clock) -> None:
    now = clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == dt.timedelta(0)


def test_a_clock_never_goes_back_between_two_readings(clock: Clock) -> None:
    readings = [clock.now() for _ in range(1_000)]
    assert readings == sorted(readings)


def test_the_system_clock_is_the_time_the_kernel_tells() -> None:
    before = time.time()
    now = SystemClock().now().timestamp()
    assert before - 1 <= now <= time.time() + 1


def test_the_scaled_clock_runs_at_its_speed_from_its_anchor() -> None:
    real = dt.datetime.now(dt.UTC)
    scaled = ScaledClock(real, 60.0)
    time.sleep(0.05)
    elapsed = (scaled.now() - real).total_seconds()
    assert 60 * 0.05 <= elapsed <= 60 * 5  # a second's scheduling delay at most


def test_an_id_source_is_the_port(ids: IdSource) -> None:
    assert isinstance(ids, IdSource)


def test_an_id_is_a_uuid_in_its_canonical_text(ids: IdSource) -> None:
    for _ in range(100):
        new = ids.new_id()
        assert str(uuid.UUID(new)) == new


def test_no_id_is_given_twice_even_to_threads_asking_at_once(ids: IdSource) -> None:
    given: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(given))

    def ask(into: list[str]) -> None:
        start.wait()
        into.extend(ids.new_id() for _ in range(500))

    threads = [threading.Thread(target=ask, args=(into,)) for into in given]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [new for into in given for new in into]
    assert len(set(every)) == len(every) == 4_000


def test_random_ids_are_version_4_and_a_fresh_sequence_starts_again() -> None:
    assert {uuid.UUID(RandomIds().new_id()).version for _ in range(20)} == {4}
    first, again = SequentialIds(), SequentialIds()
    assert [first.new_id() for _ in range(3)] == [again.new_id() for _ in range(3)]


def test_the_fake_clock_refuses_a_naive_instant_which_names_no_moment() -> None:
    with pytest.raises(ValueError, match="no zone"):
        FakeClock(dt.datetime(2026, 3, 29, 1, 0))
    clock = FakeClock()
    with pytest.raises(ValueError, match="no zone"):
        clock.set(dt.datetime(2026, 3, 29, 1, 0))
    bangkok = dt.timezone(dt.timedelta(hours=7))
    clock.set(dt.datetime(2026, 3, 29, 8, 0, tzinfo=bangkok))
    assert clock.now() == dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC)
    assert clock.now().tzinfo is dt.UTC
