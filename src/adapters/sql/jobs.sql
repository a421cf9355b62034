-- The job repository's statements, written once for every engine.
--
-- :name is a parameter (each engine's dialect spells it, and adds the casts PostgreSQL needs);
-- {name} is a piece that differs between engines, taken from <engine>/dialect.sql; {columns}
-- and {values} are the Job's fields in order, so a new column is one edit of Job plus a
-- migration. Every state change is one conditional UPDATE ... RETURNING: :sources are the
-- statuses its event may leave and :target where it goes, both from reportcore.lifecycle.

-- name: insert_job
INSERT INTO report_jobs ({columns})
VALUES ({values})
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {columns}

-- A create under the per-tenant cap (add with max_unfinished) is one transaction: the
-- tenant's creates take turns (tenant_lock, the engine's), then count and insert. The statuses
-- are literals, the ones reportcore.lifecycle.UNFINISHED names, so that the partial indexes
-- of queued and running jobs serve the count.
-- name: count_unfinished
SELECT count(*) AS unfinished FROM report_jobs
WHERE tenant_id = :tenant_id AND (status = 'queued' OR status = 'running')

-- Whose turn it is (JobRepository.next_in_turn): among the tenants with queued jobs, the one
-- running the fewest, then the one whose latest job started longest ago (never started:
-- first; false orders before true in both engines), then the one waiting longest; its oldest
-- queued job.
-- name: next_in_turn
SELECT {columns} FROM report_jobs
WHERE status = 'queued' AND tenant_id = (
    SELECT w.tenant_id FROM (
        SELECT tenant_id, min(created_at) AS waiting_since
        FROM report_jobs WHERE status = 'queued' GROUP BY tenant_id
    ) AS w
    ORDER BY
        (SELECT count(*) FROM report_jobs r
         WHERE r.tenant_id = w.tenant_id AND r.status = 'running'),
        (SELECT max(s.started_at) FROM report_jobs s WHERE s.tenant_id = w.tenant_id) IS NOT NULL,
        (SELECT max(s.started_at) FROM report_jobs s WHERE s.tenant_id = w.tenant_id),
        w.waiting_since,
        w.tenant_id
    LIMIT 1
)
ORDER BY created_at, id
LIMIT 1

-- name: select_by_key
SELECT {columns} FROM report_jobs
WHERE tenant_id = :tenant_id AND idempotency_key = :idempotency_key

-- name: select_job
SELECT {columns} FROM report_jobs WHERE id = :id

-- name: select_tenant_job
SELECT {columns} FROM report_jobs WHERE id = :id AND tenant_id = :tenant_id

-- find: the tenant's jobs newest first, each filter of ListQuery one piece (find_after and
-- find_order are the engine's: they spell the byte-wise id order each in its own way)
-- name: find_jobs
SELECT {columns} FROM report_jobs WHERE tenant_id = :tenant_id

-- name: find_status
status = :status

-- name: find_job_type
job_type = :job_type

-- name: find_created_from
created_at >= :created_from

-- name: find_created_to
created_at <= :created_to

-- name: find_schedule_id
schedule_id = :schedule_id

-- name: mark_enqueued
UPDATE report_jobs SET enqueued_at = :at WHERE id = :id

-- name: mark_file_deleted
UPDATE report_jobs SET file_deleted_at = :at WHERE id = :id AND file_deleted_at IS NULL

-- name: claim_job
UPDATE report_jobs
SET status = :target, updated_at = :now,
    lease_owner = :owner, lease_expires_at = :lease_until,
    started_at = COALESCE(started_at, :now), attempts = attempts + 1,
    error_code = NULL, error_message = NULL
WHERE id = :id AND {status_in_sources}
RETURNING {columns}

-- A lease that ran out is lost, renewed by no one: recovery may have read the job as stale
-- already, and would requeue (or fail) it under a holder that went on exporting.
-- name: heartbeat_job
UPDATE report_jobs
SET lease_expires_at = :lease_until, updated_at = :now,
    progress_pct = {greatest}(progress_pct, {least}(:cap, COALESCE(:pct, progress_pct)))
WHERE id = :id AND status = :running AND {owned} AND lease_expires_at >= :now
RETURNING {columns}

-- The file's name and type depend on the job's type, format and compression: looked up in JSON maps the
-- core made (file_names, mime_types), so that this stays one statement and the core one truth.
-- name: succeed_job
UPDATE report_jobs
SET status = :target, updated_at = :now,
    progress_pct = 100,
    file_path = :file_path,
    file_name = {file_name_lookup},
    mime_type = {mime_type_lookup},
    size_bytes = :size_bytes, sha256 = :sha256, row_count = :row_count, expires_at = :expires_at,
    finished_at = :now, lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND {status_in_sources} AND {owned}
RETURNING {columns}

