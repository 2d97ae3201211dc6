-- Rows an import rejected, kept with the job so that a resumed import still
-- reports every bad line, and the error report can be streamed from here.
CREATE TABLE job_rejections (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    line   BIGINT NOT NULL,
    reason TEXT   NOT NULL,
    raw    TEXT   NOT NULL,
    PRIMARY KEY (job_id, line)
);
