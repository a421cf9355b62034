-- The schedulers' poll (sql/schedules.sql: due_schedules) reads the stuck claims (an
-- occurrence claimed and not made yet) through this index, beside the due schedules through
-- report_schedules_due_idx: neither half reads the whole table. Additive: the old service
-- never sees report_schedules.
CREATE INDEX IF NOT EXISTS report_schedules_claims_idx
    ON report_schedules (claimed_at)
    WHERE pending IS NOT NULL;
