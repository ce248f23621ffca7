//! The client's request body on its way upstream, and whose fault it is when it fails.
//!
//! Read before a backend is picked: a body up to the listener's `request_buffer` (64 KiB by
//! default) is read whole, so its framing (chunk sizes, terminators, the declared length) is
//! checked and a client that stops sending or sends garbage is answered 400/408/413 with no
//! backend involved (nginx buffers request bodies; HAProxy's `http-buffer-request`). Such a
//! body can also be sent again on a retry. A larger body is read as far as the buffer and
//! then streams: it is sent once and never retried, and if it fails later, the failure is
//! recorded in the body's `BodyWatch`, so the exchange that carried it is the client's fault,
//! never the backend's. gRPC calls stream from the first byte (see `BodyPolicy::for_request`).
//!
//! Imports nothing of the crate. It lives here, with the clients that send it, so that
//! `upstream` does not import `proxy` (`proxy::request_body` re-exports it).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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

/// Why a client's request body failed. Every case is the client's doing: none counts against
/// a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the client closed the connection before its request body ended")]
    Aborted,
    #[error("the request body's framing is malformed")]
    Malformed,
    #[error("the request body is larger than the listener allows")]
    TooLarge,
    #[error("the client stopped sending its request body")]
    TimedOut,
}

impl ClientBodyError {
    /// What the client is answered (an aborted client is gone: the access log says 499).
    pub fn status(self) -> StatusCode {
        match self {
            ClientBodyError::Aborted | ClientBodyError::Malformed => StatusCode::BAD_REQUEST,
            ClientBodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ClientBodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            ClientBodyError::Aborted => "request body incomplete\n",
            ClientBodyError::Malformed => "malformed request body\n",
            ClientBodyError::TooLarge => "request body too large\n",
            ClientBodyError::TimedOut => "timed out reading the request body\n",
        }
    }

    /// The `reason` label of `sluice_client_errors_total`.
    pub fn reason(self) -> &'static str {
        match self {
            ClientBodyError::Aborted => "body_aborted",
            ClientBodyError::Malformed => "body_malformed",
            ClientBodyError::TooLarge => "body_too_large",
            ClientBodyError::TimedOut => "body_timeout",
        }
    }

    /// Tells the client walking away (reset, closed early) from a body that is not HTTP.
    pub fn classify(error: &hyper::Error) -> ClientBodyError {
        if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
            return ClientBodyError::Aborted;
        }
        if error.is_timeout() {
            return ClientBodyError::TimedOut;
        }
        let mut cause: Option<&(dyn StdError + 'static)> = error.source();
        while let Some(inner) = cause {
            if let Some(io) = inner.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::TimedOut => ClientBodyError::TimedOut,
                    io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                        ClientBodyError::Malformed
                    }
                    _ => ClientBodyError::Aborted,
                };
            }
            if let Some(h2) = inner.downcast_ref::<h2::Error>() {
                // A stream or connection the client reset or closed; a protocol error in
                // its frames is malformed.
                return match h2.reason() {
                    Some(h2::Reason::PROTOCOL_ERROR | h2::Reason::FRAME_SIZE_ERROR) => {
                        ClientBodyError::Malformed
                    }
                    _ => ClientBodyError::Aborted,
                };
            }
            cause = inner.source();
        }
        if error.is_parse() {
            ClientBodyError::Malformed
        } else {
            ClientBodyError::Aborted
        }
    }

    fn code(self) -> u8 {
        match self {
            ClientBodyError::Aborted => 2,
            ClientBodyError::Malformed => 3,
            ClientBodyError::TooLarge => 4,
            ClientBodyError::TimedOut => 5,
        }
    }

    fn from_code(code: u8) -> Option<ClientBodyError> {
        match code {
            2 => Some(ClientBodyError::Aborted),
            3 => Some(ClientBodyError::Malformed),
            4 => Some(ClientBodyError::TooLarge),
            5 => Some(ClientBodyError::TimedOut),
            _ => None,
        }
    }
}

/// How a listener reads request bodies (from its `limits` and `timeouts.client_body`).
#[derive(Debug, Clone, Copy)]
pub struct BodyPolicy {
    /// Read this much before a backend is picked (a smaller body whole).
    pub buffer: usize,
    /// Bytes at most (413 beyond); `None`: no limit.
    pub max: Option<u64>,
    /// Longest pause between two pieces of the body; `None`: no limit.
    pub idle: Option<Duration>,
}

impl BodyPolicy {
    /// The policy for one request. A gRPC call's body is a stream of messages the client
    /// may send while it reads answers (bidirectional streaming), with pauses as long as the
    /// application likes: it streams from its first byte and no pause deadline applies to it,
    /// as nginx's `grpc_pass` and Envoy treat it. Waiting to fill a buffer would deadlock a
    /// client that waits for an answer before sending more.
    pub fn for_request(
        headers: &HeaderMap,
        buffer: usize,
        max: Option<u64>,
        idle: Duration,
    ) -> BodyPolicy {
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        match grpc {
            true => BodyPolicy {
                buffer: 0,
                max,
                idle: None,
            },
            false => BodyPolicy {
                buffer,
                max,
                idle: Some(idle),
            },
        }
    }
}

