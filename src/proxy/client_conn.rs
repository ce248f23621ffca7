//! Driving one client connection of an HTTP listener: telling HTTP/2 (the connection preface)
//! from HTTP/1, serving body-less HTTP/1.1 requests with sluice's own server (`proxy::h1`),
//! everything else with hyper, and *parking* idle HTTP/1 keep-alive connections.
//!
//! Why parking: a hyper HTTP/1 connection keeps an 8 KiB read buffer and an 8 KiB header
//! write buffer for its whole life, so 10,000 idle keep-alive clients cost ~170 MiB, where
//! nginx and HAProxy (which free buffers between requests) need a few MiB. Between requests
//! the connection waits for the next byte holding only the socket (`wait_for_bytes`). The own
//! server returns there as soon as a response is out; a hyper connection (a request with a
//! body, an upgrade, HTTP/1.0...) is taken apart when it has waited for its next request for
//! `PARK_AFTER` (`into_parts`: socket, unread bytes, service) and dropped with its buffers.
//! The next request, whichever server it needs, starts from the bytes read.
//!
//! Parking hyper is only safe when it is between messages: nothing of the next request read,
//! nothing left to write, no request in progress, and no request body left unread (bytes of
//! an unread body must never be parsed as a new request). `ConnActivity` tracks all four from
//! the socket wrapper and the handler; a connection that ever had a request body is never
//! parked (a rule that is simple to be sure of, and costs only memory).

use crate::proxy::activity::{ConnActivity, TimedIo};
use crate::proxy::h1;
use crate::proxy::h2_streams::{StreamExec, WithStreams};
use crate::upstream::request_body::ClientBody;
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// How long an HTTP/1 connection waits for its next request before it is parked (it parks
/// after one to two of these). Short, so that a burst of new clients that then sit idle never
/// holds many buffers at once; a client sending more than a few requests a second on the
/// connection is never parked, and rebuilding costs about as much as one small request.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// After `stop`, an HTTP/1 keep-alive connection is not cut at once: closing an idle
/// connection races a client that is sending its next request right then, and that request
/// fails. Instead, responses carry `Connection: close` (the client reconnects cleanly) and
/// connections still idle after this grace period are closed.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The HTTP/2 connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What hyper needs of the per-request service, for HTTP/1 and HTTP/2 alike: a trait of its
/// own so that the bounds are written once. Everything that meets them has it.
pub trait ConnService:
    HttpService<
        Incoming,
        Future: Send + 'static,
        Error: Into<BoxError>,
        ResBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
    > + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: HttpService<
            Incoming,
            Future: Send + 'static,
            Error: Into<BoxError>,
            ResBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
        > + Send
        + 'static
{
}

/// How the own server ends a connection once its last response is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Shut the stream down first: TLS sends its `close_notify` then.
    Shutdown,
    /// Just close it: on plain TCP the FIN follows the response without a `shutdown` (one
    /// system call fewer per closed connection).
    Drop,
}

/// Which HTTP versions a connection may speak: TLS's ALPN may have fixed it already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// HTTP/2 if the connection starts with its preface (h2c prior knowledge), else HTTP/1.
    Detect,
    Http1,
    Http2,
}

/// What hyper enforces of a listener's request limits while it parses (`config::limits`):
/// beyond them it answers 431 (HTTP/1) or resets (HTTP/2) before sluice sees a request.
#[derive(Debug, Clone, Copy)]
pub struct HyperLimits {
    /// Read buffer bound for an HTTP/1 head.
    pub http1_buffer: u32,
    pub http1_headers: u32,
    pub h2_streams: u32,
    pub h2_header_list: u32,
}

impl HyperLimits {
    pub fn new(limits: &crate::config::RequestLimits) -> HyperLimits {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        HyperLimits {
            http1_buffer: clamp(limits.http1_buffer()),
            // One more than allowed: sluice's own check then answers with its reason.
            http1_headers: clamp(limits.header_count + 1),
            h2_streams: limits.h2_max_concurrent_streams,
            h2_header_list: limits.h2_header_list,
        }
    }
}

impl Default for HyperLimits {
    fn default() -> HyperLimits {
        HyperLimits::new(&crate::config::RequestLimits::default())
    }
}

