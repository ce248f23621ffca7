//! Copying bytes both ways between two connections until one side closes, nothing moves for
//! an idle timeout, or a stop signal plus the drain deadline passes. Shared by TCP sessions
//! and upgraded HTTP tunnels (WebSocket).
//!
//! Idleness is tracked with one shared count of moves that every read and write bumps, so a
//! single watchdog, looking a few times per idle period, tells an idle exchange from a busy
//! one without resetting a timer (or reading the clock) per chunk.
//!
//! This is the userspace copy, for any pair of streams (TLS, unix sockets, upgraded HTTP
//! connections). Two plain TCP sockets on Linux go through `zero_copy` instead, which shares
//! the clock and the watchdog (`supervise`) defined here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a splice ended.
#[derive(Debug)]
pub enum SpliceEnd {
    /// One side closed (both directions done): bytes sent to the backend and received from it.
    Closed(io::Result<(u64, u64)>),
    Idle,
    /// Stop fired and the drain deadline passed.
    Drained,
}

pub struct Limits {
    pub idle: Duration,
    pub drain: Duration,
}

/// Bytes moved per read/write each way. tokio's default (8 KiB) cost 16 syscalls per 64 KiB
/// response and ~1.5x HAProxy's CPU per byte (benches/loadtest.py, `tcp64k`); 32 KiB takes
/// a 64 KiB response in about four. Allocated per session while it lasts, so not larger.
pub(super) const COPY_BUFFER: usize = 32 * 1024;

/// Copies `client` <-> `backend` (half-close passed on) until they finish, go idle, or
/// `stop` fires and `limits.drain` passes.
pub async fn splice<C, B>(
    client: C,
    backend: B,
    limits: Limits,
    stop: &CancellationToken,
) -> SpliceEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Arc::new(Activity::new());
    let mut client = Watched::new(client, &clock);
    let mut backend = Watched::new(backend, &clock);
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut backend,
        COPY_BUFFER,
        COPY_BUFFER,
    );
    supervise(copy, &clock, limits, stop).await
}

/// Runs `copy` (both directions; it must touch `clock` for every byte moved) until it
/// finishes, `clock` shows nothing moved for `limits.idle`, or `stop` fires and
/// `limits.drain` passes. Dropping `copy` closes nothing itself: the caller owns the streams.
pub(super) async fn supervise(
    copy: impl Future<Output = io::Result<(u64, u64)>>,
    clock: &Activity,
    limits: Limits,
    stop: &CancellationToken,
) -> SpliceEnd {
    let drained = async {
        stop.cancelled().await;
        tokio::time::sleep(limits.drain).await;
    };
    tokio::select! {
        result = copy => SpliceEnd::Closed(result),
        () = clock.idle_for(limits.idle) => SpliceEnd::Idle,
        () = drained => SpliceEnd::Drained,
    }
}

/// The time of the last byte moved, in milliseconds since `started`.
pub(super) struct Activity {
    /// Reads and writes so far. A count, not a time: reading the clock on every move showed
    /// in the L4 profile, and the watchdog only needs to see whether anything moved.
    moves: AtomicU64,
}

/// The watchdog looks this many times per idle period, so a session is cut between `idle`
/// and `idle * (1 + 1/IDLE_CHECKS)` after its last byte.
const IDLE_CHECKS: u32 = 4;

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            moves: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        let step = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
        let mut seen = self.moves.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(step).await;
            let moves = self.moves.load(Ordering::Relaxed);
            let now = Instant::now();
            if moves != seen {
                seen = moves;
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= idle {
                return;
            }
        }
    }
}

struct Watched<T> {
    inner: T,
    clock: Arc<Activity>,
}

impl<T> Watched<T> {
    fn new(inner: T, clock: &Arc<Activity>) -> Watched<T> {
        Watched {
            inner,
            clock: Arc::clone(clock),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            idle: Duration::from_secs(10),
            drain: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_it_open_and_silence_closes_it() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (backend, mut backend_peer) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let run = tokio::spawn(async move { splice(client, backend, limits(), &stop).await });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            client_peer.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            backend_peer.read_exact(&mut byte).await.unwrap();
        }
        assert!(matches!(run.await.unwrap(), SpliceEnd::Idle));
        // Idle 10 s after the last byte (at 24 s), give or take one watchdog step (2.5 s).
        let took = started.elapsed();
        let earliest = Duration::from_secs(24 + 10);
        assert!(
            took >= earliest && took <= earliest + Duration::from_millis(2500),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_closes_after_the_drain_deadline() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (backend, _backend_peer) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let started = Instant::now();
        let run = tokio::spawn(async move {
            let limits = Limits {
                idle: Duration::from_secs(3600),
                drain: Duration::from_secs(5),
            };
            splice(client, backend, limits, &stop).await
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stopper.cancel();
        assert!(matches!(run.await.unwrap(), SpliceEnd::Drained));
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }
}
