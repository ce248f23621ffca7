//! Client-side connection timeouts for HTTP listeners: `client_header` (slowloris) and
//! `client_idle` (keep-alive), enforced by wrapping the client socket.
//!
//! hyper's own `header_read_timeout` starts as soon as a keep-alive connection goes idle, so it
//! cannot tell "idle for 30 s between requests" (fine) from "took 30 s to send one request head"
//! (an attack). The wrapper can: the service marks requests active (`ConnActivity::begin`, ended
//! when the response body is dropped), and while none is active the wrapper arms the idle
//! deadline; the first byte of a new request switches it to the shorter header deadline. On
//! expiry the read fails with `TimedOut` and hyper closes the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Shared between the socket wrapper and the request handler of one client connection.
/// Counters are 32 bits: every open connection holds one, and only changes and "any?" are read.
#[derive(Debug, Default)]
pub struct ConnActivity {
    active_requests: AtomicU32,
    /// Requests begun so far (wrapping): a request that began and ended between two reads
    /// still ends the head phase.
    started_requests: AtomicU32,
    /// How many times the connection was parked (for debugging and tests).
    parked: AtomicU32,
    /// HTTP/2 clients send pings and settings between requests; those bytes must not start
    /// the request-head deadline.
    http2: AtomicBool,
    /// The last read found nothing, between requests with no byte of the next one read.
    idle_reading: AtomicBool,
    /// A write or flush is waiting for the socket: hyper still holds bytes to send.
    write_pending: AtomicBool,
    /// A request had a body: hyper may still be reading it, so the connection never parks.
    had_body: AtomicBool,
}

/// What holds a connection's `ConnActivity`: the proxy's connection context keeps it inline
/// (one shared allocation per connection instead of two); tests use it alone.
pub trait Tracked: Send + Sync + 'static {
    fn activity(&self) -> &ConnActivity;
}

impl Tracked for ConnActivity {
    fn activity(&self) -> &ConnActivity {
        self
    }
}

/// A shared handle on a connection's activity, as the socket wrapper, the connection driver
/// and each request in progress hold it.
pub type Activity = Arc<dyn Tracked>;

impl ConnActivity {
    /// Marks a request as begun on `owner`'s connection, until the guard is dropped.
    pub fn begin(owner: Activity) -> RequestActive {
        let activity = owner.activity();
        activity.active_requests.fetch_add(1, Ordering::AcqRel);
        activity.started_requests.fetch_add(1, Ordering::Relaxed);
        RequestActive { owner }
    }

    pub fn mark_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Called for a request with a body; see `client_conn` for why this stops parking.
    pub fn mark_body(&self) {
        self.had_body.store(true, Ordering::Relaxed);
    }

    /// Whether hyper is between HTTP/1 messages with nothing buffered either way, so its
    /// connection can be taken apart and rebuilt later (`client_conn`).
    pub fn parkable(&self) -> bool {
        !self.is_busy()
            && self.idle_reading.load(Ordering::Acquire)
            && !self.write_pending.load(Ordering::Acquire)
            && !self.had_body.load(Ordering::Relaxed)
            && !self.http2.load(Ordering::Relaxed)
    }

    pub fn note_parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn times_parked(&self) -> u32 {
        self.parked.load(Ordering::Relaxed)
    }

    fn is_busy(&self) -> bool {
        self.active_requests.load(Ordering::Acquire) > 0
    }
}

/// One request in progress on the connection; dropped when its response has been sent.
pub struct RequestActive {
    owner: Activity,
}

impl std::fmt::Debug for RequestActive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestActive")
            .field("activity", self.owner.activity())
            .finish()
    }
}

impl Drop for RequestActive {
    fn drop(&mut self) {
        self.owner
            .activity()
            .active_requests
            .fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is being served: no client deadline here (backend timeouts apply).
    Busy,
    /// Between requests, waiting for the first byte of the next one.
    Idle,
    /// The first bytes of a request head arrived; the rest must come before the deadline.
    Head,
}

#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    pub header: Duration,
    pub idle: Duration,
}

pub struct TimedIo<T> {
    inner: T,
    owner: Activity,
    /// `ClientTimeouts` in milliseconds (every waiting connection holds these).
    header_ms: u32,
    idle_ms: u32,
    phase: Phase,
    /// When the current phase times out.
    due: Instant,
    /// Armed at `due` or earlier, never later: moving a timer costs more than an early
    /// wake-up, so entering a phase with a later deadline leaves it where it is, and when it
    /// fires early it is moved to `due` then (once per timeout period instead of twice per
    /// request).
    deadline: Pin<Box<Sleep>>,
    /// `started_requests` when last read.
    seen_requests: u32,
}

/// A timeout in whole milliseconds (rounded up, at least 1; at most 49 days).
fn millis(timeout: Duration) -> u32 {
    let millis = timeout.as_micros().div_ceil(1000).max(1);
    u32::try_from(millis).unwrap_or(u32::MAX)
}

impl<T> TimedIo<T> {
    /// The connection's activity, shared with its requests.
    pub fn owner(&self) -> &Activity {
        &self.owner
    }

    fn activity(&self) -> &ConnActivity {
        self.owner.activity()
    }

