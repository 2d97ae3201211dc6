//! `reindex_search`: rebuilds one service's OpenSearch index from
//! PostgreSQL, the record of truth, behind the alias that searches, exports
//! and imports use.
//!
//! 1. Under a PostgreSQL advisory lock (one rebuild per service at a time),
//!    create `{alias}_v{N}` (N = the highest existing `_v{n}` + 1) with the
//!    current definition, refreshes off and no replicas. Indices `_v{n}` the
//!    alias does not point to are what an unfinished rebuild left: deleted.
//! 2. Mark `M0` ([`RecordScanner::settle`]: every row version `<= M0` is
//!    final), then copy every row in uuid order, in keyset pages of
//!    [`PAGE`], each row with its version (`external_gte`: the newest wins
//!    whatever the order).
//! 3. Catch up: mark `M1`, copy the rows with a version `> M0`; repeat with
//!    `M1` until a round copies fewer than [`SMALL_DELTA`] rows.
//! 4. Restore the settings, refresh, and move the alias in one `_aliases`
//!    request. Until then every write through the alias went to the old
//!    index, and is caught up from PostgreSQL; from then on to the new one.
//! 5. Mark again, which waits for every transaction that was running at the
//!    swap (a write in flight may have indexed into the old index just
//!    before it), then copy the rows with a version above the last mark.
//!    This step runs even when the job is cancelled meanwhile: without it a
//!    write could be missing from the new index.
//! 6. Delete the old index, then verify (see [`verify`]).
//!
//! Any failure or cancel before the swap deletes the new index, so a retry
//! starts clean (also when the handler is dropped: [`HalfBuilt`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use connectra_domain::job::{JobResponse, ReindexSearchData, MAX_RUNTIME_ERRORS};
use connectra_domain::Service;
use connectra_persistence::jobs::Progress;
use connectra_persistence::scan::{RecordScanner, SettleError};
use connectra_search::{IndexLayout, IndexVersion, JsonDocument, OpenSearchBackend, SearchBackend};
use serde_json::{json, Value};

use super::BuiltinDeps;
use crate::JobContext;

/// Rows per page, on both stores.
const PAGE: i64 = 5000;
/// How long a mark waits for the transactions running when it was read.
const SETTLE_BOUND: Duration = Duration::from_secs(300);
/// A catch-up round that copies fewer rows than this is the last one
/// before the swap.
const SMALL_DELTA: usize = 1000;
/// At most this many catch-up rounds before the swap.
const CATCH_UP_ROUNDS: usize = 5;
/// The verification looks again at up to this many differing uuids (the
/// rest count as differences).
const MAX_RECHECK: usize = 10_000;

