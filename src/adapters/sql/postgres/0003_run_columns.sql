-- The worker's bookkeeping and the three new fields of the job JSON.
--
-- All additive (nullable or defaulted), and the existing columns keep their types, so the
-- old service can still read and write the table. The instants are timestamptz: new columns
-- carry no legacy, and an instant with its zone cannot be misread.
--
-- Rows the old service left queued get no enqueued_at: the recovery pass publishes them once
-- more. A duplicate message is harmless (a claim is conditional); a missing one would leave
-- the job queued forever.
ALTER TABLE report_jobs
    ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS finished_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS lease_owner TEXT,
    ADD COLUMN IF NOT EXISTS lease_expires_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS enqueued_at TIMESTAMPTZ,
    ADD COLUMN IF NOT EXISTS file_deleted_at TIMESTAMPTZ;

-- The recovery pass looks for running jobs whose lease ran out (or that have none and were
-- last touched long ago). Running jobs are few, so one small partial index serves both.
CREATE INDEX IF NOT EXISTS report_jobs_running_updated_at_idx
    ON report_jobs (updated_at)
    WHERE status = 'running';

-- ... queued jobs whose message the broker never confirmed, oldest first ...
CREATE INDEX IF NOT EXISTS report_jobs_unpublished_created_at_idx
    ON report_jobs (created_at)
    WHERE status = 'queued' AND enqueued_at IS NULL;

-- ... and files past retention that are not deleted yet.
CREATE INDEX IF NOT EXISTS report_jobs_file_expiry_idx
    ON report_jobs (expires_at)
    WHERE status = 'succeeded' AND file_deleted_at IS NULL;
