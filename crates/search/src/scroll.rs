//! The paging loop both backends' scrolls share: open a consistent view, read
//! a page, continue after its cursor, release the view after the last page.

use connectra_domain::vql::ValidQuery;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};

use crate::{Page, SearchError};

/// A consistent view of the data (a point in time, a snapshot) that a scroll
/// reads page by page.
pub(crate) trait View: Send + 'static {
    /// One page of `query`, read from this view.
    fn page<'a>(&'a mut self, query: &'a ValidQuery) -> BoxFuture<'a, Result<Page, SearchError>>;

    /// Releases the view after the last page.
    fn finish(self) -> BoxFuture<'static, Result<(), SearchError>>;

    /// Releases the view after a failure; failing here changes nothing.
    fn abandon(self) -> BoxFuture<'static, ()>;
}

/// Every page of `query`, read from the view that `open` makes. The stream
/// ends after the page without a `next_search_after`, or after an error.
pub(crate) fn scroll<V: View>(
    open: BoxFuture<'static, Result<V, SearchError>>,
    query: ValidQuery,
) -> BoxStream<'static, Result<Page, SearchError>> {
    enum State<V> {
        Closed(BoxFuture<'static, Result<V, SearchError>>, ValidQuery),
        Open(V, ValidQuery),
        Done,
    }
    futures::stream::unfold(State::Closed(open, query), |state| async move {
        let (mut view, query) = match state {
            State::Done => return None,
            State::Open(view, query) => (view, query),
            State::Closed(open, query) => match open.await {
                Ok(view) => (view, query),
                Err(e) => return Some((Err(e), State::Done)),
            },
        };
        let page = match view.page(&query).await {
            Ok(page) => page,
            Err(e) => {
                view.abandon().await;
                return Some((Err(e), State::Done));
            }
        };
        let next = match &page.next_search_after {
            None => match view.finish().await {
                Ok(()) => State::Done,
                Err(e) => return Some((Err(e), State::Done)),
            },
            Some(cursor) => match query.after(cursor) {
                Ok(next) => State::Open(view, next),
                Err(e) => {
                    view.abandon().await;
                    return Some((Err(SearchError::InvalidQuery(e.to_string())), State::Done));
                }
            },
        };
        Some((Ok(page), next))
    })
    .boxed()
}
