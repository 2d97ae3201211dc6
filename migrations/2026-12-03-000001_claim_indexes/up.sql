-- Indexes for the runner's hot path. Every status change of a job (claim,
-- start, completion) writes a new row version and an entry in every index,
-- so the jobs table keeps few of them, each with a statement that needs it.
--
-- A claim reads, for each job type it runs, the oldest claimable jobs of that
-- type in claim order, and takes the oldest of them all. With (job_type, id)
-- and (job_type, run_after, id) that read is one ordered index range per
-- type. With (id) alone, a claim right after a burst of new jobs (before
-- autovacuum had analyzed them) was planned as a scan of
-- jobs_type_status_idx and a sort of every open job, once per claim.
CREATE INDEX jobs_claim_idx ON jobs (job_type, id) WHERE status = 'open';
CREATE INDEX jobs_retry_claim_idx ON jobs (job_type, run_after, id)
    WHERE status = 'failed' AND run_after IS NOT NULL;
DROP INDEX jobs_open_idx;
DROP INDEX jobs_retry_due_idx;

-- Status first: the rescue finds leased jobs (few, whatever the table's size)
-- through it, so locked_until needs no index of its own, and a lease renewal,
-- which changes locked_until alone, touches no index. Counts by
-- (job_type, status) still read this index alone.
CREATE INDEX jobs_status_type_idx ON jobs (status, job_type);
DROP INDEX jobs_type_status_idx;
DROP INDEX jobs_lease_idx;
