//! Several OpenSearch nodes behind one client.
//!
//! `OPENSEARCH_URL` may name several nodes of one cluster, comma-separated.
//! [`NodePool`] is the transport's [`ConnectionPool`]: each request goes to
//! the next node in turn, skipping the nodes marked down; when every node is
//! marked down it still hands them out in turn, so a request always goes
//! somewhere.
//!
//! The transport asks the pool for a connection once per request
//! (`Transport::send` calls `next()` first thing) and never tells it how the
//! request went, nor tries another node by itself. So the backend sends its
//! requests through [`NodePool::send`]: it learns which node `next()` chose
//! (a task-local set around the request), marks that node down for
//! [`DOWN_FOR`] when no response came back (connection refused or reset,
//! timed out), and sends the request again to the next node, at most once per
//! node and within the caller's time budget. After [`DOWN_FOR`] a node is
//! tried again by the next request that comes its way; any answer from it
//! marks it up at once. Only a request without any response is tried
//! elsewhere: an answer, even a 5xx, is the cluster's and is returned as it
//! is (bulk writes ride out 429/5xx themselves).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opensearch::http::response::Response;
use opensearch::http::transport::{Connection, ConnectionPool};
use opensearch::http::Url;

use crate::SearchError;

/// How long a node that did not answer is passed over.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(5);

