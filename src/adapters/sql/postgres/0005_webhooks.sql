-- Webhooks: a job's notify_url, and the durable outbox of its delivery.
--
-- Additive: the old service never sets notify_url, so its rows get no delivery. The delivery
-- is inserted in the same transaction as the job's terminal status (sql/jobs.sql,
-- enqueue_delivery), one per job; senders claim due ones under a lease, so a sender that dies
-- leaves them to another once the lease ends.
ALTER TABLE report_jobs ADD COLUMN IF NOT EXISTS notify_url TEXT;

CREATE TABLE IF NOT EXISTS report_webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE REFERENCES report_jobs (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ,
    last_error TEXT,
    body BYTEA,
    lease_owner TEXT,
    lease_expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- the senders' poll reads only the pending slice, soonest first
CREATE INDEX IF NOT EXISTS report_webhook_deliveries_due_idx
    ON report_webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
