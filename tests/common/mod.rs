//! Test fixtures: real backends on 127.0.0.1:0 (hyper and raw TCP), an in-process sluice,
//! raw-socket HTTP helpers, and waiting on conditions with deadlines instead of sleeping.
#![allow(dead_code)]

pub mod etcd;
pub mod zookeeper;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sluice::{Config, Server};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What a test backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// An HTTP backend with a few routes:
/// `/echo` streams the request body back; `/bytes/N` answers N bytes of a fixed pattern;
/// `/chunked` answers three chunks without a length; `/sleep/MS` waits then answers;
/// anything else answers `backend NAME`. It records every request and counts connections.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    pub started: Arc<AtomicUsize>,
}

impl Backend {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

pub async fn spawn_backend(name: &str) -> Backend {
    spawn_backend_with_delay(name, Duration::ZERO).await
}

/// Switches a backend's `/health` answer between 200 and 500, and can kill it outright
/// (listener closed, every open connection dropped: what a crashed process looks like).
#[derive(Clone, Default)]
pub struct Controls {
    pub failing_health: Arc<std::sync::atomic::AtomicBool>,
    pub kill: tokio_util::sync::CancellationToken,
}

/// A backend that waits `delay` before answering every request (a slow server).
pub async fn spawn_backend_with_delay(name: &str, delay: Duration) -> Backend {
    spawn_controlled_backend(name, delay, Controls::default()).await
}

pub async fn spawn_controlled_backend(name: &str, delay: Duration, controls: Controls) -> Backend {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let backend = Backend {
        addr,
        name: name.to_owned(),
        seen: seen.clone(),
        connections: connections.clone(),
        started: started.clone(),
    };
    let name = name.to_owned();
    let kill = controls.kill.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = socket.accept() => accepted,
                () = kill.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else { return };
            connections.fetch_add(1, Ordering::SeqCst);
            let (seen, name, started) = (seen.clone(), name.clone(), started.clone());
            let (kill, failing) = (kill.clone(), controls.failing_health.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (seen, name, started) = (seen.clone(), name.clone(), started.clone());
                    let failing = failing.load(Ordering::SeqCst);
                    async move {
                        if request.uri().path() == "/health" {
                            let status = if failing { 500 } else { 200 };
                            let mut response =
                                Response::new(Full::new(Bytes::from("health")).boxed());
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            return Ok::<_, Infallible>(response);
                        }
                        started.fetch_add(1, Ordering::SeqCst);
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(answer(request, &name, &seen).await)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                // Killing drops the connection mid-flight, as a crash would.
                tokio::select! {
                    _ = connection => {}
                    () = kill.cancelled() => {}
                }
            });
        }
    });
    backend
}

async fn answer(
    request: Request<Incoming>,
    name: &str,
    seen: &Mutex<Vec<Seen>>,
) -> Response<TestBody> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len: bytes.len(),
    });
    if path == "/echo" {
        return Response::new(Full::new(bytes).boxed());
    }
    if let Some(len) = path.strip_prefix("/bytes/") {
        let len: usize = len.parse().unwrap_or(0);
        return Response::new(Full::new(Bytes::from(pattern(len))).boxed());
    }
    if path == "/chunked" {
        let chunks = ["first,", "second,", "third"]
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        return Response::new(StreamBody::new(futures_stream(chunks)).boxed());
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if path == "/hop" {
        let mut response = Response::new(Full::new(Bytes::from("hop")).boxed());
        response
            .headers_mut()
            .insert("keep-alive", "timeout=99".parse().unwrap());
        response
            .headers_mut()
            .insert("x-backend", name.parse().unwrap());
        return response;
    }
    Response::new(Full::new(Bytes::from(format!("backend {name}"))).boxed())
}

/// A tiny stream over an iterator, so the backend can send a body of unknown length.
fn futures_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// A raw TCP backend that reads until the client half-closes, then writes everything back
/// and closes: it only works if FIN is passed through in both directions.
pub async fn spawn_tcp_echo_after_eof() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                if stream.read_to_end(&mut received).await.is_ok() {
                    let _ = stream.write_all(b"echo:").await;
                    let _ = stream.write_all(&received).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A raw TCP backend that echoes every chunk as soon as it arrives (long-lived sessions).
pub async fn spawn_tcp_echo() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// A loopback address where nothing listens (bound once, then released).
pub async fn dead_addr() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    socket.local_addr().unwrap()
}

/// Starts sluice in-process from YAML text (listeners should bind 127.0.0.1:0).
pub async fn start_sluice(yaml: &str) -> Server {
    let config = Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    Server::start(config).await.unwrap()
}

/// A one-listener HTTP config over the given backends.
pub fn http_config(backends: &[SocketAddr], extra_pool: &str) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n\
         pools:\n  app:\n    backends: [{}]\n{extra_pool}",
        list.join(", ")
    )
}

/// Parses YAML that a test wrote, panicking with the config error if it is invalid.
pub fn config(yaml: &str) -> Config {
    Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// Sends a request over a fresh HTTP/1.1 connection with hyper's client.
pub async fn send(addr: SocketAddr, request: Request<TestBody>) -> Response<Bytes> {
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

/// Polls `condition` every few milliseconds until it holds or `deadline` passes.
pub async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    condition()
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

/// An HTTP listener `web` over `backends`, plus `extra` listener lines (indented YAML).
pub fn two_listeners(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n{extra}pools:\n  app:\n    backends: [{}]\n",
        list.join(", ")
    )
}

/// Writes a file the way editors and config managers do: a temporary file, then rename.
pub fn write_file(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.sync_all().unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// POST with an empty body (admin actions).
pub async fn admin_post(admin: SocketAddr, path: &str) -> http::Response<Bytes> {
    let request = Request::post(path)
        .header("host", "admin")
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    send(admin, request).await
}

/// Whether an external program a test needs is installed. Under CI (`CI` set, as `.ci/run`
/// runs) a missing one fails the test, since CI installs it; on a developer machine the test
/// is skipped with a message saying what to install.
pub fn require_program(candidates: &[&str], package: &str) -> Option<String> {
    for candidate in candidates {
        let found = std::process::Command::new("which")
            .arg(candidate)
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return Some((*candidate).to_owned());
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("{candidates:?} not found: .ci/run installs the Debian package {package}");
    }
    eprintln!(
        "SKIPPED: {candidates:?} not installed (apt-get install {package}); CI runs this test"
    );
    None
}

/// The addresses of a pool's backends in the running snapshot.
pub fn backend_addresses(sluice: &Server, pool: &str) -> std::collections::BTreeSet<SocketAddr> {
    sluice.snapshot().load().pools[pool]
        .backends
        .iter()
        .filter_map(|b| b.address.inet())
        .collect()
}

/// Waits until a pool's backends are exactly `want`, failing with what it has at `deadline`.
pub async fn wait_for_backends(
    sluice: &Server,
    pool: &str,
    want: &[SocketAddr],
    deadline: Duration,
) {
    let want: std::collections::BTreeSet<SocketAddr> = want.iter().copied().collect();
    let reached = wait_until(deadline, || backend_addresses(sluice, pool) == want).await;
    assert!(
        reached,
        "backends {:?}, want {want:?}",
        backend_addresses(sluice, pool)
    );
}

/// `wait_until` for a condition that needs I/O.
pub async fn wait_until_async<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
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
