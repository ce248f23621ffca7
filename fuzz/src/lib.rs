//! What the differential fuzz targets share: hyper, the reference, run in-process over an
//! in-memory connection, and sluice's own HTTP/1 parsers driven the way sluice drives them,
//! each reduced to a verdict the targets can compare.
//!
//! hyper is the reference because it is what sluice used before it had parsers of its own,
//! and what still serves (or refuses) every request sluice hands over. The rule the targets
//! enforce: on the same bytes, sluice agrees with hyper or is stricter, never looser. A
//! message sluice accepts must be one hyper accepts, with the same head, body, trailers and
//! the same last byte.
//!
//! No sockets, no timers: a connection is `MemIo`, the bytes under test followed by the end of
//! the stream, driven to completion on a current-thread tokio runtime kept per thread.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::rt::{Read, ReadBufCursor, Write};
use sluice::upstream::h1::chunked::{ChunkedDecoder, Decoded};
use sluice::upstream::h1::head::{Framing, parse_final_response};
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// sluice's limit on response header lines (`upstream::h1::head`), given to hyper's client so
/// the two differ in framing rules only, not in this resource limit.
const RESPONSE_MAX_HEADERS: usize = 128;

/// Header fields in order, as (lowercase name, value bytes).
pub type Fields = Vec<(String, Vec<u8>)>;

pub fn fields(map: &HeaderMap) -> Fields {
    map.iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// A final response head as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: Fields,
}

/// A whole response: head, decoded body, trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: Option<Fields>,
}

/// A request head as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSeen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: Fields,
    /// No body follows the head (hyper: the body is empty and known to be).
    pub no_body: bool,
}

impl RequestSeen {
    pub fn new<B>(request: &Request<B>, no_body: bool) -> Self {
        RequestSeen {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: fields(request.headers()),
            no_body,
        }
    }
}

/// The bytes under test, then the end of the stream; what is written is dropped. As a client's
/// stream it answers only once something was written: hyper's client reads while idle to
/// notice a closed connection, and calls bytes that arrive before its request unsolicited.
struct MemIo {
    data: Bytes,
    at: usize,
    wait_for_write: bool,
    reader: Option<Waker>,
}

impl MemIo {
    fn new(data: &[u8], wait_for_write: bool) -> Self {
        MemIo {
            data: Bytes::copy_from_slice(data),
            at: 0,
            wait_for_write,
            reader: None,
        }
    }
}

impl Read for MemIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.wait_for_write {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.remaining().min(self.data.len() - self.at);
        buf.put_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl Write for MemIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wait_for_write = false;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// hyper's client reading `data`, then the end of the stream, as the answer to a `method`
/// request: the whole response, or why it was refused (a head error, a body error, or the
/// stream ending before the message did).
pub fn hyper_response(method: &Method, data: &[u8]) -> Result<Message, String> {
    let io = MemIo::new(data, true);
    let request = Request::builder()
        .method(method.clone())
        .uri("/")
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    block_on(async move {
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_headers(RESPONSE_MAX_HEADERS)
            .handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| e.to_string())?;
        let client = async move {
            let response = sender.send_request(request).await;
            drop(sender);
            collect(response.map_err(|e| e.to_string())?).await
        };
        let (message, _) = tokio::join!(client, conn);
        message
    })
}

async fn collect(response: Response<Incoming>) -> Result<Message, String> {
    let head = Head {
        status: response.status(),
        version: response.version(),
        headers: fields(response.headers()),
    };
    let mut body = response.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        match frame.into_data() {
            Ok(piece) => data.extend_from_slice(&piece),
            Err(frame) => {
                if let Ok(map) = frame.into_trailers() {
                    trailers = Some(fields(&map));
                }
            }
        }
    }
    Ok(Message {
        head,
        body: data,
        trailers,
    })
}

/// The request heads hyper's server reads from `data` (then the end of the stream), in order,
/// until it stops: the end, an error (it answers 400 and closes), or a request after which it
/// closes. A request is seen as soon as its head is parsed; its body is never read.
pub fn hyper_requests(data: &[u8]) -> Vec<RequestSeen> {
    let io = MemIo::new(data, false);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let record = seen.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let no_body = request.body().is_end_stream();
        record
            .borrow_mut()
            .push(RequestSeen::new(&request, no_body));
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    });
    block_on(async move {
        // Half-close: the end of `data` is the client done sending, not gone; hyper then
        // still serves every whole request before it, as it would for a pipelining client.
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(io, service)
            .await;
    });
    seen.take()
}

/// What sluice made of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Rejected(String),
    /// The stream ended before the message did (a read would wait for more).
    Incomplete,
    Complete {
        message: Message,
        /// Bytes of the stream the message took, interim responses included.
        consumed: usize,
        /// The body was delimited by the end of the stream.
        until_close: bool,
    },
}

impl Verdict {
    /// The same outcome; rejections compare equal whatever their reason (a split can show one
    /// fault before another).
    pub fn same(&self, other: &Verdict) -> bool {
        match (self, other) {
            (Verdict::Rejected(_), Verdict::Rejected(_)) => true,
            _ => self == other,
        }
    }
}

/// Feeds `data` in pieces ending at `cuts` (increasing, the last one `data.len()`), one
/// piece each time the parser asks for more, as reads from a socket would.
struct Feed<'a> {
    data: &'a [u8],
    cuts: Vec<usize>,
    next: usize,
    fed: usize,
}

