-- The job queue. One row per job; runners claim rows with FOR UPDATE SKIP LOCKED.
CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid             UUID        NOT NULL UNIQUE,
    job_type         TEXT        NOT NULL,
    data             JSONB       NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'in_queue', 'processing', 'completed', 'failed', 'retry_in_queued', 'retrying')),
    job_response     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- the maximum number of retries, fixed at creation
    retry_count      INTEGER     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    retry_interval   INTEGER     NOT NULL DEFAULT 30 CHECK (retry_interval >= 0),
    -- when a failed job may be retried; NULL once retries are exhausted
    run_after        TIMESTAMPTZ,
    -- runs made so far; every claim increments it, and fences later writes
    attempts         INTEGER     NOT NULL DEFAULT 0,
    -- how often an expired lease was taken back from a dead runner
    rescues          INTEGER     NOT NULL DEFAULT 0,
    locked_by        TEXT,
    locked_until     TIMESTAMPTZ,
    cancel_requested BOOLEAN     NOT NULL DEFAULT false,
    rows_processed   BIGINT      NOT NULL DEFAULT 0,
    rows_rejected    BIGINT      NOT NULL DEFAULT 0,
    bytes_read       BIGINT      NOT NULL DEFAULT 0,
    bytes_total      BIGINT,
    -- handler-defined resume point (for imports: the last committed row)
    checkpoint       JSONB,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX jobs_open_idx ON jobs (id) WHERE status = 'open';
CREATE INDEX jobs_retry_due_idx ON jobs (run_after) WHERE status = 'failed' AND run_after IS NOT NULL;
CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE locked_until IS NOT NULL;
CREATE INDEX jobs_locked_by_idx ON jobs (locked_by) WHERE locked_by IS NOT NULL;
CREATE INDEX jobs_newest_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_type_status_idx ON jobs (job_type, status);

-- Runners LISTEN on 'connectra_jobs'. A job that becomes claimable wakes them.
-- Notifications with the same payload in one transaction are folded into one.
CREATE FUNCTION connectra_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('connectra_jobs', NEW.status);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_claimable
    AFTER INSERT OR UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'open' OR (NEW.status = 'failed' AND NEW.run_after IS NOT NULL))
    EXECUTE FUNCTION connectra_jobs_notify();