/// Serves `io` until the client closes, an error ends it, or `stop` fires and the request in
/// progress (if any) is answered.
///
/// HTTP/1 requests without a body go to `own` through sluice's own server (`proxy::h1`);
/// the rest, and HTTP/2, to `service` through hyper. Both must answer alike. The
/// connection's activity marks are the ones `io` carries.
///
/// A function returning a block rather than an `async fn`: an `async fn` keeps its arguments
/// twice in its state (as captured, and as locals), and this state is what every waiting
/// connection holds.
#[allow(clippy::manual_async_fn)]
pub fn drive<I, S, F, Fut, B>(
    mut io: TimedIo<I>,
    mut service: S,
    own: F,
    versions: Versions,
    limits: HyperLimits,
    close: Closing,
    stop: CancellationToken,
) -> impl Future<Output = Result<(), BoxError>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
    F: Fn(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    async move {
        if versions == Versions::Http2 {
            io.owner().activity().mark_http2();
            let io = Prefixed::new(Bytes::new(), io);
            return Ok(Box::pin(serve_http2(io, service, limits, &stop)).await?);
        }
        // In a block of its own: the first bytes are looked at (borrowed), and a borrowed
        // local keeps its room in the connection's state for as long as it is in scope.
        let mut prefix = {
            let detect = versions == Versions::Detect;
            let Some(bytes) = wait_for_bytes(&mut io, &stop, detect).await else {
                return Ok(());
            };
            if detect && bytes.starts_with(H2_PREFACE) {
                io.owner().activity().mark_http2();
                // Boxed: an HTTP/2 connection's state is large, and most connections are
                // HTTP/1.
                let io = Prefixed::new(bytes, io);
                return Ok(Box::pin(serve_http2(io, service, limits, &stop)).await?);
            }
            bytes
        };
        // Each turn serves from `prefix` and ends by reading the next one. Nothing else is
        // held across that wait (bytes carried out of a parked hyper connection skip it), so
        // the wait is all a waiting connection's state.
        loop {
            // Boxed: serving holds the request's whole proxy future, and a connection waiting
            // for its next request must not keep room for one.
            let serving = Box::pin(h1::serve(&mut io, BytesMut::from(prefix), &own));
            let handover = match serving.await? {
                h1::End::Idle => None,
                h1::End::Close => break,
                h1::End::Handover(bytes) => Some(bytes),
            };
            if let Some(bytes) = handover {
                let owner = Arc::clone(io.owner());
                let mut connection = http1_connection(Prefixed::new(bytes, io), service, limits);
                // Boxed, as the connection is: only connections hyper serves need it.
                let end = Box::pin(run_http1(&mut connection, owner.activity(), &stop)).await;
                if let Http1End::Finished(result) = end {
                    return Ok(result?);
                }
                tracing::trace!("parked an idle HTTP/1 connection");
                let Some(parts) = connection.into_parts() else {
                    return Ok(());
                };
                service = parts.service;
                let (rest, inner) = parts.io.into_inner().into_parts();
                io = inner;
                // The park check saw nothing read of a next request, so both are empty; were
                // they not, these bytes come next, in this order.
                if !parts.read_buf.is_empty() || !rest.is_empty() {
                    io.owner().activity().note_parked();
                    let mut bytes = BytesMut::from(&parts.read_buf[..]);
                    bytes.extend_from_slice(&rest);
                    prefix = bytes.freeze();
                    continue;
                }
            }
            // Between requests with nothing held: as parked as a connection gets.
            io.owner().activity().note_parked();
            prefix = match wait_for_bytes(&mut io, &stop, false).await {
                Some(bytes) => bytes,
                None => return Ok(()),
            };
        }
        // The own server closes: the response is out.
        if close == Closing::Shutdown {
            // Errors here change nothing: the connection ends either way.
            let _ = io.shutdown().await;
        }
        Ok(())
    }
}

/// A hyper HTTP/1 connection, boxed: its buffers and state are large, and the task's future
/// must not reserve room for them while parked. (A function of its own, so that the builder
/// is not part of the task's future either.)
fn http1_connection<I, S>(
    io: Prefixed<TimedIo<I>>,
    service: S,
    limits: HyperLimits,
) -> Box<Http1Connection<TimedIo<I>, S>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // TimedIo enforces header and idle deadlines; hyper's would close idle keep-alive
        // connections after the (short) header timeout.
        .header_read_timeout(None)
        .max_buf_size(limits.http1_buffer as usize)
        .max_headers(limits.http1_headers as usize)
        .keep_alive(true);
    Box::new(
        builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    )
}

/// Reads the first bytes of the next request (or of the connection) with no buffer held in
/// between: `None` when the client closed, the idle/header deadline passed, or `stop` fired
/// and the grace period ran out. A new connection reads until it can tell HTTP/2's preface.
fn wait_for_bytes<'a, I: AsyncRead + Unpin>(
    io: &'a mut TimedIo<I>,
    stop: &'a CancellationToken,
    first: bool,
) -> NextBytes<'a, I> {
    NextBytes {
        io,
        buf: BytesMut::new(),
        first,
        grace: None,
        stopped: stop.cancelled(),
    }
}

