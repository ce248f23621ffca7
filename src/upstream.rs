//! The pooled keep-alive HTTP client a pool uses to reach its backends.
//!
//! One client per pool, because the connect timeout is a pool setting; its connection pool is
//! keyed by backend address, so keep-alive connections are reused per backend. The snapshot
//! builder reuses a pool's client across reloads while its timeouts are unchanged, so a reload
//! does not throw away warm upstream connections.

use crate::config::PoolTimeouts;
use crate::proxy::request_body::RequestBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Idle upstream connections are closed after this long; backends commonly close theirs
/// after 60-75 s (nginx 75 s, Node 5 s), so stay under the usual values to avoid racing them.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_MAX_IDLE_PER_BACKEND: usize = 256;

pub fn build_client(timeouts: &PoolTimeouts) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    // Backends are addressed by IP:port, so no DNS lookup happens here.
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_BACKEND)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // Keep the client's request bytes as the client sent them (Host included).
        .set_host(false)
        .build(connector)
}
