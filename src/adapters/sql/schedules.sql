-- The schedule repository's statements (adapters/sql_schedules.py), written once for every
-- engine, as ../jobs.sql: :name a parameter, {name} a piece of <engine>/dialect.sql, {columns}
-- the columns of report_schedules. The scheduler's writes are each one conditional UPDATE.

-- name: count_schedules
SELECT count(*) AS n FROM report_schedules WHERE tenant_id = :tenant_id

-- name: insert_schedule
INSERT INTO report_schedules ({columns}) VALUES ({values})
RETURNING {columns}

-- name: select_schedule
SELECT {columns} FROM report_schedules WHERE id = :id AND tenant_id = :tenant_id

-- name: find_schedules
SELECT {columns} FROM report_schedules WHERE tenant_id = :tenant_id

-- name: update_schedule
UPDATE report_schedules
SET name = :name, job = :job, cron = :cron, timezone = :timezone, date_range = :date_range,
    active = :active, next_run_at = :next_run_at, updated_at = :updated_at,
    pending = CASE WHEN :active THEN pending ELSE NULL END,
    claimed_at = CASE WHEN :active THEN claimed_at ELSE NULL END
WHERE id = :id AND tenant_id = :tenant_id AND {as_read}
RETURNING {columns}

-- name: delete_schedule
DELETE FROM report_schedules WHERE id = :id AND tenant_id = :tenant_id RETURNING id

-- The due schedules and the stuck claims, each read through its own partial index (an OR of
-- the two read the whole table: 300,000 rows for a few due ones); a row that is both is read
-- once, from the first half.
-- name: due_schedules
SELECT {columns} FROM (
    SELECT {columns} FROM report_schedules
    WHERE {is_active} AND next_run_at <= :now
    ORDER BY next_run_at, id LIMIT :limit
) AS due
UNION ALL
SELECT {columns} FROM (
    SELECT {columns} FROM report_schedules
    WHERE pending IS NOT NULL AND claimed_at < :stuck_before
      AND NOT ({is_active} AND next_run_at IS NOT NULL AND next_run_at <= :now)
    ORDER BY claimed_at, id LIMIT :limit
) AS stuck
ORDER BY next_run_at, id LIMIT :limit

-- The claim: next_run_at moves on only from the value the scheduler read, so of several
-- schedulers exactly one wins; a PATCH writes only over the row it read (update_schedule),
-- so of a scheduler and a PATCH the later one reads again.
-- name: claim_schedule
UPDATE report_schedules
SET next_run_at = :next_run_at, pending = :occurrence, claimed_at = :now
WHERE id = :id AND {is_active} AND next_run_at = :expected AND pending IS NULL
RETURNING {columns}

-- name: record_run
UPDATE report_schedules
SET last_run_at = :occurrence, last_job_id = :job_id, last_error = NULL, skipped_in_a_row = 0,
    pending = NULL, claimed_at = NULL
WHERE id = :id AND pending = :occurrence

-- name: record_skip
UPDATE report_schedules
SET last_error = :reason, last_skipped_at = :occurrence,
    skipped_in_a_row = skipped_in_a_row + 1, pending = NULL, claimed_at = NULL
WHERE id = :id AND pending = :occurrence

-- name: schedule_counts
SELECT
    COALESCE(SUM(CASE WHEN {is_active} THEN 1 ELSE 0 END), 0) AS active,
    COALESCE(SUM(CASE WHEN {is_active} THEN 0 ELSE 1 END), 0) AS paused,
    COALESCE(SUM(CASE WHEN {is_active} AND skipped_in_a_row > 0 THEN 1 ELSE 0 END), 0)
        AS skipping
FROM report_schedules