/// How a streamed body ended, shared by the body and the forwarding loop, so that a failed
/// exchange can be told apart: the client's body failed (its fault) or not.
#[derive(Debug, Default)]
pub struct BodyWatch(AtomicU8);

const STREAMING: u8 = 0;
const COMPLETE: u8 = 1;

impl BodyWatch {
    fn fail(&self, error: ClientBodyError) {
        // The first verdict stays.
        let _ =
            self.0
                .compare_exchange(STREAMING, error.code(), Ordering::AcqRel, Ordering::Acquire);
    }

    fn complete(&self) {
        let _ = self
            .0
            .compare_exchange(STREAMING, COMPLETE, Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn failure(&self) -> Option<ClientBodyError> {
        ClientBodyError::from_code(self.0.load(Ordering::Acquire))
    }

    pub fn is_complete(&self) -> bool {
        self.0.load(Ordering::Acquire) == COMPLETE
    }
}

/// The client's body, made ready for one or more tries.
pub enum Prepared {
    /// Read whole: can be sent any number of times.
    Replayable(Bytes),
    /// Larger than the buffer: sent once, as it streams; not retried after it was handed to a
    /// backend. The watch outlives the body, so the forwarding loop can ask how it ended.
    Streaming {
        body: Option<Box<Streamed>>,
        watch: Arc<BodyWatch>,
    },
}

impl Prepared {
    /// Reads the body as far as `policy.buffer` (all of it when it is smaller), checking its
    /// framing and size on the way. `Err`: the client's body failed before any backend was
    /// picked. `bytes_in` counts the body's bytes (once, however many tries send it).
    pub async fn from_request(
        body: ClientBody,
        bytes_in: &metrics::Counter,
        policy: BodyPolicy,
    ) -> Result<Prepared, ClientBodyError> {
        let mut body = match body {
            ClientBody::Hyper(body) if !body.is_end_stream() => body,
            _ => return Ok(Prepared::Replayable(Bytes::new())),
        };
        // A declared length over `policy.max` was refused with the head (`proxy::admission`).
        let mut pieces = Pieces::default();
        let mut ended = false;
        while pieces.len < policy.buffer {
            // The loop only runs with a buffer, which gRPC calls never get.
            let idle = policy.idle.unwrap_or(Duration::MAX);
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_elapsed) => return Err(ClientBodyError::TimedOut),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Ok(Some(Err(error))) => return Err(ClientBodyError::classify(&error)),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers of a request read whole are not kept: HTTP/1 backends are sent a
            // Content-Length body, which has no trailers.
            if let Ok(data) = frame.into_data() {
                pieces.push(data);
                if policy.max.is_some_and(|max| pieces.len as u64 > max) {
                    return Err(ClientBodyError::TooLarge);
                }
            }
        }
        bytes_in.increment(pieces.len as u64);
        if ended || body.is_end_stream() {
            return Ok(Prepared::Replayable(pieces.into_bytes()));
        }
        let watch = Arc::new(BodyWatch::default());
        let streamed = Streamed {
            read: pieces.len as u64,
            prefix: (pieces.len > 0).then(|| pieces.into_bytes()),
            body,
            bytes_in: bytes_in.clone(),
            policy,
            pause: None,
            watch: Arc::clone(&watch),
        };
        Ok(Prepared::Streaming {
            body: Some(Box::new(streamed)),
            watch,
        })
    }

    /// The body for the next try; `None` when a streamed body was already used.
    pub fn next_try(&mut self) -> Option<RequestBody> {
        match self {
            Prepared::Replayable(bytes) => Some(RequestBody::Replay(
                (!bytes.is_empty()).then(|| bytes.clone()),
            )),
            Prepared::Streaming { body, .. } => body.take().map(RequestBody::Stream),
        }
    }

    pub fn replayable(&self) -> bool {
        matches!(self, Prepared::Replayable(_))
    }

    /// Why the client's streamed body failed, if it did: then so did any exchange that
    /// carried it, by the client's fault.
    pub fn client_failure(&self) -> Option<ClientBodyError> {
        match self {
            Prepared::Replayable(_) => None,
            Prepared::Streaming { watch, .. } => watch.failure(),
        }
    }

    /// Whether the client is still sending: a backend waiting for the rest of the body is
    /// not slow.
    pub fn client_still_sending(&self) -> bool {
        match self {
            Prepared::Replayable(_) => false,
            Prepared::Streaming { watch, .. } => !watch.is_complete(),
        }
    }
}

/// Body pieces read so far; one piece is kept as it came (no copy), more are joined.
#[derive(Default)]
struct Pieces {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
    len: usize,
}

impl Pieces {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        match (&mut self.joined, self.first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => self.first = Some(data),
            (None, Some(first)) => {
                let mut joined = BytesMut::with_capacity(self.len);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                self.joined = Some(joined);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match (self.joined, self.first) {
            (Some(joined), _) => joined.freeze(),
            (None, Some(first)) => first,
            (None, None) => Bytes::new(),
        }
    }
}

/// A body larger than the buffer: what was read first, then the rest as it arrives, held to
/// the listener's size limit and pause deadline.
#[derive(Debug)]
pub struct Streamed {
    prefix: Option<Bytes>,
    body: Incoming,
    bytes_in: metrics::Counter,
    /// Body bytes read from the client so far (the prefix included).
    read: u64,
    policy: BodyPolicy,
    /// The pause deadline, armed while the client's next piece is awaited.
    pause: Option<Pin<Box<Sleep>>>,
    watch: Arc<BodyWatch>,
}

impl Streamed {
    fn fail(
        &mut self,
        error: ClientBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.watch.fail(error);
        Poll::Ready(Some(Err(error)))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let frame = match polled {
            Poll::Pending => {
                let Some(idle) = self.policy.idle else {
                    return Poll::Pending;
                };
                let pause = self
                    .pause
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(pause.as_mut().poll(cx));
                return self.fail(ClientBodyError::TimedOut);
            }
            Poll::Ready(frame) => frame,
        };
        // Something arrived: the next pause starts from now.
        if let (Some(pause), Some(idle)) = (self.pause.as_mut(), self.policy.idle) {
            pause.as_mut().reset(Instant::now() + idle);
        }
        match frame {
            None => {
                self.watch.complete();
                Poll::Ready(None)
            }
            Some(Err(error)) => self.fail(ClientBodyError::classify(&error)),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                    if self.policy.max.is_some_and(|max| self.read > max) {
                        return self.fail(ClientBodyError::TooLarge);
                    }
                    self.bytes_in.increment(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

/// One try's body, as the upstream clients send it.
#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client; each piece is counted in the listener's bytes-in counter.
    Stream(Box<Streamed>),
    Replay(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Stream(streamed) => streamed.poll_next(cx),
            RequestBody::Replay(data) => {
                Poll::Ready(data.take().map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(streamed) => {
                streamed.prefix.is_none() && streamed.body.is_end_stream()
            }
            RequestBody::Replay(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(streamed) => {
                let prefix = streamed.prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = streamed.body.size_hint();
                match rest.exact() {
                    Some(exact) => SizeHint::with_exact(prefix + exact),
                    None => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(prefix + rest.lower());
                        hint
                    }
                }
            }
            RequestBody::Replay(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Replay(None) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_keeps_the_first_verdict() {
        let watch = BodyWatch::default();
        assert_eq!(watch.failure(), None);
        assert!(!watch.is_complete());
        watch.fail(ClientBodyError::Malformed);
        watch.fail(ClientBodyError::Aborted);
        watch.complete();
        assert_eq!(watch.failure(), Some(ClientBodyError::Malformed));
        assert!(!watch.is_complete());
        let done = BodyWatch::default();
        done.complete();
        done.fail(ClientBodyError::Aborted);
        assert!(done.is_complete());
        assert_eq!(done.failure(), None);
    }

    #[test]
    fn pieces_join_in_order_and_keep_a_single_piece_as_is() {
        let mut one = Pieces::default();
        let data = Bytes::from_static(b"hello");
        one.push(data.clone());
        one.push(Bytes::new());
        let single = one.into_bytes();
        assert_eq!(single.as_ptr(), data.as_ptr());
        let mut many = Pieces::default();
        for piece in ["ab", "", "cd", "e"] {
            many.push(Bytes::from_static(piece.as_bytes()));
        }
        assert_eq!(many.len, 5);
        assert_eq!(&many.into_bytes()[..], b"abcde");
        assert!(Pieces::default().into_bytes().is_empty());
    }

    #[test]
    fn grpc_calls_stream_from_the_first_byte_without_a_pause_deadline() {
        let idle = Duration::from_secs(60);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc+proto"),
        );
        let grpc = BodyPolicy::for_request(&headers, 65536, Some(10), idle);
        assert_eq!((grpc.buffer, grpc.max, grpc.idle), (0, Some(10), None));
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let json = BodyPolicy::for_request(&headers, 65536, None, idle);
        assert_eq!(
            (json.buffer, json.max, json.idle),
            (65536, None, Some(idle))
        );
    }

    #[test]
    fn every_client_failure_has_a_4xx_and_its_own_reason() {
        let all = [
            ClientBodyError::Aborted,
            ClientBodyError::Malformed,
            ClientBodyError::TooLarge,
            ClientBodyError::TimedOut,
        ];
        for error in all {
            assert!(error.status().is_client_error(), "{error:?}");
            assert_eq!(ClientBodyError::from_code(error.code()), Some(error));
        }
        let reasons: std::collections::HashSet<_> = all.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), all.len());
    }
}
