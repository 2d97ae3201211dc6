DROP TRIGGER jobs_notify_cancel ON jobs;
DROP FUNCTION connectra_jobs_notify_cancel();
