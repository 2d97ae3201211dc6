#![doc = include_str!("../README.md")]

pub mod catalogue;
pub mod error;
pub mod import;
pub mod job;
pub mod limits;
pub mod list;
pub mod retry;
pub mod service;
pub mod vql;

pub use error::{DomainError, ErrorCode};
pub use service::Service;
