"""The lifecycle table against the contract's own words, written out here independently."""

from __future__ import annotations

import itertools

import pytest

from reportcore.errors import InvalidTransition
from reportcore.jobs import TERMINAL_STATUSES, JobStatus
from reportcore.lifecycle import Event, apply, can, sources_of

# The contract: queued -> running -> succeeded | failed | cancelled, queued -> cancelled, and
# running -> queued only for a retry. Spelled as plain strings so that it owes nothing to the
# table under test.
EXPECTED = {
    ("queued", "claim"): "running",
    ("queued", "cancel"): "cancelled",
    ("running", "succeed"): "succeeded",
    ("running", "fail"): "failed",
    ("running", "cancel"): "cancelled",
    ("running", "retry"): "queued",
}
ALL_PAIRS = list(itertools.product(JobStatus, Event))


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS, ids=lambda v: str(v))
def test_every_status_and_event_moves_exactly_as_the_contract_says(
    status: JobStatus, event: Event
) -> None:
    expected = EXPECTED.get((status.value, event.value))
    assert can(status, event) is (expected is not None)
    if expected is None:
        with pytest.raises(InvalidTransition) as raised:
            apply(status, event)
        assert raised.value.current == status.value
        assert raised.value.event == event.value
        assert raised.value.code == "INVALID_TRANSITION"
        assert repr(event.value) in raised.value.message
    else:
        assert apply(status, event).value == expected


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES), ids=str)
def test_terminal_states_never_change_again(status: JobStatus) -> None:
    assert status.is_terminal
    assert not any(can(status, event) for event in Event)


def test_only_queued_and_running_are_not_terminal() -> None:
    assert {s.value for s in JobStatus if not s.is_terminal} == {"queued", "running"}


@pytest.mark.parametrize("event", list(Event), ids=str)
def test_sources_of_an_event_are_the_statuses_it_may_happen_in(event: Event) -> None:
    expected = {src for (src, ev) in EXPECTED if ev == event.value}
    assert {s.value for s in sources_of(event)} == expected


def test_a_job_can_only_go_back_to_queued_from_running() -> None:
    into_queued = {src for (src, _ev), dst in EXPECTED.items() if dst == "queued"}
    assert into_queued == {"running"}
    running = JobStatus.RUNNING
    back = [e for e in Event if can(running, e) and apply(running, e) is JobStatus.QUEUED]
    assert back == [Event.RETRY]


def test_an_invalid_transition_names_the_target_when_known() -> None:
    error = InvalidTransition("succeeded", "cancel", "cancelled")
    assert error.target == "cancelled"
    assert "'cancelled'" in error.message
    assert "'?'" in InvalidTransition("failed", "claim").message