/// Parses `OPENSEARCH_URL`: one or more `http(s)://host[:port][/path]` URLs,
/// comma-separated, whitespace around each tolerated. A bad or empty entry is
/// a [`SearchError::Config`] naming it.
pub fn parse_node_urls(list: &str) -> Result<Vec<Url>, SearchError> {
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    let count = entries.len();
    let mut urls = Vec::with_capacity(count);
    for (i, entry) in entries.into_iter().enumerate() {
        let place = if count == 1 {
            String::new()
        } else {
            format!(" (entry {} of {count})", i + 1)
        };
        if entry.is_empty() {
            return Err(SearchError::Config(format!(
                "OpenSearch URL{place} is empty: give one or more node URLs, comma-separated"
            )));
        }
        let url = Url::parse(entry)
            .map_err(|e| SearchError::Config(format!("OpenSearch URL '{entry}'{place}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SearchError::Config(format!(
                "OpenSearch URL '{entry}'{place}: the scheme must be http or https, not '{}'",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(SearchError::Config(format!(
                "OpenSearch URL '{entry}'{place}: no host"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(SearchError::Config(format!(
                "OpenSearch URL '{entry}'{place}: a node URL takes no query or fragment"
            )));
        }
        urls.push(url);
    }
    Ok(urls)
}

tokio::task_local! {
    /// The node `next()` chose for the request [`NodePool::send`] is running.
    static CHOSEN: Cell<Option<usize>>;
}

/// Round robin over the nodes of one cluster, passing over those that did
/// not answer lately. Cheap to clone: clones share their state.
#[derive(Debug, Clone)]
pub(crate) struct NodePool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    nodes: Vec<Node>,
    /// Counts the choices: the round robin's position.
    cursor: AtomicUsize,
    /// What `down_until` counts from.
    epoch: Instant,
}

#[derive(Debug)]
struct Node {
    url: Url,
    connection: Connection,
    /// Milliseconds after `epoch` until which the node is passed over; 0
    /// when it is up.
    down_until: AtomicU64,
}

impl NodePool {
    /// A pool over `urls`, all up. `urls` must not be empty
    /// ([`parse_node_urls`] never returns an empty list); an empty list is
    /// refused the same way.
    pub(crate) fn new(urls: Vec<Url>) -> Result<Self, SearchError> {
        if urls.is_empty() {
            return Err(SearchError::Config(
                "OpenSearch URL: no node given".to_owned(),
            ));
        }
        let nodes = urls
            .into_iter()
            .map(|url| Node {
                connection: Connection::new(url.clone()),
                url,
                down_until: AtomicU64::new(0),
            })
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                nodes,
                cursor: AtomicUsize::new(0),
                epoch: Instant::now(),
            }),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.shared.nodes.len()
    }

    /// The node's URL, for messages.
    pub(crate) fn url(&self, node: usize) -> &Url {
        &self.shared.nodes[node].url
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.shared.epoch).as_millis())
            .unwrap_or(u64::MAX)
    }

    fn is_up(&self, node: usize, now: Instant) -> bool {
        self.shared.nodes[node].down_until.load(Ordering::Relaxed) <= self.millis(now)
    }

    /// The next node in turn among those up at `now`; when none is, the next
    /// of all of them.
    pub(crate) fn choose(&self, now: Instant) -> usize {
        let n = self.len();
        let turn = self.shared.cursor.fetch_add(1, Ordering::Relaxed);
        let up = (0..n).filter(|&i| self.is_up(i, now)).count();
        if up == 0 {
            return turn % n;
        }
        let k = turn % up;
        (0..n)
            .filter(|&i| self.is_up(i, now))
            .nth(k)
            .unwrap_or(turn % n)
    }

    /// Passes `node` over until `DOWN_FOR` after `now`.
    pub(crate) fn mark_down(&self, node: usize, now: Instant) {
        let until = self.millis(now + DOWN_FOR).max(1);
        self.shared.nodes[node]
            .down_until
            .store(until, Ordering::Relaxed);
    }

    /// `node` answered: it is up.
    pub(crate) fn mark_up(&self, node: usize) {
        let state = &self.shared.nodes[node].down_until;
        if state.load(Ordering::Relaxed) != 0 {
            state.store(0, Ordering::Relaxed);
        }
    }

    /// Sends one request, made by `request` (called once per try), to the
    /// next node; when no response comes back, marks that node down and
    /// sends it to the next one, at most once per node and not after
    /// `budget` has passed since the first try. Returns the first response,
    /// or the last error.
    pub(crate) async fn send<F, Fut>(
        &self,
        budget: Duration,
        mut request: F,
    ) -> Result<Response, opensearch::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response, opensearch::Error>>,
    {
        let started = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let (result, node) = CHOSEN
                .scope(Cell::new(None), async {
                    let result = request().await;
                    (result, CHOSEN.with(Cell::get))
                })
                .await;
            let error = match (result, node) {
                (Ok(response), Some(node)) => {
                    self.mark_up(node);
                    return Ok(response);
                }
                (Ok(response), None) => return Ok(response),
                // an error of ours (a body that does not serialise), not the node's
                (Err(e), _) if e.is_json() => return Err(e),
                (Err(e), None) => return Err(e),
                (Err(e), Some(node)) => {
                    self.mark_down(node, Instant::now());
                    tracing::warn!(node = %self.url(node), error = %e,
                        "OpenSearch node did not answer; passing it over for {DOWN_FOR:?}");
                    e
                }
            };
            if tries >= self.len() || started.elapsed() >= budget {
                return Err(error);
            }
            metrics::counter!(connectra_domain::retry::OPENSEARCH_RETRIES_METRIC).increment(1);
        }
    }
}