pin_project_lite::pin_project! {
    /// `wait_for_bytes`, written out: this is all of a waiting connection's state, and an
    /// `async` block with a `select!` inside took twice the room.
    struct NextBytes<'a, I> {
        io: &'a mut TimedIo<I>,
        buf: BytesMut,
        first: bool,
        // Made when `stop` fires: most connections never wait for a grace period.
        grace: Option<Pin<Box<tokio::time::Sleep>>>,
        #[pin]
        stopped: WaitForCancellationFuture<'a>,
    }
}

impl<I: AsyncRead + Unpin> Future for NextBytes<'_, I> {
    type Output = Option<Bytes>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.project();
        loop {
            match h1::poll_read_some(*this.io, this.buf, cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {
                    let buf = &**this.buf;
                    let undecided =
                        *this.first && buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf);
                    if !undecided {
                        return Poll::Ready(Some(this.buf.split().freeze()));
                    }
                }
                Poll::Pending => break,
            }
        }
        if this.grace.is_none() {
            ready!(this.stopped.poll(cx));
        }
        let grace = this
            .grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(IDLE_CLOSE_GRACE)));
        grace.as_mut().poll(cx).map(|()| None)
    }
}

enum Http1End {
    Finished(Result<(), hyper::Error>),
    /// Idle between requests for `PARK_AFTER`: take the connection apart.
    Park,
}

type Http1Connection<I, S> = http1::UpgradeableConnection<TokioIo<Prefixed<I>>, S>;

async fn run_http1<I, S>(
    connection: &mut Http1Connection<TimedIo<I>, S>,
    activity: &ConnActivity,
    stop: &CancellationToken,
) -> Http1End
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
    Http1Connection<TimedIo<I>, S>: Unpin,
{
    let mut park_check = Box::pin(tokio::time::sleep(PARK_AFTER));
    let mut was_idle = false;
    loop {
        tokio::select! {
            result = &mut *connection => return Http1End::Finished(result),
            () = park_check.as_mut() => {
                // Idle at two checks in a row: quiet for at least PARK_AFTER (or busy in
                // between, which only costs one rebuild).
                let idle = activity.parkable() && !stop.is_cancelled();
                if idle && was_idle {
                    return Http1End::Park;
                }
                was_idle = idle;
                park_check.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
            }
            () = stop.cancelled(), if !stop.is_cancelled() => {}
        }
        if stop.is_cancelled() {
            return Http1End::Finished(Box::pin(drain_http1(connection)).await);
        }
    }
}

/// After `stop`: let the request in progress finish with `Connection: close` (the service
/// adds it), and close a connection still idle after the grace period.
async fn drain_http1<I, S>(
    connection: &mut Http1Connection<TimedIo<I>, S>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
    Http1Connection<TimedIo<I>, S>: Unpin,
{
    let grace = tokio::time::sleep(IDLE_CLOSE_GRACE);
    tokio::select! {
        result = &mut *connection => result,
        () = grace => {
            Pin::new(&mut *connection).graceful_shutdown();
            connection.await
        }
    }
}

async fn serve_http2<I, S>(
    io: Prefixed<TimedIo<I>>,
    service: S,
    limits: HyperLimits,
    stop: &CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    // Streams run on this connection's task (`h2_streams`: no task per request).
    let exec = StreamExec::default();
    let mut builder = http2::Builder::new(exec.clone());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_streams)
        // Bounds CONTINUATION frames too: h2 refuses more than the list size allows.
        .max_header_list_size(limits.h2_header_list);
    let connection = WithStreams::new(builder.serve_connection(TokioIo::new(io), service), exec);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        () = stop.cancelled() => {}
    }
    let grace = tokio::time::sleep(IDLE_CLOSE_GRACE);
    tokio::select! {
        result = connection.as_mut() => result,
        () = grace => {
            connection.as_mut().connection().graceful_shutdown();
            connection.await
        }
    }
}

/// A stream that yields `prefix` before reading `inner`: the bytes read to tell the protocol
/// or to wake a parked connection are handed to hyper this way.
pub struct Prefixed<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Bytes, inner: I) -> Prefixed<I> {
        Prefixed { prefix, inner }
    }

    fn into_parts(self) -> (Bytes, I) {
        (self.prefix, self.inner)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "client_conn_tests.rs"]
mod tests;
