//! Keep-alive connections stay usable after an answer that did not read the request
//! body (413, 415, 401, a validation error found mid-stream, ...).
//!
//! HTTP/1.1 has no way to skip the rest of a body: the next request on the connection
//! starts after its last byte. When a handler answers without reading it all, hyper
//! tries one read and otherwise closes the connection, possibly after it has already
//! sent a response that promised keep-alive; the client's next request on it then
//! fails. So after such an answer this layer reads and discards what is left, up to
//! [`MAX_DRAIN_BYTES`] within [`MAX_DRAIN_TIME`], and when the rest is larger, slower,
//! or `Expect: 100-continue` held it back, it answers with `Connection: close`, so the
//! client knows to open a new connection. HTTP/2 resets just the stream; nothing to do.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::{Stream, StreamExt};
use tokio::sync::oneshot;

/// Most bytes of an unread body read and discarded to keep the connection.
pub const MAX_DRAIN_BYTES: u64 = 1024 * 1024;

/// Longest time spent discarding an unread body.
pub const MAX_DRAIN_TIME: Duration = Duration::from_secs(1);

/// The layer's function (`axum::middleware::from_fn`).
pub async fn drain_or_close(request: Request, next: Next) -> Response {
    let http1 = matches!(request.version(), Version::HTTP_10 | Version::HTTP_11);
    if !http1 || !has_body(request.headers()) {
        return next.run(request).await;
    }
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = request.into_parts();
    let (give_back, mut unread) = oneshot::channel();
    let reader = Reader {
        inner: Some(body.into_data_stream()),
        give_back: Some(give_back),
    };
    let mut response = next
        .run(Request::from_parts(parts, Body::from_stream(reader)))
        .await;
    // The handler is done with the request: its body either reached its end (nothing
    // comes back) or was dropped part-way (the rest comes back). A body still held
    // somewhere (`Empty`) is left alone.
    if let Ok(rest) = unread.try_recv() {
        let drainable = !expects_continue && declared.is_none_or(|n| n <= MAX_DRAIN_BYTES);
        if !(drainable && drain(rest).await) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

/// Whether the request says a body follows.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Reads `rest` to its end within the bounds; true when it got there.
async fn drain(mut rest: BodyDataStream) -> bool {
    let to_the_end = async {
        let mut read = 0u64;
        while let Some(chunk) = rest.next().await {
            match chunk {
                Ok(bytes) => {
                    read += bytes.len() as u64;
                    if read > MAX_DRAIN_BYTES {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(MAX_DRAIN_TIME, to_the_end)
        .await
        .unwrap_or(false)
}

/// The request body as the handler sees it; dropped before its end, it hands the rest
/// back to [`drain_or_close`].
struct Reader {
    inner: Option<BodyDataStream>,
    give_back: Option<oneshot::Sender<BodyDataStream>>,
}

impl Stream for Reader {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            // The end: nothing to give back.
            self.inner = None;
            self.give_back = None;
        }
        next
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let (Some(inner), Some(give_back)) = (self.inner.take(), self.give_back.take()) {
            let _ = give_back.send(inner);
        }
    }
}
