//! Following a job until it ends, with a rows bar, and what Ctrl-C does
//! meanwhile.

use std::io::IsTerminal as _;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::exit;
use crate::output::{grouped, Kind, Output};

/// How often the job is read while it runs.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// How a watch ended.
#[derive(Debug)]
pub enum Ended {
    Completed(Value),
    /// Failed for good (no retry left, or not retried).
    Failed(Value),
    Cancelled(Value),
    /// Ctrl-C: the job goes on; the last state seen.
    StoppedWatching(Value),
}

impl Ended {
    pub fn job(&self) -> &Value {
        match self {
            Self::Completed(j)
            | Self::Failed(j)
            | Self::Cancelled(j)
            | Self::StoppedWatching(j) => j,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Completed(_) => exit::SUCCESS,
            Self::Failed(_) => exit::JOB_FAILED,
            Self::Cancelled(_) => exit::JOB_CANCELLED,
            Self::StoppedWatching(_) => exit::STOPPED_WATCHING,
        }
    }

    pub fn word(&self) -> &'static str {
        match self {
            Self::Completed(_) => "completed",
            Self::Failed(_) => "failed",
            Self::Cancelled(_) => "cancelled",
            Self::StoppedWatching(_) => "still running",
        }
    }
}

/// What a job's state means to a watcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Failed, with a retry due at `run_after`.
    RetryDue(String),
    Completed,
    Failed,
    Cancelled,
}

pub fn phase(job: &Value) -> Phase {
    let response = &job["job_response"];
    match job["status"].as_str().unwrap_or("") {
        "completed" => Phase::Completed,
        "failed" if response["cancelled"] == Value::Bool(true) => Phase::Cancelled,
        "failed" => match job["run_after"].as_str() {
            Some(at) => Phase::RetryDue(at.to_string()),
            None => Phase::Failed,
        },
        _ => Phase::Running,
    }
}

pub fn int(job: &Value, key: &str) -> u64 {
    job[key]
        .as_u64()
        .or_else(|| job["job_response"][key].as_u64())
        .unwrap_or(0)
}

/// Ctrl-C presses, as a channel: a task listens for them from the start so
/// that none is lost while a request is on its way.
fn interrupts() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Follows job `uuid` until it completes, fails for good or is cancelled,
/// or the user stops watching.
pub async fn follow(client: &Client, out: Output, uuid: &str) -> anyhow::Result<Ended> {
    let mut ctrl_c = interrupts();
    let path = format!("/common/jobs/{uuid}");
    let short = uuid.get(..8).unwrap_or(uuid);
    let progress = out.progress(&format!("job {short}"), Kind::Rows);
    let mut announced_retry: Option<String> = None;
    let mut cancel_sent = false;
    let mut job = client.get(&path, &[]).await?["data"].clone();
    loop {
        let rows = int(&job, "rows_processed");
        match phase(&job) {
            Phase::Completed => {
                progress.finish(rows, "completed");
                return Ok(Ended::Completed(job));
            }
            Phase::Failed => {
                progress.finish(rows, "failed");
                return Ok(Ended::Failed(job));
            }
            Phase::Cancelled => {
                progress.finish(rows, "cancelled");
                return Ok(Ended::Cancelled(job));
            }
            Phase::RetryDue(at) => {
                if announced_retry.as_deref() != Some(&at) {
                    let why = job["job_response"]["runtime_errors"][0]
                        .as_str()
                        .unwrap_or("no reason given")
                        .to_string();
                    let attempt = job["attempts"].as_u64().unwrap_or(0);
                    progress.suspend(|| {
                        eprintln!("attempt {attempt} failed ({why}); the server retries it at {at}")
                    });
                    announced_retry = Some(at);
                }
                progress.update(rows, None, "waiting for its retry");
            }
            Phase::Running => {
                let read = int(&job, "bytes_read");
                let total_bytes = job["bytes_total"].as_u64().filter(|t| *t > 0);
                // rows to come, estimated from the bytes read so far
                let estimate = total_bytes
                    .filter(|_| read > 0 && rows > 0)
                    .map(|t| ((rows as f64) * (t as f64) / (read as f64)).round() as u64);
                let rejected = int(&job, "rows_rejected");
                let status = job["status"].as_str().unwrap_or("?");
                let mut message = status.to_string();
                if rejected > 0 {
                    message.push_str(&format!(", {} rejected", grouped(rejected)));
                }
                if job["cancel_requested"] == Value::Bool(true) {
                    message.push_str(", cancel requested");
                }
                progress.update(rows, estimate, &message);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            Some(()) = ctrl_c.recv() => {
                match ask(&progress, &mut ctrl_c, cancel_sent).await {
                    Answer::Cancel => {
                        let answer = client.post_empty(&format!("{path}/cancel")).await;
                        progress.suspend(|| match &answer {
                            Ok(a) => eprintln!("{}", a["message"].as_str().unwrap_or("cancel sent")),
                            Err(e) => eprintln!("the cancel failed: {e:#}"),
                        });
                        cancel_sent = answer.is_ok();
                    }
                    Answer::StopWatching => {
                        progress.finish(rows, "stopped watching");
                        eprintln!(
                            "stopped watching job {uuid}; it goes on on the server.\n  \
                             follow it: connectra jobs watch {uuid}\n  \
                             cancel it: connectra jobs cancel {uuid}"
                        );
                        return Ok(Ended::StoppedWatching(job));
                    }
                    Answer::GoOn => {}
                }
            }
        }
        job = client.get(&path, &[]).await?["data"].clone();
    }
}

enum Answer {
    Cancel,
    StopWatching,
    GoOn,
}

/// With a terminal: "cancel the job or stop watching? [c/w]". Without one
/// (or at a second Ctrl-C, or end of input): stop watching.
async fn ask(
    progress: &crate::output::Progress,
    ctrl_c: &mut mpsc::UnboundedReceiver<()>,
    cancel_sent: bool,
) -> Answer {
    if cancel_sent || !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Answer::StopWatching;
    }
    progress.suspend(|| {});
    progress.pause();
    {
        use std::io::Write as _;
        eprint!("Ctrl-C: cancel the job or stop watching? [c/w] ");
        let _ = std::io::stderr().flush();
    }
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|n| (n, line))
    });
    let answer = tokio::select! {
        read = line => match read {
            Ok(Ok((n, line))) if n > 0 => match line.trim().to_lowercase().as_str() {
                "c" | "cancel" => Answer::Cancel,
                "w" | "watch" | "stop" => Answer::StopWatching,
                _ => {
                    eprintln!("neither c nor w: watching on");
                    Answer::GoOn
                }
            },
            _ => Answer::StopWatching,
        },
        _ = ctrl_c.recv() => {
            eprintln!();
            Answer::StopWatching
        }
    };
    progress.resume();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phases_follow_status_run_after_and_cancelled() {
        assert_eq!(phase(&json!({"status": "processing"})), Phase::Running);
        assert_eq!(phase(&json!({"status": "completed"})), Phase::Completed);
        assert_eq!(
            phase(&json!({"status": "failed", "run_after": null})),
            Phase::Failed
        );
        assert_eq!(
            phase(&json!({"status": "failed", "run_after": "2030-01-01T00:00:00Z"})),
            Phase::RetryDue("2030-01-01T00:00:00Z".into())
        );
        assert_eq!(
            phase(
                &json!({"status": "failed", "run_after": null, "job_response": {"cancelled": true}})
            ),
            Phase::Cancelled
        );
    }
}
