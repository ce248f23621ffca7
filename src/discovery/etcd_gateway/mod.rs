//! A small client of etcd's v3 JSON gateway (`POST /v3/kv/range`, `/v3/watch`, ...): the calls
//! the etcd source (`etcd.rs`) and `sluice register` (`register.rs`) make, and a delete for
//! the tests. Owns the connections and the wire format (`wire.rs`); knows nothing of what the
//! keys mean. Imports nothing of sluice.
//!
//! Why the gateway and not gRPC: the etcd-client crate generated its gRPC code at build time
//! with prost-build, so building sluice needed `protoc`. Every etcd from v3.4 serves the same
//! API as JSON over HTTP/1.1 on its client port under `/v3/`; speaking it takes only crates
//! the proxy already builds (hyper, serde_json, base64), and tonic, prost, tower and axum left
//! the build. Plain `http://` endpoints only, as before (no TLS, no auth).
//!
//! The JSON is the proto3 mapping: keys and values are bytes, so base64; 64-bit integers are
//! strings (numbers are accepted too); fields at their zero value are left out, so a missing
//! `TTL` is 0 and a missing event `type` is PUT. A streaming call (watch, lease keep-alive)
//! answers one `{"result": ...}` or `{"error": ...}` object per line. All of that, which needs
//! no socket, is in `wire.rs`.
//!
//! One connection per call: calls are rare (a list per (re)connect, a lease refresh every
//! TTL/3), and a watch holds its connection for as long as it runs. Endpoints are tried in
//! order, starting from the last one that answered, until one accepts the connection. Every
//! connection has TCP keep-alive (5 s idle, then 3 probes 1 s apart), so an etcd host that
//! vanished without closing a watch's connection is noticed in about 8 s, as with the gRPC
//! client's HTTP/2 pings (every 5 s, 3 s to answer by default).

mod wire;

pub use wire::{
    Event, EventType, Header, KeyValue, Lease, RangeResponse, WatchResponse, prefix_end,
};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use wire::{LeaseGrantResponse, LeaseKeepAliveResponse, Lines, parse_frame, server_error};

/// Idle time before the first TCP keep-alive probe of a connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Unanswered probes after which the kernel drops the connection.
const KEEPALIVE_PROBES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("invalid endpoint {0:?}: expected http://HOST:PORT")]
    InvalidEndpoint(String),
    /// Every endpoint refused or did not answer; one `endpoint: cause` each, `; `-separated.
    #[error("cannot connect to {0}")]
    Connect(String),
    /// The connection failed during the call.
    #[error("{endpoint}: {cause}")]
    Transport { endpoint: String, cause: String },
    #[error("no answer in {0:?}")]
    Timeout(Duration),
    /// etcd answered with an error; its own message ("etcdserver: requested lease not found").
    #[error("{0}")]
    Server(String),
    #[error("unexpected answer: {0}")]
    Malformed(String),
}

/// One etcd member: where to connect and what to send as `Host`.
#[derive(Debug)]
struct Endpoint {
    url: String,
    /// `HOST:PORT` for `TcpStream::connect` (port 80 when the URL has none).
    address: String,
    host: HeaderValue,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, EtcdError> {
        let invalid = || EtcdError::InvalidEndpoint(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let authority = uri.authority().ok_or_else(invalid)?;
        let bare_path = matches!(uri.path(), "" | "/") && uri.query().is_none();
        if uri.scheme_str() != Some("http") || !bare_path || authority.as_str().contains('@') {
            return Err(invalid());
        }
        Ok(Endpoint {
            url: url.to_owned(),
            address: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
            host: HeaderValue::from_str(authority.as_str()).map_err(|_| invalid())?,
        })
    }
}

/// A client of one etcd cluster. Cheap to build: it connects per call.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<Endpoint>,
    /// Bounds each connection attempt and each call's answer (a watch: its first answer).
    timeout: Duration,
    /// Index of the endpoint that answered last: tried first.
    preferred: AtomicUsize,
}

