#![doc = include_str!("../README.md")]

#[cfg(feature = "builtin")]
pub mod builtin;
mod handler;
mod listen;
pub mod metrics;
pub mod process;
mod runner;
mod wake;

pub use handler::{HandlerResult, JobContext, JobHandler, ProgressError, Registry, Stopped};
pub use runner::{Mode, RunReport, Runner, RunnerConfig};

pub use connectra_domain::job::JobResponse;

pub use connectra_persistence::jobs::Progress;
