-- Every write of a record takes a new version from one sequence, in the same
-- statement. Documents are indexed with that version (version_type
-- external_gte), so the search index keeps the newest PostgreSQL row whatever
-- order batches, retries or stale attempts arrive in.
CREATE SEQUENCE record_version_seq;
ALTER TABLE companies ADD COLUMN version BIGINT NOT NULL DEFAULT nextval('record_version_seq');
ALTER TABLE contacts ADD COLUMN version BIGINT NOT NULL DEFAULT nextval('record_version_seq');