pub(super) async fn run(ctx: JobContext, deps: Arc<BuiltinDeps>) -> anyhow::Result<JobResponse> {
    let data: ReindexSearchData = serde_json::from_value(ctx.data().clone())
        .context("invalid job_data for reindex_search")?;
    let service = data.service;
    let Some(os) = deps.search.as_opensearch() else {
        anyhow::bail!(
            "reindex_search needs the OpenSearch backend (OPENSEARCH_URL); the {} backend searches the record tables themselves and has no index to rebuild",
            deps.search.name()
        );
    };
    let os = os.clone();
    let alias = os.index_name(service);
    let scanner = RecordScanner::connect(&deps.database_url)
        .await
        .context("connecting to PostgreSQL for the reindex")?;
    if !scanner.try_lock_rebuild(service).await? {
        anyhow::bail!(
            "another reindex_search of {service} is running (it holds the rebuild lock); run this one again once it has finished"
        );
    }
    let mut notes: Vec<String> = Vec::new();
    let mut layout = os.layout(service).await?;
    if layout == IndexLayout::Missing {
        os.ensure_indices()
            .await
            .context("creating the search indices")?;
        layout = os.layout(service).await?;
    }
    let live = layout.physical();
    let versions = os.versioned_indices(service).await?;
    let next = versions.iter().map(|(n, _)| *n).max().unwrap_or(0) + 1;
    for (_, name) in versions.iter().filter(|(_, name)| !live.contains(name)) {
        os.delete_index(name).await?;
        notes.push(format!("deleted '{name}', left by an unfinished rebuild"));
    }
    let new = os.versioned_name(service, next);
    os.create_rebuild_index(service, &new)
        .await
        .with_context(|| format!("creating the index '{new}'"))?;
    let mut half_built = HalfBuilt {
        os: os.clone(),
        name: Some(new.clone()),
    };
    tracing::info!(%service, index = %new, from = ?live, "rebuilding the search index");

    let built = async {
        let (rows, mark) = build(&ctx, &os, &scanner, service, &new).await?;
        os.finish_rebuild_index(service, &new)
            .await
            .with_context(|| format!("restoring the settings of '{new}'"))?;
        anyhow::Ok((rows, mark))
    }
    .await;
    let (mut rows, mark) = match built {
        Ok(v) => v,
        Err(e) => {
            half_built.delete().await;
            return Err(e.context(format!("the alias '{alias}' still points to {live:?}")));
        }
    };
    if let Err(e) = os.swap_alias(service, &layout, &new).await {
        // an answer lost after the swap was applied must not delete the live index
        match os.layout(service).await {
            Ok(IndexLayout::Alias(now)) if now.contains(&new) => {}
            Ok(_) => {
                half_built.delete().await;
                return Err(anyhow::anyhow!(e).context(format!(
                    "moving the alias '{alias}' to '{new}' failed (another process moved it?); the alias is unchanged"
                )));
            }
            Err(check) => {
                half_built.name = None;
                return Err(anyhow::anyhow!(e).context(format!(
                    "moving the alias '{alias}' to '{new}' failed and where it points could not be read ({check}); '{new}' is kept"
                )));
            }
        }
    }
    half_built.name = None;

    // The new index serves now. Writes that were in flight at the swap may
    // have gone to the old index: wait for them, then copy them. Not
    // stopped by a cancel.
    let after_swap = async {
        scanner
            .settle(SETTLE_BOUND, std::future::pending())
            .await
            .map_err(settle_error)?;
        copy(None, &os, &scanner, service, &new, Some(mark), 0).await
    }
    .await
    .with_context(|| {
        format!("the alias '{alias}' points to '{new}' now, but writes made during the swap may be missing from it; run reindex_search again")
    })?;
    rows += after_swap;
    if !matches!(layout, IndexLayout::Concrete(_)) {
        for old in &live {
            match os.delete_index(old).await {
                Ok(()) => notes.push(format!("deleted the previous index '{old}'")),
                Err(e) => notes.push(format!(
                    "the previous index '{old}' could not be deleted ({e}); delete it by hand"
                )),
            }
        }
    } else {
        notes.push(format!(
            "the concrete index '{alias}' of an older deployment was replaced by the alias"
        ));
    }
    if ctx.is_cancelled() {
        return Err(ctx.stopped().context(format!(
            "cancelled after the alias '{alias}' moved to '{new}' (fully caught up); not verified"
        )));
    }

    let verification = verify(&ctx, &os, &scanner, service, &new).await?;
    let mut response = JobResponse::default();
    let summary = format!(
        "rebuilt '{alias}' into '{new}' from PostgreSQL: {rows} rows indexed; verification: {} rows in PostgreSQL, {} documents in the index, {} differences, {} explained by writes during the verification",
        verification.postgres.rows,
        verification.index.rows,
        verification.differences(),
        verification.concurrent,
    );
    if verification.differences() > 0 {
        let first: Vec<String> = verification
            .first
            .iter()
            .take(10)
            .map(|d| format!("{} ({})", d.uuid, d.problem))
            .collect();
        anyhow::bail!(
            "{summary}; the new index differs from PostgreSQL where no concurrent write explains it, first: {}",
            first.join(", ")
        );
    }
    let mut messages = summary;
    for note in &notes {
        messages.push_str("; ");
        messages.push_str(note);
    }
    response.messages = Some(messages);
    response.extra.insert("rows_indexed".into(), rows.into());
    response.extra.insert("index".into(), new.clone().into());
    response
        .extra
        .insert("verification".into(), verification.to_json());
    Ok(response)
}

/// Deletes the index being built unless it was handed over (the alias
/// points to it): on a failure, a cancel, or when the handler is dropped.
struct HalfBuilt {
    os: OpenSearchBackend,
    name: Option<String>,
}