-- A worker's own end of its job (:any_lease), or recovery's of a job whose lease it read as
-- run out: only while it still is, so that a renewal after that read keeps the job with its
-- live worker (the owner alone is the same before and after a renewal). A failed job whose
-- earlier attempts died, or that recovery fails (WORKER_LOST: its attempts died), is listed
-- in leftovers from now on (SET reads the row as it was: attempts is this run's count).
-- name: fail_job
UPDATE report_jobs
SET status = :target, updated_at = :now,
    error_code = :code, error_message = :message,
    finished_at = :now, lease_owner = NULL,
    lease_expires_at = CASE WHEN attempts > 1 OR NOT :any_lease THEN :now END
WHERE id = :id AND {status_in_sources} AND {owned}
  AND (:any_lease OR lease_expires_at IS NULL OR lease_expires_at < :now)
RETURNING {columns}

-- name: retry_job
UPDATE report_jobs
SET status = :target, updated_at = :now,
    lease_owner = NULL, lease_expires_at = NULL, enqueued_at = NULL
WHERE id = :id AND {status_in_sources} AND {owned}
  AND (:any_lease OR lease_expires_at IS NULL OR lease_expires_at < :now)
RETURNING {columns}

-- A running job keeps its lease's end (SET reads the row as it was): its worker may be alive
-- until then and abort its own file; after it, recovery discards what is left
-- (leftovers). A queued job that ran before (put back after its worker died) is
-- listed from the cancel on: the api's own discard is best effort (a read-only mount of the
-- files fails it). No owner: the old holder's renewals and finishes find none.
-- name: cancel_job
UPDATE report_jobs
SET status = :target, updated_at = :now,
    finished_at = :now, lease_owner = NULL,
    lease_expires_at = CASE
        WHEN status = 'running' THEN lease_expires_at
        WHEN attempts > 0 THEN :now
    END
WHERE id = :id AND {status_in_sources} AND tenant_id = :tenant_id
RETURNING {columns}

-- The recovery queries spell their status as literals so that the partial indexes of the
-- migrations match them.
-- name: stale_jobs
SELECT {columns} FROM report_jobs
WHERE status = 'running'
  AND (
      (lease_expires_at IS NOT NULL AND lease_expires_at < :now)
      OR (lease_expires_at IS NULL AND updated_at < :legacy_before)
  )
ORDER BY updated_at, id LIMIT :limit

-- name: unpublished_jobs
SELECT {columns} FROM report_jobs
WHERE status = 'queued' AND enqueued_at IS NULL AND updated_at < :before
ORDER BY created_at, id LIMIT :limit

-- Retention pages through the expired files by (expires_at, id), so that files the store will
-- not delete (kept, in a row) never fill every batch and hide the rest.
-- name: expired_files
SELECT {columns} FROM report_jobs
WHERE status = 'succeeded' AND file_deleted_at IS NULL AND expires_at <= :now
  AND {expired_after}
{expired_order} LIMIT :limit

-- Jobs cancelled or failed whose dead attempts' leftovers are not discarded yet, once no
-- worker can still be writing (the partial index of migration 0011 holds exactly these rows).
-- name: leftovers
SELECT {columns} FROM report_jobs
WHERE status IN ('cancelled', 'failed')
  AND lease_expires_at IS NOT NULL AND lease_expires_at < :now
ORDER BY lease_expires_at, id LIMIT :limit

-- Discarded (NULL: listed no more), or refused (tried again after :retry_at); only over
-- the lease end the pass read, so a slower pass never undoes another's record.
-- name: mark_leftovers
UPDATE report_jobs SET lease_expires_at = :retry_at
WHERE id = :id AND status IN ('cancelled', 'failed') AND lease_expires_at = :seen

-- name: ping
SELECT 1

-- Webhooks (reportcore.webhooks): a job that ends with a notify_url gets one delivery, put in
-- by the transaction that ended it; senders claim due ones under a lease.
-- name: enqueue_delivery
INSERT INTO report_webhook_deliveries
    (id, job_id, event, url, state, attempts, next_attempt_at, created_at, updated_at)
SELECT :delivery_id, id, :event, notify_url, 'pending', 0, :now, :now, :now
FROM report_jobs WHERE id = :id AND notify_url IS NOT NULL
ON CONFLICT (job_id) DO NOTHING

-- name: claim_deliveries
UPDATE report_webhook_deliveries
SET lease_owner = :owner, lease_expires_at = :lease_until
WHERE id IN (
    SELECT id FROM report_webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY next_attempt_at, id
    LIMIT :limit
    {skip_locked}
)
RETURNING id, job_id, event, url, state, attempts, next_attempt_at, last_error, body,
    created_at, updated_at

-- name: record_delivery
UPDATE report_webhook_deliveries
SET state = :state, attempts = :attempts, next_attempt_at = :next_attempt_at,
    last_error = :last_error, body = COALESCE(body, :body), updated_at = :now,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = :delivery_id AND lease_owner = :owner
RETURNING id

-- name: delivery_notifications
SELECT job_id, state, attempts, last_error FROM report_webhook_deliveries WHERE {job_in_ids}
