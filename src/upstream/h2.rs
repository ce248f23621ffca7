//! HTTP/2 to backends: one multiplexed connection per backend, reused by every request of the
//! pool, plus the HTTP/1.1 -> HTTP/2 request translation.
//!
//! hyper-util's legacy client keys its pool by URI authority, and for HTTP/2 that authority
//! also becomes `:authority`; the backend must see the client's host there, not the backend's
//! address, so HTTP/2 pools keep their own small cache keyed by backend instead.
//!
//! A connection is replaced when hyper reports it closed (GOAWAY, reset, idle close by the
//! backend). Connections to backends that left the config stay until the backend closes them.

use super::UpstreamError;
use super::connector::{Conn, Dialer, authority_for};
use super::tls::Alpn;
use crate::config::BackendAddress;
use crate::error::Chain;
use crate::upstream::request_body::RequestBody;
use http::header;
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pings on an idle connection find a dead backend before a request does.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

type Slot = Arc<tokio::sync::Mutex<Option<SendRequest<RequestBody>>>>;

pub struct H2Pool {
    dialer: Dialer,
    connections: Mutex<HashMap<BackendAddress, Slot>>,
}

impl H2Pool {
    pub fn new(dialer: Dialer) -> H2Pool {
        H2Pool {
            dialer,
            connections: Mutex::default(),
        }
    }

    /// Forgets the connections to backends `keep` refuses (removed by a reload or by
    /// discovery): each closes once no request is using it.
    pub fn retain_backends(&self, keep: &dyn Fn(&BackendAddress) -> bool) {
        let removed: Vec<_> = {
            let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections
                .extract_if(|address, _| !keep(address))
                .collect()
        };
        // Dropped outside the lock.
        drop(removed);
    }

    pub async fn send(
        &self,
        address: &BackendAddress,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.sender(address).await?;
        Ok(sender.send_request(request).await?)
    }

    /// A ready sender to the backend, connecting when there is none or the last one closed.
    /// The slot's lock is held while connecting, so concurrent requests wait for one new
    /// connection rather than each opening their own.
    async fn sender(
        &self,
        address: &BackendAddress,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let slot = {
            let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(connections.entry(address.clone()).or_default())
        };
        let mut current = slot.lock().await;
        if let Some(sender) = current.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        *current = None;
        let conn = self
            .dialer
            .connect(address, Alpn::Http)
            .await
            .map_err(UpstreamError::Connect)?;
        let sender = handshake(conn).await?;
        *current = Some(sender.clone());
        Ok(sender)
    }
}

/// The HTTP/2 handshake on an open connection; the connection task runs until it closes.
pub async fn handshake<B>(conn: Conn) -> Result<SendRequest<B>, UpstreamError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .handshake(TokioIo::new(conn))
        .await
        // Nothing of the request was sent yet: a failed handshake counts as a failed connect.
        .map_err(|error| UpstreamError::Connect(io::Error::other(error)))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %Chain(&error), "upstream h2 connection ended");
        }
    });
    Ok(sender)
}

/// Turns a request prepared for an HTTP/1.1 hop into an HTTP/2 one: `Host` becomes
/// `:authority` (RFC 9113 8.3.1), connection-specific headers go (RFC 9113 8.2.2; `TE` only
/// survives as `trailers`, which gRPC needs).
pub fn to_h2(request: &mut Request<RequestBody>, address: &BackendAddress, scheme: &str) {
    let headers = request.headers_mut();
    let authority = headers
        .remove(header::HOST)
        .and_then(|host| host.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| authority_for(address));
    // Already stripped on the proxy path; done here too so the translation stands alone.
    crate::headers::strip_request_hop_by_hop(headers);
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri = format!("{scheme}://{authority}{path}")
        .parse::<Uri>()
        .or_else(|_| format!("{scheme}://{}{path}", authority_for(address)).parse());
    if let Ok(uri) = uri {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn host_becomes_authority_and_connection_headers_go() {
        let mut request = Request::new(RequestBody::Replay(None));
        *request.uri_mut() = "/svc/Method?x=1".parse().unwrap();
        let headers = request.headers_mut();
        for (name, value) in [
            ("host", "api.example:8443"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip, trailers"),
            ("x-kept", "yes"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let address: BackendAddress = "10.0.0.1:80".parse().unwrap();
        to_h2(&mut request, &address, "http");
        assert_eq!(request.version(), Version::HTTP_2);
        assert_eq!(
            request.uri().to_string(),
            "http://api.example:8443/svc/Method?x=1"
        );
        let mut names: Vec<_> = request.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(request.headers()["te"], "trailers");
    }

    #[test]
    fn without_host_the_backend_address_is_the_authority() {
        let mut request = Request::new(RequestBody::Replay(None));
        let address: BackendAddress = "10.0.0.1:80".parse().unwrap();
        to_h2(&mut request, &address, "https");
        assert_eq!(request.uri().to_string(), "https://10.0.0.1:80/");
    }
}
