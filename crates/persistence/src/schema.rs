//! Diesel's view of the tables that diesel queries. `contacts` and
//! `companies` are not here: the record writer and the search backend reach
//! them through the field catalogue (`connectra_domain::catalogue`), the one
//! list of their columns.

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
    filters_data (id) {
        id -> Int8,
        service -> Text,
        filter_key -> Text,
        value -> Text,
        created_at -> Timestamptz,
    }
}