impl HalfBuilt {
    async fn delete(&mut self) {
        if let Some(name) = self.name.take() {
            match self.os.delete_index(&name).await {
                Ok(()) => tracing::info!(index = %name, "deleted the half-built index"),
                Err(e) => {
                    tracing::warn!(error = %e, index = %name, "the half-built index could not be deleted; the next reindex deletes it")
                }
            }
        }
    }
}

impl Drop for HalfBuilt {
    fn drop(&mut self) {
        if let (Some(name), Ok(runtime)) = (self.name.take(), tokio::runtime::Handle::try_current())
        {
            let os = self.os.clone();
            runtime.spawn(async move {
                if let Err(e) = os.delete_index(&name).await {
                    tracing::warn!(error = %e, index = %name, "the half-built index could not be deleted; the next reindex deletes it");
                }
            });
        }
    }
}

fn settle_error(e: SettleError) -> anyhow::Error {
    match e {
        SettleError::Stopped => crate::Stopped.into(),
        other => other.into(),
    }
}

/// A mark before the swap: stopped by a cancel.
async fn mark(ctx: &JobContext, scanner: &RecordScanner) -> anyhow::Result<i64> {
    scanner
        .settle(SETTLE_BOUND, ctx.cancellation().cancelled())
        .await
        .map_err(settle_error)
}

/// Steps 2 and 3: the full copy and the catch-up rounds. Returns the rows
/// indexed and the last mark (every version at or below it is in the index).
async fn build(
    ctx: &JobContext,
    os: &OpenSearchBackend,
    scanner: &RecordScanner,
    service: Service,
    index: &str,
) -> anyhow::Result<(i64, i64)> {
    let mut mark_now = mark(ctx, scanner).await?;
    let mut rows = copy(Some(ctx), os, scanner, service, index, None, 0).await?;
    for _ in 0..CATCH_UP_ROUNDS {
        let next = mark(ctx, scanner).await?;
        let caught = copy(Some(ctx), os, scanner, service, index, Some(mark_now), rows).await?;
        rows += caught;
        mark_now = next;
        tracing::debug!(caught, mark = mark_now, "catch-up round");
        if caught < SMALL_DELTA as i64 {
            break;
        }
    }
    Ok((rows, mark_now))
}

/// Copies the rows of `service` (those with a version above `newer_than`,
/// when given) into `index`, page by page; returns how many. With `ctx`
/// (before the swap) it stops at a cancel and records progress, counting
/// from `before`.
async fn copy(
    ctx: Option<&JobContext>,
    os: &OpenSearchBackend,
    scanner: &RecordScanner,
    service: Service,
    index: &str,
    newer_than: Option<i64>,
    before: i64,
) -> anyhow::Result<i64> {
    let mut after = None;
    let mut copied = 0i64;
    loop {
        if let Some(ctx) = ctx {
            if ctx.is_cancelled() {
                return Err(ctx.stopped());
            }
        }
        let page = scanner
            .records(service, after, newer_than, PAGE)
            .await
            .with_context(|| format!("reading {service} records"))?;
        let Some(last) = page.last() else { break };
        after = Some(last.uuid);
        let n = page.len();
        let docs: Vec<JsonDocument> = page.into_iter().map(JsonDocument::from).collect();
        let refused = os
            .index_json_into(index, docs)
            .await
            .with_context(|| format!("indexing {n} {service} records into '{index}'"))?;
        if !refused.is_empty() {
            let first: Vec<String> = refused
                .iter()
                .take(5)
                .map(|r| format!("{}: status {} {}", r.uuid, r.status, r.reason))
                .collect();
            anyhow::bail!(
                "the new index '{index}' refused {} of PostgreSQL's records (its mapping cannot take them), first: {}",
                refused.len(),
                first.join("; ")
            );
        }
        copied += n as i64;
        if let Some(ctx) = ctx {
            ctx.record_progress(
                &Progress {
                    rows_processed: before + copied,
                    rows_rejected: 0,
                    bytes_read: 0,
                    bytes_total: None,
                },
                None,
            )
            .await?;
        }
        if (n as i64) < PAGE {
            break;
        }
    }
    Ok(copied)
}

/// One store's side of the verification.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Side {
    rows: i64,
    /// The wrapping sum of [`pair_hash`] over the store's `(uuid, version)`
    /// pairs: equal multisets give equal sums, whatever the order.
    checksum: u64,
}

