-- Schedules (reportcore.schedules): a job template created at each occurrence of a cron
-- expression in a time zone.
--
-- Additive: report_jobs gets two nullable columns (the schedule that created a job and the
-- occurrence it was for); the old service neither reads nor writes them. A deleted schedule
-- leaves its jobs as they are, hence no foreign key.
ALTER TABLE report_jobs ADD COLUMN IF NOT EXISTS schedule_id TEXT;
ALTER TABLE report_jobs ADD COLUMN IF NOT EXISTS scheduled_for TIMESTAMPTZ;

-- list jobs ?schedule_id=: a tenant's jobs of one schedule, newest first
CREATE INDEX IF NOT EXISTS report_jobs_schedule_idx
    ON report_jobs (tenant_id, schedule_id, created_at DESC)
    WHERE schedule_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS report_schedules (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_by TEXT,
    name TEXT,
    job JSONB NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    date_range JSONB NOT NULL,
    active BOOLEAN NOT NULL DEFAULT true,
    next_run_at TIMESTAMPTZ,
    last_run_at TIMESTAMPTZ,
    last_job_id TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    last_error TEXT,
    last_skipped_at TIMESTAMPTZ,
    skipped_in_a_row INTEGER NOT NULL DEFAULT 0,
    -- an occurrence claimed whose job is not yet known to exist, and when it was claimed
    pending TIMESTAMPTZ,
    claimed_at TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS report_schedules_tenant_idx
    ON report_schedules (tenant_id, created_at DESC);
-- the schedulers' poll reads only the active slice, soonest first
CREATE INDEX IF NOT EXISTS report_schedules_due_idx
    ON report_schedules (next_run_at) WHERE active;
