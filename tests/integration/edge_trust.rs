//! Edge trust end to end: a hostile or broken client can never make a backend look bad, and
//! nothing malformed ever reaches one. Each test names a class of bad input and sends it to a
//! real sluice whose backend records every byte it receives: for each malformed case it must
//! have received nothing, the client gets the right 4xx and a closed connection, and every
//! backend stays up.

use crate::common::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that records every byte it receives, connection by connection, and answers
/// each whole request (framed by Content-Length or chunked, as sluice sends them) with
/// `200 ok`.
struct Recorder {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Default, Clone)]
struct Seen {
    bytes: Vec<u8>,
    /// Whole requests read on this connection.
    requests: usize,
    /// The connection ended with a reset (RST), not a clean close.
    reset: bool,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut all = record.lock().unwrap();
                    all.push(Seen::default());
                    all.len() - 1
                };
                tokio::spawn(serve_recorded(stream, Arc::clone(&record), index));
            }
        });
        Recorder { addr, connections }
    }

    fn connections(&self) -> Vec<Seen> {
        self.connections.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        let all: Vec<u8> = self
            .connections()
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect();
        String::from_utf8_lossy(&all).into_owned()
    }
}

async fn serve_recorded(mut stream: TcpStream, record: Arc<Mutex<Vec<Seen>>>, index: usize) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return,
            Err(error) => {
                record.lock().unwrap()[index].reset =
                    error.kind() == std::io::ErrorKind::ConnectionReset;
                return;
            }
            Ok(n) => n,
        };
        record.lock().unwrap()[index]
            .bytes
            .extend_from_slice(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
        while let Some(length) = whole_request(&pending) {
            pending.drain(..length);
            record.lock().unwrap()[index].requests += 1;
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the first whole request in `bytes`, if it is all there.
fn whole_request(bytes: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = request.parse(bytes).ok()? else {
        return None;
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    if header("transfer-encoding").is_some() {
        let end = bytes[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head + end + 5);
    }
    let length: usize = header("content-length").map_or(0, |v| v.trim().parse().unwrap_or(0));
    (bytes.len() >= head + length).then_some(head + length)
}

fn edge_config(
    listener: &str,
    backends: &[SocketAddr],
    listener_extra: &str,
    pool_extra: &str,
) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  {listener}:\n    bind: 127.0.0.1:0\n    pool: app\n{listener_extra}pools:\n  app:\n    backends: [{}]\n{pool_extra}",
        list.join(", ")
    )
}

/// A sluice with one listener over `backends` (extra listener lines), and its address.
async fn start_edge(
    listener: &str,
    backends: &[SocketAddr],
    listener_extra: &str,
) -> (sluice::Server, SocketAddr) {
    let sluice = start_sluice(&edge_config(listener, backends, listener_extra, "")).await;
    let addr = sluice.local_addr(listener).unwrap();
    (sluice, addr)
}

/// An HTTP/2 (prior knowledge) connection to `addr`.
async fn h2_sender<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

/// Sends `request` on a new connection and reads until sluice closes it (or 5 s pass).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    raw_exchange(addr, request, Duration::from_secs(5)).await
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// Sends the head and the start of a body, then closes: a phone that lost its network.
async fn abandon_upload(addr: SocketAddr, declared: usize, sent: usize) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST /upload HTTP/1.1\r\nhost: app.example\r\ncontent-length: {declared}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // A large part may not all be taken before sluice stops reading: that is fine.
    let _ = stream.write_all(&pattern(sent)).await;
    drop(stream);
}

fn every_backend_up(sluice: &sluice::Server) -> Result<(), String> {
    let snapshot = sluice.snapshot().load();
    for backend in &snapshot.pools["app"].backends {
        let health = &backend.state.health;
        if !health.is_healthy() || health.is_ejected() {
            return Err(format!("{} is not up", backend.address));
        }
    }
    Ok(())
}

