-- Jobs cancelled while running whose leftovers recovery has not discarded yet (the
-- PostgreSQL migration of the same name; sql/jobs.sql: cancelled_leftovers).
CREATE INDEX report_jobs_cancelled_leftovers ON report_jobs (lease_expires_at)
WHERE status = 'cancelled' AND lease_expires_at IS NOT NULL;
