//! The subcommands. Each returns its exit code; errors carry theirs
//! ([`crate::exit::Failure`]).

mod watch;

use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::exit::{self, Failure};
use crate::output::{cell_text, grouped, human_bytes, table, Kind, Output};
use crate::{Command, ExportArgs, ImportArgs, JobsCommand, SearchArgs};
use watch::{follow, int, Ended};

pub async fn run(client: &Client, out: Output, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Import(args) => import(client, out, args).await,
        Command::Export(args) => export(client, out, args).await,
        Command::Search(args) => search(client, out, args).await,
        Command::Jobs(cmd) => jobs(client, out, cmd).await,
    }
}

/// `connectra import FILE`.
async fn import(client: &Client, out: Output, args: ImportArgs) -> anyhow::Result<u8> {
    let path = args.file.as_path();
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::api(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Failure::api(format!("{} is not a file", path.display())).into());
    }
    // Open it now, so an unreadable file fails before anything is uploaded.
    std::fs::File::open(path)
        .map_err(|e| Failure::api(format!("cannot read {}: {e}", path.display())))?;
    let size = meta.len();
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload.csv".into());

    let target = client
        .get("/common/upload-url", &[("filename", filename.as_str())])
        .await?;
    let (Some(url), Some(key)) = (target["upload_url"].as_str(), target["s3_key"].as_str()) else {
        return Err(Failure::api(format!(
            "the upload-url answer lacks upload_url or s3_key: {target}"
        ))
        .into());
    };
    let bucket = target["s3_bucket"].as_str().map(str::to_string);
    if let (Some(wanted), Some(bucket)) = (&args.bucket, &bucket) {
        if wanted != bucket {
            return Err(Failure::usage(format!(
                "--bucket {wanted}: the API uploads only into its bucket '{bucket}'; leave --bucket out"
            ))
            .into());
        }
    }

    let bar = std::sync::Arc::new(out.progress("upload", Kind::Bytes));
    let shown = bar.clone();
    client
        .upload(url, path, size, move |sent| {
            shown.update(sent, Some(size), "")
        })
        .await
        .with_context(|| format!("uploading {}", path.display()))?;
    bar.finish(size, &format!("uploaded {}", human_bytes(size)));
    drop(bar);

    let mut data = Map::new();
    data.insert("s3_key".into(), json!(key));
    if let Some(bucket) = &bucket {
        data.insert("s3_bucket".into(), json!(bucket));
    }
    if let Some(service) = args.service {
        data.insert("service".into(), json!(service.as_str()));
    }
    let created = client
        .post(
            "/common/jobs/create",
            &json!({"job_type": "insert_csv_file", "job_data": data, "retry_count": args.retries}),
        )
        .await?;
    let uuid = job_uuid(&created)?;
    if !out.json {
        eprintln!("import job {uuid} created");
    }
    let ended = follow(client, out, &uuid).await?;
    print_import_summary(out, &ended, args.show_rejected);
    Ok(ended.exit_code())
}

fn job_uuid(created: &Value) -> anyhow::Result<String> {
    created["data"]["uuid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            Failure::api(format!("the create answer names no job uuid: {created}")).into()
        })
}

/// The error report's `s3://bucket/key`, if the job wrote one.
fn report_location(job: &Value) -> Option<String> {
    let key = job["job_response"]["error_report_s3_key"].as_str()?;
    Some(match job["data"]["s3_bucket"].as_str() {
        Some(bucket) => format!("s3://{bucket}/{key}"),
        None => key.to_string(),
    })
}

