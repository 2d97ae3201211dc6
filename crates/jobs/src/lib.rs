#![doc = include_str!("../README.md")]

mod handler;
mod listen;
pub mod process;
mod runner;
mod wake;

pub use handler::{HandlerResult, JobContext, JobHandler, ProgressError, Registry, Stopped};
pub use runner::{Mode, RunReport, Runner, RunnerConfig};

pub use connectra_domain::job::JobResponse;

/// The job types this build can run, with their handlers.
///
/// The built-in `insert_csv_file` and `export_csv_file` handlers are not part
/// of this build yet, so this registry is empty: their jobs wait in `open`
/// until a runner that has them starts.
pub fn builtin_registry() -> Registry {
    Registry::new()
}
pub use connectra_persistence::jobs::Progress;
