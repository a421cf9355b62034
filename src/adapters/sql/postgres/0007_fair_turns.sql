-- Fairness between tenants (sql/jobs.sql: next_in_turn, count_unfinished): indexes only.
--
-- A worker asks whose turn it is before each job it takes, and a create under the per-tenant
-- cap counts the tenant's unfinished jobs; these keep both to a few index probes however long
-- the table's history. Additive: the old service neither needs nor sees them.

-- the tenants with queued jobs, and each one's oldest queued job
CREATE INDEX IF NOT EXISTS report_jobs_queued_tenant_idx
    ON report_jobs (tenant_id, created_at)
    WHERE status = 'queued';

-- the jobs each tenant is running
CREATE INDEX IF NOT EXISTS report_jobs_running_tenant_idx
    ON report_jobs (tenant_id)
    WHERE status = 'running';

-- when each tenant's latest job started (max(started_at) reads one entry)
CREATE INDEX IF NOT EXISTS report_jobs_tenant_started_idx
    ON report_jobs (tenant_id, started_at)
    WHERE started_at IS NOT NULL;
