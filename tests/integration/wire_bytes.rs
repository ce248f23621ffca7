//! Wire-level byte counters (issue 25): `sluice_listener_wire_bytes_total` and
//! `sluice_backend_wire_bytes_total` equal the bytes a test client and a test backend actually
//! sent and received on their sockets, headers included, over HTTP and over TCP (spliced).
//!
//! The recorder is one per test process: every name and address here is this test's own.

use crate::common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(10);

/// The value of one series of `/metrics` (0 when absent).
async fn series(admin: SocketAddr, family: &str, labels: &[(&str, &str)]) -> u64 {
    let text = body_text(&get(admin, "/metrics").await);
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A keep-alive HTTP/1.1 backend that answers every GET with the same response and counts
/// what it read and wrote.
async fn counting_backend(read: Arc<AtomicU64>, written: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (read, written) = (Arc::clone(&read), Arc::clone(&written));
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    read.fetch_add(n as u64, Ordering::SeqCst);
                    head.extend_from_slice(&byte[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        let body = "counted body\n";
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Padding: {}\r\n\r\n{body}",
                            body.len(),
                            "p".repeat(100)
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        written.fetch_add(response.len() as u64, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_wire_counters_match_the_bytes_on_the_sockets() {
    let (backend_read, backend_written) = (Arc::default(), Arc::default());
    let backend = counting_backend(Arc::clone(&backend_read), Arc::clone(&backend_written)).await;
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  wire_http: {{bind: 127.0.0.1:0, pool: wire_http_pool}}\n\
         pools:\n  wire_http_pool:\n    backends: [{backend}]\n"
    );
    let sluice = start_sluice(&yaml).await;
    let web = sluice.local_addr("wire_http").unwrap();
    let admin = sluice.admin_addr().unwrap();
    let (mut sent, mut received) = (0u64, 0u64);
    for i in 0..3 {
        let request = format!(
            "GET /count/{i} HTTP/1.1\r\nHost: wire.test\r\nX-Some-Header: {}\r\nConnection: close\r\n\r\n",
            "h".repeat(i * 50)
        );
        let mut stream = TcpStream::connect(web).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        sent += request.len() as u64;
        received += answer.len() as u64;
    }
    let listener = |direction| [("listener", "wire_http"), ("direction", direction)];
    let backend_label = backend.to_string();
    let upstream = |direction| {
        [
            ("pool", "wire_http_pool"),
            ("backend", backend_label.as_str()),
            ("direction", direction),
        ]
    };
    assert_eq!(
        series(admin, "sluice_listener_wire_bytes_total", &listener("in")).await,
        sent
    );
    assert_eq!(
        series(admin, "sluice_listener_wire_bytes_total", &listener("out")).await,
        received
    );
    // Bodies only in the payload counter: far less than the wire.
    let payload_out = series(admin, "sluice_listener_bytes_total", &listener("out")).await;
    assert_eq!(payload_out, 3 * "counted body\n".len() as u64);
    // The backend side: what the backend read is what sluice wrote (direction in), and the
    // other way round; the last response is read by sluice before the client gets it.
    assert!(
        wait_until_async(DEADLINE, || async {
            series(admin, "sluice_backend_wire_bytes_total", &upstream("in")).await
                == backend_read.load(Ordering::SeqCst)
        })
        .await,
        "backend in: {} vs {}",
        series(admin, "sluice_backend_wire_bytes_total", &upstream("in")).await,
        backend_read.load(Ordering::SeqCst)
    );
    assert_eq!(
        series(admin, "sluice_backend_wire_bytes_total", &upstream("out")).await,
        backend_written.load(Ordering::SeqCst)
    );
    assert!(backend_read.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn tcp_wire_counters_count_spliced_sessions() {
    let echo = spawn_tcp_echo().await;
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  wire_tcp: {{bind: 127.0.0.1:0, protocol: tcp, pool: wire_tcp_pool}}\n\
         pools:\n  wire_tcp_pool:\n    backends: [{echo}]\n"
    );
    let sluice = start_sluice(&yaml).await;
    let front = sluice.local_addr("wire_tcp").unwrap();
    let admin = sluice.admin_addr().unwrap();
    let payload = vec![b'x'; 100_000];
    let mut stream = TcpStream::connect(front).await.unwrap();
    stream.write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    drop(stream);
    let total = payload.len() as u64;
    let echo_label = echo.to_string();
    // Counted when the session closes.
    assert!(
        wait_until_async(DEADLINE, || async {
            series(
                admin,
                "sluice_listener_wire_bytes_total",
                &[("listener", "wire_tcp"), ("direction", "in")],
            )
            .await
                == total
        })
        .await,
        "listener in"
    );
    assert_eq!(
        series(
            admin,
            "sluice_listener_wire_bytes_total",
            &[("listener", "wire_tcp"), ("direction", "out")]
        )
        .await,
        total
    );
    for direction in ["in", "out"] {
        let labels = [
            ("pool", "wire_tcp_pool"),
            ("backend", echo_label.as_str()),
            ("direction", direction),
        ];
        assert_eq!(
            series(admin, "sluice_backend_wire_bytes_total", &labels).await,
            total,
            "backend {direction}"
        );
    }
}
