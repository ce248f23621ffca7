//! sluice's own HTTP/1.1 client for backends: keep-alive connections pooled per backend and
//! driven by the task of the request that uses them.
//!
//! Why not hyper's client: it runs each connection in a task of its own and hands requests and
//! responses over channels, so every proxied request paid two task hand-offs, a header map
//! copy and the client's pool bookkeeping; that was the largest user-space cost left on the
//! keep-alive path (perf, benches/loadtest.py). Here the request's own task writes the head
//! (with a small body, in one write), parses the response head with httparse (header values
//! are slices of the read buffer), and a small response comes back complete with its head: the
//! connection returns to the pool before the response is even handed to the client side.
//!
//! Idle connections are not watched by a task. One idle for over `PROBE_AFTER` is checked
//! with a non-blocking read before reuse (data or EOF there means the backend closed it); a
//! fresher one that turns out closed before answering is retried once on a new connection
//! when that is safe (idempotent request, body still at hand).

mod body;
pub mod chunked;
pub mod head;
mod send;

pub use body::{BodyReadError, H1Body};

use crate::config::BackendAddress;
use crate::upstream::connector::{Conn, Dialer};
use crate::upstream::request_body::RequestBody;
use crate::upstream::tls::Alpn;
use body::{BodyFraming, Release, Streaming};
use bytes::BytesMut;
use head::{Framing, HeadError, RequestFraming, ResponseHead};
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::body::Body;
use send::{SendError, Sending};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, ready};
use std::time::Duration;

/// Idle connections are closed after this long; backends commonly close theirs after 60-75 s
/// (nginx 75 s, Node 5 s), so stay under the usual values to avoid racing them.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_IDLE_PER_BACKEND: usize = 256;
/// A connection idle longer than this is checked before reuse (one non-blocking read).
/// Under load connections come back within milliseconds and skip the check.
const PROBE_AFTER: Duration = Duration::from_millis(250);
/// How often expired idle connections of all backends (removed ones included) are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A connection's read buffer, and its growth step while a response head is read (the body's
/// pieces are sized in `body.rs`).
const READ_RESERVE: usize = 16 * 1024;

/// Makes room for a read of up to `want` bytes, growing `buf` only when less than a quarter
/// of that is free (a read into a nearly full buffer would return a sliver).
pub(crate) fn reserve_for_read(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want / 4 {
        buf.reserve(want);
    }
}

/// The parts of a request the HTTP/1 client writes.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub target: &'a str,
    /// Rewritten for the backend (no hop-by-hop headers; `Host` as the client sent it).
    pub headers: &'a HeaderMap,
    /// Whether the request may be sent again when a reused connection was found closed.
    pub idempotent: bool,
    /// `clock_micros()` when the request was sent off: idle connections are aged by it.
    pub now_micros: u64,
}

/// Why an HTTP/1 exchange failed.
/// A variant with an inner error says what failed; the inner error is its `source`
/// (rendered by `crate::error::Chain`).
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("connect failed")]
    Connect(#[source] io::Error),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("reading the response failed")]
    Read(#[source] io::Error),
    #[error("the backend closed the connection before responding")]
    Closed,
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("unexpected 101 Switching Protocols for a request without Upgrade")]
    UnexpectedSwitch,
}

impl H1Error {
    pub fn is_connect(&self) -> bool {
        matches!(self, H1Error::Connect(_))
    }
}

/// A connection between exchanges, with its read and write buffers (kept, so the next
/// request on it allocates neither).
#[derive(Debug)]
pub(crate) struct IdleConn {
    conn: Conn,
    buf: BytesMut,
    out: Vec<u8>,
    /// `clock_micros()` of the request it last carried.
    since: u64,
}

/// A write buffer grown past this (a large buffered body) is not kept for the next request.
const KEEP_OUT_CAPACITY: usize = 16 * 1024;

impl IdleConn {
    pub(crate) fn new(conn: Conn, buf: BytesMut, mut out: Vec<u8>, since: u64) -> IdleConn {
        if out.capacity() > KEEP_OUT_CAPACITY {
            out = Vec::new();
        }
        IdleConn {
            conn,
            buf,
            out,
            since,
        }
    }
}

