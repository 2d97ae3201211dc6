//! Integration tests against real PostgreSQL and OpenSearch (one binary).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod agreement;
mod common;
mod conformance;
mod nodes;
mod opensearch;