fn runtime_errors(job: &Value) -> Vec<String> {
    job["job_response"]["runtime_errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn print_import_summary(out: Output, ended: &Ended, show: usize) {
    let job = ended.job();
    let uuid = job["uuid"].as_str().unwrap_or("?");
    let rows = int(job, "rows_processed");
    let rejected = int(job, "rows_rejected");
    let replaced = job["job_response"]["rows_uuid_replaced"]
        .as_u64()
        .unwrap_or(0);
    let errors = runtime_errors(job);
    let report = report_location(job);
    if out.json {
        out.print_json(&json!({
            "success": matches!(ended, Ended::Completed(_)),
            "outcome": ended.word(),
            "job_uuid": uuid,
            "rows_processed": rows,
            "rows_rejected": rejected,
            "rows_uuid_replaced": replaced,
            "error_report": report,
            "runtime_errors": errors,
            "job": job,
        }));
        return;
    }
    println!("import {uuid} {}", ended.word());
    println!("  rows imported:   {}", grouped(rows));
    println!("  rows rejected:   {}", grouped(rejected));
    if replaced > 0 {
        println!("  uuids replaced:  {}", grouped(replaced));
    }
    if let Some(report) = &report {
        println!("  error report:    {report}");
    }
    print_errors(ended, &errors, show);
}

fn print_errors(ended: &Ended, errors: &[String], show: usize) {
    if errors.is_empty() || show == 0 {
        return;
    }
    let heading = match ended {
        Ended::Completed(_) => "first rejected lines:",
        _ => "errors:",
    };
    println!("  {heading}");
    for e in errors.iter().take(show) {
        println!("    {e}");
    }
    if errors.len() > show {
        println!("    … {} more", errors.len() - show);
    }
}

/// The VQL of `--vql FILE` or `--where JSON`, with `--columns` when given.
fn vql_of(
    vql: Option<&Path>,
    where_: Option<&str>,
    columns: Option<&[String]>,
) -> anyhow::Result<Map<String, Value>> {
    let mut query = match (vql, where_) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure::api(format!("cannot read {}: {e}", file.display())))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(Failure::usage(format!(
                        "{} must hold a JSON object (the VQL query)",
                        file.display()
                    ))
                    .into())
                }
                Err(e) => {
                    return Err(Failure::usage(format!(
                        "{} is not valid JSON: {e}",
                        file.display()
                    ))
                    .into())
                }
            }
        }
        (None, Some(w)) => {
            let w: Value = serde_json::from_str(w)
                .map_err(|e| Failure::usage(format!("--where is not valid JSON: {e}")))?;
            if !w.is_object() {
                return Err(Failure::usage("--where must be a JSON object, e.g. '{\"keyword_match\": {\"must\": {\"country\": [\"USA\"]}}}'").into());
            }
            [("where".to_string(), w)].into_iter().collect()
        }
        (None, None) => Map::new(),
    };
    if let Some(columns) = columns {
        let columns: Vec<&str> = columns
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .collect();
        query.insert("select_columns".into(), json!(columns));
    }
    Ok(query)
}

