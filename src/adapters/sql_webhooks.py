"""The SQL webhook outbox (:class:`reportcore.ports.WebhookOutbox`), for every engine.

It lives beside the job repository: same database, same dialect, same named statements
(``sql/jobs.sql``); the repository puts deliveries in as jobs end (in the transaction that
ends them), this class hands due ones to a sender. PostgreSQL claims with ``FOR UPDATE SKIP
LOCKED``, so senders in several workers never take the same delivery at once; SQLite
serialises its writers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.sql_jobs import SqlJobRepository
from reportcore.webhooks import (
    AttemptOutcome,
    Delivery,
    DeliveryState,
    Notification,
)


class SqlWebhookOutbox:
    """The outbox in ``report_webhook_deliveries``, through ``repository``'s sessions."""

    def __init__(self, repository: SqlJobRepository) -> None:
        self._repository = repository
        self._sql = repository.statements
        self._dialect = repository.statements.dialect

    def _rows(self, name: str, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        with self._repository.session() as run:
            return run(self._sql[name], params)

    def _delivery(self, row: Mapping[str, Any]) -> Delivery:
        d = self._dialect
        body = row["body"]
        created = d.read_instant(row["created_at"])
        updated = d.read_instant(row["updated_at"])
        assert created is not None and updated is not None  # NOT NULL columns
        return Delivery(
            id=row["id"],
            job_id=row["job_id"],
            event=row["event"],
            url=row["url"],
            state=DeliveryState(row["state"]),
            attempts=row["attempts"],
            next_attempt_at=d.read_instant(row["next_attempt_at"]),
            last_error=row["last_error"],
            body=None if body is None else bytes(body),
            created_at=created,
            updated_at=updated,
        )

    def claim_due(
        self, now: dt.datetime, owner: str, lease_until: dt.datetime, limit: int
    ) -> list[Delivery]:
        d = self._dialect
        rows = self._rows(
            "claim_deliveries",
            {
                "now": d.instant(now),
                "owner": owner,
                "lease_until": d.instant(lease_until),
                "limit": limit,
            },
        )
        claimed = [self._delivery(row) for row in rows]
        # RETURNING keeps no order: the oldest due first, as the port promises
        return sorted(claimed, key=lambda x: (x.next_attempt_at or now, x.id))

    def record(self, delivery_id: str, owner: str, outcome: AttemptOutcome) -> bool:
        d = self._dialect
        rows = self._rows(
            "record_delivery",
            {
                "delivery_id": delivery_id,
                "owner": owner,
                "state": outcome.state.value,
                "attempts": outcome.attempts,
                "next_attempt_at": d.instant(outcome.next_attempt_at),
                "last_error": outcome.last_error,
                "body": outcome.body,
                "now": d.instant(outcome.at),
            },
        )
        return bool(rows)

    def notifications(self, job_ids: Sequence[str]) -> dict[str, Notification]:
        if not job_ids:
            return {}
        # the dialect's list parameter (a JSON array on SQLite, an array on PostgreSQL)
        ids = self._dialect.statuses(list(job_ids))
        rows = self._rows("delivery_notifications", {"job_ids": ids})
        return {
            row["job_id"]: Notification(
                state=DeliveryState(row["state"]),
                attempts=row["attempts"],
                last_error=row["last_error"],
            )
            for row in rows
        }
