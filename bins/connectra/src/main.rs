//! `connectra`: the command-line client of the Jobs API. It talks to the
//! HTTP API only (`CONNECTRA_URL`, `CONNECTRA_API_KEY`): it uploads through
//! presigned URLs, creates jobs, follows them with progress bars, and
//! downloads exports.

mod client;
mod commands;
mod exit;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::Failure;
use crate::output::Output;

/// Import CSVs into Connectra, export queries, search, and manage jobs, over
/// the Jobs API.
#[derive(Debug, Parser)]
#[command(name = "connectra", version, after_help = exit::HELP)]
struct Cli {
    /// The API's base URL.
    #[arg(
        long,
        env = "CONNECTRA_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// The API key (sent as X-API-Key).
    #[arg(long, env = "CONNECTRA_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Machine-readable output: JSON on stdout, errors included.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds each API request may take.
    #[arg(long, default_value_t = 30, global = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload a CSV, import it, and follow the job until it ends.
    ///
    /// Uploads FILE through a presigned URL (a bar counts bytes), creates an
    /// insert_csv_file job, follows it (a bar counts rows, with rows/s and an
    /// ETA) and prints the summary: rows, rejected rows, the error report's
    /// location and the first rejected lines. Ctrl-C asks whether to cancel
    /// the job or only stop watching; without a terminal it stops watching
    /// and prints how to cancel.
    Import(ImportArgs),
    /// Export a query's matches to a local CSV, through an export job.
    Export(ExportArgs),
    /// Print one page of a search, as a table (or JSON with --json).
    Search(SearchArgs),
    /// List, show, follow, cancel or retry jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Contact,
    Company,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Company => "company",
        }
    }

    /// The search route's scope: `contacts`, `companies`.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Contact => "contacts",
            Self::Company => "companies",
        }
    }
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file to import.
    pub file: PathBuf,
    /// The file's service; inferred from its headers when absent.
    #[arg(long, value_enum)]
    pub service: Option<Service>,
    /// The bucket the job names; it must be the bucket the API uploads into
    /// (its S3_BUCKET), which is the default.
    #[arg(long)]
    pub bucket: Option<String>,
    /// How many times the server retries the job if it fails (0-100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
    /// How many rejected lines the summary shows.
    #[arg(long, default_value_t = 10)]
    pub show_rejected: usize,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The service to export.
    #[arg(long, value_enum)]
    pub service: Service,
    /// A JSON file holding the VQL query (where, select_columns, order_by).
    #[arg(long, conflicts_with = "where_")]
    pub vql: Option<PathBuf>,
    /// The VQL `where` object, as JSON. Without --vql or --where every record
    /// is exported.
    #[arg(long = "where", id = "where_")]
    pub where_: Option<String>,
    /// The columns, comma-separated (required unless the --vql file has
    /// select_columns).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Where to write the CSV.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The bucket the export is written to (default: the API's).
    #[arg(long)]
    pub bucket: Option<String>,
    /// How many times the server retries the job if it fails (0-100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The service to search.
    #[arg(long, value_enum)]
    pub service: Service,
    /// A JSON file holding the VQL query.
    #[arg(long, conflicts_with = "where_")]
    pub vql: Option<PathBuf>,
    /// The VQL `where` object, as JSON.
    #[arg(long = "where", id = "where_")]
    pub where_: Option<String>,
    /// The columns, comma-separated (default: every column).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// The page size.
    #[arg(long)]
    pub limit: Option<u32>,
    /// The previous page's next_search_after, as JSON.
    #[arg(long)]
    pub search_after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The newest jobs, as a table.
    List {
        /// Only jobs in these statuses (comma-separated).
        #[arg(long, value_delimiter = ',')]
        status: Option<Vec<String>>,
        /// Only jobs of this type (insert_csv_file, export_csv_file, …).
        #[arg(long = "type")]
        job_type: Option<String>,
        /// How many jobs (1-100).
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// One job, with its progress and response.
    Show { uuid: String },
    /// Follow a job until it ends; the exit code says how it ended.
    Watch { uuid: String },
    /// Cancel a job (a running one stops at its next batch).
    Cancel { uuid: String },
    /// Run a failed job again now.
    Retry { uuid: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(out, &anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let client = client::Client::new(
            &cli.url,
            cli.api_key.clone(),
            Duration::from_secs(cli.timeout),
        )?;
        commands::run(&client, out, cli.command).await
    });
    // A blocked stdin read (the Ctrl-C question) must not keep us alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => report(out, &e),
    }
}

/// Prints an error as the user should read it (the server's `ERR_…`
/// sentence, never a debug dump) and picks its exit code.
fn report(out: Output, e: &anyhow::Error) -> ExitCode {
    let (code, http_status) = e
        .downcast_ref::<Failure>()
        .map_or((exit::ERROR, None), |f| (f.code, f.http_status));
    let message = format!("{e:#}");
    if out.json {
        out.print_json(&serde_json::json!({
            "success": false,
            "error": message,
            "http_status": http_status,
            "exit_code": code,
        }));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}
