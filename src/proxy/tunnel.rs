//! HTTP/1.1 Upgrade (WebSocket and any other protocol) through the L7 proxy: which requests
//! ask for one, keeping the two hop-by-hop headers that make the backend agree, and the byte
//! tunnel that runs once both sides switched protocols.
//!
//! The tunnel owns everything it needs (both upgraded sockets, the backend's in-flight guard,
//! the client connection's activity guard), so a config reload cannot affect it; it ends when
//! either side closes, after `tunnel_idle` without a byte either way, or at the drain deadline
//! once its listener stops (shutdown, or the listener removed by a reload).

use crate::backend::InFlight;
use crate::proxy::activity::RequestActive;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The `Upgrade` value of an HTTP/1.1 request that asks to switch protocols
/// (`Connection: upgrade` plus `Upgrade: ...`); `None` for every other request.
pub fn requested_upgrade<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    request.headers().get(header::UPGRADE).cloned()
}

/// Puts back the two headers hop-by-hop stripping removed, so the next hop sees the upgrade
/// request (or, on the way back, the 101 answer) as the client sent it.
pub fn restore_upgrade_headers(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// What keeps a tunnel's accounting right while it runs.
pub struct TunnelGuards {
    pub in_flight: InFlight,
    pub active: RequestActive,
}

pub struct TunnelLimits {
    pub idle: Duration,
    pub drain: Duration,
}

/// Waits for both upgrades, then copies bytes both ways until one side closes, the tunnel
/// sat idle for `limits.idle`, or `stop` fired and `limits.drain` passed.
pub async fn run(
    client: OnUpgrade,
    backend: OnUpgrade,
    limits: TunnelLimits,
    stop: CancellationToken,
    guards: TunnelGuards,
) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(error) => {
            debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let last = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut client = Watched::new(TokioIo::new(client), Arc::clone(&last), started);
    let mut backend = Watched::new(TokioIo::new(backend), Arc::clone(&last), started);
    let idle = async {
        loop {
            let seen = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = started + seen + limits.idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let drained = async {
        stop.cancelled().await;
        tokio::time::sleep(limits.drain).await;
    };
    let backend_address = guards.in_flight.backend().address();
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut backend) => match result {
            Ok((sent, received)) => debug!(backend = %backend_address, sent, received, "tunnel closed"),
            Err(error) => debug!(backend = %backend_address, %error, "tunnel ended with an error"),
        },
        () = idle => debug!(backend = %backend_address, "tunnel idle timeout"),
        () = drained => debug!(backend = %backend_address, "tunnel closed at the drain deadline"),
    }
    drop(guards);
}

/// Records the time of the last byte moved (milliseconds since `started`) on every read or
/// write, so one watchdog can tell an idle tunnel from a busy one without resetting a timer
/// per chunk.
struct Watched<T> {
    inner: T,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl<T> Watched<T> {
    fn new(inner: T, last: Arc<AtomicU64>, started: Instant) -> Watched<T> {
        Watched {
            inner,
            last,
            started,
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
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
            this.touch();
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
            this.touch();
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

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn upgrade_needs_both_headers_on_http11() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(
            requested_upgrade(&request(Version::HTTP_11, &ws)).unwrap(),
            "websocket"
        );
        assert!(requested_upgrade(&request(Version::HTTP_10, &ws)).is_none());
        assert!(requested_upgrade(&request(Version::HTTP_11, &ws[1..])).is_none());
        assert!(requested_upgrade(&request(Version::HTTP_11, &ws[..1])).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn watched_io_records_activity() {
        let (a, _b) = tokio::io::duplex(64);
        let last = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut io = Watched::new(a, Arc::clone(&last), started);
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::io::AsyncWriteExt::write_all(&mut io, b"x")
            .await
            .unwrap();
        assert_eq!(last.load(Ordering::Relaxed), 3000);
    }
}
