-- Export options, the same columns as PostgreSQL's 0004: NULL means "not asked".
-- (format is TEXT here: xlsx needs no schema change.)
ALTER TABLE report_jobs ADD COLUMN compression TEXT;
ALTER TABLE report_jobs ADD COLUMN csv TEXT;
ALTER TABLE report_jobs ADD COLUMN columns TEXT;
ALTER TABLE report_jobs ADD COLUMN timezone TEXT;
ALTER TABLE report_jobs ADD COLUMN row_count INTEGER;
