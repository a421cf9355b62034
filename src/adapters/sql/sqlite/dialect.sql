-- SQLite's spelling of the pieces of ../jobs.sql that differ between engines.

-- :sources is a JSON list of statuses
-- name: status_in_sources
status IN (SELECT value FROM json_each(:sources))

-- IS is SQLite's null-safe equality: no owner matches only a job without a lease
-- name: owned
lease_owner IS :owner

-- name: greatest
MAX

-- name: least
MIN

-- name: file_name_lookup
json_extract(
    :file_names, '$."' || job_type || '/' || format || '/' || COALESCE(compression, 'none') || '"'
)

-- name: mime_type_lookup
json_extract(:mime_types, '$."' || format || '/' || COALESCE(compression, 'none') || '"')

-- Ids compare with SQLite's BINARY collation (byte-wise UTF-8, the order of Python's str
-- comparison).
-- name: find_after
(created_at, id) < (:after_created_at, :after_id)

-- name: expired_after
(expires_at, id) > (:after_at, :after_id)

-- name: expired_order
ORDER BY expires_at, id

-- name: find_order
ORDER BY created_at DESC, id DESC LIMIT :limit

-- SQLite serialises writers: a claim (one UPDATE) cannot interleave with another
-- name: skip_locked

-- :job_ids is a JSON list
-- name: job_in_ids
job_id IN (SELECT value FROM json_each(:job_ids))

-- Schedules (../schedules.sql): booleans are 0/1
-- name: is_active
active = 1

-- a PATCH writes only over the row it read (IS: null-safe equality)
-- name: as_read
updated_at = :read_updated_at AND next_run_at IS :read_next_run_at

-- SQLite's write transactions already take turns (BEGIN IMMEDIATE)
-- name: lock_tenant
SELECT 1
-- the transaction's BEGIN IMMEDIATE holds the one write lock already
-- name: tenant_lock
SELECT 1 WHERE :tenant_id IS NOT NULL