async fn client_errors(sluice: &sluice::Server, listener: &str, reason: &str) -> u64 {
    let metrics = body_text(&get(sluice.admin_addr().unwrap(), "/metrics").await);
    let wanted = format!("listener=\"{listener}\",reason=\"{reason}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("sluice_client_errors_total") && line.contains(&wanted))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const MALFORMED_CHUNKED: &[(&str, &[u8])] = &[
    ("chunk size not hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    (
        "chunk size overflowing 64 bits",
        b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ),
    ("chunk size empty", b"\r\nhello\r\n0\r\n\r\n"),
    (
        "chunk data longer than its size",
        b"3\r\nhello\r\n0\r\n\r\n",
    ),
    ("chunk data not followed by CRLF", b"5\r\nhelloXX0\r\n\r\n"),
    ("chunk size line with a bare CR", b"5\rhello\r\n0\r\n\r\n"),
];

fn chunked_request(body: &[u8]) -> Vec<u8> {
    let mut request =
        b"POST /form HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    request.extend_from_slice(body);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_and_malformed_bodies_never_eject_a_backend() {
    for pool_size in [1, 4] {
        let mut recorders = Vec::new();
        for _ in 0..pool_size {
            recorders.push(Recorder::start().await);
        }
        let addrs: Vec<SocketAddr> = recorders.iter().map(|r| r.addr).collect();
        let listener = format!("edge_eject{pool_size}");
        let sluice = start_sluice(&edge_config(&listener, &addrs, "", "")).await;
        let addr = sluice.local_addr(&listener).unwrap();
        let mut uploads = Vec::new();
        for _ in 0..50 {
            uploads.push(tokio::spawn(abandon_upload(addr, 100_000, 10)));
        }
        for upload in uploads {
            upload.await.unwrap();
        }
        for round in 0..50 {
            let (class, body) = MALFORMED_CHUNKED[round % MALFORMED_CHUNKED.len()];
            let answer = exchange(addr, &chunked_request(body)).await;
            assert_eq!(status_of(&answer), 400, "{class}: {answer}");
        }
        // Every abandoned upload is counted as the client's, once it is noticed.
        let counted = wait_until_async(Duration::from_secs(5), || async {
            client_errors(&sluice, &listener, "body_aborted").await >= 50
        })
        .await;
        assert!(counted, "abandoned uploads not counted as client errors");
        assert!(client_errors(&sluice, &listener, "body_malformed").await >= 50);
        every_backend_up(&sluice).unwrap();
        for recorder in &recorders {
            assert_eq!(
                recorder.text(),
                "",
                "a backend saw a request no client sent whole"
            );
        }
        let answer = exchange(
            addr,
            b"GET /after HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_abandoned_after_streaming_began_is_the_clients_fault() {
    // Bigger than the request buffer, so it streams to the backend before the client leaves.
    let recorder = Recorder::start().await;
    let listener = "edge_stream";
    let extra = "    limits: {request_buffer: 16KiB}\n";
    let (sluice, addr) = start_edge(listener, &[recorder.addr], extra).await;
    for _ in 0..10 {
        abandon_upload(addr, 1_000_000, 100_000).await;
    }
    let counted = wait_until_async(Duration::from_secs(5), || async {
        client_errors(&sluice, listener, "body_aborted").await >= 10
    })
    .await;
    assert!(
        counted,
        "streamed uploads cut by their client not counted as the client's"
    );
    every_backend_up(&sluice).unwrap();
    // The backend saw the start of each upload (it streamed), never a whole request, and
    // each such connection was reset, not closed as if the request had ended.
    let connections = recorder.connections();
    assert_eq!(connections.len(), 10);
    for seen in connections {
        assert!(seen.bytes.len() >= 16 * 1024);
        assert_eq!(seen.requests, 0);
        assert!(
            seen.reset,
            "an upload cut short by its client was not reset upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_400_and_never_reach_a_backend() {
    let recorder = Recorder::start().await;
    let (_sluice, addr) = start_edge("edge_chunked", &[recorder.addr], "").await;
    for (class, body) in MALFORMED_CHUNKED {
        let answer = exchange(addr, &chunked_request(body)).await;
        assert_eq!(status_of(&answer), 400, "{class}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{class}: {answer}"
        );
        assert_eq!(recorder.text(), "", "{class} reached the backend");
    }
    // The same request, well formed, goes through with the body re-framed.
    let answer = exchange(addr, &chunked_request(b"5\r\nhello\r\n0\r\n\r\n")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = recorder.text();
    assert!(seen.contains("content-length: 5\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nhello"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_a_proxy_must_not_guess_is_refused() {
    let recorder = Recorder::start().await;
    let (_sluice, addr) = start_edge("edge_framing", &[recorder.addr], "").await;
    let cases: &[(&str, &[u8], u16)] = &[
        (
            "a coding other than chunked",
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
        ),
        (
            "chunked twice",
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST / HTTP/1.0\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            400,
        ),
        (
            "a Content-Length that is not a number",
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5x\r\n\r\nhello",
            400,
        ),
    ];
    for (class, request, status) in cases {
        let answer = exchange(addr, request).await;
        assert_eq!(status_of(&answer), *status, "{class}: {answer}");
        assert_eq!(recorder.text(), "", "{class} reached the backend");
    }
    // Transfer-Encoding with Content-Length: the chunked framing wins and the client's length
    // is dropped (RFC 9112 §6.3), the body is re-framed for the backend, and the connection
    // closes after the answer, so nothing the client sends after it is read as a request.
    let answer = exchange(
        addr,
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 50\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = recorder.text();
    assert!(seen.contains("content-length: 5\r\n"), "{seen}");
    assert!(!seen.contains("content-length: 50"), "{seen}");
    assert!(!seen.contains("smuggled"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_limits_get_414_431_and_413() {
    let recorder = Recorder::start().await;
    let extra = "    limits: {body: 1KiB}\n";
    let (_sluice, addr) = start_edge("edge_limits", &[recorder.addr], extra).await;
    let long_line = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "v".repeat(64 * 1024)
    );
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: a\r\n\r\n", "a".repeat(9 * 1024));
    let many: String = (0..101).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nhost: a\r\n{many}\r\n");
    let large: String = (0..5)
        .map(|i| format!("x-part{i}: {}\r\n", "v".repeat(7 * 1024)))
        .collect();
    let large = format!("GET / HTTP/1.1\r\nhost: a\r\n{large}\r\n");
    let big_body = format!(
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 2000\r\n\r\n{}",
        "b".repeat(2000)
    );
    let mut big_chunked =
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        big_chunked.extend_from_slice(b"200\r\n");
        big_chunked.extend_from_slice(&[b'c'; 512]);
        big_chunked.extend_from_slice(b"\r\n");
    }
    big_chunked.extend_from_slice(b"0\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("one 64 KiB header line", long_line.into_bytes(), 431),
        ("a 9 KiB request line", long_target.into_bytes(), 414),
        ("101 header lines", many.into_bytes(), 431),
        ("35 KiB of headers", large.into_bytes(), 431),
        ("a declared body over the limit", big_body.into_bytes(), 413),
        ("a chunked body over the limit", big_chunked, 413),
    ];
    for (class, request, status) in cases {
        let answer = exchange(addr, &request).await;
        assert_eq!(status_of(&answer), status, "{class}: {answer}");
        assert_eq!(recorder.text(), "", "{class} reached the backend");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_needs_one_valid_host_and_http10_does_not() {
    let recorder = Recorder::start().await;
    let (_sluice, addr) = start_edge("edge_host", &[recorder.addr], "").await;
    let cases: &[(&str, &[u8])] = &[
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n"),
        (
            "two Host lines",
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        ),
        (
            "Host with user info",
            b"GET / HTTP/1.1\r\nhost: user@a\r\n\r\n",
        ),
        ("Host with a path", b"GET / HTTP/1.1\r\nhost: a/b\r\n\r\n"),
    ];
    for (class, request) in cases {
        let answer = exchange(addr, request).await;
        assert_eq!(status_of(&answer), 400, "{class}: {answer}");
        assert_eq!(recorder.text(), "", "{class} reached the backend");
    }
    let answer = exchange(addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_names_the_host_for_routing_and_the_backend() {
    let a = Recorder::start().await;
    let b = Recorder::start().await;
    let yaml = format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    routes:\n      - {{match: {{host: a.example}}, pool: a}}\n      - {{match: {{host: b.example}}, pool: b}}\n\
         pools:\n  a: {{backends: [{}]}}\n  b: {{backends: [{}]}}\n",
        a.addr, b.addr
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    let answer = exchange(
        addr,
        b"GET http://a.example/x HTTP/1.1\r\nhost: b.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(b.text(), "", "routed by the Host header, not the target");
    let seen = a.text().to_ascii_lowercase();
    assert!(seen.starts_with("get /x http/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nhost: a.example\r\n"), "{seen}");
    assert!(!seen.contains("b.example"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_served_as_plain_http11_never_tunnelled() {
    let recorder = Recorder::start().await;
    let (_sluice, addr) = start_edge("edge_h2c", &[recorder.addr], "").await;
    let answer = exchange(
        addr,
        b"GET /admin HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, HTTP2-Settings, close\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = recorder.text().to_ascii_lowercase();
    assert!(seen.starts_with("get /admin http/1.1\r\n"), "{seen}");
    assert!(!seen.contains("upgrade"), "{seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_header_is_appended_when_asked_for() {
    let recorder = Recorder::start().await;
    let extra = "    forwarded: {by: true}\n";
    let (_sluice, addr) = start_edge("edge_fwd", &[recorder.addr], extra).await;
    let answer = exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: a.example:8080\r\nforwarded: for=192.0.2.9\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = recorder.text();
    assert!(
        seen.contains("forwarded: for=192.0.2.9, by=127.0.0.1;for=127.0.0.1;host=\"a.example:8080\";proto=http\r\n"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_its_body_gets_408_and_the_backend_nothing() {
    let recorder = Recorder::start().await;
    let extra = "    timeouts: {client_body: 200ms}\n";
    let (sluice, addr) = start_edge("edge_slow", &[recorder.addr], extra).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nonly ten..")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "sluice did not close the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(recorder.text(), "");
    every_backend_up(&sluice).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_is_logged_as_499_client_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let recorder = Recorder::start().await;
    let extra = format!(
        "    access_log: {{format: json, path: {}}}\n",
        log.display()
    );
    let (_sluice, addr) = start_edge("edge_log", &[recorder.addr], &extra).await;
    abandon_upload(addr, 5000, 10).await;
    let logged = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("\"status\":499"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged, "{text}");
    assert!(text.contains("\"error\":\"client aborted\""), "{text}");
    assert_eq!(recorder.text(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_chunked_post_is_retried_on_another_backend_when_connect_fails() {
    let recorder = Recorder::start().await;
    let dead = dead_addr().await;
    let pool = "    algorithm: round_robin\n    retry: {attempts: 2}\n    outlier: {consecutive_failures: 0}\n";
    let sluice = start_sluice(&edge_config("edge_retry", &[dead, recorder.addr], "", pool)).await;
    let addr = sluice.local_addr("edge_retry").unwrap();
    for _ in 0..4 {
        let answer = exchange(addr, &chunked_request(b"5\r\nhello\r\n0\r\n\r\n")).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
    assert_eq!(recorder.text().matches("POST /form").count(), 4);
}

#[tokio::test]
async fn limits_that_contradict_each_other_name_the_default() {
    let yaml = "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n    limits: {header_line: 64KiB}\npools:\n  app: {backends: [127.0.0.1:9]}\n";
    let error = sluice::Config::parse(yaml, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("listeners.web.limits.header_line"),
        "{error}"
    );
    assert!(error.contains("(the default)"), "{error}");
}

/// An HTTP/2 request body that sends a little and then fails: hyper's client resets the
/// stream (RST_STREAM), as a browser does when the user cancels an upload.
struct CancelledUpload {
    sent: bool,
}

impl hyper::body::Body for CancelledUpload {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("cancelled"))));
        }
        self.sent = true;
        let data = bytes::Bytes::from_static(b"the first part of a photo");
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_reset_by_their_client_never_eject_a_backend() {
    let recorder = Recorder::start().await;
    let listener = "edge_h2_reset";
    let sluice = start_sluice(&edge_config(listener, &[recorder.addr], "", "")).await;
    let mut sender = h2_sender(sluice.local_addr(listener).unwrap()).await;
    for _ in 0..20 {
        let request = http::Request::post("http://app.example/upload")
            .body(CancelledUpload { sent: false })
            .unwrap();
        // The client gave up on its own request: whatever it reads back is not the point.
        let _ = sender.send_request(request).await;
    }
    let counted = wait_until_async(Duration::from_secs(5), || async {
        client_errors(&sluice, listener, "body_aborted").await
            + client_errors(&sluice, listener, "client_closed").await
            >= 20
    })
    .await;
    assert!(counted, "reset streams not counted as the client's");
    every_backend_up(&sluice).unwrap();
    assert_eq!(
        recorder.text(),
        "",
        "a cancelled upload reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_cancelled_before_its_answer_is_logged_499_and_the_backend_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let slow = spawn_backend_with_delay("slow", Duration::from_millis(700)).await;
    let extra = format!(
        "    access_log: {{format: json, path: {}}}\n",
        log.display()
    );
    let sluice = start_sluice(&edge_config("edge_left", &[slow.addr], &extra, "")).await;
    let mut sender = h2_sender(sluice.local_addr("edge_left").unwrap()).await;
    let request = http::Request::get("http://app.example/slow")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = sender.send_request(request);
    // Given up once the backend has the request, before it answers: the stream is reset.
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::pin!(answer);
        tokio::select! {
            _ = &mut answer => panic!("answered before the backend saw the request"),
            () = async {
                while slow.started.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            } => {}
        }
    })
    .await;
    assert!(waited.is_ok(), "the backend never saw the request");
    let logged = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("\"status\":499"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged, "{text}");
    assert!(text.contains("\"error\":\"client aborted\""), "{text}");
    every_backend_up(&sluice).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_held_to_the_same_head_limits() {
    let recorder = Recorder::start().await;
    let sluice = start_sluice(&edge_config("edge_h2_limits", &[recorder.addr], "", "")).await;
    let mut sender = h2_sender(sluice.local_addr("edge_h2_limits").unwrap()).await;
    let mut request = http::Request::get("http://app.example/many")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    for i in 0..101 {
        let name = http::header::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap();
        request
            .headers_mut()
            .insert(name, http::HeaderValue::from_static("1"));
    }
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 431);
    let long = format!("/{}", "a".repeat(9 * 1024));
    let request = http::Request::get(format!("http://app.example{long}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 414);
    assert_eq!(recorder.text(), "");
}
