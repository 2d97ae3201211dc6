-- The records of truth. Writes are upserts keyed on uuid (spec §2).
CREATE TABLE companies (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid            UUID        NOT NULL UNIQUE,
    name            TEXT,
    website         TEXT,
    domain          TEXT,
    industries      TEXT[]      NOT NULL DEFAULT '{}',
    keywords        TEXT[]      NOT NULL DEFAULT '{}',
    technologies    TEXT[]      NOT NULL DEFAULT '{}',
    employees_count INTEGER,
    annual_revenue  BIGINT,
    total_funding   BIGINT,
    founded_year    INTEGER,
    country         TEXT,
    state           TEXT,
    city            TEXT,
    phone           TEXT,
    linkedin_url    TEXT,
    extra           JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE contacts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid         UUID        NOT NULL UNIQUE,
    first_name   TEXT,
    last_name    TEXT,
    email        TEXT,
    title        TEXT,
    seniority    TEXT,
    departments  TEXT[]      NOT NULL DEFAULT '{}',
    phone        TEXT,
    linkedin_url TEXT,
    email_status TEXT,
    country      TEXT,
    state        TEXT,
    city         TEXT,
    -- the contact's company (companies.uuid); no foreign key, so a contact may
    -- arrive before its company
    company_id   UUID,
    extra        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX contacts_company_id_idx ON contacts (company_id);

-- Distinct values of every keyword field, for filter drop-downs. Imports only add.
CREATE TABLE filters_data (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service    TEXT        NOT NULL CHECK (service IN ('contact', 'company')),
    filter_key TEXT        NOT NULL,
    value      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (service, filter_key, value)
);
