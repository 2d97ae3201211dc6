DROP TABLE jobs;
DROP FUNCTION connectra_jobs_notify();
