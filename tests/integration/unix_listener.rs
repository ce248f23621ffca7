//! Unix domain socket listeners (`bind: unix:/path`) for HTTP and TCP: serving, no made-up
//! X-Forwarded-For, stale socket files replaced, reloads that keep the socket, and the file
//! removed at shutdown.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn get_unix(path: &Path, uri: &str) -> (u16, String) {
    let stream = UnixStream::connect(path).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(uri)
        .header("host", "local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn unix_config(
    http: &Path,
    tcp: &Path,
    backend: std::net::SocketAddr,
    echo: std::net::SocketAddr,
) -> String {
    format!(
        "listeners:\n  local:\n    bind: unix:{}\n    mode: \"0660\"\n    pool: app\n  raw:\n    bind: unix:{}\n    protocol: tcp\n    pool: echo\npools:\n  app:\n    algorithm: hash\n    hash: {{key: source_ip}}\n    backends: [{backend}]\n  echo:\n    backends: [{echo}]\n",
        http.display(),
        tcp.display()
    )
}

#[tokio::test]
async fn http_and_tcp_over_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let (http_path, tcp_path) = (dir.path().join("http.sock"), dir.path().join("tcp.sock"));
    // A stale file from a crashed predecessor is replaced.
    drop(std::os::unix::net::UnixListener::bind(&http_path).unwrap());
    assert!(http_path.exists());
    let backend = spawn_backend("app").await;
    let echo = spawn_tcp_echo_after_eof().await;
    let sluice = start_sluice(&unix_config(&http_path, &tcp_path, backend.addr, echo)).await;
    assert_eq!(sluice.local_addr("local"), None, "no TCP address");
    assert_eq!(
        sluice.local_bind("local").map(|b| b.to_string()),
        Some(format!("unix:{}", http_path.display()))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&http_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    let (status, body) = get_unix(&http_path, "/hello").await;
    assert_eq!((status, body.as_str()), (200, "backend app"));
    let seen = backend.seen();
    assert!(
        !seen[0].headers.contains_key("x-forwarded-for"),
        "no fake client address"
    );
    assert_eq!(seen[0].headers["x-forwarded-proto"], "http");

    let mut raw = UnixStream::connect(&tcp_path).await.unwrap();
    raw.write_all(b"over unix").await.unwrap();
    raw.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, b"echo:over unix");

    assert_eq!(
        sluice.shutdown(Duration::from_secs(5)).await,
        sluice::DrainOutcome::Complete
    );
    assert!(
        wait_until(Duration::from_secs(5), || !http_path.exists()
            && !tcp_path.exists())
        .await,
        "socket files removed at shutdown"
    );
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_unix_listener_and_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (http_path, tcp_path) = (dir.path().join("http.sock"), dir.path().join("tcp.sock"));
    let first = spawn_backend("first").await;
    let second = spawn_backend("second").await;
    let echo = spawn_tcp_echo().await;
    let sluice = start_sluice(&unix_config(&http_path, &tcp_path, first.addr, echo)).await;
    let mut session = UnixStream::connect(&tcp_path).await.unwrap();
    session.write_all(b"a").await.unwrap();
    let mut one = [0u8; 1];
    session.read_exact(&mut one).await.unwrap();

    let plan = sluice
        .reload(config(&unix_config(
            &http_path,
            &tcp_path,
            second.addr,
            echo,
        )))
        .await
        .unwrap();
    assert!(
        plan.listeners_rebound.is_empty() && plan.listeners_added.is_empty(),
        "{plan}"
    );
    assert_eq!(get_unix(&http_path, "/").await.1, "backend second");
    // The TCP session opened before the reload still flows.
    session.write_all(b"b").await.unwrap();
    session.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"b");
    assert!(http_path.exists());

    // Moving a listener to another path binds the new one and removes the old file.
    let moved = dir.path().join("moved.sock");
    let plan = sluice
        .reload(config(&unix_config(&moved, &tcp_path, second.addr, echo)))
        .await
        .unwrap();
    assert_eq!(plan.listeners_rebound, ["local"]);
    assert_eq!(get_unix(&moved, "/").await.1, "backend second");
    assert!(wait_until(Duration::from_secs(5), || !http_path.exists()).await);
}
