//! Cursor pagination as a [`futures::Stream`]: every list route answers
//! `{"data": [...], "nextCursor": ...}`; the stream asks for the next page only when the
//! items of the current one have been consumed, and ends after the page whose cursor is
//! null.

use std::collections::VecDeque;
use std::future::Future;

use futures::Stream;

use crate::Error;

/// A page of a list route: its items and the cursor of the next page.
pub trait Paged {
    /// What the page lists.
    type Item;
    /// The items, in the server's order, and the next cursor (`None` on the last page).
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

/// Streams every item of a list, calling `fetch(cursor)` for each page (the first with
/// `None`). An error ends the stream after being yielded once.
pub fn paginate<P, F, Fut>(fetch: F) -> impl Stream<Item = Result<P::Item, Error>>
where
    P: Paged,
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<P, Error>>,
{
    struct State<I, F> {
        fetch: F,
        buffer: VecDeque<I>,
        next: Option<Option<String>>,
    }
    let state = State {
        fetch,
        buffer: VecDeque::new(),
        next: Some(None),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.buffer.pop_front() {
                return Some((Ok(item), state));
            }
            let cursor = state.next.take()?;
            match (state.fetch)(cursor).await {
                Ok(page) => {
                    let (items, next) = page.into_parts();
                    state.buffer.extend(items);
                    // A server that repeats an empty page with a cursor would loop
                    // forever; an empty page ends the list.
                    if !state.buffer.is_empty() {
                        state.next = next.map(Some);
                    }
                }
                Err(e) => return Some((Err(e), state)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    struct TestPage(Vec<u32>, Option<String>);

    impl Paged for TestPage {
        type Item = u32;
        fn into_parts(self) -> (Vec<u32>, Option<String>) {
            (self.0, self.1)
        }
    }

    /// Pages are fetched in order with the previous page's cursor until it is null.
    #[tokio::test]
    async fn follows_cursors_to_the_end() {
        let mut seen = Vec::new();
        let items: Vec<u32> = paginate(|cursor: Option<String>| {
            seen.push(cursor.clone());
            let page = match cursor.as_deref() {
                None => TestPage(vec![1, 2], Some("a".into())),
                Some("a") => TestPage(vec![3], Some("b".into())),
                _ => TestPage(vec![4], None),
            };
            async move { Ok(page) }
        })
        .map(|r| r.unwrap())
        .collect()
        .await;
        assert_eq!(items, vec![1, 2, 3, 4]);
        assert_eq!(seen, vec![None, Some("a".into()), Some("b".into())]);
    }

    /// An error is yielded once and ends the stream.
    #[tokio::test]
    async fn an_error_ends_the_stream() {
        let results: Vec<Result<u32, Error>> = paginate(|cursor: Option<String>| async move {
            match cursor {
                None => Ok(TestPage(vec![1], Some("a".into()))),
                Some(_) => Err(Error::Config("boom".into())),
            }
        })
        .collect()
        .await;
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(Error::Config(_))));
    }
}