#[derive(Debug)]
struct IdleSet {
    /// foldhash rather than std's SipHash: it is looked up twice per request (take, put
    /// back), where SipHash over a socket address was ~300 instructions a lookup (callgrind);
    /// the keys are the config's backend addresses, which a client cannot choose.
    by_backend: foldhash::HashMap<BackendAddress, Vec<IdleConn>>,
    last_sweep: u64,
}

/// One worker thread's idle connections, on a cache line of its own so that workers taking
/// and returning connections do not contend on the line of a neighbour's lock.
#[derive(Debug)]
#[repr(align(128))]
struct IdleShard(Mutex<IdleSet>);

/// One pool's HTTP/1 connections, idle ones kept per backend (most recently used first).
///
/// Idle connections are kept per worker thread (`crate::workers`): a connection goes back to
/// the set of the worker that used it and is reused by that worker, whose event loop it is
/// registered with, as nginx's workers each keep their own upstream keep-alive connections.
/// Threads that are not workers (a work-stealing runtime's) share the first set.
pub struct H1Pool {
    dialer: Dialer,
    idle: Box<[IdleShard]>,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool").finish_non_exhaustive()
    }
}

impl H1Pool {
    pub fn new(dialer: Dialer) -> H1Pool {
        // One set per CPU: workers beyond that share sets (still correct, a little more
        // contention), and the sets of an idle pool hold no allocation.
        let shards = std::thread::available_parallelism().map_or(1, |n| n.get().min(64));
        let idle = (0..shards)
            .map(|_| {
                IdleShard(Mutex::new(IdleSet {
                    by_backend: foldhash::HashMap::default(),
                    last_sweep: 0,
                }))
            })
            .collect();
        H1Pool { dialer, idle }
    }

