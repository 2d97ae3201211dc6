//! Diesel's view of the tables created by `migrations/`.

diesel::table! {
    jobs (id) {
        id -> Int8,
        uuid -> Uuid,
        job_type -> Text,
        data -> Jsonb,
        status -> Text,
        job_response -> Jsonb,
        retry_count -> Int4,
        retry_interval -> Int4,
        run_after -> Nullable<Timestamptz>,
        attempts -> Int4,
        rescues -> Int4,
        locked_by -> Nullable<Text>,
        locked_until -> Nullable<Timestamptz>,
        cancel_requested -> Bool,
        rows_processed -> Int8,
        rows_rejected -> Int8,
        bytes_read -> Int8,
        bytes_total -> Nullable<Int8>,
        checkpoint -> Nullable<Jsonb>,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    companies (id) {
        id -> Int8,
        uuid -> Uuid,
        name -> Nullable<Text>,
        website -> Nullable<Text>,
        domain -> Nullable<Text>,
        industries -> Array<Text>,
        keywords -> Array<Text>,
        technologies -> Array<Text>,
        employees_count -> Nullable<Int4>,
        annual_revenue -> Nullable<Int8>,
        total_funding -> Nullable<Int8>,
        founded_year -> Nullable<Int4>,
        country -> Nullable<Text>,
        state -> Nullable<Text>,
        city -> Nullable<Text>,
        phone -> Nullable<Text>,
        linkedin_url -> Nullable<Text>,
        extra -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    contacts (id) {
        id -> Int8,
        uuid -> Uuid,
        first_name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        email -> Nullable<Text>,
        title -> Nullable<Text>,
        seniority -> Nullable<Text>,
        departments -> Array<Text>,
        phone -> Nullable<Text>,
        linkedin_url -> Nullable<Text>,
        email_status -> Nullable<Text>,
        country -> Nullable<Text>,
        state -> Nullable<Text>,
        city -> Nullable<Text>,
        company_id -> Nullable<Uuid>,
        extra -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    filters_data (id) {
        id -> Int8,
        service -> Text,
        filter_key -> Text,
        value -> Text,
        created_at -> Timestamptz,
    }
}
