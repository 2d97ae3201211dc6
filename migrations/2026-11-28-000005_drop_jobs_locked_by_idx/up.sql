-- Every query that filters on locked_by also names the job's id, so this
-- index only cost maintenance on each claim, start, renewal and completion.
DROP INDEX jobs_locked_by_idx;
