-- The schema of the old Node service (Prisma), created only where it is missing.
--
-- A database the old service already set up keeps its own types, table and indexes: every
-- statement is guarded, and the indexes are recognised by their columns, not their names,
-- because Prisma's index names are not something we can rely on.

DO $$
BEGIN
    CREATE TYPE "ReportJobType" AS ENUM (
        'FEED_INTAKE_EXPORT', 'KPI_FEEDING_EXPORT', 'TELEMETRY_EXPORT', 'WEIGHVISION_EXPORT'
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE TYPE "ReportFormat" AS ENUM ('csv', 'json');
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE TYPE "ReportJobStatus" AS ENUM ('queued', 'running', 'succeeded', 'failed');
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

CREATE TABLE IF NOT EXISTS report_jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    requested_by TEXT,
    job_type "ReportJobType" NOT NULL,
    format "ReportFormat" NOT NULL,
    farm_id TEXT,
    barn_id TEXT,
    batch_id TEXT,
    start_date DATE,
    end_date DATE,
    filters JSONB,
    status "ReportJobStatus" NOT NULL DEFAULT 'queued',
    progress_pct INTEGER NOT NULL DEFAULT 0,
    file_path TEXT,
    file_name TEXT,
    mime_type TEXT,
    size_bytes BIGINT,
    sha256 TEXT,
    expires_at TIMESTAMP(3),
    error_code TEXT,
    error_message TEXT,
    idempotency_key TEXT,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP(3) NOT NULL
);

-- Idempotent creates rely on this index (INSERT ... ON CONFLICT infers it by its columns).
-- A unique index on the two columns, partial on "key is not null" or not partial at all,
-- serves; one with any other predicate would not, so it does not count.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_index AS i
        WHERE i.indrelid = 'report_jobs'::regclass
          AND i.indisunique
          AND i.indexprs IS NULL
          AND (
              i.indpred IS NULL
              OR pg_get_expr(i.indpred, i.indrelid) = '(idempotency_key IS NOT NULL)'
          )
          AND ARRAY(
              SELECT a.attname::text
              FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
              JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              ORDER BY k.position
          ) = ARRAY['tenant_id', 'idempotency_key']
    ) THEN
        CREATE UNIQUE INDEX report_jobs_tenant_id_idempotency_key_key
            ON report_jobs (tenant_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
    END IF;
END
$$;

-- Listing a tenant's jobs newest first walks this index.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_index AS i
        WHERE i.indrelid = 'report_jobs'::regclass
          AND i.indexprs IS NULL
          AND i.indpred IS NULL
          AND ARRAY(
              SELECT a.attname::text
              FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
              JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              ORDER BY k.position
              LIMIT 2
          ) = ARRAY['tenant_id', 'created_at']
    ) THEN
        CREATE INDEX report_jobs_tenant_id_created_at_idx
            ON report_jobs (tenant_id, created_at DESC);
    END IF;
END
$$;
