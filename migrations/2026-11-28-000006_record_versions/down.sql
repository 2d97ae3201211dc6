ALTER TABLE contacts DROP COLUMN version;
ALTER TABLE companies DROP COLUMN version;
DROP SEQUENCE record_version_seq;
