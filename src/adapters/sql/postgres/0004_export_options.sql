-- Export options: the xlsx format, and the options a job was created with.
--
-- All additive: a new enum value, and nullable columns that the old service neither reads
-- nor writes (its rows leave them NULL, which means "not asked": the file it always wrote).
-- Nothing here uses 'xlsx', so adding it inside this migration's transaction is allowed.
ALTER TYPE "ReportFormat" ADD VALUE IF NOT EXISTS 'xlsx';

ALTER TABLE report_jobs
    ADD COLUMN IF NOT EXISTS compression TEXT,
    ADD COLUMN IF NOT EXISTS csv JSONB,
    ADD COLUMN IF NOT EXISTS columns JSONB,
    ADD COLUMN IF NOT EXISTS timezone TEXT,
    ADD COLUMN IF NOT EXISTS row_count BIGINT;
