CREATE INDEX jobs_locked_by_idx ON jobs (locked_by) WHERE locked_by IS NOT NULL;
