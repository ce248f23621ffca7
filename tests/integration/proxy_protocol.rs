//! PROXY protocol end to end: headers accepted from trusted peers (v1, v2, malformed,
//! untrusted), and headers written to backends (`send_proxy`) byte for byte, TCP and HTTP.

use crate::common::*;
use sluice::proxy_protocol::{V2_SIGNATURE, encode_v1, encode_v2};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

fn accepting(backend: SocketAddr, trusted: &str) -> String {
    format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n    proxy_protocol: {{ mode: accept, trusted: [{trusted}] }}\n\
         pools:\n  app:\n    algorithm: hash\n    backends: [{backend}]\n"
    )
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn v2_and_v1_headers_give_the_real_client_to_x_forwarded_for() {
    let backend = spawn_backend("b").await;
    let sluice = start_sluice(&accepting(backend.addr, "127.0.0.1/32")).await;
    let addr = sluice.local_addr("web").unwrap();

    let mut v2 = encode_v2(
        "203.0.113.9:4444".parse().unwrap(),
        "10.0.0.1:80".parse().unwrap(),
    );
    v2.extend_from_slice(GET);
    let answer = raw_exchange(addr, &v2, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut v1 = encode_v1(
        "[2001:db8::7]:5555".parse().unwrap(),
        "[2001:db8::1]:80".parse().unwrap(),
    );
    v1.extend_from_slice(GET);
    let answer = raw_exchange(addr, &v1, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let seen = backend.seen();
    assert_eq!(seen[0].headers["x-forwarded-for"], "203.0.113.9");
    assert_eq!(seen[1].headers["x-forwarded-for"], "2001:db8::7");
}

#[tokio::test]
async fn a_bad_or_missing_header_from_a_trusted_peer_closes_the_connection() {
    let backend = spawn_backend("b").await;
    let sluice = start_sluice(&accepting(backend.addr, "127.0.0.1/32")).await;
    let addr = sluice.local_addr("web").unwrap();
    let mut broken = V2_SIGNATURE.to_vec();
    broken.extend_from_slice(&[0x21, 0x71, 0, 0]);
    broken.extend_from_slice(GET);
    for input in [
        GET.to_vec(),
        b"PROXY TCP4 1.2.3.4 nope 1 2\r\n".to_vec(),
        broken,
    ] {
        let answer = raw_exchange(addr, &input, Duration::from_secs(5)).await;
        assert_eq!(answer, "", "closed without an answer");
    }
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn untrusted_peers_are_served_as_plain_connections() {
    let backend = spawn_backend("b").await;
    let sluice = start_sluice(&accepting(backend.addr, "10.0.0.0/8")).await;
    let addr = sluice.local_addr("web").unwrap();
    let answer = raw_exchange(addr, GET, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(backend.seen()[0].headers["x-forwarded-for"], "127.0.0.1");
    // A header from an untrusted peer is not believed: it is not HTTP either.
    let mut spoofed = encode_v1("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap());
    spoofed.extend_from_slice(GET);
    let answer = raw_exchange(addr, &spoofed, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(backend.requests(), 1);
}

/// A raw TCP backend that reports the first `header_len` bytes of each connection, then
/// echoes the payload.
async fn spawn_header_recorder(
    header_len: usize,
) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut header = vec![0u8; header_len];
                if stream.read_exact(&mut header).await.is_err() {
                    return;
                }
                let _ = tx.send(header);
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn tcp_pool_with_send_proxy_v2_writes_the_exact_header_then_the_payload() {
    let (backend, mut headers) = spawn_header_recorder(28).await;
    let yaml = format!(
        "listeners:\n  db: {{bind: 127.0.0.1:0, protocol: tcp, pool: db}}\n\
         pools:\n  db: {{backends: [{backend}], send_proxy: v2}}\n"
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("db").unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"payload").await.unwrap();
    let mut echoed = [0u8; 7];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"payload", "nothing but the header was added");

    let header = headers.recv().await.unwrap();
    let mut expected = V2_SIGNATURE.to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    expected.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    expected.extend_from_slice(&client_addr.port().to_be_bytes());
    expected.extend_from_slice(&addr.port().to_be_bytes());
    assert_eq!(header, expected);
}

#[tokio::test]
async fn tcp_listener_passes_an_accepted_client_on_to_the_backend() {
    let (backend, mut headers) = spawn_header_recorder(41).await;
    let yaml = format!(
        "listeners:\n  db: {{bind: 127.0.0.1:0, protocol: tcp, pool: db, proxy_protocol: accept}}\n\
         pools:\n  db: {{backends: [{backend}], send_proxy: v1}}\n"
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("db").unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut input = encode_v2(
        "192.0.2.7:56324".parse().unwrap(),
        "10.0.0.1:443".parse().unwrap(),
    );
    input.extend_from_slice(b"ping");
    client.write_all(&input).await.unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    assert_eq!(
        headers.recv().await.unwrap(),
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"
    );
}

/// An HTTP backend behind `send_proxy: v1`: reads the PROXY line and one request head, and
/// answers with the PROXY line it got, then closes.
async fn spawn_http_header_echo() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut byte = [0u8; 1];
                while !received.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => received.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&received).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
                    line.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_pool_with_send_proxy_sends_each_request_its_own_client() {
    let backend = spawn_http_header_echo().await;
    let yaml = format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n    proxy_protocol: accept\n\
         pools:\n  app: {{backends: [{backend}], send_proxy: v1}}\n"
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    for client in ["198.51.100.1:1000", "198.51.100.2:2000"] {
        let mut input = encode_v2(client.parse().unwrap(), "10.0.0.1:80".parse().unwrap());
        input.extend_from_slice(GET);
        let answer = raw_exchange(addr, &input, Duration::from_secs(5)).await;
        let ip = client.split(':').next().unwrap();
        let port = client.split(':').nth(1).unwrap();
        assert!(
            answer.ends_with(&format!("PROXY TCP4 {ip} 10.0.0.1 {port} 80")),
            "{answer}"
        );
    }
}
