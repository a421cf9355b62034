-- PostgreSQL's spelling of the pieces of ../jobs.sql that differ between engines. Parameters
-- are :name here too; the dialect adds the casts to the enum types.

-- name: status_in_sources
status = ANY(:sources)

-- a job without a lease is owned by "no owner" (NULL), hence the null-safe comparison
-- name: owned
lease_owner IS NOT DISTINCT FROM :owner

-- name: greatest
GREATEST

-- name: least
LEAST

-- name: file_name_lookup
:file_names ->> (job_type::text || '/' || format::text || '/' || COALESCE(compression, 'none'))

-- name: mime_type_lookup
:mime_types ->> (format::text || '/' || COALESCE(compression, 'none'))

-- The row comparison (created_at, id) < (...), spelled so that the first half can be an index
-- condition on (tenant_id, created_at). Ids compare byte-wise ("C") so that ties in
-- created_at order the same whatever the database's collation.
-- name: find_after
created_at <= :after_created_at
AND (created_at < :after_created_at OR id COLLATE "C" < :after_id)

-- name: expired_after
(expires_at > :after_at OR (expires_at = :after_at AND id COLLATE "C" > :after_id))

-- name: expired_order
ORDER BY expires_at, id COLLATE "C"

-- name: find_order
ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT :limit

-- the senders of webhooks skip deliveries another sender is claiming right now
-- name: skip_locked
FOR UPDATE SKIP LOCKED

-- name: job_in_ids
job_id = ANY(:job_ids)

-- Schedules (../schedules.sql): the partial index of the due poll says "WHERE active"
-- name: is_active
active

-- a PATCH writes only over the row it read (a claim moves next_run_at, which may be NULL)
-- name: as_read
updated_at = :read_updated_at AND next_run_at IS NOT DISTINCT FROM :read_next_run_at

-- a tenant's schedule creates take turns, so that the cap on its schedules is exact (class
-- 7266: apart from the job creates' 7265 and the migrations' one-key lock)
-- name: lock_tenant
SELECT pg_advisory_xact_lock(7266, hashtext(:tenant_id))
-- the creates of one tenant under the cap take turns until their transaction ends (the
-- two-key form, class 7265, stays clear of the migrations' one-key lock)
-- name: tenant_lock
SELECT pg_advisory_xact_lock(7265, hashtext(:tenant_id))
