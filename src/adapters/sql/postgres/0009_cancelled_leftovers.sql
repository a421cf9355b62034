-- The recovery pass discards what a job cancelled while running left (a dead worker's
-- temporary, a file kept but never recorded, an open upload) once the lease it had at the
-- cancel has run out (sql/jobs.sql: cancelled_leftovers). The rows waiting for that are few:
-- a cancelled job leaves this index once its leftovers are discarded.
--
-- An index only: the old service neither needs nor sees it. Rows cancelled before this
-- release have no lease end (the cancel cleared it) and are not listed.
CREATE INDEX IF NOT EXISTS report_jobs_cancelled_leftovers_idx
    ON report_jobs (lease_expires_at)
    WHERE status = 'cancelled' AND lease_expires_at IS NOT NULL;
