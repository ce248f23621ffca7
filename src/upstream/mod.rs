//! How a pool reaches its backends: pooled keep-alive HTTP/1.1 (sluice's own client, `h1`) or
//! HTTP/2 (`h2`, hyper's), over TCP or a Unix socket, optionally in TLS.
//!
//! One client per pool, because connect timeout, protocol and TLS are pool settings. The
//! snapshot builder reuses a pool's client across reloads while those settings are unchanged,
//! so a reload does not throw away warm upstream connections.
//!
//! Two kinds of HTTP/1 request use a new connection of their own, through hyper: `Upgrade`
//! requests (the connection becomes the tunnel), and requests of pools with `send_proxy` (see
//! `send_on_new_connection`).

pub mod body;
pub mod connector;
pub mod h1;
pub mod h2;
pub mod request_body;
pub mod tls;

use crate::backend::BackendState;
use crate::config::{BackendAddress, PoolConfig, UpstreamProtocol};
use crate::upstream::request_body::RequestBody;
pub use body::UpstreamBody;
use connector::Dialer;
pub use h1::RequestHead;
use http::{Request, Response, Uri, Version, header};
use std::sync::Arc;
use tls::{Alpn, TlsSetup};

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
    Http1(Arc<h1::H1Pool>),
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
        let dialer = Dialer::new(&pool.name, pool.timeouts.connect, tls);
        let inner = match pool.protocol {
            UpstreamProtocol::H2 => Inner::H2(Arc::new(h2::H2Pool::new(dialer.clone()))),
            UpstreamProtocol::Http1 => Inner::Http1(Arc::new(h1::H1Pool::new(dialer.clone()))),
        };
        UpstreamClient {
            dialer,
            protocol: pool.protocol,
            inner,
            broken,
        }
    }

    /// Closes (or lets close, once idle) the kept connections to backends `keep` refuses:
    /// a reload or a discovery change that removes a backend calls it.
    pub fn retain_backends(&self, keep: &dyn Fn(&BackendAddress) -> bool) {
        match &self.inner {
            Inner::Http1(pool) => pool.retain_backends(keep),
            Inner::H2(pool) => pool.retain_backends(keep),
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

    /// Sends a request (headers as prepared for the backend, `Host` being the client's) to
    /// `backend`: over the pool's shared connections, or, with a `preamble` (PROXY protocol
    /// header) or an `Upgrade`, over a new connection used for this request only.
    pub async fn send(
        &self,
        backend: &BackendState,
        preamble: Option<&[u8]>,
        request: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let address = backend.address();
        if let Some(reason) = &self.broken {
            return Err(UpstreamError::Connect(std::io::Error::other(
                reason.to_string(),
            )));
        }
        let upgrade = request.headers.contains_key(header::UPGRADE);
        if let (Inner::Http1(pool), None, false) = (&self.inner, preamble, upgrade) {
            let response = pool.send(address, request, body).await?;
            return Ok(response.map(UpstreamBody::H1));
        }
        // Boxed: hyper's client paths are large, and the HTTP/1 path above (the common one)
        // should not carry room for them in every request's future.
        Box::pin(self.send_with_hyper(address, preamble, request, body)).await
    }

    /// `send` through hyper's client: an h2 pool, or a new connection for this request only.
    async fn send_with_hyper(
        &self,
        address: &BackendAddress,
        preamble: Option<&[u8]>,
        request: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut hyper_request = Request::new(body);
        *hyper_request.method_mut() = request.method.clone();
        *hyper_request.uri_mut() = Uri::try_from(request.target)
            .map_err(|_| UpstreamError::H1(h1::head::HeadError::BadTarget.into()))?;
        *hyper_request.headers_mut() = request.headers.clone();
        match self.protocol {
            UpstreamProtocol::H2 => h2::to_h2(&mut hyper_request, address, self.scheme()),
            UpstreamProtocol::Http1 => *hyper_request.version_mut() = Version::HTTP_11,
        }
        let response = match (&self.inner, preamble) {
            (Inner::H2(pool), None) => pool.send(address, hyper_request).await?,
            (_, preamble) => {
                self.send_on_new_connection(address, preamble, hyper_request)
                    .await?
            }
        };
        Ok(response.map(UpstreamBody::Hyper))
    }

    /// Sends one request over a new connection, used for this request only, that starts with
    /// `preamble` when there is one (a PROXY protocol header, before any TLS).
    ///
    /// Why not the pooled connections: a keep-alive connection is later reused for other
    /// clients, and the header written when it opened would name the wrong client for them.
    /// HAProxy's `send-proxy` on HTTP backends has the same property and documents it; we
    /// prefer a correct header over connection reuse, so pools with `send_proxy` pay one
    /// connect per request. An upgraded connection becomes the tunnel, so it is never pooled.
    async fn send_on_new_connection(
        &self,
        address: &BackendAddress,
        preamble: Option<&[u8]>,
        request: Request<RequestBody>,
    ) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        use tokio::io::AsyncWriteExt;
        let mut conn = self
            .dialer
            .open(address)
            .await
            .map_err(UpstreamError::Connect)?;
        if let Some(preamble) = preamble {
            conn.write_all(preamble)
                .await
                .map_err(UpstreamError::Connect)?;
        }
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

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    H1(#[from] h1::H1Error),
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::H1(error) => error.is_connect(),
            UpstreamError::Connect(_) => true,
            UpstreamError::Exchange(_) => false,
        }
    }
}
