//! The Jobs API over HTTP: one `reqwest` client, every request with a
//! timeout, transient failures retried with the workspace's one policy, and
//! every error answer turned into the server's own `ERR_…` sentence.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use connectra_domain::retry::RetryPolicy;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::exit::Failure;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idempotent request keeps being retried while the server is
/// unreachable or answers 502/503/504 (a restart, a database failover).
const RETRY_FOR: Duration = Duration::from_secs(60);
/// A transfer (upload or download) that moves no byte for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// An upload's total timeout grows with its size: this much a second is the
/// slowest speed accepted.
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 256 * 1024;

/// The API: its base URL, its key and the per-request timeout.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    key: String,
    timeout: Duration,
}

/// Whether a request may be sent again when it failed on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    /// GETs, cancels: sent again on any transient failure.
    Yes,
    /// Creates: sent again only when the connection was never made, so the
    /// server cannot have seen it.
    No,
}

impl Client {
    pub fn new(url: &str, key: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let key = key.filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            Failure::usage("no API key: set CONNECTRA_API_KEY or pass --api-key (the local stack's key is dev-key)")
        })?;
        let mut base = reqwest::Url::parse(url).map_err(|e| {
            Failure::usage(format!("--url / CONNECTRA_URL {url:?} is not a URL: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Failure::usage(format!(
                "--url / CONNECTRA_URL {url:?} must start with http:// or https://"
            ))
            .into());
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("connectra-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            key,
            timeout,
        })
    }

    fn url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        self.base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("building the URL of {path}"))
    }

    /// `GET path` with `query`; the answer's JSON.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.send(Method::GET, url, None, Idempotent::Yes).await
    }

    /// `POST path` with a JSON body; the answer's JSON. `create` requests are
    /// not retried once they may have reached the server.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let idempotent = if path.ends_with("/create") {
            Idempotent::No
        } else {
            Idempotent::Yes
        };
        self.send(Method::POST, self.url(path)?, Some(body), idempotent)
            .await
    }

    /// `POST path` without a body (cancel, retry).
    pub async fn post_empty(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::POST, self.url(path)?, None, Idempotent::Yes)
            .await
    }

    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> anyhow::Result<Value> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let started = tokio::time::Instant::now();
        let mut pauses = RetryPolicy::QUICK.pauses();
        let mut warned = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header("X-API-Key", &self.key)
                .timeout(self.timeout);
            if let Some(body) = &body {
                request = request
                    .header("Content-Type", "application/json")
                    .body(body.clone());
            }
            let outcome: Result<(), anyhow::Error> = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let transient = matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    match read_answer(method.as_str(), &url, response, self.timeout).await {
                        Ok(value) => return Ok(value),
                        Err(e) if transient && idempotent == Idempotent::Yes => Err(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    let retry = e.is_connect() || (idempotent == Idempotent::Yes && e.is_timeout());
                    let e = transport_error(method.as_str(), &url, &e, self.timeout);
                    if retry {
                        Err(e)
                    } else {
                        return Err(e);
                    }
                }
            };
            let pause = pauses.next_pause();
            if !warned {
                if let Err(e) = &outcome {
                    eprintln!(
                        "{e}; retrying for up to {} s (Ctrl-C stops)",
                        RETRY_FOR.as_secs()
                    );
                }
                warned = true;
            }
            match outcome {
                Err(e) if started.elapsed() + pause > RETRY_FOR => {
                    return Err(e.context(format!(
                        "gave up after {} s of retries",
                        RETRY_FOR.as_secs()
                    )))
                }
                _ => tokio::time::sleep(pause).await,
            }
        }
    }

    /// PUTs the file at `path` to a presigned URL, calling `progress` with
    /// the bytes sent so far.
    pub async fn upload(
        &self,
        presigned: &str,
        path: &Path,
        size: u64,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        let url = reqwest::Url::parse(presigned)
            .with_context(|| format!("the server's upload URL {presigned:?} is not a URL"))?;
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(
            move |chunk: std::io::Result<bytes::Bytes>| {
                if let Ok(bytes) = &chunk {
                    sent += bytes.len() as u64;
                    progress(sent);
                }
                chunk
            },
        );
        let total = CONNECT_TIMEOUT
            + self.timeout
            + Duration::from_secs(size / SLOWEST_UPLOAD_BYTES_PER_SEC);
        let response = self
            .http
            .put(url.clone())
            .header("Content-Type", "text/csv")
            .header("Content-Length", size)
            .timeout(total)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(|e| transport_error("PUT", &redacted(&url), &e, total))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(Failure::api(format!(
                "the upload to S3 failed with HTTP {status}: {}",
                s3_message(&text)
            ))
            .into());
        }
        Ok(())
    }

    /// GETs a presigned URL into `dest` (through `dest.part`, renamed once
    /// complete), calling `progress` with the bytes so far and the total
    /// when known. Returns the bytes written.
    pub async fn download(
        &self,
        presigned: &str,
        dest: &Path,
        progress: impl Fn(u64, Option<u64>),
    ) -> anyhow::Result<u64> {
        use tokio::io::AsyncWriteExt as _;
        let url = reqwest::Url::parse(presigned)
            .with_context(|| format!("the server's download URL {presigned:?} is not a URL"))?;
        let mut response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| transport_error("GET", &redacted(&url), &e, STALL_TIMEOUT))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(Failure::api(format!(
                "the download from S3 failed with HTTP {status}: {}",
                s3_message(&text)
            ))
            .into());
        }
        let total = response.content_length();
        let part = dest.with_extension(match dest.extension() {
            Some(ext) => format!("{}.part", ext.to_string_lossy()),
            None => "part".to_string(),
        });
        let mut file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("cannot write {}", part.display()))?;
        let mut written = 0u64;
        let result: anyhow::Result<()> = async {
            loop {
                let chunk = tokio::time::timeout(STALL_TIMEOUT, response.chunk())
                    .await
                    .map_err(|_| {
                        Failure::api(format!(
                            "the download stalled: no byte for {} s",
                            STALL_TIMEOUT.as_secs()
                        ))
                    })?
                    .map_err(|e| transport_error("GET", &redacted(&url), &e, STALL_TIMEOUT))?;
                let Some(chunk) = chunk else { break };
                file.write_all(&chunk)
                    .await
                    .with_context(|| format!("cannot write {}", part.display()))?;
                written += chunk.len() as u64;
                progress(written, total);
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok(())
        }
        .await;
        drop(file);
        match result {
            Ok(()) => {
                tokio::fs::rename(&part, dest).await.with_context(|| {
                    format!("cannot move {} to {}", part.display(), dest.display())
                })?;
                Ok(written)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }
}

/// The URL without its query, which carries a presigned signature.
fn redacted(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    url.set_query(None);
    url
}

/// A request that got no answer, said plainly.
fn transport_error(
    method: &str,
    url: &reqwest::Url,
    e: &reqwest::Error,
    timeout: Duration,
) -> anyhow::Error {
    let what = if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_timeout() {
        format!("no answer within {} s", timeout.as_secs())
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    };
    Failure::api(format!("{method} {url}: {what}")).into()
}

/// The answer's JSON when it is a success; otherwise the server's `error`
/// sentence (`ERR_…: …`), or a description of a body that is not the API's.
async fn read_answer(
    method: &str,
    url: &reqwest::Url,
    response: reqwest::Response,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(method, url, &e, timeout))?;
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        return json.ok_or_else(|| {
            Failure::api(format!(
                "{method} {}: HTTP {status} with a body that is not JSON: {}",
                url.path(),
                snippet(&bytes)
            ))
            .into()
        });
    }
    let message = match json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
    {
        Some(error) => error.to_string(),
        None => format!(
            "{method} {}: HTTP {status}: {}",
            url.path(),
            snippet(&bytes)
        ),
    };
    Err(Failure::server(status.as_u16(), message).into())
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// S3's `<Message>` from an XML error body, else its first characters.
fn s3_message(text: &str) -> String {
    match (text.find("<Message>"), text.find("</Message>")) {
        (Some(a), Some(b)) if a + 9 <= b => text[a + 9..b].to_string(),
        _ => snippet(text.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_errors_show_their_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied.</Message></Error>";
        assert_eq!(s3_message(xml), "Access Denied.");
        assert_eq!(s3_message(""), "(empty body)");
        assert_eq!(s3_message(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn a_base_url_keeps_its_path() {
        let c = Client::new("http://h:1/api", Some("k".into()), Duration::from_secs(1));
        let url = c.ok().and_then(|c| c.url("/common/jobs").ok());
        assert_eq!(
            url.map(|u| u.to_string()).as_deref(),
            Some("http://h:1/api/common/jobs")
        );
        assert!(Client::new("ftp://h", Some("k".into()), Duration::from_secs(1)).is_err());
        assert!(Client::new("http://h", None, Duration::from_secs(1)).is_err());
    }
}