/// `connectra export`.
async fn export(client: &Client, out: Output, args: ExportArgs) -> anyhow::Result<u8> {
    let vql = vql_of(
        args.vql.as_deref(),
        args.where_.as_deref(),
        args.columns.as_deref(),
    )?;
    let has_columns = vql
        .get("select_columns")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_columns {
        return Err(Failure::usage(
            "an export needs its columns: pass --columns a,b,c (or select_columns in the --vql file)",
        )
        .into());
    }
    let dir = args.output.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return Err(Failure::api(format!(
                "cannot write {}: {} is not a directory",
                args.output.display(),
                dir.display()
            ))
            .into());
        }
    }
    let mut data = Map::new();
    data.insert("service".into(), json!(args.service.as_str()));
    data.insert("vql".into(), Value::Object(vql));
    if let Some(bucket) = &args.bucket {
        data.insert("s3_bucket".into(), json!(bucket));
    }
    let created = client
        .post(
            "/common/jobs/create",
            &json!({"job_type": "export_csv_file", "job_data": data, "retry_count": args.retries}),
        )
        .await?;
    let uuid = job_uuid(&created)?;
    if !out.json {
        eprintln!("export job {uuid} created");
    }
    let ended = follow(client, out, &uuid).await?;
    let job = ended.job();
    let rows = job["job_response"]["rows_exported"]
        .as_u64()
        .unwrap_or_else(|| int(job, "rows_processed"));
    let mut bytes = None;
    if let Ended::Completed(_) = ended {
        let link = client
            .get(&format!("/common/jobs/{uuid}/download-url"), &[])
            .await?;
        let url = link["download_url"].as_str().ok_or_else(|| {
            Failure::api(format!(
                "the download-url answer lacks download_url: {link}"
            ))
        })?;
        let bar = out.progress("download", Kind::Bytes);
        let written = client
            .download(url, &args.output, |n, total| bar.update(n, total, ""))
            .await
            .with_context(|| format!("downloading the export to {}", args.output.display()))?;
        bar.finish(written, &format!("downloaded {}", human_bytes(written)));
        bytes = Some(written);
    }
    let errors = runtime_errors(job);
    if out.json {
        out.print_json(&json!({
            "success": matches!(ended, Ended::Completed(_)),
            "outcome": ended.word(),
            "job_uuid": uuid,
            "rows_exported": rows,
            "output": bytes.map(|_| args.output.display().to_string()),
            "bytes": bytes,
            "s3_key": job["job_response"]["s3_key"],
            "runtime_errors": errors,
            "job": job,
        }));
    } else {
        println!("export {uuid} {}", ended.word());
        println!("  rows exported:   {}", grouped(rows));
        if let Some(bytes) = bytes {
            println!(
                "  written to:      {} ({})",
                args.output.display(),
                human_bytes(bytes)
            );
        }
        print_errors(&ended, &errors, 10);
    }
    Ok(ended.exit_code())
}

/// `connectra search`.
async fn search(client: &Client, out: Output, args: SearchArgs) -> anyhow::Result<u8> {
    let mut vql = vql_of(
        args.vql.as_deref(),
        args.where_.as_deref(),
        args.columns.as_deref(),
    )?;
    if let Some(limit) = args.limit {
        vql.insert("limit".into(), json!(limit));
    }
    if let Some(after) = &args.search_after {
        let after: Value = serde_json::from_str(after)
            .map_err(|e| Failure::usage(format!("--search-after is not valid JSON: {e}")))?;
        vql.insert("search_after".into(), after);
    }
    let columns: Option<Vec<String>> = vql.get("select_columns").and_then(|c| {
        c.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    });
    let page = client
        .post(
            &format!("/{}/search", args.service.plural()),
            &Value::Object(vql),
        )
        .await?;
    if out.json {
        out.print_json(&page);
        return Ok(exit::SUCCESS);
    }
    let rows = page["data"].as_array().cloned().unwrap_or_default();
    let headers = columns.unwrap_or_else(|| {
        rows.first()
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    });
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| headers.iter().map(|h| cell_text(&r[h])).collect())
        .collect();
    if !rows.is_empty() {
        println!("{}", table(&headers, &cells));
    }
    println!(
        "{} {}",
        grouped(rows.len() as u64),
        if rows.len() == 1 { "row" } else { "rows" }
    );
    if let Some(next) = page.get("next_search_after").filter(|n| !n.is_null()) {
        println!("next page: --search-after '{next}'");
    }
    Ok(exit::SUCCESS)
}

