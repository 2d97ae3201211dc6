ALTER TABLE companies ALTER COLUMN id SET CACHE 1;
ALTER TABLE contacts ALTER COLUMN id SET CACHE 1;
DROP INDEX contacts_company_id_idx;
CREATE INDEX contacts_company_id_idx ON contacts (company_id);
