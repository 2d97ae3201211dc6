//! Exit codes, and the error that carries one.

use std::fmt;

/// The documented exit codes (`connectra --help`, README).
pub const SUCCESS: u8 = 0;
/// The request could not be made or the server refused it (`ERR_…`), a
/// local file is missing or unreadable, or an answer made no sense.
pub const ERROR: u8 = 1;
/// Bad arguments (clap also exits 2).
pub const USAGE: u8 = 2;
/// The job failed for good.
pub const JOB_FAILED: u8 = 3;
/// The job was cancelled.
pub const JOB_CANCELLED: u8 = 4;
/// Ctrl-C: the CLI stopped watching; the job goes on.
pub const STOPPED_WATCHING: u8 = 130;

/// The text of `--help` that lists them.
pub const HELP: &str = "\
Exit codes:
  0    success (the job completed)
  1    error: the server refused the request (its ERR_ message is shown), it could not
       be reached, or a local file is missing or unreadable
  2    bad arguments
  3    the job failed
  4    the job was cancelled
  130  Ctrl-C: stopped watching; the job goes on on the server

Environment: CONNECTRA_URL (default http://127.0.0.1:8080), CONNECTRA_API_KEY.";

/// An error that decides the exit code; its text is what the user reads.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// The HTTP status when the server answered with an error.
    pub http_status: Option<u16>,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            http_status: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    /// A request that failed on the way or an answer that is not the API's.
    pub fn api(message: impl Into<String>) -> Self {
        Self::new(ERROR, message)
    }

    /// The server's error answer: `message` is its `ERR_…` sentence.
    pub fn server(status: u16, message: impl Into<String>) -> Self {
        Self {
            http_status: Some(status),
            ..Self::new(ERROR, message)
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
