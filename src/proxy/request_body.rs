//! The request body sent upstream: the client's stream as it arrives, or a buffered copy that
//! can be sent again on a retry. Only small bodies are buffered (`REPLAY_LIMIT`): a retry must
//! never hold a large upload in memory, so such requests are not retried once sent.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bodies up to this size (declared by Content-Length) are buffered so the request can be
/// replayed on another backend.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

#[derive(Debug)]
pub enum RequestBody {
    Stream(Incoming),
    Replay(Option<Bytes>),
}

/// The client's body, made ready for one or more tries.
pub enum Prepared {
    /// Can be sent any number of times.
    Replayable(Bytes),
    /// Sent once, as it streams; not retried after it was handed to a backend.
    Streaming(Option<Incoming>),
}

impl Prepared {
    /// Buffers bodies known to be small (or empty); streams the rest. `Err` when the client's
    /// body fails while being buffered.
    pub async fn from_request(body: Incoming, headers: &HeaderMap) -> Result<Prepared, String> {
        if body.is_end_stream() {
            return Ok(Prepared::Replayable(Bytes::new()));
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) if length <= REPLAY_LIMIT => {
                let collected = Limited::new(body, REPLAY_LIMIT as usize)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the request body failed: {e}"))?;
                Ok(Prepared::Replayable(collected.to_bytes()))
            }
            _ => Ok(Prepared::Streaming(Some(body))),
        }
    }

    /// The body for the next try; `None` when a streamed body was already used.
    pub fn next_try(&mut self) -> Option<RequestBody> {
        match self {
            Prepared::Replayable(bytes) => Some(RequestBody::Replay(
                (!bytes.is_empty()).then(|| bytes.clone()),
            )),
            Prepared::Streaming(body) => body.take().map(RequestBody::Stream),
        }
    }

    pub fn replayable(&self) -> bool {
        matches!(self, Prepared::Replayable(_))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Stream(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Replay(data) => {
                Poll::Ready(data.take().map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(body) => body.is_end_stream(),
            RequestBody::Replay(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(body) => body.size_hint(),
            RequestBody::Replay(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Replay(None) => SizeHint::with_exact(0),
        }
    }
}
