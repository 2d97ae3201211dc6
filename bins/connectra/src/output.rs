//! What the user sees: `indicatif` bars when a person watches a terminal,
//! plain progress lines otherwise (logs stay readable), tables, and JSON
//! with `--json`. Progress goes to stderr; results go to stdout.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// How often plain progress lines are printed at most.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// How the CLI writes.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`: results are JSON on stdout.
    pub json: bool,
    /// Bars: both stdout and stderr are terminals.
    pub bars: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            bars: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        }
    }

    /// A progress display: a bar, or plain lines prefixed with `label`.
    pub fn progress(&self, label: &str, kind: Kind) -> Progress {
        let bar = self.bars.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style(kind, false));
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            kind,
            label: label.to_string(),
            last_line: Mutex::new(None),
            first: Mutex::new(None),
        }
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
}

/// What a progress display counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bytes,
    Rows,
}

fn style(kind: Kind, known_total: bool) -> ProgressStyle {
    let template = match (kind, known_total) {
        (Kind::Bytes, true) => {
            "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
        }
        (Kind::Bytes, false) => "{prefix:>10} {spinner} {bytes} {bytes_per_sec} {msg}",
        (Kind::Rows, true) => {
            "{prefix:>10} [{bar:30}] {human_pos}/~{human_len} rows {rate} ETA {eta} {msg}"
        }
        (Kind::Rows, false) => "{prefix:>10} {spinner} {human_pos} rows {rate} {msg}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{} rows/s", grouped(state.per_sec() as u64));
            },
        )
        .progress_chars("=> ")
}

/// One progress display (see [`Output::progress`]).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    kind: Kind,
    label: String,
    /// When the last plain line was printed, and what it said.
    last_line: Mutex<Option<(Instant, String)>>,
    /// The first position seen, and when: rates count from there, so the
    /// time before the job started (an upload, a queue) does not lower them.
    first: Mutex<Option<(Instant, u64)>>,
}

impl Progress {
    /// Sets the position, the total if known, and a message.
    pub fn update(&self, position: u64, total: Option<u64>, message: &str) {
        if let Some(bar) = &self.bar {
            if total.is_some() != bar.length().is_some() {
                bar.set_style(style(self.kind, total.is_some()));
            }
            match total {
                Some(t) => bar.set_length(t.max(position)),
                None => bar.unset_length(),
            }
            bar.set_position(position);
            bar.set_message(message.to_string());
            return;
        }
        let line = self.line(position, total, message);
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        let due = match &*last {
            None => true,
            Some((at, text)) => *text != line && at.elapsed() >= LINE_EVERY,
        };
        if due {
            eprintln!("{line}");
            *last = Some((Instant::now(), line));
        }
    }

    fn line(&self, position: u64, total: Option<u64>, message: &str) -> String {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() && position > 0 {
            *first = Some((Instant::now(), position));
        }
        let rate = match *first {
            Some((since, from)) if since.elapsed().as_secs_f64() >= 0.5 => {
                Some(position.saturating_sub(from) as f64 / since.elapsed().as_secs_f64())
            }
            // too soon to tell: no rate rather than a false 0
            _ => None,
        };
        drop(first);
        let mut line = match self.kind {
            Kind::Bytes => format!("{}: {}", self.label, human_bytes(position)),
            Kind::Rows => format!("{}: {} rows", self.label, grouped(position)),
        };
        if let Some(total) = total.filter(|t| *t > 0) {
            let pct = (position as f64 / total as f64 * 100.0).min(100.0);
            line.push_str(&format!(" ({pct:.0}%)"));
        }
        match (self.kind, rate) {
            (Kind::Bytes, Some(rate)) => {
                line.push_str(&format!(", {}/s", human_bytes(rate as u64)))
            }
            (Kind::Rows, Some(rate)) => {
                line.push_str(&format!(", {} rows/s", grouped(rate as u64)))
            }
            (_, None) => {}
        }
        if !message.is_empty() {
            line.push_str(", ");
            line.push_str(message);
        }
        line
    }

    /// Runs `f` with the bar hidden (to print or to ask something).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Hides the bar until [`Progress::resume`] (while a question waits).
    pub fn pause(&self) {
        if let Some(bar) = &self.bar {
            bar.disable_steady_tick();
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    pub fn resume(&self) {
        if let Some(bar) = &self.bar {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
        }
    }

    /// Ends the display; plain output gets a last line.
    pub fn finish(&self, position: u64, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(position);
                bar.finish_and_clear();
            }
            None => {
                let line = self.line(position, None, message);
                let last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.as_ref().map(|(_, l)| l) != Some(&line) {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The text of a JSON cell in a table: strings bare, lists joined, null empty.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The widest a table column gets; longer cells are cut with `…`.
const MAX_CELL_CHARS: usize = 40;

/// A plain text table: a header row, a rule, the rows.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let cut = |s: &str| -> String {
        let flat: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if flat.chars().count() > MAX_CELL_CHARS {
            let mut t: String = flat.chars().take(MAX_CELL_CHARS - 1).collect();
            t.push('…');
            t
        } else {
            flat
        }
    };
    let headers: Vec<String> = headers.iter().map(|h| cut(h)).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&headers);
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn tables_align_and_cut_long_cells() {
        let t = table(
            &["a".into(), "bb".into()],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".repeat(50), "2\n3".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("{:<40}  bb", "a"));
        assert_eq!(lines[1], format!("{}  ---", "-".repeat(40)));
        assert!(lines[3].starts_with(&format!("{}…", "q".repeat(39))));
        assert!(lines[3].ends_with("2 3"));
        assert_eq!(cell_text(&serde_json::json!(["a", "b"])), "a, b");
        assert_eq!(cell_text(&Value::Null), "");
    }
}