impl Feed<'_> {
    fn more(&mut self, buf: &mut BytesMut) -> bool {
        let Some(&end) = self.cuts.get(self.next) else {
            return false;
        };
        buf.extend_from_slice(&self.data[self.fed..end]);
        self.fed = end;
        self.next += 1;
        true
    }
}

/// sluice's HTTP/1 client reading `data` as the answer to `method`, fed in pieces ending at
/// `cuts` (positions in `data`, any order; duplicates and out-of-range ones are dropped):
/// `parse_final_response` (1xx skipped, 101 refused as `upstream::h1::respond` does), then the
/// body in its framing, chunked through `ChunkedDecoder`, as `upstream::h1::body` reads it.
pub fn sluice_response(method: &Method, data: &[u8], cuts: &[usize]) -> Verdict {
    let mut ends: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&cut| cut > 0 && cut < data.len())
        .collect();
    ends.push(data.len());
    ends.sort_unstable();
    ends.dedup();
    let mut feed = Feed {
        data,
        cuts: ends,
        next: 0,
        fed: 0,
    };
    let mut buf = BytesMut::new();
    feed.more(&mut buf);
    let (head, framing) = loop {
        match parse_final_response(&mut buf, method) {
            Err(error) => return Verdict::Rejected(error.to_string()),
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {
                if !feed.more(&mut buf) {
                    return Verdict::Incomplete;
                }
            }
        }
    };
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        return Verdict::Rejected("101 without an upgrade".into());
    }
    let head = Head {
        status: head.status,
        version: head.version,
        headers: fields(&head.headers),
    };
    let mut body = Vec::new();
    let mut trailers = None;
    let mut until_close = false;
    match framing {
        Framing::None => {}
        Framing::Length(length) => {
            while (buf.len() as u64) < length {
                if !feed.more(&mut buf) {
                    return Verdict::Incomplete;
                }
            }
            body.extend_from_slice(&buf.split_to(length as usize));
        }
        Framing::UntilClose => {
            while feed.more(&mut buf) {}
            body.extend_from_slice(&buf.split());
            until_close = true;
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                match decoder.decode(&mut buf) {
                    Err(error) => return Verdict::Rejected(error.to_string()),
                    Ok(Decoded::Data(piece)) => {
                        assert!(!piece.is_empty(), "an empty data piece");
                        body.extend_from_slice(&piece);
                    }
                    Ok(Decoded::Trailers(map)) => {
                        assert!(decoder.is_done());
                        trailers = Some(fields(&map));
                        break;
                    }
                    Ok(Decoded::End) => {
                        assert!(decoder.is_done());
                        break;
                    }
                    Ok(Decoded::NeedMore) => {
                        if !feed.more(&mut buf) {
                            return Verdict::Incomplete;
                        }
                    }
                }
            }
        }
    }
    Verdict::Complete {
        message: Message {
            head,
            body,
            trailers,
        },
        consumed: feed.fed - buf.len(),
        until_close,
    }
}

/// The differential check of a response shared by the `response` and `chunked` targets:
/// sluice, fed whole and in the pieces `cuts` gives, reaches the same verdict, and every
/// message it accepts hyper accepts too, with the same head, body and trailers, ending on the
/// same byte (hyper completes it from exactly the bytes sluice consumed, and not from one
/// byte fewer). A stream sluice still waits on must not be a whole message to hyper either.
pub fn check_response(method: &Method, data: &[u8], cuts: &[usize]) {
    let whole = sluice_response(method, data, &[]);
    let split = sluice_response(method, data, cuts);
    assert!(
        whole.same(&split),
        "splits at {cuts:?} change the verdict: {whole:?} whole, {split:?} split"
    );
    match &whole {
        Verdict::Rejected(_) => {}
        Verdict::Incomplete => {
            if let Ok(message) = hyper_response(method, data) {
                panic!("sluice waits for more; hyper has a whole message: {message:?}");
            }
        }
        Verdict::Complete {
            message,
            consumed,
            until_close,
        } => {
            assert!(*consumed <= data.len());
            let reference = hyper_response(method, &data[..*consumed]);
            assert_eq!(
                Ok(message),
                reference.as_ref(),
                "sluice accepted {consumed} bytes as a message: hyper disagrees"
            );
            if *until_close {
                assert_eq!(*consumed, data.len());
                // Delimited by the end for hyper too: one byte less is one byte less of body.
                if let Some((_, shorter)) = message.body.split_last() {
                    let reference = hyper_response(method, &data[..consumed - 1]);
                    let body = reference.map(|m| m.body);
                    assert_eq!(body.as_deref(), Ok(shorter), "not delimited by the end");
                }
            } else if let Ok(shorter) = hyper_response(method, &data[..consumed - 1]) {
                panic!("hyper ends the message before byte {consumed}: {shorter:?}");
            }
        }
    }
}

/// Split points for an input, from the input itself (FNV-1a, xorshift), so that a crash
/// replays exactly: up to `count` positions in `0..len`.
pub fn cuts(data: &[u8], len: usize, count: usize) -> Vec<usize> {
    let mut x = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1;
    if len == 0 {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % len as u64) as usize
        })
        .collect()
}
