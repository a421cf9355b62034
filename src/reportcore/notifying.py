"""The delivery use cases: claim the webhooks that are due from the outbox, attempt each, and
record how it went.

A sender claims only as many deliveries as it can attempt at once (:func:`claim_deliveries`)
and attempts each on a thread of its own (:func:`attempt_delivery`; the worker's pool), so one
slow receiver delays no other. :func:`deliver_due` is one pass of both on one thread. Every
claimed delivery is leased, so a sender that dies mid-attempt leaves it to be sent again once
the lease ends: a receiver may see a delivery twice (same ``X-FarmIQ-Delivery``), never not at
all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from .errors import ValidationError
from .jobs import Job
from .ports import Clock, JobRepository, WebhookOutbox, WebhookSender
from .webhooks import (
    Delivery,
    DeliveryState,
    Notification,
    RenderJob,
    SendResult,
    WebhookRules,
    after_attempt,
    check_notify_url,
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


def _refusal(delivery: Delivery, body: bytes | None, rules: WebhookRules) -> str | None:
    """Why this delivery must not be sent at all, if it must not."""
    if body is None:
        return "job not found"  # the job row is gone (deleted by hand)
    try:
        check_notify_url(delivery.url, rules.allowed_hosts)
    except ValidationError as exc:
        return f"not sent: {exc.message}"
    return None


def claim_deliveries(
    *, outbox: WebhookOutbox, clock: Clock, rules: WebhookRules, owner: str, limit: int
) -> list[Delivery]:
    """Lease up to ``limit`` due deliveries to ``owner`` for ``rules.lease_sec``, oldest first.

    Claim only as many as can be attempted at once: a claimed delivery waits for nothing but
    its own attempt, so its lease (longer than an attempt's deadline) never runs out while it
    waits behind another receiver."""
    now = clock.now()
    return outbox.claim_due(now, owner, now + dt.timedelta(seconds=rules.lease_sec), limit)


def attempt_delivery(
    delivery: Delivery,
    *,
    outbox: WebhookOutbox,
    jobs: JobRepository,
    sender: WebhookSender,
    clock: Clock,
    rules: WebhookRules,
    render: RenderJob,
    owner: str,
) -> DeliveryState | None:
    """POST one claimed delivery once and record the outcome: delivered on a 2xx, else retried
    after the backoff until ``rules.max_attempts``. ``None`` when ``owner`` lost the lease
    meanwhile (another sender took it over, and its record counts)."""
    built = _body(delivery, jobs, render)
    body = built or b""
    refusal = _refusal(delivery, built, rules)
    if refusal is not None:
        # nothing that a retry could change: the attempt is the last one
        result = SendResult(error=refusal)
        delivery = msgspec.structs.replace(delivery, attempts=rules.max_attempts - 1)
    else:
        stamp = int(clock.now().timestamp())
        headers = delivery_headers(rules.secret, delivery.id, delivery.event, stamp, body)
        result = sender.send(delivery.url, body, headers)
    outcome = after_attempt(delivery, result, body, clock.now(), rules)
    if not outbox.record(delivery.id, owner, outcome):
        return None
    return outcome.state


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
    """Claim up to ``rules.batch`` due deliveries and attempt each in turn (one pass, one
    thread; the worker attempts them concurrently instead, see :func:`attempt_delivery`)."""
    done = DeliveryPass()
    claimed = claim_deliveries(
        outbox=outbox, clock=clock, rules=rules, owner=owner, limit=rules.batch
    )
    for delivery in claimed:
        state = attempt_delivery(
            delivery,
            outbox=outbox,
            jobs=jobs,
            sender=sender,
            clock=clock,
            rules=rules,
            render=render,
            owner=owner,
        )
        if state is DeliveryState.DELIVERED:
            done.delivered += 1
        elif state is DeliveryState.FAILED:
            done.failed += 1
        elif state is DeliveryState.PENDING:
            done.retrying += 1
    return done


def notifications_of(jobs: Sequence[Job], outbox: WebhookOutbox) -> dict[str, Notification]:
    """The webhook state of each job that has one, by job id (asks only about jobs that have a
    ``notify_url``: a listing without webhooks costs no query)."""
    wanted = [job.id for job in jobs if job.notify_url is not None]
    return outbox.notifications(wanted) if wanted else {}
