-- The embedded default's table: the PostgreSQL one's columns, instants as fixed-width UTC
-- text (text order is time order), STRICT so that a value of the wrong type is refused.
CREATE TABLE report_jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    requested_by TEXT,
    job_type TEXT NOT NULL,
    format TEXT NOT NULL,
    farm_id TEXT,
    barn_id TEXT,
    batch_id TEXT,
    start_date TEXT,
    end_date TEXT,
    filters TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued',
    progress_pct INTEGER NOT NULL DEFAULT 0 CHECK (progress_pct BETWEEN 0 AND 100),
    file_path TEXT,
    file_name TEXT,
    mime_type TEXT,
    size_bytes INTEGER,
    sha256 TEXT,
    expires_at TEXT,
    error_code TEXT,
    error_message TEXT,
    idempotency_key TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_owner TEXT,
    lease_expires_at TEXT,
    enqueued_at TEXT,
    file_deleted_at TEXT
) STRICT;

CREATE UNIQUE INDEX report_jobs_tenant_key ON report_jobs (tenant_id, idempotency_key)
WHERE idempotency_key IS NOT NULL;

CREATE INDEX report_jobs_tenant_created ON report_jobs (tenant_id, created_at, id);

-- the recovery pass's three queries each read a small slice of the table
CREATE INDEX report_jobs_running_lease ON report_jobs (lease_expires_at, updated_at)
WHERE status = 'running';

CREATE INDEX report_jobs_unpublished ON report_jobs (updated_at)
WHERE status = 'queued' AND enqueued_at IS NULL;

CREATE INDEX report_jobs_expiring ON report_jobs (expires_at)
WHERE status = 'succeeded' AND file_deleted_at IS NULL;
