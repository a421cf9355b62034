"""The job lifecycle as data: which event moves which status where.

``queued -> running -> succeeded | failed | cancelled``, ``queued -> cancelled``, and
``running -> queued`` only for a retry. Terminal states never change again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .errors import InvalidTransition
from .jobs import JobStatus


class Event(enum.StrEnum):
    """What can happen to a job."""

    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    RETRY = "retry"


TRANSITIONS: Mapping[tuple[JobStatus, Event], JobStatus] = {
    (JobStatus.QUEUED, Event.CLAIM): JobStatus.RUNNING,
    (JobStatus.QUEUED, Event.CANCEL): JobStatus.CANCELLED,
    (JobStatus.RUNNING, Event.SUCCEED): JobStatus.SUCCEEDED,
    (JobStatus.RUNNING, Event.FAIL): JobStatus.FAILED,
    (JobStatus.RUNNING, Event.CANCEL): JobStatus.CANCELLED,
    (JobStatus.RUNNING, Event.RETRY): JobStatus.QUEUED,
}

#: the statuses a job has not finished in (some event still moves it): queued and running
UNFINISHED: frozenset[JobStatus] = frozenset(status for status, _ in TRANSITIONS)


def apply(status: JobStatus, event: Event) -> JobStatus:
    """The status after ``event``; raises :class:`InvalidTransition` if the lifecycle forbids it."""
    target = TRANSITIONS.get((status, event))
    if target is None:
        raise InvalidTransition(status.value, event.value)
    return target


def sources_of(event: Event) -> frozenset[JobStatus]:
    """The statuses from which ``event`` is allowed (for conditional updates in adapters)."""
    return frozenset(src for (src, ev) in TRANSITIONS if ev is event)


def can(status: JobStatus, event: Event) -> bool:
    """Whether ``event`` may happen in ``status``."""
    return (status, event) in TRANSITIONS
