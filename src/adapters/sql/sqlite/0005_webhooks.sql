-- Webhooks: a job's notify_url, and the durable outbox of its delivery (see
-- ../postgres/0005_webhooks.sql); instants as fixed-width UTC text, STRICT.
ALTER TABLE report_jobs ADD COLUMN notify_url TEXT;

CREATE TABLE report_webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE REFERENCES report_jobs (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TEXT,
    last_error TEXT,
    body BLOB,
    lease_owner TEXT,
    lease_expires_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE INDEX report_webhook_deliveries_due ON report_webhook_deliveries (next_attempt_at)
WHERE state = 'pending';
