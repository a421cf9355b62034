"""The SQL schedule repository (:class:`reportcore.ports.ScheduleRepository`), for every engine.

It lives beside the job repository, as the webhook outbox does: same database, same dialect,
same sessions; its statements are ``sql/schedules.sql``. The scheduler's claim is one
conditional UPDATE (``next_run_at`` moves on only from the value read), so schedulers in any
number of processes take each occurrence once; a create takes a per-tenant turn (PostgreSQL:
a transaction-scoped advisory lock; SQLite serialises writers) so the cap is exact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from importlib import resources
from typing import Any

import msgspec

from adapters.sql_files import named_blocks
from adapters.sql_jobs import Rows, SqlJobRepository, Statements
from adapters.sql_rows import Dialect
from reportcore.ports import ScheduleCounts
from reportcore.requests import Cursor
from reportcore.schedules import JobTemplate, Schedule, ScheduleRange

# the columns of report_schedules, named as Schedule's fields but for "range" (a keyword)
COLUMNS = (
    "id",
    "tenant_id",
    "created_by",
    "name",
    "job",
    "cron",
    "timezone",
    "date_range",
    "active",
    "next_run_at",
    "last_run_at",
    "last_job_id",
    "created_at",
    "updated_at",
    "last_error",
    "last_skipped_at",
    "skipped_in_a_row",
    "pending",
    "claimed_at",
)
_INSTANTS = frozenset(
    {
        "next_run_at",
        "last_run_at",
        "created_at",
        "updated_at",
        "last_skipped_at",
        "pending",
        "claimed_at",
    }
)


class ScheduleStatements(Statements):
    """The job repository's statements and pieces in one dialect, and ``sql/schedules.sql``'s,
    its ``{pieces}`` filled in from the engine's and its parameters spelled the same way."""

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect)
        text = resources.files("adapters").joinpath("sql", "schedules.sql").read_text("utf-8")
        fill = {
            **self._sql,
            "columns": ", ".join(COLUMNS),
            "values": ", ".join(f":{c}" for c in COLUMNS),
        }
        for name, block in named_blocks(text).items():
            self._sql[name] = self._parameters(block.format_map(fill))


class SqlScheduleRepository:
    """Schedules in ``report_schedules``, through ``repository``'s sessions."""

    def __init__(self, repository: SqlJobRepository) -> None:
        self._repository = repository
        self._dialect = repository.statements.dialect
        self._sql = ScheduleStatements(self._dialect)

    # --- rows ---

    def _row(self, schedule: Schedule) -> dict[str, Any]:
        d = self._dialect
        row: dict[str, Any] = {}
        for column in COLUMNS:
            value = getattr(schedule, "range" if column == "date_range" else column)
            if column in _INSTANTS:
                value = d.instant(value)
            elif column in ("job", "date_range"):
                value = d.json(msgspec.to_builtins(value))
            row[column] = value
        return row

    def _schedule(self, row: Mapping[str, Any]) -> Schedule:
        d = self._dialect
        values: dict[str, Any] = {}
        for column in COLUMNS:
            value = row[column]
            if column in _INSTANTS:
                value = d.read_instant(value)
            elif column == "job":
                value = msgspec.convert(d.read_json(value), JobTemplate)
            elif column == "date_range":
                value = msgspec.convert(d.read_json(value), ScheduleRange)
            elif column == "active":
                value = bool(value)
            values["range" if column == "date_range" else column] = value
        return Schedule(**values)

    def _rows(self, name: str, params: Mapping[str, Any], *, statement: str = "") -> Rows:
        with self._repository.session() as run:
            return run(statement or self._sql[name], params)

    def _at(self, value: dt.datetime | None) -> Any:
        return self._dialect.instant(value)

    # --- port ---

    def add(self, schedule: Schedule, max_per_tenant: int) -> Schedule | None:
        with self._repository.transaction() as run:
            run(self._sql["lock_tenant"], {"tenant_id": schedule.tenant_id})
            [count] = run(self._sql["count_schedules"], {"tenant_id": schedule.tenant_id})
            if count["n"] >= max_per_tenant:
                return None
            rows = run(self._sql["insert_schedule"], self._row(schedule))
            return self._schedule(rows[0])

    def get(self, schedule_id: str, tenant_id: str) -> Schedule | None:
        rows = self._rows("select_schedule", {"id": schedule_id, "tenant_id": tenant_id})
        return self._schedule(rows[0]) if rows else None

    def find(self, tenant_id: str, after: Cursor | None, limit: int) -> list[Schedule]:
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
        parts = [self._sql["find_schedules"]]
        if after is not None:
            parts.append(self._sql["find_after"])
            params["after_created_at"] = self._at(after.created_at)
            params["after_id"] = after.id
        statement = f"{' AND '.join(parts)} {self._sql['find_order']}"
        return [self._schedule(r) for r in self._rows("", params, statement=statement)]

    def update(self, schedule: Schedule, read: Schedule) -> Schedule | None:
        row = self._row(schedule)
        row["read_updated_at"] = self._at(read.updated_at)
        row["read_next_run_at"] = self._at(read.next_run_at)
        rows = self._rows("update_schedule", row)
        return self._schedule(rows[0]) if rows else None

    def delete(self, schedule_id: str, tenant_id: str) -> bool:
        return bool(self._rows("delete_schedule", {"id": schedule_id, "tenant_id": tenant_id}))

    def due(self, now: dt.datetime, stuck_before: dt.datetime, limit: int) -> list[Schedule]:
        params = {"now": self._at(now), "stuck_before": self._at(stuck_before), "limit": limit}
        return [self._schedule(r) for r in self._rows("due_schedules", params)]

    def claim(
        self,
        schedule_id: str,
        expected: dt.datetime,
        occurrence: dt.datetime,
        next_run_at: dt.datetime | None,
        now: dt.datetime,
    ) -> Schedule | None:
        rows = self._rows(
            "claim_schedule",
            {
                "id": schedule_id,
                "expected": self._at(expected),
                "occurrence": self._at(occurrence),
                "next_run_at": self._at(next_run_at),
                "now": self._at(now),
            },
        )
        return self._schedule(rows[0]) if rows else None

    def record_run(self, schedule_id: str, occurrence: dt.datetime, job_id: str) -> None:
        params = {"id": schedule_id, "occurrence": self._at(occurrence), "job_id": job_id}
        self._rows("record_run", params)

    def record_skip(self, schedule_id: str, occurrence: dt.datetime, reason: str) -> None:
        params = {"id": schedule_id, "occurrence": self._at(occurrence), "reason": reason}
        self._rows("record_skip", params)

    def counts(self) -> ScheduleCounts:
        [row] = self._rows("schedule_counts", {})
        return ScheduleCounts(
            active=int(row["active"]), paused=int(row["paused"]), skipping=int(row["skipping"])
        )
