//! TLS passthrough on `protocol: tcp` listeners: the ClientHello's server name picks the
//! pool, TLS is never terminated (the backends are rustls servers that present their own
//! certificates), unknown names go to the default pool or are closed.

use crate::common::tls::*;
use crate::common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn passthrough_config(api: SocketAddr, web: SocketAddr, fallback: Option<SocketAddr>) -> String {
    let (default, pool) = match fallback {
        Some(addr) => (
            "    pool: fallback\n".to_owned(),
            format!("  fallback:\n    backends: [{addr}]\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "listeners:\n  pass:\n    bind: 127.0.0.1:0\n    protocol: tcp\n    timeouts: {{client_header: 2s}}\n    routes:\n      - match: {{sni: api.example.com}}\n        pool: api\n      - match: {{sni: \"*.example.com\"}}\n        pool: web\n{default}pools:\n  api:\n    backends: [{api}]\n  web:\n    backends: [{web}]\n{pool}"
    )
}

/// Handshakes through sluice with `name` and returns what the backend wrote.
async fn through(addr: SocketAddr, name: &str) -> String {
    let mut tls = connect_tls(addr, name, &[]).await.unwrap();
    read_all(&mut tls).await
}

#[tokio::test]
async fn server_names_route_to_their_pools_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_tls_backend(dir.path(), "api.example.com").await;
    let web = spawn_tls_backend(dir.path(), "www.example.com").await;
    let fallback = spawn_tls_backend(dir.path(), "fallback.test").await;
    let sluice = start_sluice(&passthrough_config(api, web, Some(fallback))).await;
    let addr = sluice.local_addr("pass").unwrap();
    assert_eq!(
        through(addr, "api.example.com").await,
        "tls backend api.example.com"
    );
    assert_eq!(
        through(addr, "www.example.com").await,
        "tls backend www.example.com"
    );
    assert_eq!(
        through(addr, "deep.x.example.com").await,
        "tls backend www.example.com"
    );
    assert_eq!(
        through(addr, "other.test").await,
        "tls backend fallback.test"
    );
    assert_eq!(
        through(addr, "127.0.0.1").await,
        "tls backend fallback.test",
        "no SNI"
    );
}

#[tokio::test]
async fn without_a_default_pool_unknown_names_and_plaintext_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_tls_backend(dir.path(), "api.example.com").await;
    let web = spawn_tls_backend(dir.path(), "www.example.com").await;
    let sluice = start_sluice(&passthrough_config(api, web, None)).await;
    let addr = sluice.local_addr("pass").unwrap();
    assert!(connect_tls(addr, "other.test", &[]).await.is_err());
    let answer = raw_exchange(addr, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(answer, "", "not TLS: closed without a byte");
    assert_eq!(
        through(addr, "api.example.com").await,
        "tls backend api.example.com"
    );
}

/// A raw backend that reads `expected.len()` bytes, checks them against `expected`, and
/// answers `same` or `different`.
async fn spawn_checking_backend(expected: Arc<Vec<u8>>) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let expected = Arc::clone(&expected);
            tokio::spawn(async move {
                let mut got = vec![0u8; expected.len()];
                let verdict = match stream.read_exact(&mut got).await {
                    Ok(_) if got == *expected => "same",
                    _ => "different",
                };
                let _ = stream.write_all(verdict.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// The first flight of a rustls client for `name`, without a socket.
fn client_hello(name: &str) -> Vec<u8> {
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(client_config(&[]), server_name).unwrap();
    let mut out = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut out).unwrap();
    }
    out
}

#[tokio::test]
async fn a_hello_split_across_segments_is_forwarded_byte_for_byte() {
    let hello = Arc::new(client_hello("api.example.com"));
    let api = spawn_checking_backend(Arc::clone(&hello)).await;
    let web = spawn_checking_backend(Arc::new(Vec::new())).await;
    let sluice = start_sluice(&passthrough_config(api, web, None)).await;
    let mut stream = TcpStream::connect(sluice.local_addr("pass").unwrap())
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    // Three writes: inside the record header, inside the hello, the rest.
    for part in [&hello[..3], &hello[3..40], &hello[40..]] {
        stream.write_all(part).await.unwrap();
        stream.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(read_all(&mut stream).await, "same");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_hello_is_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_tls_backend(dir.path(), "api.example.com").await;
    let yaml = passthrough_config(api, api, Some(api))
        .replace("client_header: 2s", "client_header: 200ms");
    let sluice = start_sluice(&yaml).await;
    let mut stream = TcpStream::connect(sluice.local_addr("pass").unwrap())
        .await
        .unwrap();
    let hello = client_hello("api.example.com");
    stream.write_all(&hello[..20]).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(read_all(&mut stream).await, "");
    // Paused clock: the header deadline to the millisecond of the timer wheel.
    assert!(
        started.elapsed() <= Duration::from_millis(201),
        "{:?}",
        started.elapsed()
    );
}
