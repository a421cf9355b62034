-- The unique index idempotent creates rely on, made valid where it is not.
--
-- A unique index on (tenant_id, idempotency_key) built with CREATE INDEX CONCURRENTLY that
-- failed (on a duplicate, a cancel, a timeout) stays behind marked invalid: INSERT ... ON
-- CONFLICT never infers an invalid index, so every create with a key would fail.
-- 0001 took such an index for the guard and created none; here it is rebuilt in place. If
-- rows still share a key, REINDEX stops this migration naming the key: the rows are the
-- operator's to settle (the old service's data), then `reportsvc migrate` again.
DO $$
DECLARE
    candidate regclass;
    valid boolean;
BEGIN
    -- the matching index, a valid one first (0001 recognises it the same way)
    SELECT i.indexrelid::regclass, i.indisvalid INTO candidate, valid
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
    ORDER BY i.indisvalid DESC, i.indexrelid
    LIMIT 1;
    IF candidate IS NULL THEN
        CREATE UNIQUE INDEX report_jobs_tenant_id_idempotency_key_key
            ON report_jobs (tenant_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
    ELSIF NOT valid THEN
        EXECUTE format('REINDEX INDEX %s', candidate);
    END IF;
END
$$;
