-- Schedules (see ../postgres/0006_schedules.sql); instants as fixed-width UTC text, JSON as
-- text, booleans as 0/1, STRICT.
ALTER TABLE report_jobs ADD COLUMN schedule_id TEXT;
ALTER TABLE report_jobs ADD COLUMN scheduled_for TEXT;

CREATE INDEX report_jobs_schedule ON report_jobs (tenant_id, schedule_id, created_at DESC)
WHERE schedule_id IS NOT NULL;

CREATE TABLE report_schedules (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_by TEXT,
    name TEXT,
    job TEXT NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    date_range TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    next_run_at TEXT,
    last_run_at TEXT,
    last_job_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_error TEXT,
    last_skipped_at TEXT,
    skipped_in_a_row INTEGER NOT NULL DEFAULT 0,
    pending TEXT,
    claimed_at TEXT
) STRICT;

CREATE INDEX report_schedules_tenant ON report_schedules (tenant_id, created_at DESC);
CREATE INDEX report_schedules_due ON report_schedules (next_run_at) WHERE active = 1;
