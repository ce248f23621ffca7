//! HTTP/1.1 Upgrade (WebSocket and any other protocol) through the L7 proxy: which requests
//! ask for one, keeping the two hop-by-hop headers that make the backend agree, and the byte
//! tunnel that runs once both sides switched protocols.
//!
//! The tunnel owns everything it needs (both upgraded sockets, the backend's in-flight guard,
//! the client connection's activity guard), so a config reload cannot affect it; it ends when
//! either side closes, after `tunnel_idle` without a byte either way, or at the drain deadline
//! once its listener stops (shutdown, or the listener removed by a reload).

use crate::backend::InFlight;
use crate::error::Chain;
use crate::proxy::activity::RequestActive;
use crate::proxy::splice::{Limits, SpliceEnd, splice};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::time::Duration;
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
            debug!(error = %Chain(&error), "upgrade did not complete");
            return;
        }
    };
    let backend_address = guards.in_flight.backend().address();
    let limits = Limits {
        idle: limits.idle,
        drain: limits.drain,
    };
    match splice(TokioIo::new(client), TokioIo::new(backend), limits, &stop).await {
        SpliceEnd::Closed(Ok((sent, received))) => {
            debug!(backend = %backend_address, sent, received, "tunnel closed");
        }
        SpliceEnd::Closed(Err(error)) => {
            debug!(backend = %backend_address, %error, "tunnel ended with an error");
        }
        SpliceEnd::Idle => debug!(backend = %backend_address, "tunnel idle timeout"),
        SpliceEnd::Drained => {
            debug!(backend = %backend_address, "tunnel closed at the drain deadline")
        }
    }
    drop(guards);
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
}
