-- Jobs can now be cancelled. This is a migration of its own, so that it commits alone: an
-- enum value cannot be used in the transaction that added it, and the migration after this
-- one (or a later one) may want to use it.
ALTER TYPE "ReportJobStatus" ADD VALUE IF NOT EXISTS 'cancelled';
