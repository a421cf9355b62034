-- Failed jobs join the cancelled ones in the recovery pass's leftovers (sql/jobs.sql:
-- leftovers): a job failed after an attempt that died, or failed WORKER_LOST by recovery,
-- keeps the instant it failed in lease_expires_at until what the dead attempts left (a
-- temporary, an open upload) is discarded. The discard at the failure was the only one, and
-- a store that refused it once (a permission, a lock, an outage) left the files for good.
--
-- An index only: the old service neither needs nor sees it. Rows failed before this release
-- have no lease end and are not listed. 0009's index (cancelled rows alone) is left as it
-- is: dropping it in this transaction would wait behind every open reader of report_jobs
-- (and deadlock a create that reads the table before it writes), where building this one
-- waits only for writers; it is a few rows, and the old release's query still uses it.
CREATE INDEX IF NOT EXISTS report_jobs_leftovers_idx
    ON report_jobs (lease_expires_at)
    WHERE status IN ('cancelled', 'failed') AND lease_expires_at IS NOT NULL;
