"""The delivery use case: send the webhooks that are due from the outbox, and record how it went.

One call is one pass; a loop (the worker's) calls it again and again. Every claimed delivery is
leased, so a sender that dies mid-pass leaves its deliveries to be sent again once the lease
ends: a receiver may see a delivery twice (same ``X-FarmIQ-Delivery``), never not at all.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from .ports import Clock, JobRepository, WebhookOutbox, WebhookSender
from .webhooks import (
    Delivery,
    RenderJob,
    SendResult,
    WebhookRules,
    after_attempt,
    delivery_headers,
    event_body,
)


class DeliveryPass(msgspec.Struct, kw_only=True):
    """What one pass did."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def attempted(self) -> int:
        """Deliveries attempted in this pass."""
        return self.delivered + self.retrying + self.failed


def _body(delivery: Delivery, jobs: JobRepository, render: RenderJob) -> bytes | None:
    """The stored body of an earlier attempt, else one built from the job as it is now."""
    if delivery.body is not None:
        return delivery.body
    job = jobs.get(delivery.job_id)
    if job is None:
        return None
    return event_body(delivery.event, render(job))


def deliver_due(
    *,
    outbox: WebhookOutbox,
    jobs: JobRepository,
    sender: WebhookSender,
    clock: Clock,
    rules: WebhookRules,
    render: RenderJob,
    owner: str,
) -> DeliveryPass:
    """Claim up to ``rules.batch`` due deliveries, POST each once, and record the outcome:
    delivered on a 2xx, else retried after the backoff until ``rules.max_attempts``."""
    done = DeliveryPass()
    now = clock.now()
    lease_until = now + dt.timedelta(seconds=rules.lease_sec)
    for delivery in outbox.claim_due(now, owner, lease_until, rules.batch):
        body = _body(delivery, jobs, render)
        if body is None:
            # the job row is gone (deleted by hand): nothing left to announce
            result = SendResult(error="job not found")
            body = b""
            delivery = msgspec.structs.replace(delivery, attempts=rules.max_attempts - 1)
        else:
            stamp = int(clock.now().timestamp())
            headers = delivery_headers(rules.secret, delivery.id, delivery.event, stamp, body)
            result = sender.send(delivery.url, body, headers)
        outcome = after_attempt(delivery, result, body, clock.now(), rules)
        if not outbox.record(delivery.id, owner, outcome):
            continue  # our lease ran out and another sender took it over: its record counts
        if outcome.state == "delivered":
            done.delivered += 1
        elif outcome.state == "failed":
            done.failed += 1
        else:
            done.retrying += 1
    return done
