//! HTTP/2 to backends: an HTTP/1.1 client through sluice to an HTTP/2-only backend (headers
//! translated: no connection-specific ones, `Host` as `:authority`), gRPC through an h2c
//! listener with its trailers both ways, and upgrades refused towards an h2 pool.

use crate::common::upstream::*;
use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use std::time::Duration;

async fn h2_pool() -> (Upstream, sluice::Server) {
    let backend = spawn_upstream("h2only", Listen::Tcp, None, Speaks::H2).await;
    let yaml = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    protocol: h2\n    backends: [{}]\n",
        backend.address
    );
    (backend, start_sluice(&yaml).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_reaches_an_h2_only_backend_without_hop_by_hop_headers() {
    let (backend, sluice) = h2_pool().await;
    let addr = sluice.local_addr("web").unwrap();
    // A chunked body, a Connection-listed header, keep-alive and TE: all HTTP/1.1-only.
    let request = b"POST /submit?x=1 HTTP/1.1\r\nHost: app.example:8080\r\n\
        Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
        TE: gzip, trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
        Transfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request)
        .await
        .unwrap();
    let reply = read_head_and_body(&mut stream, "ok h2only").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-body-len: 5"), "{reply}");

    let saw = &backend.saw()[0];
    assert_eq!(saw.version, Version::HTTP_2);
    assert_eq!(saw.uri.to_string(), "http://app.example:8080/submit?x=1");
    assert_eq!(&saw.body[..], b"hello");
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "x-hop",
        "host",
    ] {
        assert!(
            !saw.headers.contains_key(name),
            "{name} reached the backend"
        );
    }
    assert_eq!(saw.headers["te"], "trailers");
    assert_eq!(saw.headers["x-kept"], "yes");
    assert_eq!(saw.headers["x-forwarded-host"], "app.example:8080");

    // Keep-alive towards the client still works on the same connection.
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let reply = read_head_and_body(&mut stream, "ok h2only").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// Reads until `end` arrives (the body's last bytes), with a deadline.
async fn read_head_and_body(stream: &mut tokio::net::TcpStream, end: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&out).ends_with(end) {
        let read =
            tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(stream, &mut buf))
                .await
                .expect("reply before the deadline")
                .unwrap();
        assert!(read > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn grpc_request(path: &str) -> Request<Body> {
    Request::post(format!("http://grpc.example{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")).boxed())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_pass_through_h2c_to_an_h2_backend() {
    let (backend, sluice) = h2_pool().await;
    let addr = sluice.local_addr("web").unwrap();

    let (parts, body, trailers) = h2c_send(addr, grpc_request("/grpc/ok")).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "application/grpc");
    assert_eq!(&body[..], b"\0\0\0\0\x05hello");
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");

    let saw = &backend.saw()[0];
    assert_eq!(saw.headers["te"], "trailers", "gRPC needs te: trailers");
    assert_eq!(saw.uri.authority().unwrap().as_str(), "grpc.example");
    assert_eq!(&saw.body[..], b"\0\0\0\0\x02hi");

    // A gRPC error is HTTP 200 with the status in trailers: passed on unchanged.
    let (parts, _, trailers) = h2c_send(addr, grpc_request("/grpc/unavailable")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let trailers = trailers.expect("error trailers reach the client");
    assert_eq!(trailers["grpc-status"], "14");
    assert_eq!(trailers["grpc-message"], "backend%20down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_one_h2_connection_and_upgrades_are_refused() {
    let (backend, sluice) = h2_pool().await;
    let addr = sluice.local_addr("web").unwrap();
    for _ in 0..3 {
        assert_status(&get(addr, "/").await, StatusCode::OK);
    }
    assert_eq!(backend.saw().len(), 3);
    let connections = backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(connections, 1, "one multiplexed connection");

    let reply = raw_exchange(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 501"), "{reply}");
    assert_eq!(
        backend.saw().len(),
        3,
        "the upgrade never reached the backend"
    );
}