/// Aborts the task driving a connection when dropped, so the socket closes with its call
/// (a watch is cancelled on etcd's side when its connection closes).
struct Connection(AbortHandle);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// `endpoints`: `http://HOST:PORT` URLs of the cluster's members. `timeout` bounds each
    /// connection attempt and each call.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Client, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::InvalidEndpoint(String::new()));
        }
        Ok(Client {
            endpoints: endpoints
                .iter()
                .map(|url| Endpoint::parse(url))
                .collect::<Result<_, _>>()?,
            timeout,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The value of one key: `kvs` is empty when the key does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<RangeResponse, EtcdError> {
        let body = json!({ "key": BASE64.encode(key) });
        self.call("/v3/kv/range", body).await
    }

    /// Every key under `prefix`, with the revision they were read at.
    pub async fn get_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<RangeResponse, EtcdError> {
        let prefix = prefix.as_ref();
        let body = json!({
            "key": BASE64.encode(prefix),
            "range_end": BASE64.encode(prefix_end(prefix)),
        });
        self.call("/v3/kv/range", body).await
    }

    /// Puts `key`, attached to `lease` if given (the key goes when the lease does).
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: Option<i64>,
    ) -> Result<(), EtcdError> {
        let mut body = json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) });
        if let Some(lease) = lease {
            body["lease"] = lease.to_string().into();
        }
        self.call::<Value>("/v3/kv/put", body).await.map(drop)
    }

    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), EtcdError> {
        let body = json!({ "key": BASE64.encode(key) });
        self.call::<Value>("/v3/kv/deleterange", body)
            .await
            .map(drop)
    }

    /// A new lease of `ttl` seconds.
    pub async fn lease_grant(&self, ttl: i64) -> Result<Lease, EtcdError> {
        let body = json!({ "TTL": ttl.to_string() });
        let granted: LeaseGrantResponse = self.call("/v3/lease/grant", body).await?;
        if !granted.error.is_empty() {
            return Err(EtcdError::Server(granted.error));
        }
        Ok(Lease {
            id: granted.id,
            ttl: granted.ttl,
        })
    }

    /// Refreshes `lease` once; returns its TTL in seconds, 0 if the lease is gone.
    pub async fn lease_keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        // A keep-alive stream with one request: etcd answers it, then sees the request body
        // end and closes the stream.
        let body = json!({ "ID": lease.to_string() });
        let first = async {
            let mut answers = self
                .stream::<LeaseKeepAliveResponse>("/v3/lease/keepalive", body)
                .await?;
            answers.next().await
        };
        match tokio::time::timeout(self.timeout, first).await {
            Ok(Ok(Some(answer))) => Ok(answer.ttl),
            Ok(Ok(None)) => Err(EtcdError::Malformed(
                "lease keep-alive: the stream closed without an answer".into(),
            )),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(EtcdError::Timeout(self.timeout)),
        }
    }

    /// Revokes `lease`: etcd deletes every key attached to it.
    pub async fn lease_revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let body = json!({ "ID": lease.to_string() });
        self.call::<Value>("/v3/lease/revoke", body).await.map(drop)
    }

    /// Watches every key under `prefix` from `start_revision` on. Returns once etcd answered
    /// (its first answer, `created`, is the stream's first item); then waits without a
    /// deadline for as long as the connection lives.
    pub async fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        start_revision: i64,
    ) -> Result<Frames<WatchResponse>, EtcdError> {
        let prefix = prefix.as_ref();
        let body = json!({ "create_request": {
            "key": BASE64.encode(prefix),
            "range_end": BASE64.encode(prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        self.stream("/v3/watch", body).await
    }

    /// A unary call: one JSON object each way.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: Value,
    ) -> Result<T, EtcdError> {
        let (mut sender, connection, endpoint) = self.connect().await?;
        let exchange = async {
            let response = sender
                .send_request(self.request(endpoint, path, &body))
                .await
                .map_err(|e| transport(endpoint, &e))?;
            let status = response.status();
            let bytes = read_all(endpoint, response.into_body()).await?;
            Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| EtcdError::Timeout(self.timeout))??;
        drop(connection);
        if !status.is_success() {
            return Err(server_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Malformed(format!("{path}: {e}")))
    }

    /// A streaming call: the answer's head within the timeout, then its frames as they come.
    async fn stream<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: Value,
    ) -> Result<Frames<T>, EtcdError> {
        let (mut sender, connection, endpoint) = self.connect().await?;
        let exchange = async {
            let response = sender
                .send_request(self.request(endpoint, path, &body))
                .await
                .map_err(|e| transport(endpoint, &e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(Ok(response.into_body()));
            }
            // Refused before it started (a malformed request): a plain error body.
            let bytes = read_all(endpoint, response.into_body()).await?;
            Ok(Err(server_error(status, &bytes)))
        };
        let body = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| EtcdError::Timeout(self.timeout))???;
        Ok(Frames {
            body,
            lines: Lines::default(),
            endpoint: endpoint.url.clone(),
            _connection: connection,
            _item: PhantomData,
        })
    }

    fn request(
        &self,
        endpoint: &Endpoint,
        path: &'static str,
        body: &Value,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from(body.to_string())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_static(path);
        let headers = request.headers_mut();
        headers.insert(HOST, endpoint.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }

    /// An HTTP/1.1 connection to the first endpoint that accepts one, starting from the one
    /// that answered last.
    async fn connect(
        &self,
    ) -> Result<(SendRequest<Full<Bytes>>, Connection, &Endpoint), EtcdError> {
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for offset in 0..count {
            let index = (first + offset) % count;
            let endpoint = &self.endpoints[index];
            match tokio::time::timeout(self.timeout, open(endpoint)).await {
                Ok(Ok((sender, connection))) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((sender, connection, endpoint));
                }
                Ok(Err(cause)) => failures.push(format!("{}: {cause}", endpoint.url)),
                Err(_) => {
                    failures.push(format!("{}: no answer in {:?}", endpoint.url, self.timeout))
                }
            }
        }
        Err(EtcdError::Connect(failures.join("; ")))
    }
}

async fn open(endpoint: &Endpoint) -> Result<(SendRequest<Full<Bytes>>, Connection), String> {
    let stream = TcpStream::connect(endpoint.address.as_str())
        .await
        .map_err(|e| e.to_string())?;
    // Best effort: without them the calls still work, a dead peer is only noticed later.
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| crate::error::chain(&e))?;
    let task = tokio::spawn(connection);
    Ok((sender, Connection(task.abort_handle())))
}

/// The answers of a streaming call, one JSON object a line.
pub struct Frames<T> {
    body: Incoming,
    lines: Lines,
    endpoint: String,
    _connection: Connection,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Frames<T> {
    /// The next answer if it is here without waiting (a whole line buffered, or data already
    /// readable); `None` when it would wait. A watcher folds such a run of answers (a burst of
    /// writes) into one update. Cancel-safe like `next`: what was read stays buffered.
    pub fn next_ready(&mut self) -> Option<Result<Option<T>, EtcdError>> {
        use std::future::Future;
        let mut next = std::pin::pin!(self.next());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match next.as_mut().poll(&mut context) {
            std::task::Poll::Ready(answer) => Some(answer),
            std::task::Poll::Pending => None,
        }
    }

    /// The next answer; `None` when etcd ended the stream.
    pub async fn next(&mut self) -> Result<Option<T>, EtcdError> {
        loop {
            if let Some(line) = self.lines.next_line() {
                return parse_frame(&line).map(Some);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    // Trailers (the gateway's Grpc-Trailer-*) carry nothing we read.
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
                Some(Err(error)) => return Err(transport_at(&self.endpoint, &error)),
                None => return self.lines.finish().map(|l| parse_frame(&l)).transpose(),
            }
        }
    }
}

fn transport(endpoint: &Endpoint, error: &hyper::Error) -> EtcdError {
    transport_at(&endpoint.url, error)
}

/// The body of an answer, whole.
async fn read_all(endpoint: &Endpoint, body: Incoming) -> Result<Bytes, EtcdError> {
    Ok(body
        .collect()
        .await
        .map_err(|e| transport(endpoint, &e))?
        .to_bytes())
}

fn transport_at(endpoint: &str, error: &hyper::Error) -> EtcdError {
    EtcdError::Transport {
        endpoint: endpoint.to_owned(),
        cause: crate::error::chain(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_urls() {
        let endpoint = Endpoint::parse("http://127.0.0.1:2379").unwrap();
        assert_eq!(endpoint.address, "127.0.0.1:2379");
        assert_eq!(endpoint.host, "127.0.0.1:2379");
        assert_eq!(
            Endpoint::parse("http://[::1]:2379").unwrap().address,
            "[::1]:2379"
        );
        assert_eq!(Endpoint::parse("http://etcd/").unwrap().address, "etcd:80");
        for bad in [
            "https://e:2379",
            "e:2379",
            "http://e:2379/v3",
            "http://",
            "http://u@e:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(Client::new(&[], Duration::from_secs(1)).is_err());
    }
}
