//! What the templates show, computed from job rows: times as RFC 3339 (the
//! browser turns them into its own time zone), sizes, rates and ETAs.

use connectra_domain::job::{JobStatus, EXPORT_CSV_FILE};
use connectra_persistence::Job;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A time as `<time datetime="{iso}">{text}</time>`: `text` is UTC until the
/// page's script rewrites it in the browser's locale and time zone.
#[derive(Debug, Clone)]
pub struct TimeView {
    pub iso: String,
    pub text: String,
}

impl TimeView {
    pub fn new(t: OffsetDateTime) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        let iso = t.format(&Rfc3339).unwrap_or_default();
        let text = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        Self { iso, text }
    }

    pub fn opt(t: Option<OffsetDateTime>) -> Option<Self> {
        t.map(Self::new)
    }
}

/// `1.5 MB`, in powers of 1000 like the CLI.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `12,345`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `1h 02m`, `3m 05s`, `42s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A job's progress: the bar and its figures.
#[derive(Debug, Clone)]
pub struct ProgressView {
    pub uuid: String,
    /// Whether the job may still change (waiting, queued or running): the
    /// fragment then polls itself.
    pub live: bool,
    pub status: &'static str,
    pub rows: i64,
    pub rows_text: String,
    pub rejected_text: String,
    pub bytes_text: String,
    pub total_text: Option<String>,
    /// `0.0..=100.0`, when the total size is known.
    pub percent: Option<f64>,
    pub percent_text: String,
    pub rate_text: Option<String>,
    pub eta_text: Option<String>,
}

impl ProgressView {
    pub fn of(job: &Job, now: OffsetDateTime) -> Self {
        let elapsed = job
            .started_at
            .map(|s| (now - s).as_seconds_f64())
            .filter(|e| *e > 0.5);
        let finished = job.finished_at.is_some() && !job.status.is_leased();
        // polls until the job's outcome is final: also while it waits to be claimed or retried
        let live = match job.status {
            JobStatus::Completed => false,
            JobStatus::Failed => job.run_after.is_some(),
            _ => true,
        };
        let running = job.status.is_leased();
        let percent = job
            .bytes_total
            .filter(|t| *t > 0)
            .map(|t| (job.bytes_read as f64 / t as f64 * 100.0).clamp(0.0, 100.0))
            .or(if job.status == JobStatus::Completed {
                Some(100.0)
            } else {
                None
            });
        let rate = if running {
            elapsed.map(|e| job.rows_processed as f64 / e)
        } else {
            match (job.started_at, job.finished_at) {
                (Some(s), Some(f)) if (f - s).as_seconds_f64() > 0.0 && finished => {
                    Some(job.rows_processed as f64 / (f - s).as_seconds_f64())
                }
                _ => None,
            }
        };
        let eta = match (running, elapsed, job.bytes_total) {
            (true, Some(e), Some(total)) if job.bytes_read > 0 && total >= job.bytes_read => {
                Some(e * (total - job.bytes_read) as f64 / job.bytes_read as f64)
            }
            _ => None,
        };
        Self {
            uuid: job.uuid.to_string(),
            live,
            status: job.status.as_str(),
            rows: job.rows_processed,
            rows_text: count(job.rows_processed),
            rejected_text: count(job.rows_rejected),
            bytes_text: bytes(job.bytes_read),
            total_text: job.bytes_total.map(bytes),
            percent,
            percent_text: percent.map_or_else(String::new, |p| format!("{p:.1}")),
            rate_text: rate.map(|r| format!("{} rows/s", count(r.round() as i64))),
            eta_text: eta.map(duration),
        }
    }
}

/// A CSS class per status, for the coloured badges.
pub fn status_class(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Completed => "ok",
        JobStatus::Failed => "bad",
        JobStatus::Processing | JobStatus::Retrying => "run",
        JobStatus::InQueue | JobStatus::RetryInQueued => "queued",
        JobStatus::Open => "open",
    }
}

/// Whether the dashboard offers to cancel: open, queued or running jobs, and
/// failed ones still waiting for a retry (not yet cancelled).
pub fn can_cancel(job: &Job) -> bool {
    let cancelled = job.response().cancelled == Some(true);
    !cancelled
        && (matches!(
            job.status,
            JobStatus::Open
                | JobStatus::InQueue
                | JobStatus::Processing
                | JobStatus::RetryInQueued
                | JobStatus::Retrying
        ) || (job.status == JobStatus::Failed && job.run_after.is_some()))
}

/// Whether the dashboard offers a retry: a failed job that was not cancelled.
pub fn can_retry(job: &Job) -> bool {
    job.status == JobStatus::Failed
        && !job.cancel_requested
        && job.response().cancelled != Some(true)
}

/// One row of the job list.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub uuid: String,
    pub short: String,
    pub job_type: String,
    pub status: &'static str,
    pub class: &'static str,
    pub created: TimeView,
    pub attempts: i32,
    pub retry_count: i32,
    /// The rendered progress fragment (askama-escaped already).
    pub progress_html: String,
    pub cancel_requested: bool,
}

impl JobRow {
    pub fn of(job: &Job, progress_html: String) -> Self {
        let uuid = job.uuid.to_string();
        Self {
            short: uuid.chars().take(8).collect(),
            uuid,
            job_type: job.job_type.clone(),
            status: job.status.as_str(),
            class: status_class(job.status),
            created: TimeView::new(job.created_at),
            attempts: job.attempts,
            retry_count: job.retry_count,
            progress_html,
            cancel_requested: job.cancel_requested,
        }
    }
}

/// Everything the detail page shows of a job.
#[derive(Debug, Clone)]
pub struct JobDetail {
    pub row: JobRow,
    pub data_json: String,
    pub response_json: String,
    pub checkpoint_json: Option<String>,
    pub runtime_errors: Vec<String>,
    pub messages: Option<String>,
    pub retry_interval: i32,
    pub rescues: i32,
    pub locked_by: Option<String>,
    pub locked_until: Option<TimeView>,
    pub run_after: Option<TimeView>,
    pub started: Option<TimeView>,
    pub finished: Option<TimeView>,
    pub updated: TimeView,
    pub has_report: bool,
    pub has_download: bool,
    pub can_cancel: bool,
    pub can_retry: bool,
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

impl JobDetail {
    pub fn of(job: &Job, progress_html: String) -> Self {
        let response = job.response();
        Self {
            row: JobRow::of(job, progress_html),
            data_json: pretty(&job.data),
            response_json: pretty(&job.job_response),
            checkpoint_json: job.checkpoint.as_ref().map(pretty),
            runtime_errors: response.runtime_errors.clone(),
            messages: response.messages.clone(),
            retry_interval: job.retry_interval,
            rescues: job.rescues,
            locked_by: job.locked_by.clone(),
            locked_until: TimeView::opt(job.locked_until),
            run_after: TimeView::opt(job.run_after),
            started: TimeView::opt(job.started_at),
            finished: TimeView::opt(job.finished_at),
            updated: TimeView::new(job.updated_at),
            has_report: response.error_report_s3_key.is_some(),
            has_download: job.job_type == EXPORT_CSV_FILE
                && job.status == JobStatus::Completed
                && response.s3_key.is_some(),
            can_cancel: can_cancel(job),
            can_retry: can_retry(job),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-1234), "-1,234");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1500), "1.5 kB");
        assert_eq!(bytes(2_500_000), "2.5 MB");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(3720.0), "1h 02m");
    }
}