    /// The calling worker's idle set.
    fn idle_here(&self) -> MutexGuard<'_, IdleSet> {
        let shard = &self.idle[crate::workers::current_index() % self.idle.len()];
        shard.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one request to `address` and reads the response head; the body streams from
    /// the returned response.
    pub async fn send(
        self: &Arc<Self>,
        address: &BackendAddress,
        request: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<H1Body>, H1Error> {
        let (known, mut streamed) = match body {
            RequestBody::Replay(bytes) => (bytes, None),
            stream @ RequestBody::Stream(..) => (None, Some(stream)),
        };
        let framing = match (&known, &streamed) {
            (Some(bytes), _) => RequestFraming::Length(bytes.len() as u64),
            (None, Some(stream)) => match stream.size_hint().exact() {
                Some(length) => RequestFraming::Length(length),
                None => RequestFraming::Chunked,
            },
            (None, None) => RequestFraming::Empty,
        };
        let resendable = streamed.is_none();
        let mut idle = self.checkout(address, request.now_micros);
        loop {
            let reused = idle.is_some();
            let (mut conn, mut buf, mut out) = match idle.take() {
                Some(idle) => (idle.conn, idle.buf, idle.out),
                None => {
                    // Boxed: connecting (TLS handshake included) is rare next to reusing an
                    // idle connection, and every request's future would otherwise carry
                    // room for it (and have it copied when the future moves).
                    let conn = Box::pin(self.dialer.connect(address, Alpn::Http))
                        .await
                        .map_err(H1Error::Connect)?;
                    (conn, BytesMut::with_capacity(READ_RESERVE), Vec::new())
                }
            };
            out.clear();
            out.reserve(256 + known.as_ref().map_or(0, |b| b.len()));
            head::encode_request(
                &mut out,
                request.method,
                request.target,
                request.headers,
                framing,
            )?;
            if let Some(bytes) = &known {
                out.extend_from_slice(bytes);
            }
            let chunked = framing == RequestFraming::Chunked;
            let mut sending = Sending::new(out, streamed.take(), chunked);
            match exchange(&mut conn, &mut buf, &mut sending, request.method).await {
                Ok((head, framing)) => {
                    let release = Release {
                        pool: Arc::clone(self),
                        address: address.clone(),
                        since: request.now_micros,
                    };
                    return respond(head, framing, conn, buf, sending, release);
                }
                Err(failure) => {
                    if matches!(failure.error, H1Error::Send(SendError::ClientBody(_))) {
                        conn.reset();
                        return Err(failure.error);
                    }
                    // A reused connection the backend had closed: nothing was processed if
                    // nothing could be written; otherwise only an idempotent request is sent
                    // again. Either way on a new connection, once.
                    let stale = reused
                        && !failure.answered
                        && matches!(
                            failure.error,
                            H1Error::Closed | H1Error::Read(_) | H1Error::Send(SendError::Write(_))
                        );
                    let safe = request.idempotent || !failure.wrote;
                    if !(stale && safe && resendable) {
                        return Err(failure.error);
                    }
                    tracing::debug!(%address, error = %failure.error, "reused backend connection was closed; sending again on a new one");
                }
            }
        }
    }

    /// The most recently used idle connection to `address` that is still usable.
    fn checkout(&self, address: &BackendAddress, now: u64) -> Option<IdleConn> {
        let mut expired = Vec::new();
        let found = {
            let mut idle = self.idle_here();
            let list = idle.by_backend.get_mut(address)?;
            let mut found = None;
            while let Some(candidate) = list.pop() {
                let age = Duration::from_micros(now.saturating_sub(candidate.since));
                if age < IDLE_TIMEOUT && (age < PROBE_AFTER || still_open(&candidate.conn)) {
                    found = Some(candidate);
                    break;
                }
                expired.push(candidate);
            }
            found
        };
        // Closed outside the lock.
        drop(expired);
        found
    }

    /// Closes the idle connections to backends `keep` refuses (removed by a reload or by
    /// discovery). Without this they would wait for the next sweep, which only traffic on
    /// this pool runs.
    pub fn retain_backends(&self, keep: &dyn Fn(&BackendAddress) -> bool) {
        for shard in &self.idle {
            let closed: Vec<_> = {
                let mut idle = shard.0.lock().unwrap_or_else(|p| p.into_inner());
                idle.by_backend
                    .extract_if(|address, _| !keep(address))
                    .collect()
            };
            // Closed outside the lock.
            drop(closed);
        }
    }

    /// Keeps a connection whose last exchange ended cleanly for the next request.
    pub(crate) fn put_back(&self, address: &BackendAddress, conn: IdleConn) {
        let now = conn.since;
        let mut expired = Vec::new();
        let sweep_due = {
            let mut idle = self.idle_here();
            let due = Duration::from_micros(now.saturating_sub(idle.last_sweep)) > SWEEP_EVERY;
            if due {
                idle.last_sweep = now;
            }
            match idle.by_backend.get_mut(address) {
                Some(list) if list.len() >= MAX_IDLE_PER_BACKEND => expired.push(conn),
                Some(list) => list.push(conn),
                None => {
                    idle.by_backend.insert(address.clone(), vec![conn]);
                }
            }
            due
        };
        if sweep_due {
            // Every worker's set, not only this one's: a worker that no longer sends to this
            // pool would otherwise keep its expired connections open. A set in use right now
            // is skipped; its own worker or the next sweep gets to it.
            for shard in &self.idle {
                if let Ok(mut idle) = shard.0.try_lock() {
                    idle.take_expired(now, &mut expired);
                }
            }
        }
        // Closed outside the locks.
        drop(expired);
    }
}

impl IdleSet {
    /// Moves the connections idle for `IDLE_TIMEOUT` or longer to `expired`.
    fn take_expired(&mut self, now: u64, expired: &mut Vec<IdleConn>) {
        for list in self.by_backend.values_mut() {
            let (keep, old): (Vec<_>, Vec<_>) = list
                .drain(..)
                .partition(|c| Duration::from_micros(now.saturating_sub(c.since)) < IDLE_TIMEOUT);
            *list = keep;
            expired.extend(old);
        }
        self.by_backend.retain(|_, list| !list.is_empty());
    }
}

/// Whether an idle connection is still open: nothing (no data, no EOF) is waiting on it.
fn still_open(conn: &Conn) -> bool {
    let mut probe = [0u8; 1];
    let read = match conn {
        Conn::Tcp(stream) => stream.get_ref().try_read(&mut probe),
        Conn::Unix(stream) => stream.get_ref().try_read(&mut probe),
        // Anything arriving under TLS on an idle connection (close_notify, or bytes the
        // backend should not have sent) shows on the socket beneath.
        Conn::Tls(stream) => return still_open(stream.get_ref().0),
    };
    matches!(read, Err(error) if error.kind() == io::ErrorKind::WouldBlock)
}

/// An exchange that failed, with what is known about how far it got.
struct Failure {
    error: H1Error,
    /// Some response bytes arrived.
    answered: bool,
    /// Some request bytes were written.
    wrote: bool,
}

/// Writes the request and reads up to the final response head, skipping 1xx interim
/// responses. The request body keeps streaming while the head is awaited.
async fn exchange(
    conn: &mut Conn,
    buf: &mut BytesMut,
    sending: &mut Sending,
    method: &Method,
) -> Result<(ResponseHead, Framing), Failure> {
    let mut answered = !buf.is_empty();
    let mut write_error = None;
    let result = std::future::poll_fn(|cx| {
        if !sending.is_over()
            && let Poll::Ready(Err(error)) = sending.poll_send(conn, cx)
        {
            match error {
                SendError::ClientBody(_) => return Poll::Ready(Err(H1Error::Send(error))),
                // A backend may answer (413, 401...) and stop reading an upload: read on,
                // and report the write failure only if no answer comes.
                SendError::Write(_) => {
                    sending.abandon();
                    write_error = Some(error);
                }
            }
        }
        loop {
            if let Some(final_head) = head::parse_final_response(buf, method)? {
                return Poll::Ready(Ok(final_head));
            }
            reserve_for_read(buf, READ_RESERVE);
            let failed = match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *conn), cx, buf))
            {
                Err(error) => H1Error::Read(error),
                Ok(0) => H1Error::Closed,
                Ok(_) => {
                    answered = true;
                    continue;
                }
            };
            return Poll::Ready(Err(write_error.take().map_or(failed, H1Error::Send)));
        }
    })
    .await;
    result.map_err(|error| Failure {
        error,
        answered,
        wrote: sending.started(),
    })
}