impl ConnectionPool for NodePool {
    fn next(&self) -> Connection {
        let node = self.choose(Instant::now());
        // outside NodePool::send nobody asks which node it was
        let _ = CHOSEN.try_with(|chosen| chosen.set(Some(node)));
        self.shared.nodes[node].connection.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(n: usize) -> NodePool {
        let urls = (0..n)
            .map(|i| Url::parse(&format!("http://127.0.0.1:{}", 9200 + i)).unwrap())
            .collect();
        NodePool::new(urls).unwrap()
    }

    fn picks(pool: &NodePool, now: Instant, n: usize) -> Vec<usize> {
        (0..n).map(|_| pool.choose(now)).collect()
    }

    #[test]
    fn urls_are_split_on_commas_and_trimmed() {
        let urls = parse_node_urls(" http://127.0.0.1:9200 ,http://127.0.0.1:9201/ ").unwrap();
        let urls: Vec<&str> = urls.iter().map(Url::as_str).collect();
        assert_eq!(urls, ["http://127.0.0.1:9200/", "http://127.0.0.1:9201/"]);
        assert_eq!(
            parse_node_urls("https://os.example:443/base")
                .unwrap()
                .len(),
            1
        );
        // the same node twice is allowed (it gets twice the requests)
        assert_eq!(parse_node_urls("http://a:1,http://a:1").unwrap().len(), 2);
    }

    #[test]
    fn a_bad_entry_is_named() {
        let message = |list: &str| match parse_node_urls(list) {
            Err(SearchError::Config(m)) => m,
            other => panic!("{list}: expected a Config error, got {other:?}"),
        };
        let m = message("http://127.0.0.1:9200,not a url");
        assert!(
            m.contains("'not a url'") && m.contains("entry 2 of 2"),
            "{m}"
        );
        let m = message("http://127.0.0.1:9200,,http://127.0.0.1:9201");
        assert!(m.contains("entry 2 of 3") && m.contains("empty"), "{m}");
        let m = message("");
        assert!(m.contains("empty"), "{m}");
        let m = message("http://127.0.0.1:9200,");
        assert!(m.contains("entry 2 of 2") && m.contains("empty"), "{m}");
        let m = message("ftp://127.0.0.1:9200");
        assert!(
            m.contains("'ftp://127.0.0.1:9200'") && m.contains("scheme"),
            "{m}"
        );
        let m = message("127.0.0.1:9200");
        assert!(m.contains("'127.0.0.1:9200'"), "{m}");
        let m = message("http://127.0.0.1:9200/?pretty");
        assert!(m.contains("query"), "{m}");
        assert!(matches!(
            NodePool::new(Vec::new()),
            Err(SearchError::Config(_))
        ));
    }

    #[test]
    fn nodes_take_turns() {
        let p = pool(3);
        let now = Instant::now();
        assert_eq!(picks(&p, now, 7), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(pool(1).choose(now), 0);
    }

    #[test]
    fn a_node_marked_down_is_passed_over_and_the_others_share_its_turns() {
        let p = pool(3);
        let now = Instant::now();
        p.mark_down(1, now);
        let got = picks(&p, now, 6);
        assert!(!got.contains(&1), "{got:?}");
        assert_eq!(got.iter().filter(|&&i| i == 0).count(), 3, "{got:?}");
        assert_eq!(got.iter().filter(|&&i| i == 2).count(), 3, "{got:?}");
        // still down just before DOWN_FOR has passed
        let got = picks(&p, now + DOWN_FOR - Duration::from_millis(10), 6);
        assert!(!got.contains(&1), "{got:?}");
    }

    #[test]
    fn a_node_is_tried_again_after_down_for_or_once_it_answers() {
        let p = pool(2);
        let now = Instant::now();
        p.mark_down(0, now);
        assert_eq!(picks(&p, now, 4), [1, 1, 1, 1]);
        let later = now + DOWN_FOR + Duration::from_millis(1);
        let got = picks(&p, later, 4);
        assert!(got.contains(&0) && got.contains(&1), "{got:?}");

        p.mark_down(0, later);
        assert_eq!(picks(&p, later, 2), [1, 1]);
        p.mark_up(0);
        let got = picks(&p, later, 4);
        assert_eq!(got.iter().filter(|&&i| i == 0).count(), 2, "{got:?}");
    }

    #[test]
    fn when_every_node_is_down_they_are_all_still_tried_in_turn() {
        let p = pool(3);
        let now = Instant::now();
        for i in 0..3 {
            p.mark_down(i, now);
        }
        let mut got = picks(&p, now, 3);
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        // one of them back: it alone takes the requests
        p.mark_up(2);
        assert_eq!(picks(&p, now, 3), [2, 2, 2]);
    }

    #[test]
    fn next_hands_out_the_chosen_node() {
        let p = pool(2);
        let a = format!("{:?}", p.next());
        let b = format!("{:?}", p.next());
        assert!(a.contains("9200") && b.contains("9201"), "{a} {b}");
        p.mark_down(0, Instant::now());
        assert!(format!("{:?}", p.next()).contains("9201"));
        assert!(format!("{:?}", p.next()).contains("9201"));
    }
}