    /// A new connection starts in `Head`: a client that connects and sends nothing gets the
    /// header deadline, not the (longer) idle one.
    pub fn new(inner: T, owner: Activity, timeouts: ClientTimeouts) -> TimedIo<T> {
        TimedIo {
            inner,
            owner,
            header_ms: millis(timeouts.header),
            idle_ms: millis(timeouts.idle),
            phase: Phase::Head,
            due: Instant::now() + timeouts.header,
            deadline: Box::pin(tokio::time::sleep(timeouts.header)),
            seen_requests: 0,
        }
    }

    fn enter(&mut self, phase: Phase) {
        if self.phase == phase {
            return;
        }
        self.phase = phase;
        let after = match phase {
            Phase::Busy => return,
            Phase::Idle => self.idle_ms,
            Phase::Head => self.header_ms,
        };
        self.due = Instant::now() + Duration::from_millis(u64::from(after));
        if self.due < self.deadline.deadline() {
            self.deadline.as_mut().reset(self.due);
        }
    }

    /// Ready when the current phase's deadline has passed.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.deadline.as_mut().poll(cx));
            if Instant::now() >= self.due {
                return Poll::Ready(());
            }
            self.deadline.as_mut().reset(self.due);
        }
    }
}

impl<T> TimedIo<T> {
    fn note_write(&self, poll: &Poll<io::Result<usize>>) {
        // Bytes written mean a message is being sent: not between messages any more. (An
        // empty flush says nothing, so only writes clear the idle mark.)
        let pending = poll.is_pending();
        if !pending {
            self.activity().idle_reading.store(false, Ordering::Release);
        }
        self.activity()
            .write_pending
            .store(pending, Ordering::Release);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let started = this.activity().started_requests.load(Ordering::Relaxed);
        if this.activity().is_busy() {
            this.enter(Phase::Busy);
        } else if this.phase == Phase::Busy || started != this.seen_requests {
            // A request ended (possibly begun and answered since the last read).
            this.enter(Phase::Idle);
        }
        this.seen_requests = started;
        let filled_before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.activity().idle_reading.store(false, Ordering::Release);
                let got_bytes = buf.filled().len() > filled_before;
                if got_bytes
                    && this.phase == Phase::Idle
                    && !this.activity().http2.load(Ordering::Relaxed)
                {
                    this.enter(Phase::Head);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if this.phase == Phase::Idle {
                    this.activity().idle_reading.store(true, Ordering::Release);
                }
                if this.phase != Phase::Busy {
                    ready!(this.poll_due(cx));
                    let what = if this.phase == Phase::Idle {
                        "client idle timeout"
                    } else {
                        "client header timeout"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity()
            .write_pending
            .store(poll.is_pending(), Ordering::Release);
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUTS: ClientTimeouts = ClientTimeouts {
        header: Duration::from_secs(5),
        idle: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn silent_new_connection_gets_the_header_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = TimedIo::new(server, Arc::new(ConnActivity::default()), TIMEOUTS);
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let error = io.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUTS.header);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_between_requests_gets_the_idle_deadline_then_head_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity: Activity = Arc::new(ConnActivity::default());
        let mut io = TimedIo::new(server, Arc::clone(&activity), TIMEOUTS);
        let mut buf = [0u8; 8];
        // A request runs and completes: the connection becomes idle.
        let request = ConnActivity::begin(Arc::clone(&activity));
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        drop(request);
        // Idle for longer than the header timeout is fine...
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = io.read(&mut buf).await.unwrap();
            (io, n)
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(b"G").await.unwrap();
        let (mut io, n) = reader.await.unwrap();
        assert_eq!(n, 1);
        // ...but once a head started, the rest must come within the header timeout.
        let started = Instant::now();
        let error = io.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUTS.header);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_deadline_closes_a_quiet_keep_alive_connection() {
        let (_client, server) = tokio::io::duplex(64);
        let activity: Activity = Arc::new(ConnActivity::default());
        let mut io = TimedIo::new(server, Arc::clone(&activity), TIMEOUTS);
        drop(ConnActivity::begin(Arc::clone(&activity)));
        io.phase = Phase::Busy;
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let error = io.read(&mut buf).await.unwrap_err();
        assert_eq!(error.to_string(), "client idle timeout");
        assert_eq!(started.elapsed(), TIMEOUTS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_between_two_reads_starts_the_idle_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity: Activity = Arc::new(ConnActivity::default());
        let mut io = TimedIo::new(server, Arc::clone(&activity), TIMEOUTS);
        let mut buf = [0u8; 8];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        // Begun and answered with no read in between (an instant 404).
        drop(ConnActivity::begin(Arc::clone(&activity)));
        let started = Instant::now();
        let error = io.read(&mut buf).await.unwrap_err();
        assert_eq!(error.to_string(), "client idle timeout");
        assert_eq!(started.elapsed(), TIMEOUTS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connection_has_no_client_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity: Activity = Arc::new(ConnActivity::default());
        let mut io = TimedIo::new(server, Arc::clone(&activity), TIMEOUTS);
        let _request = ConnActivity::begin(Arc::clone(&activity));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            io.read(&mut buf).await.map(|_| ())
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        client.write_all(b"x").await.unwrap();
        assert!(reader.await.unwrap().is_ok());
    }
}
