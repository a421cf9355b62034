"""The in-memory :class:`reportcore.ports.ScheduleRepository` (re-exported by
``reportcore.testing``), held to the same contract suite as the SQL one."""

from __future__ import annotations

import datetime as dt
import threading

import msgspec

from .errors import ServiceUnavailable
from .ports import ScheduleCounts
from .requests import Cursor
from .schedules import Schedule


class InMemoryScheduleRepository:
    """Schedules in a dict, guarded by a lock; each write is one atomic conditional change."""

    def __init__(self) -> None:
        self._rows: dict[str, Schedule] = {}
        self._lock = threading.Lock()
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise ServiceUnavailable("schedule store is not available")

    @staticmethod
    def _copy(schedule: Schedule) -> Schedule:
        return msgspec.convert(msgspec.to_builtins(schedule), Schedule)

    def add(self, schedule: Schedule, max_per_tenant: int) -> Schedule | None:
        with self._lock:
            self._check()
            mine = sum(1 for s in self._rows.values() if s.tenant_id == schedule.tenant_id)
            if mine >= max_per_tenant:
                return None
            self._rows[schedule.id] = self._copy(schedule)
            return self._copy(schedule)

    def get(self, schedule_id: str, tenant_id: str) -> Schedule | None:
        with self._lock:
            self._check()
            found = self._rows.get(schedule_id)
            if found is None or found.tenant_id != tenant_id:
                return None
            return self._copy(found)

    def find(self, tenant_id: str, after: Cursor | None, limit: int) -> list[Schedule]:
        with self._lock:
            self._check()
            rows = [s for s in self._rows.values() if s.tenant_id == tenant_id]
        if after is not None:
            rows = [s for s in rows if (s.created_at, s.id) < (after.created_at, after.id)]
        rows.sort(key=lambda s: (s.created_at, s.id), reverse=True)
        return [self._copy(s) for s in rows[:limit]]

    def update(self, schedule: Schedule, read: Schedule) -> Schedule | None:
        with self._lock:
            self._check()
            current = self._rows.get(schedule.id)
            if current is None or current.tenant_id != schedule.tenant_id:
                return None
            if (current.updated_at, current.next_run_at) != (read.updated_at, read.next_run_at):
                return None
            new = msgspec.structs.replace(
                current,
                name=schedule.name,
                job=schedule.job,
                cron=schedule.cron,
                timezone=schedule.timezone,
                range=schedule.range,
                active=schedule.active,
                next_run_at=schedule.next_run_at,
                updated_at=schedule.updated_at,
                pending=current.pending if schedule.active else None,
                claimed_at=current.claimed_at if schedule.active else None,
            )
            self._rows[schedule.id] = new
            return self._copy(new)

    def delete(self, schedule_id: str, tenant_id: str) -> bool:
        with self._lock:
            self._check()
            found = self._rows.get(schedule_id)
            if found is None or found.tenant_id != tenant_id:
                return False
            del self._rows[schedule_id]
            return True

    def due(self, now: dt.datetime, stuck_before: dt.datetime, limit: int) -> list[Schedule]:
        with self._lock:
            self._check()
            rows = [
                s
                for s in self._rows.values()
                if (s.active and s.next_run_at is not None and s.next_run_at <= now)
                or (
                    s.pending is not None
                    and s.claimed_at is not None
                    and s.claimed_at < stuck_before
                )
            ]
        rows.sort(key=lambda s: (s.next_run_at or now, s.id))
        return [self._copy(s) for s in rows[:limit]]

    def claim(
        self,
        schedule_id: str,
        expected: dt.datetime,
        occurrence: dt.datetime,
        next_run_at: dt.datetime | None,
        now: dt.datetime,
    ) -> Schedule | None:
        with self._lock:
            self._check()
            current = self._rows.get(schedule_id)
            if current is None or not current.active or current.next_run_at != expected:
                return None
            if current.pending is not None:  # the occurrence claimed before is not made yet
                return None
            new = msgspec.structs.replace(
                current, next_run_at=next_run_at, pending=occurrence, claimed_at=now
            )
            self._rows[schedule_id] = new
            return self._copy(new)

    def _finish(self, schedule_id: str, occurrence: dt.datetime, **fields: object) -> None:
        with self._lock:
            self._check()
            current = self._rows.get(schedule_id)
            if current is None or current.pending != occurrence:
                return
            self._rows[schedule_id] = msgspec.structs.replace(
                current, pending=None, claimed_at=None, **fields
            )

    def record_run(self, schedule_id: str, occurrence: dt.datetime, job_id: str) -> None:
        self._finish(
            schedule_id,
            occurrence,
            last_run_at=occurrence,
            last_job_id=job_id,
            last_error=None,
            skipped_in_a_row=0,
        )

    def record_skip(self, schedule_id: str, occurrence: dt.datetime, reason: str) -> None:
        with self._lock:
            skipped = self._rows[schedule_id].skipped_in_a_row if schedule_id in self._rows else 0
        self._finish(
            schedule_id,
            occurrence,
            last_error=reason,
            last_skipped_at=occurrence,
            skipped_in_a_row=skipped + 1,
        )

    def counts(self) -> ScheduleCounts:
        with self._lock:
            self._check()
            rows = list(self._rows.values())
        return ScheduleCounts(
            active=sum(1 for s in rows if s.active),
            paused=sum(1 for s in rows if not s.active),
            skipping=sum(1 for s in rows if s.active and s.skipped_in_a_row > 0),
        )
