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

/// A client's request body as the proxy receives it.
#[derive(Debug)]
pub enum ClientBody {
    /// None: what sluice's own HTTP/1 server serves (`proxy::h1`).
    Empty,
    /// From hyper's server (HTTP/2, and HTTP/1 requests with a body).
    Hyper(Incoming),
}

impl ClientBody {
    pub fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(body) => body.is_end_stream(),
        }
    }
}

#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client; each chunk is counted in the listener's bytes-in counter.
    Stream(Incoming, metrics::Counter),
    Replay(Option<Bytes>),
}

/// The client's body, made ready for one or more tries.
pub enum Prepared {
    /// Can be sent any number of times.
    Replayable(Bytes),
    /// Sent once, as it streams; not retried after it was handed to a backend.
    Streaming(Option<(Incoming, metrics::Counter)>),
}

impl Prepared {
    /// Buffers bodies known to be small (or empty); streams the rest. `Err` when the client's
    /// body fails while being buffered.
    /// `bytes_in` counts the body's bytes (once, however many tries send it).
    pub async fn from_request(
        body: ClientBody,
        headers: &HeaderMap,
        bytes_in: &metrics::Counter,
    ) -> Result<Prepared, String> {
        let body = match body {
            ClientBody::Hyper(body) if !body.is_end_stream() => body,
            _ => return Ok(Prepared::Replayable(Bytes::new())),
        };
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
                let bytes = collected.to_bytes();
                bytes_in.increment(bytes.len() as u64);
                Ok(Prepared::Replayable(bytes))
            }
            _ => Ok(Prepared::Streaming(Some((body, bytes_in.clone())))),
        }
    }

    /// The body for the next try; `None` when a streamed body was already used.
    pub fn next_try(&mut self) -> Option<RequestBody> {
        match self {
            Prepared::Replayable(bytes) => Some(RequestBody::Replay(
                (!bytes.is_empty()).then(|| bytes.clone()),
            )),
            Prepared::Streaming(body) => body
                .take()
                .map(|(body, counter)| RequestBody::Stream(body, counter)),
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
            RequestBody::Stream(body, bytes_in) => {
                let frame = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    bytes_in.increment(data.len() as u64);
                }
                frame
            }
            RequestBody::Replay(data) => {
                Poll::Ready(data.take().map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(body, _) => body.is_end_stream(),
            RequestBody::Replay(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(body, _) => body.size_hint(),
            RequestBody::Replay(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Replay(None) => SizeHint::with_exact(0),
        }
    }
}