impl Side {
    fn add(&mut self, uuid: uuid::Uuid, version: i64) {
        self.rows += 1;
        self.checksum = self.checksum.wrapping_add(pair_hash(uuid, version));
    }
}

/// FNV-1a (64 bits) of the uuid's bytes and the version's: stable across
/// builds, unlike the standard library's hasher.
fn pair_hash(uuid: uuid::Uuid, version: i64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in uuid.as_bytes().iter().chain(version.to_le_bytes().iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What differs for one uuid.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Difference {
    uuid: uuid::Uuid,
    problem: &'static str,
    postgres_version: Option<i64>,
    index_version: Option<i64>,
}

fn difference(uuid: uuid::Uuid, pg: Option<i64>, index: Option<i64>) -> Difference {
    let problem = match (pg, index) {
        (Some(_), None) => "missing_in_index",
        (None, Some(_)) => "extra_in_index",
        _ => "version_differs",
    };
    Difference {
        uuid,
        problem,
        postgres_version: pg,
        index_version: index,
    }
}

#[derive(Debug, Default)]
struct Verification {
    postgres: Side,
    index: Side,
    /// Differences that a write during the verification explains.
    concurrent: i64,
    missing_in_index: i64,
    extra_in_index: i64,
    version_differs: i64,
    /// The first [`MAX_RUNTIME_ERRORS`] differences.
    first: Vec<Difference>,
}

impl Verification {
    fn differences(&self) -> i64 {
        self.missing_in_index + self.extra_in_index + self.version_differs
    }

    fn record(&mut self, d: Difference) {
        match d.problem {
            "missing_in_index" => self.missing_in_index += 1,
            "extra_in_index" => self.extra_in_index += 1,
            _ => self.version_differs += 1,
        }
        if self.first.len() < MAX_RUNTIME_ERRORS {
            self.first.push(d);
        }
    }

    fn to_json(&self) -> Value {
        let side = |s: &Side, key: &str| json!({ key: s.rows, "checksum": format!("{:016x}", s.checksum) });
        json!({
            "postgres": side(&self.postgres, "rows"),
            "index": side(&self.index, "documents"),
            "checksums_match": self.postgres == self.index,
            "concurrent_writes": self.concurrent,
            "differences": self.differences(),
            "missing_in_index": self.missing_in_index,
            "extra_in_index": self.extra_in_index,
            "version_differs": self.version_differs,
            "first_differences": self.first.iter().map(|d| json!({
                "uuid": d.uuid,
                "problem": d.problem,
                "postgres_version": d.postgres_version,
                "index_version": d.index_version,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Compares PostgreSQL's `(uuid, version)` pairs with the new index's
/// `(uuid, _version)` in one merge in uuid order, a page of each at a time.
///
/// Concurrent writes: a mark `Mv` is taken first (every version `<= Mv` is
/// final and, since an import indexes before it commits, in the index),
/// the index is refreshed, and its point in time opened; PostgreSQL is read
/// after. A pair that differs where PostgreSQL's row has a version `> Mv`
/// was written during the verification: counted in `concurrent_writes`,
/// not a difference. Any other differing uuid (at most [`MAX_RECHECK`] kept)
/// is looked at again after a new mark `Mr`: equal now, or PostgreSQL's
/// version `> Mr`, is a concurrent write too (e.g. a batch indexed but not
/// yet committed, or rolled back and being restored); otherwise it is a
/// difference: missing in the index, extra in the index, or another
/// version.
async fn verify(
    ctx: &JobContext,
    os: &OpenSearchBackend,
    scanner: &RecordScanner,
    service: Service,
    index: &str,
) -> anyhow::Result<Verification> {
    let mv = mark(ctx, scanner).await?;
    os.refresh_named(index).await?;
    let mut view = os.version_pages(index, PAGE as usize).await?;
    let merged = merge(ctx, &mut view, scanner, service, mv).await;
    view.close().await;
    let (mut result, suspects) = merged?;
    if suspects.is_empty() {
        return Ok(result);
    }
    let mr = mark(ctx, scanner).await?;
    for chunk in suspects.chunks(PAGE as usize) {
        let pg: HashMap<uuid::Uuid, i64> = scanner
            .versions_of(service, chunk)
            .await?
            .into_iter()
            .collect();
        let ix: HashMap<uuid::Uuid, i64> = os
            .versions_of(index, chunk)
            .await?
            .into_iter()
            .map(|v| (v.uuid, v.version))
            .collect();
        for uuid in chunk {
            let (p, i) = (pg.get(uuid).copied(), ix.get(uuid).copied());
            if p == i || p.is_some_and(|p| p > mr) {
                result.concurrent += 1;
            } else {
                result.record(difference(*uuid, p, i));
            }
        }
    }
    Ok(result)
}

/// The merge of [`verify`]: the result so far and the uuids to look at again.
async fn merge(
    ctx: &JobContext,
    view: &mut connectra_search::VersionPage,
    scanner: &RecordScanner,
    service: Service,
    mv: i64,
) -> anyhow::Result<(Verification, Vec<uuid::Uuid>)> {
    let mut result = Verification::default();
    let mut suspects: Vec<uuid::Uuid> = Vec::new();
    let mut pg: VecDeque<(uuid::Uuid, i64)> = VecDeque::new();
    let mut ix: VecDeque<IndexVersion> = VecDeque::new();
    let (mut pg_after, mut pg_done, mut ix_done) = (None, false, false);
    let mut mismatch = |result: &mut Verification, uuid, p: Option<i64>, i: Option<i64>| {
        if p.is_some_and(|p| p > mv) {
            result.concurrent += 1;
        } else if suspects.len() < MAX_RECHECK {
            suspects.push(uuid);
        } else {
            result.record(difference(uuid, p, i));
        }
    };
    loop {
        if pg.is_empty() && !pg_done {
            if ctx.is_cancelled() {
                return Err(ctx.stopped());
            }
            let page = scanner.versions(service, pg_after, PAGE).await?;
            pg_done = (page.len() as i64) < PAGE;
            pg_after = page.last().map(|(u, _)| *u).or(pg_after);
            pg.extend(page);
        }
        if ix.is_empty() && !ix_done {
            match view.next_page().await? {
                Some(page) => ix.extend(page),
                None => ix_done = true,
            }
        }
        match (pg.front().copied(), ix.front().copied()) {
            (None, None) => break,
            (Some((u, p)), Some(d)) if u == d.uuid => {
                pg.pop_front();
                ix.pop_front();
                result.postgres.add(u, p);
                result.index.add(d.uuid, d.version);
                if p != d.version {
                    mismatch(&mut result, u, Some(p), Some(d.version));
                }
            }
            (Some((u, p)), d) if d.is_none_or(|d| u < d.uuid) => {
                pg.pop_front();
                result.postgres.add(u, p);
                mismatch(&mut result, u, Some(p), None);
            }
            (_, Some(d)) => {
                ix.pop_front();
                result.index.add(d.uuid, d.version);
                mismatch(&mut result, d.uuid, None, Some(d.version));
            }
            // the guard above takes every PostgreSQL row without a document
            (Some(_), None) => break,
        }
    }
    Ok((result, suspects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_ignore_order_and_see_versions() {
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let (mut x, mut y, mut z) = (Side::default(), Side::default(), Side::default());
        x.add(a, 1);
        x.add(b, 2);
        y.add(b, 2);
        y.add(a, 1);
        z.add(a, 1);
        z.add(b, 3);
        assert_eq!(x, y);
        assert_ne!(x.checksum, z.checksum);
        assert_eq!(x.rows, 2);
    }

    #[test]
    fn differences_are_named_by_what_is_missing() {
        let u = uuid::Uuid::from_u128(9);
        assert_eq!(difference(u, Some(1), None).problem, "missing_in_index");
        assert_eq!(difference(u, None, Some(1)).problem, "extra_in_index");
        assert_eq!(difference(u, Some(1), Some(2)).problem, "version_differs");
        let mut v = Verification::default();
        for _ in 0..(MAX_RUNTIME_ERRORS + 5) {
            v.record(difference(u, Some(1), None));
        }
        assert_eq!(v.first.len(), MAX_RUNTIME_ERRORS);
        assert_eq!(v.differences(), (MAX_RUNTIME_ERRORS + 5) as i64);
        assert_eq!(
            v.to_json()["missing_in_index"],
            json!(MAX_RUNTIME_ERRORS + 5)
        );
    }
}
