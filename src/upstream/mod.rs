//! How a pool reaches its backends: the pooled keep-alive HTTP client (HTTP/1.1 or HTTP/2),
//! over TCP or a Unix socket, optionally in TLS.
//!
//! One client per pool, because connect timeout, protocol and TLS are pool settings. HTTP/1.1
//! uses hyper-util's legacy client (keep-alive pool keyed by backend); HTTP/2 uses one
//! multiplexed connection per backend (`h2`). The snapshot builder reuses a pool's client
//! across reloads while those settings are unchanged, so a reload does not throw away warm
//! upstream connections.
//!
//! Pools with `send_proxy` use a new connection per request instead (see
//! `send_on_new_connection`).

pub mod connector;
pub mod h2;
pub mod tls;

use crate::backend::BackendState;
use crate::config::{BackendAddress, PoolConfig, UpstreamProtocol};
use crate::proxy::request_body::RequestBody;
use connector::{Dialer, PoolConnector, authority_for};
use http::uri::{self, Authority};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tls::{Alpn, TlsSetup};

/// Idle upstream connections are closed after this long; backends commonly close theirs
/// after 60-75 s (nginx 75 s, Node 5 s), so stay under the usual values to avoid racing them.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_MAX_IDLE_PER_BACKEND: usize = 256;

/// A pool's client; cheap to clone (connections are shared).
#[derive(Clone)]
pub struct UpstreamClient {
    dialer: Dialer,
    protocol: UpstreamProtocol,
    inner: Inner,
    /// Why the TLS settings could not be built; every request then fails with it. Validation
    /// builds the same settings, so this is a safety net, not an expected path.
    broken: Option<Arc<str>>,
}

#[derive(Clone)]
enum Inner {
    /// Boxed: the client is large and this enum sits in every pool.
    Http1(Box<Client<PoolConnector, RequestBody>>),
    H2(Arc<h2::H2Pool>),
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("protocol", &self.protocol)
            .field("tls", &self.dialer.is_tls())
            .finish()
    }
}

/// Whether a client built for `old` can serve `new` unchanged.
pub fn client_reusable(old: &PoolConfig, new: &PoolConfig) -> bool {
    old.timeouts.connect == new.timeouts.connect
        && old.protocol == new.protocol
        && old.tls == new.tls
}

impl UpstreamClient {
    pub fn new(pool: &PoolConfig) -> UpstreamClient {
        let (tls, broken) = match &pool.tls {
            None => (None, None),
            Some(settings) => match TlsSetup::new(settings, pool.protocol) {
                Ok(setup) => (Some(Arc::new(setup)), None),
                Err(error) => {
                    tracing::error!(pool = %pool.name, %error, "upstream TLS settings unusable");
                    (None, Some(Arc::from(error.to_string())))
                }
            },
        };
        let dialer = Dialer::new(pool.timeouts.connect, tls);
        let inner = match pool.protocol {
            UpstreamProtocol::H2 => Inner::H2(Arc::new(h2::H2Pool::new(dialer.clone()))),
            UpstreamProtocol::Http1 => Inner::Http1(Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(POOL_MAX_IDLE_PER_BACKEND)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    // Keep the client's request bytes as the client sent them (Host included).
                    .set_host(false)
                    .build(PoolConnector {
                        dialer: dialer.clone(),
                    }),
            )),
        };
        UpstreamClient {
            dialer,
            protocol: pool.protocol,
            inner,
            broken,
        }
    }

    /// Opens connections with the pool's timeout and TLS (TCP forwarding, health checks).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The scheme the backend sees in HTTP/2's `:scheme`.
    fn scheme(&self) -> &'static str {
        if self.dialer.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// Sends `request` (origin-form URI, headers as prepared for the backend, `Host` being the
    /// client's) to `address`: over the pool's shared connections, or, with a `preamble`
    /// (PROXY protocol header), over a new connection used for this request only.
    pub async fn send(
        &self,
        backend: &BackendState,
        preamble: Option<&[u8]>,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let address = backend.address();
        if let Some(reason) = &self.broken {
            return Err(UpstreamError::Connect(std::io::Error::other(
                reason.to_string(),
            )));
        }
        match self.protocol {
            UpstreamProtocol::H2 => h2::to_h2(&mut request, address, self.scheme()),
            UpstreamProtocol::Http1 => {
                // The connector maps this authority back to the backend.
                let authority = backend.uri_authority(|| {
                    authority_for(address)
                        .parse()
                        .unwrap_or_else(|_| Authority::from_static("backend.invalid"))
                });
                let mut parts = uri::Parts::default();
                parts.scheme = Some(uri::Scheme::HTTP);
                parts.authority = Some(authority.clone());
                parts.path_and_query = Some(
                    request
                        .uri()
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| uri::PathAndQuery::from_static("/")),
                );
                let uri = Uri::from_parts(parts)
                    .map_err(|e| UpstreamError::Connect(std::io::Error::other(e)))?;
                *request.uri_mut() = uri;
                *request.version_mut() = Version::HTTP_11;
            }
        }
        if let Some(preamble) = preamble {
            return self
                .send_on_new_connection(address, preamble, request)
                .await;
        }
        match &self.inner {
            Inner::Http1(client) => Ok(client.request(request).await?),
            Inner::H2(pool) => pool.send(address, request).await,
        }
    }

    /// Sends one request over a new connection that starts with `preamble` (a PROXY protocol
    /// header, before any TLS) and is used for this request only.
    ///
    /// Why not the pooled client: a keep-alive connection is later reused for other clients,
    /// and the header written when it opened would name the wrong client for them. HAProxy's
    /// `send-proxy` on HTTP backends has the same property and documents it; we prefer a
    /// correct header over connection reuse, so pools with `send_proxy` pay one connect per
    /// request.
    async fn send_on_new_connection(
        &self,
        address: &BackendAddress,
        preamble: &[u8],
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        use tokio::io::AsyncWriteExt;
        let mut conn = self
            .dialer
            .open(address)
            .await
            .map_err(UpstreamError::Connect)?;
        conn.write_all(preamble)
            .await
            .map_err(UpstreamError::Connect)?;
        let conn = self
            .dialer
            .secure(conn, address, Alpn::Http)
            .await
            .map_err(UpstreamError::Connect)?;
        if self.protocol == UpstreamProtocol::H2 {
            let mut sender = h2::handshake(conn).await?;
            return Ok(sender.send_request(request).await?);
        }
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(conn))
            .await?;
        // Upgrades (WebSocket) work on this connection too.
        tokio::spawn(connection.with_upgrades());
        Ok(sender.send_request(request).await?)
    }
}

/// Why an upstream exchange failed, from the pooled client or a dedicated connection.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
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
