-- Cancelled or failed jobs whose dead attempts' leftovers recovery has not discarded yet (the
-- PostgreSQL migration of the same name; sql/jobs.sql: leftovers). Replaces 0009's index.
CREATE INDEX report_jobs_leftovers ON report_jobs (lease_expires_at)
WHERE status IN ('cancelled', 'failed') AND lease_expires_at IS NOT NULL;
DROP INDEX IF EXISTS report_jobs_cancelled_leftovers;
