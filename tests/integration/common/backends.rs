//! Test backends on 127.0.0.1:0, run as tokio tasks: an HTTP backend (hyper) that records
//! what it saw, can be slow, can fail its health check or be killed; raw TCP echo backends;
//! and an address where nothing listens.

use super::TestBody;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// Switches a backend's `/health` answer between 200 and 500, can hang it (every request,
/// `/health` included, is read and never answered: what SIGSTOP looks like from outside, as
/// the kernel still accepts), and can kill it outright (listener closed, every open
/// connection dropped: what a crashed process looks like).
#[derive(Clone, Default)]
pub struct Controls {
    pub failing_health: Arc<std::sync::atomic::AtomicBool>,
    pub hung: Arc<std::sync::atomic::AtomicBool>,
    pub kill: tokio_util::sync::CancellationToken,
}

/// A backend that waits `delay` before answering every request (a slow server).
pub async fn spawn_backend_with_delay(name: &str, delay: Duration) -> Backend {
    spawn_controlled_backend(name, delay, Controls::default()).await
}

pub async fn spawn_controlled_backend(name: &str, delay: Duration, controls: Controls) -> Backend {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_controlled(socket, name, delay, controls)
}

/// A controlled backend on a given address: a killed backend restarted on its port. Binding
/// is retried until `deadline` while the killed one's listener is still being closed.
pub async fn spawn_controlled_backend_at(
    addr: SocketAddr,
    name: &str,
    controls: Controls,
    deadline: Duration,
) -> Backend {
    let end = tokio::time::Instant::now() + deadline;
    let socket = loop {
        match TcpListener::bind(addr).await {
            Ok(socket) => break socket,
            Err(error) if tokio::time::Instant::now() >= end => {
                panic!("cannot bind {addr} again: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    serve_controlled(socket, name, Duration::ZERO, controls)
}

/// A backend on a listener the test bound itself (in another network namespace).
pub fn serve_backend_on(socket: std::net::TcpListener, name: &str) -> Backend {
    socket.set_nonblocking(true).unwrap();
    let socket = TcpListener::from_std(socket).unwrap();
    serve_controlled(socket, name, Duration::ZERO, Controls::default())
}

fn serve_controlled(
    socket: TcpListener,
    name: &str,
    delay: Duration,
    controls: Controls,
) -> Backend {
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let backend = Backend {
        addr,
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
            let hung = controls.hung.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (seen, name, started) = (seen.clone(), name.clone(), started.clone());
                    let failing = failing.load(Ordering::SeqCst);
                    let hung = hung.load(Ordering::SeqCst);
                    async move {
                        if hung {
                            std::future::pending::<()>().await;
                        }
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

/// A loopback address where nothing listens: bound but never listening, so a connection is
/// refused, and kept bound for the life of the test binary. (Bound and released, the port went
/// to a backend of a test running beside it, which then answered the "dead" address.)
pub async fn dead_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}
