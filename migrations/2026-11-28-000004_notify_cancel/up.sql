-- A cancel request for a running job reaches its runner at once: the runner
-- LISTENs on this channel and stops the handler. (It also sees the request at
-- its next lease renewal, should the notification be missed.)
CREATE FUNCTION connectra_jobs_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('connectra_jobs_cancel', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_cancel
    AFTER UPDATE OF cancel_requested ON jobs
    FOR EACH ROW
    WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested
          AND NEW.status IN ('processing', 'retrying'))
    EXECUTE FUNCTION connectra_jobs_notify_cancel();
