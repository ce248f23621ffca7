//! A small HTTP/1.1 client of one Consul agent: the GET of a (blocking) health query and the
//! PUTs `sluice register` makes, over plain TCP or TLS, with `X-Consul-Token`. Owns the
//! connections; knows nothing of what the answers mean (that is `wire.rs`).
//!
//! One connection per call, as for etcd (`etcd_gateway`): a blocking query holds its
//! connection for up to `wait` anyway, and the other calls are rare. TCP keep-alive (5 s idle,
//! 3 probes 1 s apart) notices an agent that vanished mid-query. TLS reuses the pool-side
//! rustls setup (`upstream::tls`): `tls:` is the same block as a pool's, verified against the
//! bundled public roots when absent.

use crate::config::discovery::ConsulSource;
use crate::config::{UpstreamProtocol, UpstreamTls};
use crate::upstream::tls::{Alpn, TlsSetup};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_PROBES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("cannot connect to {address}: {cause}")]
    Connect { address: String, cause: String },
    #[error("{address}: {cause}")]
    Transport { address: String, cause: String },
    #[error("no answer in {0:?}")]
    Timeout(Duration),
    /// Consul answered with an error status; its body is its message.
    #[error("{status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("invalid TLS settings: {0}")]
    Tls(String),
}

/// What one call got: the status is a success, the body whole.
#[derive(Debug)]
pub struct Answer {
    /// `X-Consul-Index`, when present and a number.
    pub index: Option<u64>,
    pub body: Bytes,
}

/// A client of one agent. Cheap to build: it connects per call.
pub struct Agent {
    address: String,
    authority: String,
    host: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    token: Option<String>,
}

impl Agent {
    /// The agent of a discovery source, with the token read from its file by the caller.
    pub fn for_source(source: &ConsulSource, token: Option<String>) -> Result<Agent, ConsulError> {
        Agent::new(
            &source.address,
            &source.authority,
            source
                .https
                .then(|| source.tls.clone().unwrap_or_else(verified)),
            source.timeout,
            token,
        )
    }

    /// `address` as written (`http://h:8500`) for messages; `authority` is `HOST:PORT`.
    pub fn new(
        address: &str,
        authority: &str,
        tls: Option<UpstreamTls>,
        timeout: Duration,
        token: Option<String>,
    ) -> Result<Agent, ConsulError> {
        let host = HeaderValue::from_str(authority).map_err(|e| ConsulError::Connect {
            address: address.to_owned(),
            cause: e.to_string(),
        })?;
        let tls = match tls {
            None => None,
            Some(tls) => {
                let setup = TlsSetup::new(&tls, UpstreamProtocol::Http1)
                    .map_err(|e| ConsulError::Tls(e.to_string()))?;
                let name = match &tls.sni {
                    Some(name) => name.clone(),
                    None => {
                        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        ServerName::try_from(host.to_owned())
                            .map_err(|e| ConsulError::Tls(format!("{host:?}: {e}")))?
                    }
                };
                Some((setup.connector(Alpn::Http), name))
            }
        };
        Ok(Agent {
            address: address.to_owned(),
            authority: authority.to_owned(),
            host,
            tls,
            timeout,
            token,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A GET whose answer may take up to `wait` beyond the timeout (a blocking query).
    pub async fn get(&self, path_and_query: &str, wait: Duration) -> Result<Answer, ConsulError> {
        self.call(Method::GET, path_and_query, None, wait).await
    }

    /// A PUT with an optional JSON body.
    pub async fn put(&self, path: &str, body: Option<String>) -> Result<Answer, ConsulError> {
        self.call(Method::PUT, path, body, Duration::ZERO).await
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
        wait: Duration,
    ) -> Result<Answer, ConsulError> {
        let uri: Uri = path_and_query.parse().map_err(|_| ConsulError::Transport {
            address: self.address.clone(),
            cause: format!("invalid path {path_and_query:?}"),
        })?;
        let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = &self.token
            && let Ok(value) = HeaderValue::from_str(token)
        {
            headers.insert("x-consul-token", value);
        }
        let transport = |e: hyper::Error| ConsulError::Transport {
            address: self.address.clone(),
            cause: crate::error::chain(&e),
        };
        let mut sender = tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| ConsulError::Connect {
                address: self.address.clone(),
                cause: format!("no answer in {:?}", self.timeout),
            })??;
        // Consul adds up to wait/16 of jitter to a blocking query; the timeout covers the rest.
        let limit = self.timeout + wait + wait / 16;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(transport)?;
            let status = response.status();
            let index = (response.headers().get("x-consul-index"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let body = response.into_body().collect().await.map_err(transport)?;
            Ok::<_, ConsulError>((status, index, body.to_bytes()))
        };
        let (status, index, body) = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| ConsulError::Timeout(limit))??;
        if !status.is_success() {
            let message = String::from_utf8_lossy(&body).trim().to_owned();
            return Err(ConsulError::Status { status, message });
        }
        Ok(Answer { index, body })
    }

    /// A connection, its driver spawned (it ends with the sender).
    async fn open(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ConsulError> {
        let connect = |cause: String| ConsulError::Connect {
            address: self.address.clone(),
            cause,
        };
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        match &self.tls {
            None => {
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| connect(crate::error::chain(&e)))?;
                tokio::spawn(connection);
                Ok(sender)
            }
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| connect(format!("TLS: {e}")))?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| connect(crate::error::chain(&e)))?;
                tokio::spawn(connection);
                Ok(sender)
            }
        }
    }
}

/// `https://` without a `tls:` block: verified against the bundled public roots.
fn verified() -> UpstreamTls {
    UpstreamTls {
        verify: true,
        ca: None,
        sni: None,
        client_auth: None,
    }
}
