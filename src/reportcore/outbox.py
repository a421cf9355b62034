"""The in-memory webhook outbox (:class:`reportcore.ports.WebhookOutbox`), re-exported by
:mod:`reportcore.testing`; :class:`reportcore.testing.InMemoryJobRepository` puts deliveries in
it as its jobs end, under the repository's lock, as the SQL repository does in one transaction.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from .jobs import Job
from .webhooks import (
    AttemptOutcome,
    Delivery,
    DeliveryState,
    Notification,
    SendResult,
    event_for,
    notification_of,
)


class InMemoryOutbox:
    """Deliveries in a dict (one per job), each claim under a lease; thread-safe."""

    def __init__(self) -> None:
        self._rows: dict[str, Delivery] = {}
        self._by_job: dict[str, str] = {}
        self._leases: dict[str, tuple[str, dt.datetime]] = {}
        self._lock = threading.Lock()

    def enqueue(self, job: Job, now: dt.datetime) -> Delivery | None:
        """Put in the delivery of an ended job with a ``notify_url`` (once per job)."""
        event = event_for(job)
        if event is None or job.notify_url is None:
            return None
        with self._lock:
            if job.id in self._by_job:
                return self._rows[self._by_job[job.id]]
            delivery = Delivery(
                id=str(uuid.uuid4()),
                job_id=job.id,
                event=event.value,
                url=job.notify_url,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            self._rows[delivery.id] = delivery
            self._by_job[job.id] = delivery.id
            return delivery

    def deliveries(self) -> list[Delivery]:
        """Every delivery, oldest first (for tests and operators)."""
        with self._lock:
            return sorted(self._rows.values(), key=lambda d: (d.created_at, d.id))

    # port

    def claim_due(
        self, now: dt.datetime, owner: str, lease_until: dt.datetime, limit: int
    ) -> list[Delivery]:
        with self._lock:
            due = [
                d
                for d in self._rows.values()
                if d.state is DeliveryState.PENDING
                and d.next_attempt_at is not None
                and d.next_attempt_at <= now
                and (d.id not in self._leases or self._leases[d.id][1] < now)
            ]
            due.sort(key=lambda d: (d.next_attempt_at or now, d.id))
            claimed = due[:limit]
            for d in claimed:
                self._leases[d.id] = (owner, lease_until)
            return claimed

    def record(self, delivery_id: str, owner: str, outcome: AttemptOutcome) -> bool:
        with self._lock:
            lease = self._leases.get(delivery_id)
            current = self._rows.get(delivery_id)
            if current is None or lease is None or lease[0] != owner:
                return False
            del self._leases[delivery_id]
            self._rows[delivery_id] = msgspec.structs.replace(
                current,
                state=outcome.state,
                attempts=outcome.attempts,
                next_attempt_at=outcome.next_attempt_at,
                last_error=outcome.last_error,
                body=current.body if current.body is not None else outcome.body,
                updated_at=outcome.at,
            )
            return True

    def notifications(self, job_ids: Sequence[str]) -> dict[str, Notification]:
        with self._lock:
            return {
                job_id: notification_of(self._rows[self._by_job[job_id]])
                for job_id in job_ids
                if job_id in self._by_job
            }


class SentWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """One POST a :class:`RecordingWebhookSender` was asked to make."""

    url: str
    body: bytes
    headers: dict[str, str]


class RecordingWebhookSender:
    """A :class:`reportcore.ports.WebhookSender` that records each POST and answers from a
    script (``[503, 503, 200]``; a string is a transport error), 200 once it runs out."""

    def __init__(self, answers: Iterable[int | str] = ()) -> None:
        self._answers = list(answers)
        self._lock = threading.Lock()
        self.sent: list[SentWebhook] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        with self._lock:
            self.sent.append(SentWebhook(url=url, body=body, headers=dict(headers)))
            answer = self._answers.pop(0) if self._answers else 200
        if isinstance(answer, str):
            return SendResult(error=answer)
        return SendResult(status=answer)
