//! Upgrade tunnels end to end: a hyper backend that answers 101 and echoes bytes, a raw client
//! speaking the upgrade handshake through sluice; the tunnel survives reloads, holds the
//! backend's in-flight count, and closes after `tunnel_idle`.

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that switches protocols for `Upgrade` requests (except on `/refuse`, which gets
/// a plain 426) and then echoes every byte, prefixed by its name once.
async fn spawn_upgrade_backend(
    name: &'static str,
) -> (SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut request: Request<Incoming>| {
                    record.lock().unwrap().push(request.headers().clone());
                    async move {
                        if request.uri().path() == "/refuse"
                            || !request.headers().contains_key(header::UPGRADE)
                        {
                            let mut response =
                                Response::new(Full::new(Bytes::from("no upgrade")).boxed());
                            *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
                            return Ok::<_, Infallible>(response);
                        }
                        let upgrade = hyper::upgrade::on(&mut request);
                        tokio::spawn(async move {
                            let Ok(upgraded) = upgrade.await else { return };
                            let mut io = TokioIo::new(upgraded);
                            let _ = io.write_all(name.as_bytes()).await;
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        });
                        let response = Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header(header::CONNECTION, "upgrade")
                            .header(header::UPGRADE, "websocket")
                            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                            .body(Empty::new().boxed())
                            .unwrap();
                        Ok(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, seen)
}

const HANDSHAKE: &str = "GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends the handshake and returns the response head and the connection.
async fn open(addr: SocketAddr, handshake: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the end of the response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap(), stream)
}

async fn read_exactly(stream: &mut TcpStream, len: usize) -> String {
    let mut buf = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(buf).unwrap()
}

fn ws_config(backend: SocketAddr, extra: &str) -> String {
    format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n{extra}pools:\n  app:\n    backends: [{backend}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_round_trip_survives_reloads() {
    let (ws, seen) = spawn_upgrade_backend("ws1").await;
    let (other, _) = spawn_upgrade_backend("ws2").await;
    let sluice = start_sluice(&ws_config(ws, "")).await;
    let addr = sluice.local_addr("web").unwrap();

    let (head, mut stream) = open(addr, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // The backend saw the two hop-by-hop headers that make it an upgrade.
    let headers = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["upgrade"], "websocket");
    assert!(
        headers["connection"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("upgrade")
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    assert_eq!(read_exactly(&mut stream, 3).await, "ws1");
    stream.write_all(b"hello").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 5).await, "hello");
    let state = sluice.snapshot().load().pools["app"].backends[0]
        .state
        .clone();
    assert_eq!(state.in_flight(), 1, "the tunnel holds its backend");

    // Reload to a config without that backend (and a changed listener): the tunnel goes on.
    for round in 0..3 {
        let next = if round % 2 == 0 {
            ws_config(other, "    timeouts: { tunnel_idle: 30m }\n")
        } else {
            ws_config(ws, "")
        };
        sluice.reload(config(&next)).await.unwrap();
        let message = format!("after reload {round}");
        stream.write_all(message.as_bytes()).await.unwrap();
        assert_eq!(read_exactly(&mut stream, message.len()).await, message);
    }
    drop(stream);
    assert!(
        wait_until(Duration::from_secs(5), || state.in_flight() == 0).await,
        "released at close"
    );

    // A new connection uses the new config.
    sluice.reload(config(&ws_config(other, ""))).await.unwrap();
    let (head, mut stream) = open(addr, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(read_exactly(&mut stream, 3).await, "ws2");
}

#[tokio::test]
async fn a_refused_upgrade_is_an_ordinary_response() {
    let (ws, _) = spawn_upgrade_backend("ws").await;
    let sluice = start_sluice(&ws_config(ws, "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let refused = HANDSHAKE.replace("GET /chat", "GET /refuse");
    let (head, mut stream) = open(addr, &refused).await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert_eq!(read_exactly(&mut stream, 10).await, "no upgrade");
    // The connection is still a normal keep-alive HTTP connection.
    let response = get(addr, "/plain").await;
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test(start_paused = true)]
async fn an_idle_tunnel_is_closed_after_tunnel_idle() {
    let (ws, _) = spawn_upgrade_backend("ws").await;
    let sluice = start_sluice(&ws_config(
        ws,
        "    timeouts: { tunnel_idle: 300ms, client_idle: 100ms }\n",
    ))
    .await;
    let addr = sluice.local_addr("web").unwrap();
    let (head, mut stream) = open(addr, HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(read_exactly(&mut stream, 2).await, "ws");
    // Traffic keeps it open well past both deadlines (client_idle must not apply)...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(b"x").await.unwrap();
        assert_eq!(read_exactly(&mut stream, 1).await, "x");
    }
    // ...silence closes it.
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed");
    let waited = started.elapsed();
    // Paused clock: `tunnel_idle`, plus at most one step of the watchdog that checks it (a
    // quarter of the timeout).
    assert!(
        waited >= Duration::from_millis(300) && waited <= Duration::from_millis(375),
        "{waited:?}"
    );
}
