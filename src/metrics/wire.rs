//! Wire-level byte counters: what crossed a socket, counted where sluice reads and writes it
//! (`Metered`), beneath TLS and HTTP, so headers, chunk framing, HTTP/2 frames, PROXY headers
//! and TLS records are all in it. `sluice_listener_bytes_total` stays the payload count
//! (bodies; a TCP session's bytes); these are what operators compare with the NIC.
//!
//! Cost on the data path: one relaxed atomic add per read or write that moved bytes (a
//! syscall each, so the add is noise next to it); no per-connection registration, the
//! counters are looked up once per listener and per backend connection.
//!
//! Sessions a TCP listener moves with splice(2) bypass the wrapper: the L4 path adds their
//! totals when they end (`add`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket's two counters, oriented by the socket: `read` counts what sluice read from it,
/// `written` what it wrote. (On a client socket read is `direction="in"`; on a backend socket
/// written is: `in` is always the client-to-backend flow, as in `sluice_listener_bytes_total`.)
#[derive(Debug)]
pub struct WireCounters {
    pub read: metrics::Counter,
    pub written: metrics::Counter,
}

impl WireCounters {
    /// Bytes moved outside the wrapper (splice), read and written.
    pub fn add(&self, read: u64, written: u64) {
        self.read.increment(read);
        self.written.increment(written);
    }
}

/// A stream that counts the bytes read from and written to it.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    counters: Arc<WireCounters>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, counters: Arc<WireCounters>) -> Metered<S> {
        Metered { inner, counters }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream and its counters, for a path that moves bytes without this wrapper and
    /// counts them itself (splice).
    pub fn into_parts(self) -> (S, Arc<WireCounters>) {
        (self.inner, self.counters)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            this.counters.read.increment(read as u64);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = poll
            && written > 0
        {
            this.counters.written.increment(written as u64);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = poll
            && written > 0
        {
            this.counters.written.increment(written as u64);
        }
        poll
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
