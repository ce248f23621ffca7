//! Response compression end to end: gzip, br and zstd negotiated from Accept-Encoding, the
//! responses never compressed (already encoded, ranges, no-transform, HEAD, small, other
//! types), the header changes, a route turning it off, and a slow stream that reaches the
//! client compressed chunk by chunk (nothing buffered whole).

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// 64 KiB of JSON, as a typical API answer.
fn json_body() -> Bytes {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < 64 * 1024 - 64 {
        text.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i}\",\"ok\":true}},"
        ));
        i += 1;
    }
    text.push_str("{}]");
    Bytes::from(text)
}

/// A backend answering by path with the headers each case needs. `/stream` sends one chunk,
/// then waits for `release` before the second.
async fn content_backend(release: Arc<Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let release = Arc::clone(&release);
                    async move { Ok::<_, Infallible>(answer(request.uri().path(), release)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn answer(path: &str, release: Arc<Notify>) -> Response<Body> {
    let json = |extra: &[(&str, &str)]| {
        let mut builder = Response::builder()
            .header("content-type", "application/json")
            .header("etag", "\"v1\"")
            .header("accept-ranges", "bytes");
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        builder
    };
    match path {
        "/json" => json(&[]).body(Full::new(json_body()).boxed()).unwrap(),
        "/encoded" => json(&[("content-encoding", "br")])
            .body(Full::new(json_body()).boxed())
            .unwrap(),
        "/no-transform" => json(&[("cache-control", "no-transform")])
            .body(Full::new(json_body()).boxed())
            .unwrap(),
        "/range" => json(&[("content-range", "bytes 0-99/65536")])
            .status(StatusCode::PARTIAL_CONTENT)
            .body(Full::new(json_body().slice(0..100)).boxed())
            .unwrap(),
        "/small" => json(&[])
            .body(Full::new(Bytes::from_static(b"{\"a\":1}")).boxed())
            .unwrap(),
        "/png" => Response::builder()
            .header("content-type", "image/png")
            .body(Full::new(json_body()).boxed())
            .unwrap(),
        "/stream" => {
            let stream = async_stream(release);
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        _ => Response::new(Full::new(Bytes::from_static(b"?")).boxed()),
    }
}

/// Two events, the second only once the test has seen the first.
fn async_stream(
    release: Arc<Notify>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(
                b"data: first event\n\n",
            ))))
            .await;
        release.notified().await;
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(
                b"data: second event\n\n",
            ))))
            .await;
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    struct Rx<T>(tokio::sync::mpsc::Receiver<T>);
    impl<T> futures_core::Stream for Rx<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
    Rx(rx)
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(data).unwrap(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

async fn fetch(addr: SocketAddr, method: &str, path: &str, accept: &str) -> Response<Bytes> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "a.test");
    if !accept.is_empty() {
        builder = builder.header("accept-encoding", accept);
    }
    send(addr, builder.body(Full::new(Bytes::new()).boxed()).unwrap()).await
}

fn config(backend: SocketAddr) -> String {
    format!(
        r#"admin: {{ bind: 127.0.0.1:0 }}
listeners:
  web:
    bind: 127.0.0.1:0
    pool: app
    compression: {{ min_size: 1KiB, types: [application/json, text/*], levels: {{ gzip: 1 }} }}
    routes:
      - match: {{ path: /off/json }}
        pool: app
        strip_prefix: /off
        compression: {{ enabled: false }}
pools:
  app: {{ backends: [{backend}] }}
"#
    )
}

fn header<'r>(response: &'r Response<Bytes>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn negotiates_each_coding_and_rewrites_the_headers() {
    let backend = content_backend(Arc::new(Notify::new())).await;
    let sluice = start_sluice(&config(backend)).await;
    let addr = sluice.local_addr("web").unwrap();
    let plain = json_body();
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("gzip;q=0.5, br", "br"),
        ("zstd, br, gzip", "zstd"),
        ("*", "zstd"),
    ] {
        let response = fetch(addr, "GET", "/json", accept).await;
        assert_status(&response, StatusCode::OK);
        assert_eq!(
            header(&response, "content-encoding"),
            Some(coding),
            "{accept}"
        );
        assert_eq!(header(&response, "vary"), Some("Accept-Encoding"));
        assert_eq!(header(&response, "etag"), Some("W/\"v1\""));
        assert_eq!(header(&response, "content-length"), None);
        assert_eq!(header(&response, "accept-ranges"), None);
        assert!(
            response.body().len() * 4 < plain.len(),
            "{coding}: {}",
            response.body().len()
        );
        assert_eq!(decode(coding, response.body()), plain, "{coding}");
    }
    // No Accept-Encoding: plain, but it varies.
    let none = fetch(addr, "GET", "/json", "").await;
    assert_eq!(none.body(), &plain);
    assert_eq!(header(&none, "content-encoding"), None);
    assert_eq!(header(&none, "vary"), Some("Accept-Encoding"));
    assert_eq!(header(&none, "etag"), Some("\"v1\""));
    let counted = {
        let metrics = body_text(&get(sluice.admin_addr().unwrap(), "/metrics").await);
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("sluice_compressed_responses_total{")
                    && l.contains("encoding=\"zstd\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(counted, 2.0);
}

#[tokio::test]
async fn leaves_alone_what_must_not_be_compressed() {
    let backend = content_backend(Arc::new(Notify::new())).await;
    let sluice = start_sluice(&config(backend)).await;
    let addr = sluice.local_addr("web").unwrap();
    for path in [
        "/encoded",
        "/no-transform",
        "/range",
        "/small",
        "/png",
        "/off/json",
    ] {
        let response = fetch(addr, "GET", path, "gzip, br, zstd").await;
        let encoding = header(&response, "content-encoding");
        let expected = (path == "/encoded").then_some("br");
        assert_eq!(encoding, expected, "{path}");
        assert_eq!(
            header(&response, "etag"),
            Some("\"v1\"").filter(|_| path != "/png"),
            "{path}"
        );
    }
    let head = fetch(addr, "HEAD", "/json", "gzip").await;
    assert_eq!(header(&head, "content-encoding"), None);
    assert!(head.body().is_empty());
}

#[tokio::test]
async fn a_slow_stream_reaches_the_client_compressed_as_it_is_produced() {
    let release = Arc::new(Notify::new());
    let backend = content_backend(Arc::clone(&release)).await;
    let sluice = start_sluice(&config(backend)).await;
    let addr = sluice.local_addr("web").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/stream")
        .header("host", "a.test")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    let mut wire = Vec::new();
    let mut decoded = Vec::new();
    // The first event arrives, compressed and flushed, while the backend still holds the
    // second: nothing waits for the whole body.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&decoded).contains("first event") {
            let frame = body.frame().await.expect("a frame").expect("no error");
            if let Ok(data) = frame.into_data() {
                wire.extend_from_slice(&data);
                decoded = gunzip_prefix(&wire);
            }
        }
    })
    .await;
    assert!(first.is_ok(), "the first event was held back");
    release.notify_one();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            wire.extend_from_slice(&data);
        }
    }
    assert_eq!(
        decode("gzip", &wire),
        b"data: first event\n\ndata: second event\n\n"
    );
}

fn gunzip_prefix(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(data);
    let mut buffer = [0u8; 4096];
    while let Ok(n) = decoder.read(&mut buffer) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buffer[..n]);
    }
    out
}
