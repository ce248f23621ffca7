//! The pooled keep-alive HTTP client a pool uses to reach its backends.
//!
//! One client per pool, because the connect timeout is a pool setting; its connection pool is
//! keyed by backend address, so keep-alive connections are reused per backend. The snapshot
//! builder reuses a pool's client across reloads while its timeouts are unchanged, so a reload
//! does not throw away warm upstream connections.
//!
//! Pools with `send_proxy` use a new connection per request instead (see
//! `send_on_new_connection`).

use crate::config::PoolTimeouts;
use crate::proxy::request_body::RequestBody;
use hyper::body::Incoming;
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

/// Why an upstream exchange failed, from the pooled client or a dedicated connection.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Pooled(error) => error.is_connect(),
            UpstreamError::Connect(_) => true,
            UpstreamError::Exchange(_) => false,
        }
    }
}

/// Sends one request over a new connection that starts with `preamble` (a PROXY protocol
/// header) and is used for this request only.
///
/// Why not the pooled client: a keep-alive connection is later reused for other clients, and
/// the header written when it opened would name the wrong client for them. HAProxy's
/// `send-proxy` on HTTP backends has the same property and documents it; we prefer a correct
/// header over connection reuse, so pools with `send_proxy` pay one connect per request.
pub async fn send_on_new_connection(
    address: std::net::SocketAddr,
    connect_timeout: Duration,
    preamble: &[u8],
    request: http::Request<RequestBody>,
) -> Result<http::Response<Incoming>, UpstreamError> {
    use tokio::io::AsyncWriteExt;
    let connect = tokio::net::TcpStream::connect(address);
    let mut stream = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(UpstreamError::Connect(error)),
        Err(_) => {
            return Err(UpstreamError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    stream
        .write_all(preamble)
        .await
        .map_err(UpstreamError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await?;
    // Upgrades (WebSocket) work on this connection too.
    tokio::spawn(connection.with_upgrades());
    Ok(sender.send_request(request).await?)
}
