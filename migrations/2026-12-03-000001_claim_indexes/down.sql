CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE locked_until IS NOT NULL;
CREATE INDEX jobs_type_status_idx ON jobs (job_type, status);
DROP INDEX jobs_status_type_idx;
CREATE INDEX jobs_open_idx ON jobs (id) WHERE status = 'open';
CREATE INDEX jobs_retry_due_idx ON jobs (run_after) WHERE status = 'failed' AND run_after IS NOT NULL;
DROP INDEX jobs_claim_idx;
DROP INDEX jobs_retry_claim_idx;