/// The response to hand to the client side. A body already complete in `buf` is cut out and
/// the connection released at once; otherwise the body streams from the connection.
fn respond(
    head: ResponseHead,
    framing: Framing,
    conn: Conn,
    mut buf: BytesMut,
    sending: Sending,
    release: Release,
) -> Result<Response<H1Body>, H1Error> {
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(H1Error::UnexpectedSwitch);
    }
    let reusable = head::keeps_alive(head.version, &head.headers);
    let body = match framing {
        Framing::None | Framing::Length(0) => {
            if reusable {
                release.keep_if_clean(conn, buf, sending);
            }
            H1Body::Complete(None)
        }
        Framing::Length(length) if (buf.len() as u64) >= length => {
            let data = buf.split_to(length as usize).freeze();
            if reusable {
                release.keep_if_clean(conn, buf, sending);
            }
            H1Body::Complete(Some(data))
        }
        framing => H1Body::Streaming(Box::new(Streaming {
            conn,
            buf,
            framing: match framing {
                Framing::Length(length) => BodyFraming::Length(length),
                Framing::Chunked => BodyFraming::Chunked(Default::default()),
                _ => BodyFraming::UntilClose,
            },
            sending,
            release: reusable.then_some(release),
        })),
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    // The backend's HTTP version describes its connection, not the client's: left at the
    // default, so an HTTP/1.0 backend does not turn the client's connection into a 1.0 one.
    *response.headers_mut() = head.headers;
    Ok(response)
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use crate::error::chain;
    use crate::upstream::UpstreamError;

    /// `/status` read "connect failed: Connection refused (os error 111): Connection refused
    /// (os error 111)": the variant printed its source, and the chain printed it again.
    #[test]
    fn an_exchange_error_says_its_cause_once() {
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused");
        let connect = UpstreamError::H1(H1Error::Connect(refused()));
        assert_eq!(chain(&connect), "connect failed: Connection refused");
        let write = UpstreamError::H1(H1Error::Send(SendError::Write(refused())));
        assert_eq!(
            chain(&write),
            "writing to the backend failed: Connection refused"
        );
        let body = BodyReadError::Read(io::Error::other("Connection reset by peer"));
        assert_eq!(
            chain(&body),
            "reading from the backend failed: Connection reset by peer"
        );
    }
}