/// `connectra jobs …`.
async fn jobs(client: &Client, out: Output, cmd: JobsCommand) -> anyhow::Result<u8> {
    match cmd {
        JobsCommand::List {
            status,
            job_type,
            limit,
        } => {
            let mut body = Map::new();
            if let Some(status) = status {
                body.insert("status".into(), json!(status));
            }
            if let Some(t) = job_type {
                body.insert("job_type".into(), json!(t));
            }
            body.insert("limit".into(), json!(limit));
            let answer = client.post("/common/jobs", &Value::Object(body)).await?;
            if out.json {
                out.print_json(&answer["data"]);
                return Ok(exit::SUCCESS);
            }
            let jobs = answer["data"].as_array().cloned().unwrap_or_default();
            let headers: Vec<String> = ["uuid", "type", "status", "rows", "rejected", "created_at"]
                .map(String::from)
                .to_vec();
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    let mut status = cell_text(&j["status"]);
                    if j["job_response"]["cancelled"] == Value::Bool(true) {
                        status.push_str(" (cancelled)");
                    }
                    vec![
                        cell_text(&j["uuid"]),
                        cell_text(&j["job_type"]),
                        status,
                        grouped(int(j, "rows_processed")),
                        grouped(int(j, "rows_rejected")),
                        cell_text(&j["created_at"]),
                    ]
                })
                .collect();
            if jobs.is_empty() {
                println!("no jobs");
            } else {
                println!("{}", table(&headers, &rows));
            }
            Ok(exit::SUCCESS)
        }
        JobsCommand::Show { uuid } => {
            let job = client.get(&format!("/common/jobs/{uuid}"), &[]).await?["data"].clone();
            if out.json {
                out.print_json(&job);
            } else {
                print_job(&job);
            }
            Ok(exit::SUCCESS)
        }
        JobsCommand::Watch { uuid } => {
            let ended = follow(client, out, &uuid).await?;
            let job = ended.job();
            if job["job_type"] == "insert_csv_file" {
                print_import_summary(out, &ended, 10);
            } else if out.json {
                out.print_json(&json!({
                    "success": matches!(ended, Ended::Completed(_)),
                    "outcome": ended.word(),
                    "job": job,
                }));
            } else {
                println!("job {uuid} {}", ended.word());
                print_errors(&ended, &runtime_errors(job), 10);
            }
            Ok(ended.exit_code())
        }
        JobsCommand::Cancel { uuid } => {
            let answer = client
                .post_empty(&format!("/common/jobs/{uuid}/cancel"))
                .await?;
            if out.json {
                out.print_json(&answer);
            } else {
                println!(
                    "{} (job {uuid} is {})",
                    answer["message"].as_str().unwrap_or("cancel sent"),
                    cell_text(&answer["data"]["status"])
                );
            }
            Ok(exit::SUCCESS)
        }
        JobsCommand::Retry { uuid } => {
            let answer = client
                .post_empty(&format!("/common/jobs/{uuid}/retry"))
                .await?;
            if out.json {
                out.print_json(&answer);
            } else {
                println!(
                    "{} (job {uuid} is {}); follow it: connectra jobs watch {uuid}",
                    answer["message"].as_str().unwrap_or("retry requested"),
                    cell_text(&answer["data"]["status"])
                );
            }
            Ok(exit::SUCCESS)
        }
    }
}

fn print_job(job: &Value) {
    let field = |k: &str| cell_text(&job[k]);
    println!("job {}", field("uuid"));
    for key in [
        "job_type",
        "status",
        "attempts",
        "retry_count",
        "run_after",
        "rows_processed",
        "rows_rejected",
        "bytes_read",
        "bytes_total",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        let v = field(key);
        if !v.is_empty() {
            println!("  {key:<15} {v}");
        }
    }
    if job["cancel_requested"] == Value::Bool(true) {
        println!("  cancel requested");
    }
    println!(
        "  data            {}",
        serde_json::to_string(&job["data"]).unwrap_or_default()
    );
    if let Some(response) = job["job_response"].as_object().filter(|r| !r.is_empty()) {
        println!("  job_response");
        for (k, v) in response {
            match v {
                Value::Array(items) => {
                    println!("    {k}:");
                    for item in items {
                        println!("      {}", cell_text(item));
                    }
                }
                other => println!("    {k}: {}", cell_text(other)),
            }
        }
    }
}
