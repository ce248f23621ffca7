//! Client helpers: HTTP/1.1 requests with hyper's client (one connection each), raw-socket
//! exchanges, admin POSTs, a load-generating client, and reading answers.

use super::{TestBody, wait_until_async};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a request over a fresh HTTP/1.1 connection with hyper's client. Like every real
/// HTTP/1.1 client it sends a `Host` (hyper's connection-level client adds none): sluice
/// answers 400 without one (RFC 9112 §3.2).
pub async fn send(addr: SocketAddr, mut request: Request<TestBody>) -> Response<Bytes> {
    if !request.headers().contains_key(http::header::HOST) {
        let host = http::HeaderValue::from_static("test.local");
        request.headers_mut().insert(http::header::HOST, host);
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, bytes)
}

pub async fn get(addr: SocketAddr, path: &str) -> Response<Bytes> {
    let request = Request::get(path)
        .header("host", "test.local")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    send(addr, request).await
}

/// A GET that reports failure instead of panicking (readiness probes of starting servers).
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<String> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "test.local")
        .body(Full::new(Bytes::new()).boxed())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

pub fn body_text(response: &Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

pub fn assert_status(response: &Response<Bytes>, status: StatusCode) {
    assert_eq!(response.status(), status, "body: {}", body_text(response));
}

/// Writes raw bytes and reads until the peer closes or `deadline` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], deadline: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(deadline, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Default)]
pub struct Tally {
    pub ok: AtomicUsize,
    pub failed: AtomicUsize,
}

/// One client that keeps its connection open (`keep_alive`) or opens one per request.
pub async fn load_client(
    addr: SocketAddr,
    keep_alive: bool,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut sender = None;
    while !stop.load(Ordering::Relaxed) {
        if sender.is_none() || !keep_alive {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else {
            unreachable!()
        };
        // Like any real client: a connection the server closed (after `Connection: close`)
        // is replaced before a request is sent on it; that is not a failed request.
        if s.ready().await.is_err() {
            sender = None;
            continue;
        }
        let request = Request::get("/")
            .header("host", "t")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let outcome = s.send_request(request).await;
        let ok = match outcome {
            Ok(response) => {
                let status = response.status();
                if response
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v == "close")
                {
                    sender = None;
                }
                response.into_body().collect().await.is_ok() && status == StatusCode::OK
            }
            Err(_) => false,
        };
        if ok {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            sender = None;
        }
    }
}

/// POST with an empty body (admin actions).
pub async fn admin_post(admin: SocketAddr, path: &str) -> http::Response<Bytes> {
    let request = Request::post(path)
        .header("host", "admin")
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    send(admin, request).await
}

/// Sends requests until one is answered by `name`; returns how long that took.
pub async fn until_routed_to(web: SocketAddr, name: &str) -> Duration {
    let started = tokio::time::Instant::now();
    let want = format!("backend {name}");
    let routed = wait_until_async(Duration::from_secs(10), || {
        let want = want.clone();
        async move { body_text(&get(web, "/").await) == want }
    })
    .await;
    assert!(routed, "no request reached {name}");
    started.elapsed()
}
